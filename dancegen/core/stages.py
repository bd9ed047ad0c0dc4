"""Multi-stage training runs shared by every method: stage configs, the stage runner and the loop config (no torch).

A paper trains in stages (Dance-Your-Latents: STSA only, then fine-tune; Dance Any Beat: adapters, LFAE, diffusion;
Edit-Your-Motion: temporal, then spatial). A run folder holds one sub-folder per stage, ``stage-<k>-<name>/``
(metrics, checkpoints, samples and the model as that stage left it in ``model/``), the resolved ``recipe.yaml`` and
the final ``model/``. `run_stages` walks the stages a recipe selects, hands each its folder and its ``--resume``
rule (`core.checkpoint.stage_resume`), and collects the reports; the method supplies what one stage does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dancegen.errors import InputError


@dataclass
class StageConfig:
    """Fields every method's stage has; a method subclasses it with its own (and validates `name`).

    Attributes:
        name: the stage (a method-specific set of names).
        steps: optimizer steps.
        lr: peak learning rate.
    """

    name: str = ""
    steps: int = 1000
    lr: float = 1e-4

    def __post_init__(self):
        if not self.name:
            raise ValueError("train.stages: every stage needs a name")
        if self.steps < 1 or not self.lr > 0:
            raise ValueError(f"train.stages[{self.name}]: steps must be >= 1 and lr > 0, got {self.steps}, {self.lr}")


@dataclass
class StagedTrainConfig:
    """The `train:` block shared by the methods: the stages, which to run now, and the loop settings."""

    stages: list = field(default_factory=list)
    run: list[str] = field(default_factory=lambda: ["all"])  # stage names to run now (in order), or ["all"]
    device: str = "auto"
    mixed_precision: str = "no"  # no | fp16 (CUDA) | bf16
    gradient_checkpointing: bool = False
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 0  # steps between samples (0: never)

    def __post_init__(self):
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"train.stages names must be unique, got {names}")
        unknown = [r for r in self.run if r != "all" and r not in names]
        if unknown:
            raise ValueError(f"train.run names stages {unknown} that train.stages does not define ({names})")

    def selected_stages(self) -> list:
        """The stages `run` selects, in `stages` order."""
        return list(self.stages) if list(self.run) == ["all"] else [s for s in self.stages if s.name in self.run]


def stage_dir(output_dir: str | os.PathLike, index: int, stage) -> Path:
    """``output_dir/stage-<k>-<name>`` (k counts from 1 in the recipe's order)."""
    return Path(output_dir) / f"stage-{index + 1}-{stage.name}"


def run_stages(config, output_dir: str | os.PathLike, resume: str,
               run_one: Callable[[Any, Path, str], dict | None], say: Callable[[str], None] = lambda m: None) -> dict:
    """Run the stages of `config.train` that `train.run` selects, in order.

    Args:
        config: the recipe (``config.train`` is a `StagedTrainConfig`).
        output_dir: the run folder.
        resume: "auto" | "never" | a checkpoint folder of one stage (earlier stages resume "auto", later start over).
        run_one: ``run_one(stage, stage_folder, stage_resume) -> report`` does one stage.
        say: progress messages.

    Returns:
        ``{stage name: report}`` of the stages that ran.

    Raises:
        InputError: `train.run` selects no stage.
    """
    from dancegen.core.checkpoint import stage_resume

    stages = list(config.train.stages)
    selected = config.train.selected_stages()
    if not selected:
        raise InputError("train.run selects no stage")
    dirs = [stage_dir(output_dir, k, s) for k, s in enumerate(stages)]
    reports = {}
    for k, stage in enumerate(stages):
        if stage not in selected:
            continue
        say(f"stage {stage.name}: {stage.steps} steps at lr {stage.lr:g}")
        reports[stage.name] = run_one(stage, dirs[k], stage_resume(resume, dirs, k)) or {}
    return reports


def start_run(config, output_dir: str | os.PathLike) -> Path:
    """Create the run folder and write the resolved recipe (``recipe.yaml``) into it."""
    from dancegen.config import save_config
    from dancegen.core.model_folder import RUN_RECIPE

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / RUN_RECIPE)
    return out


def loop_config(train, stage, folder: Path, resume: str, trainable: list[str], seed: int, optim,
                frozen: list[str] | None = None, **overrides):
    """The shared loop's config for one stage, from the recipe's `train:` block.

    Args:
        train: the method's train config (a `StagedTrainConfig`; extra fields such as `batch_size` or `grad_accum`
            are read when present).
        stage: the stage (its `steps`; its own `batch_size` wins over the train block's).
        folder: the stage folder; resume: its resume rule; trainable / frozen: parameter patterns.
        seed: the data order seed; optim: a `core.train_config.OptimConfig`.
        **overrides: any other `TrainLoopConfig` field.
    """
    from dancegen.core.train_config import TrainLoopConfig

    steps = int(stage.steps)
    kw = dict(max_steps=steps, batch_size=int(getattr(stage, "batch_size", getattr(train, "batch_size", 1))),
              grad_accum=int(getattr(train, "grad_accum", 1)), mixed_precision=train.mixed_precision,
              gradient_checkpointing=bool(getattr(train, "gradient_checkpointing", False)), seed=seed,
              device=train.device, num_workers=train.num_workers, log_every=min(train.log_every, steps),
              sample_every=getattr(train, "sample_every", 0), checkpoint_every=min(train.checkpoint_every, steps),
              keep_checkpoints=train.keep_checkpoints, output_dir=str(folder), resume=resume,
              trainable=list(trainable), frozen=list(frozen or []), optim=optim)
    kw.update(overrides)
    return TrainLoopConfig(**kw)
