"""Recipe of the bundled text-to-image model and its ControlNets (`recipes/t2i/*.yaml`, `method: t2i`).

One recipe trains one model: with `control: null` the SD-1.5-layout text-to-image folder (UNet + CLIP text encoder
from scratch; the autoencoder taken from another model, or trained first by a `vae` stage), with `control: openpose`
or `control: depth` a diffusers ControlNet on a frozen base (`model.base`). Every number is our choice for the toy
world (none comes from a paper).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dancegen.core.stages import StageConfig, StagedTrainConfig

CONTROLS = ("openpose", "depth")
# vae: the autoencoder (first, with model.vae_from null); t2i_person: the t2i training with person_weight, after t2i
STAGES = ("vae", "t2i", "t2i_person", "controlnet")


@dataclass
class T2IDataConfig:
    """Frames of `dancegen synth` with their captions, pose maps and depth maps."""

    num_clips: int = 1200
    seed: int = 2000                 # master seed; the held-out evaluation uses another (quality.HELDOUT_SEED)
    size: int = 64
    num_frames: int = 24
    frame_step: int = 3              # frames kept per clip: num_frames / frame_step
    captions_per_clip: int = 16
    camera: str | None = None        # None: each clip samples its camera motion
    depth_encoding: str = "inverse_norm"

    def __post_init__(self):
        if min(self.num_clips, self.size, self.num_frames, self.frame_step, self.captions_per_clip) < 1:
            raise ValueError("data: num_clips, size, num_frames, frame_step and captions_per_clip must be positive")


@dataclass
class T2IModelConfig:
    """Sizes of the UNet and text encoder (`control: null`), or of the ControlNet and where its base is."""

    # a bundled name or an SD-1.5-layout folder whose vae/ is reused, frozen; null: a `vae` stage trains one (or,
    # with init_from, that model's own is kept)
    vae_from: str | None = "dyl-tiny"
    vae_channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # vae stage: 64 px -> 16x16 latents
    vae_latent_channels: int = 4
    unet_channels: list[int] = field(default_factory=lambda: [32, 64, 96])
    attention: list[bool] = field(default_factory=lambda: [False, True, True])  # cross-attention per level
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 16
    text_width: int = 64
    text_layers: int = 3
    text_heads: int = 4
    prediction_type: str = "v_prediction"
    zero_terminal_snr: bool = True   # with SD's schedule the toy model takes colours from the noise, not the text
    base: str | None = None          # ControlNet recipes: the text-to-image model folder they train on
    init_from: str | None = None     # start from this model folder (same kind) instead of random weights

    def __post_init__(self):
        if len(self.attention) != len(self.unet_channels):
            raise ValueError("model.attention needs one entry per model.unet_channels level")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"model.prediction_type must be epsilon or v_prediction, got {self.prediction_type!r}")


@dataclass
class T2IStageConfig(StageConfig):
    batch_size: int = 32
    # loss weight of a latent pixel: 1 + person_weight * (share of it the dancer covers). The dancer is ~10 % of a
    # frame and is what the captions describe; with a flat loss the toy model learnt backgrounds long before colours.
    person_weight: float = 0.0
    kl_weight: float = 1.0e-6        # vae stage: weight of the KL term (SD's autoencoder: 1e-6)
    l1_weight: float = 1.0           # vae stage: weight of an L1 term beside the squared error

    def __post_init__(self):
        super().__post_init__()
        if self.name not in STAGES:
            raise ValueError(f"train.stages: unknown stage {self.name!r} (one of {', '.join(STAGES)})")
        if self.person_weight < 0:
            raise ValueError(f"train.stages[{self.name}]: person_weight must be >= 0, got {self.person_weight}")


@dataclass
class T2ITrainConfig(StagedTrainConfig):
    stages: list[T2IStageConfig] = field(default_factory=lambda: [T2IStageConfig(name="t2i", steps=3000, lr=1e-3)])
    device: str = "cpu"
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    prompt_dropout: float = 0.1      # empty prompt (classifier-free guidance training); ControlNets: 0.3
    # ControlNets: lr multiplier of the new layers (the condition embedding and the zero-initialised residual
    # outputs, train.ZERO_CONVS). At 1 they stayed near zero for the first 250 steps here (ControlNet's slow start);
    # a larger lr on just these layers shortens it without touching the copied encoder.
    zero_conv_lr_scale: float = 1.0
    # ControlNets: "zero" (ControlNet's init: the condition embedding's last conv at zero, so the copied encoder first
    # sees no condition) or "matched" (that conv random, scaled so the embedding's std matches the encoder's conv_in
    # features on a batch; the residual outputs stay at zero, so the base is still unchanged at step 0). With "zero"
    # the toy nets' loss did not depend on the condition after 250 steps.
    cond_embedding_init: str = "zero"

    def __post_init__(self):
        super().__post_init__()
        if self.cond_embedding_init not in ("zero", "matched"):
            raise ValueError(f"train.cond_embedding_init must be zero or matched, got {self.cond_embedding_init!r}")
    log_every: int = 50
    checkpoint_every: int = 250
    keep_checkpoints: int = 2


@dataclass
class T2IRecipe:
    method: str = "t2i"
    base: str | None = None
    seed: int = 0
    control: str | None = None       # null: the text-to-image model; openpose | depth: a ControlNet
    data: T2IDataConfig = field(default_factory=T2IDataConfig)
    model: T2IModelConfig = field(default_factory=T2IModelConfig)
    train: T2ITrainConfig = field(default_factory=T2ITrainConfig)

    def __post_init__(self):
        if self.method != "t2i":
            raise ValueError(f"method must be 't2i', got {self.method!r}")
        if self.control is not None and self.control not in CONTROLS:
            raise ValueError(f"control must be null or one of {', '.join(CONTROLS)}, got {self.control!r}")
        want = ("vae", "t2i", "t2i_person") if self.control is None else ("controlnet",)
        names = [s.name for s in self.train.stages]
        bad = [n for n in names if n not in want]
        if bad:
            raise ValueError(f"train.stages: a recipe with control: {self.control} trains stages {list(want)}, "
                             f"not {bad}")
        if self.control is None:
            has_vae = "vae" in names
            if has_vae and (names.index("vae") != 0 or names.count("vae") > 1):
                raise ValueError("train.stages: the vae stage comes first, once (the others train on its latents)")
            if has_vae and self.model.vae_from:
                raise ValueError("model.vae_from: set to null when a vae stage trains the autoencoder")
            if has_vae and self.model.init_from:
                raise ValueError("model.init_from: a model trained on another autoencoder's latents cannot start "
                                 "a run whose vae stage trains a new one (drop one of them)")
            if not has_vae and not self.model.vae_from and not self.model.init_from:
                raise ValueError("model.vae_from is null: name an autoencoder to reuse or add a vae stage first")
        if self.control is not None and not self.model.base:
            raise ValueError("model.base: a ControlNet recipe needs the text-to-image model it trains on")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T2IRecipe:
    from dancegen.config import load_recipe_chain

    return load_recipe_chain(T2IRecipe, path, overrides)
