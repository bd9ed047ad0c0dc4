"""Typed recipe of Edit-Your-Motion (arXiv 2405.04496 v3; spec edit-your-motion.md §7). No torch import.

Defaults are the paper's setting, with the spec's choices where the paper is silent ([P] paper, [S] spec choice,
[L] lineage: MotionEditor / Tune-A-Video): SD-1.5 + an OpenPose ControlNet at 512 px, 8 frames, Recurrent Causal
Attention in every spatial self-attention, temporal attention after every cross-attention, one Motion Attention
adapter per ControlNet residual (zero-gated, so plain ControlNet at step 0), spatio-temporal two-stage learning
(300 steps of temporal attention + MA on the masked frames, then 300 steps of RCA + MA on the whole frames, lr 3e-5),
DDIM inversion of the source with the fine-tuned model and 50 / 50 DDIM steps without classifier-free guidance.

The ablations of Table IV are switches: ``model.spatial_attn=self`` (w/o RCA), ``model.motion_adapter.enabled=false``
(w/o MA), and one ``joint`` stage of 600 steps (w/o STL). `BUNDLED_OVERRIDES` shrink the defaults to the bundled
64 px models (`t2i-tiny` + `controlnet-openpose-tiny`); `finetune-oneshot` applies them when no `--model` / `--recipe`
is given, and ``recipes/edit_your_motion/tiny_synth.yaml`` spells the same values out (a test keeps them equal).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dancegen.core.stages import StageConfig as BaseStageConfig
from dancegen.core.stages import StagedTrainConfig

METHOD_ID = "edit-your-motion"
SPATIAL_ATTN = ("rca", "self", "sparse_causal")
STAGE_NAMES = ("temporal", "spatial", "joint")
MASK_SOURCES = ("auto", "given", "skeleton", "none")
OFFSET_MODES = ("first_frame", "median", "per_frame")


@dataclass
class MotionAdapterConfig:
    """Motion Attention (spec §2.4): self -> cross (query from the skeleton, key / value from the UNet) -> temporal."""

    enabled: bool = True
    levels: list[int] | None = None  # residual indices that get an adapter (0..n_down; n_down = mid); None: all [S]
    heads: int = 8  # [S] SD-1.5 convention
    inner_dim_ratio: float = 1.0  # attention width / channels; < 1 shrinks the ~138 M parameters at full size [S]

    def __post_init__(self):
        if self.heads < 1 or not 0 < self.inner_dim_ratio <= 4:
            raise ValueError("model.motion_adapter: heads >= 1 and 0 < inner_dim_ratio <= 4 are required")


@dataclass
class ModelConfig:
    """The base (SD-1.5 layout), its OpenPose ControlNet, and how the UNet is inflated (spec §2.2-2.5)."""

    base: str | None = None  # None: bundled t2i-tiny (paper: SD-1.5)
    controlnet: str | None = None  # None: bundled controlnet-openpose-tiny (spec: lllyasviel/sd-controlnet-openpose)
    spatial_attn: str = "rca"  # rca | self (w/o RCA) | sparse_causal (Tune-A-Video)
    rca_value_frames: str = "prev_next"  # [S] the prose; "prev_self" is Eq. 9 as printed
    rca_include_self: bool = False  # [S] interior frames do not attend to themselves
    motion_adapter: MotionAdapterConfig = field(default_factory=MotionAdapterConfig)
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        if self.spatial_attn not in SPATIAL_ATTN:
            raise ValueError(f"model.spatial_attn must be one of {SPATIAL_ATTN}, got {self.spatial_attn!r}")
        if self.rca_value_frames not in ("prev_next", "prev_self"):
            raise ValueError(f"model.rca_value_frames must be prev_next or prev_self, got {self.rca_value_frames!r}")


@dataclass
class DataConfig:
    """The one case: source video (or one photo repeated), its prompt, skeletons and person masks."""

    source: str | None = None  # video, frame folder or image
    prompt: str = ""
    resolution: int = 512  # [S] square side
    num_frames: int = 8  # [S][L]
    frame_stride: int = 1
    start: int = 0  # first source frame
    repeat: int | None = None  # a single image: frames to make (default: num_frames)
    poses: str | None = None  # source skeletons (OpenPose JSON folder / .npz); None: estimated
    pose_backend: str = "blazepose"  # estimator when `poses` is None (synthpose for the synthetic world)
    masks: str = "auto"  # auto (segmenter, else from the skeleton) | given (masks_path) | skeleton | none
    masks_path: str | None = None  # folder of PNG masks, one per source frame
    mask_threshold: float = 0.5  # [S]
    conf: float = 0.3  # [S] keypoint confidence

    def __post_init__(self):
        if self.masks not in MASK_SOURCES:
            raise ValueError(f"data.masks must be one of {MASK_SOURCES}, got {self.masks!r}")
        if self.resolution < 8 or self.resolution % 8 or self.num_frames < 1 or self.frame_stride < 1:
            raise ValueError("data.resolution must be a multiple of 8, num_frames >= 1 and frame_stride >= 1")


@dataclass
class StageConfig(BaseStageConfig):
    """One fine-tuning stage (spec §2.7): which modules train and whether the frames are masked to the person.

    ``temporal`` (stage 1): temporal attention + MA on the masked frames; ``spatial`` (stage 2): RCA (every attn1
    projection, or only ``to_q`` with ``rca_trainable: q_only``) + MA on the whole frames; ``joint`` (w/o STL):
    all three on the whole frames.
    """

    steps: int = 300  # [P]
    lr: float = 3.0e-5  # [P]
    mask_background: bool | None = None  # None: True for temporal, False otherwise
    rca_trainable: str = "all"  # all | q_only [L]
    #: draw the training timestep from [0, max_timestep) instead of the whole schedule [S]. None: the paper's
    #: uniform t over all T steps. A cap keeps the fine-tune off the high-noise steps where the DDIM-inverted
    #: noise is shaped, so the sampler follows the new skeletons instead of the source motion (toy scale: 200).
    max_timestep: int | None = None

    def __post_init__(self):
        if self.name not in STAGE_NAMES:
            raise ValueError(f"train.stages: name must be one of {', '.join(STAGE_NAMES)}, got {self.name!r}")
        if self.rca_trainable not in ("all", "q_only"):
            raise ValueError(f"train.stages[{self.name}].rca_trainable must be all or q_only")
        if self.max_timestep is not None and self.max_timestep < 1:
            raise ValueError(f"train.stages[{self.name}].max_timestep must be >= 1 or null, got {self.max_timestep}")
        super().__post_init__()

    @property
    def masked(self) -> bool:
        return self.name == "temporal" if self.mask_background is None else bool(self.mask_background)


def _default_stages() -> list[StageConfig]:
    return [StageConfig("temporal", 300, 3.0e-5), StageConfig("spatial", 300, 3.0e-5)]


@dataclass
class TrainConfig(StagedTrainConfig):
    """Both stages and the loop settings (spec §3 choices: AdamW, constant lr, batch of one clip)."""

    stages: list[StageConfig] = field(default_factory=_default_stages)
    batch_size: int = 1
    grad_accum: int = 1
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    checkpoint_every: int = 100
    log_every: int = 10


@dataclass
class OffsetConfig:
    """Skeleton offset (Algorithm 1): the reference skeletons moved and scaled onto the source body."""

    enabled: bool = True
    mode: str = "first_frame"  # [S] one map per sequence keeps the reference's own trajectory
    keep_aspect: bool = False  # [P] anisotropic
    conf: float = 0.3

    def __post_init__(self):
        if self.mode not in OFFSET_MODES:
            raise ValueError(f"inference.skeleton_offset.mode must be one of {OFFSET_MODES}, got {self.mode!r}")


@dataclass
class InferenceConfig:
    """DDIM inversion of the source, then DDIM sampling with the target skeletons (spec §2.6, §2.9)."""

    steps: int = 50  # [S] sampling steps
    inversion_steps: int | None = None  # None: `steps` [S]
    inversion_model: str = "finetuned"  # finetuned | base [S]
    guidance_scale: float = 1.0  # [P] no classifier-free guidance
    eta: float = 0.0
    controlnet_scale: float = 1.0
    skeleton_offset: OffsetConfig = field(default_factory=OffsetConfig)

    def __post_init__(self):
        if self.inversion_model not in ("finetuned", "base"):
            raise ValueError("inference.inversion_model must be finetuned or base")
        if self.steps < 1 or (self.inversion_steps is not None and self.inversion_steps < 1):
            raise ValueError("inference.steps and inference.inversion_steps must be >= 1")


@dataclass
class EditYourMotionConfig:
    method: str = METHOD_ID
    base: str | None = None
    description: str = ""
    seed: int = 33  # [L] MotionEditor's config
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self):
        if self.method.replace("_", "-") != METHOD_ID:
            raise ValueError(f"method must be {METHOD_ID!r}, got {self.method!r}")


#: The bundled 64 px models' settings (recipes/edit_your_motion/tiny_synth.yaml holds the same values): the toy
#: base learns from one clip only at a much higher learning rate than SD-1.5's 3e-5, and its attention is narrow.
#: Fine-tuning only on t < 200 and ControlNet scale 2 keep the edit on the target skeletons (recipes README).
BUNDLED_OVERRIDES = (
    "data.resolution=64",
    "data.pose_backend=synthpose",
    "model.motion_adapter.heads=4",
    "train.stages=[{name: temporal, steps: 150, lr: 1.0e-3, max_timestep: 200},"
    " {name: spatial, steps: 150, lr: 1.0e-3, max_timestep: 200}]",
    "train.checkpoint_every=50",
    "inference.controlnet_scale=2.0",
)


def load_recipe(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> EditYourMotionConfig:
    """Load a recipe (and its `base:` chain) plus `--set` overrides into an `EditYourMotionConfig`."""
    from dancegen.config import load_recipe_chain

    return load_recipe_chain(EditYourMotionConfig, path, overrides)


load_config = load_recipe
