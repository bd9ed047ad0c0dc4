"""Typed config of the shared training loop (core/train.py): optimizer, lr schedule, loop, trainable parameters.

The defaults follow the choices of specs/dance-your-latents.md §3 where the paper is silent (AdamW, weight decay
1e-2, constant lr, no warmup); methods override them per stage in their recipes (§7). Kept free of torch imports so
that loading a recipe stays cheap.

Parameter patterns (`trainable`, `frozen`, `ParamGroup.patterns`) select parameters by their dotted name:
- a glob (fnmatch, case-sensitive) that matches the full name or any module path of it: `unet` and `unet.*` both
  select every parameter under `unet`; `*.stsa` selects every module called `stsa` at any depth, `*norm*.bias` a
  set of biases;
- `re:<regex>`: a regular expression searched in the full name (`re:attn[12]\\.to_q\\.weight$`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("constant", "cosine", "linear", "multistep")
MIXED_PRECISION = ("no", "fp16", "bf16")
CHECKPOINT_WEIGHTS = ("trainable", "all")


def pattern_matches(name: str, pattern: str) -> bool:
    """Whether parameter `name` is selected by `pattern` (see the module docstring for the syntax)."""
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    parts = name.split(".")
    return any(fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def _check_patterns(key: str, patterns: list[str]) -> None:
    for p in patterns:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{key}: patterns must be non-empty strings, got {p!r}")
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as e:
                raise ValueError(f"{key}: pattern {p!r} is not a valid regular expression ({e})") from None


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule; `lr` is the peak lr after warmup."""

    name: str = "adamw"  # adamw | adam (torch Adam: weight_decay is an L2 term added to the gradient)
    lr: float = 1e-4
    weight_decay: float = 1e-2  # decoupled (AdamW) [choice, dance-your-latents.md §3]
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = 1.0  # max global L2 norm of the gradients; null or 0 disables clipping
    lr_schedule: str = "constant"  # constant | cosine | linear (decay to min_lr_ratio * lr at max_steps) | multistep
    warmup_steps: int = 0  # linear warmup from lr/warmup_steps to lr, in optimizer steps
    min_lr_ratio: float = 0.0  # final lr of cosine/linear as a fraction of lr
    milestones: list[float] = field(default_factory=list)  # multistep: lr *= gamma at each; fractions of max_steps
    gamma: float = 0.1  # multistep decay factor (LFDM / DabFusion: x0.1)

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            raise ValueError(f"optim.eps must be positive, got {self.eps}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(f"optim.grad_clip must be >= 0 (0 or null disables clipping), got {self.grad_clip}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"optim.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if any(not 0.0 < m < 1.0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"optim.milestones must be increasing fractions of max_steps in (0, 1), got "
                             f"{list(self.milestones)}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"optim.gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class ParamGroup:
    """A named set of trainable parameters with its own lr / weight decay (None: the optimizer's value).

    A trainable parameter joins the first group whose patterns select it; the rest form the group `default`.
    """

    name: str
    patterns: list[str]
    lr: float | None = None
    weight_decay: float | None = None

    def __post_init__(self):
        if not self.name or self.name == "default":
            raise ValueError(f"param group name must be non-empty and not 'default', got {self.name!r}")
        if not self.patterns:
            raise ValueError(f"param group {self.name!r} has no patterns")
        _check_patterns(f"param group {self.name!r}", list(self.patterns))
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"param group {self.name!r}: lr must be positive, got {self.lr}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ValueError(f"param group {self.name!r}: weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class TrainLoopConfig:
    """The method-agnostic training loop: steps, batching, precision, checkpoints, logging, frozen parameters.

    A step is one optimizer update: `grad_accum` micro-batches of `batch_size` samples on each process.
    """

    max_steps: int = 1000
    batch_size: int = 1  # samples per micro-batch per process (used when the data is a map-style Dataset)
    grad_accum: int = 1  # micro-batches per optimizer step
    mixed_precision: str = "no"  # no | fp16 (CUDA only, with loss scaling) | bf16 (CUDA or CPU autocast)
    gradient_checkpointing: bool = False  # calls model.enable_gradient_checkpointing()
    seed: int = 0  # data order of the InfiniteLoader; the caller seeds model init (house-style §6)
    device: str = "auto"  # auto | cpu | cuda (under `accelerate launch` each process gets its own GPU)
    num_workers: int = 0  # data-loading worker processes of the InfiniteLoader
    log_every: int = 10  # steps between lines of metrics.jsonl (loss averaged over those steps)
    sample_every: int = 0  # steps between sample_fn calls; 0 never
    checkpoint_every: int = 1000  # steps between checkpoints; one is also written at the end
    keep_checkpoints: int = 3  # newest complete checkpoints kept; 0 keeps all
    checkpoint_weights: str = "trainable"  # trainable (+ buffers: frozen weights come from the recipe) | all
    output_dir: str = "runs/train"
    resume: str = "auto"  # auto (latest complete checkpoint in output_dir, if any) | never | PATH of a checkpoint
    trainable: list[str] = field(default_factory=lambda: ["*"])  # patterns of parameters that train
    frozen: list[str] = field(default_factory=list)  # patterns excluded from `trainable`
    param_groups: list[ParamGroup] = field(default_factory=list)
    export_trainable: bool = True  # write output_dir/trainable.safetensors at the end
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self):
        for key in ("max_steps", "batch_size", "grad_accum", "log_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("sample_every", "keep_checkpoints", "num_workers"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                             f"got {self.mixed_precision!r}")
        if self.mixed_precision == "fp16" and self.device == "cpu":
            raise ValueError(fp16_on_cpu_message())
        if self.checkpoint_weights not in CHECKPOINT_WEIGHTS:
            raise ValueError(f"checkpoint_weights must be one of {', '.join(CHECKPOINT_WEIGHTS)}, "
                             f"got {self.checkpoint_weights!r}")
        if not self.resume:
            raise ValueError("resume must be 'auto', 'never' or the path of a checkpoint folder")
        if not self.output_dir:
            raise ValueError("output_dir must not be empty")
        if not self.trainable:
            raise ValueError("trainable is empty, so nothing would train; use ['*'] to train every parameter")
        _check_patterns("trainable", list(self.trainable))
        _check_patterns("frozen", list(self.frozen))
        names = [g.name for g in self.param_groups]
        if len(set(names)) != len(names):
            raise ValueError(f"param group names must be unique, got {names}")


def fp16_on_cpu_message() -> str:
    return ("mixed_precision fp16 needs a CUDA GPU: CPU autocast has no float16 path with loss scaling, so the run "
            "would silently train in a different precision; use bf16 or no on CPU")
