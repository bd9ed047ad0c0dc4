"""Typed recipe of Dance Any Beat / DabFusion (spec dance-any-beat.md §7): data, music, LFAE, diffusion, train,
inference, eval.

Recipes are YAML validated into `DanceAnyBeatConfig` (unknown keys and wrong types fail naming the key and the file);
`base: other.yaml` overlays another recipe (`dancegen.config.load_recipe_chain`). Defaults are the paper's values
([P]), LFDM's where the paper is silent ([L]) and our choices ([A], spec gaps G1-G12). No torch import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dancegen.core.stages import StageConfig as BaseStageConfig
from dancegen.core.stages import StagedTrainConfig

METHOD_ID = "dance-any-beat"
ENCODERS = ("scratch", "clap", "wav2clip", "clap+wav2clip")
STAGE_NAMES = ("adapters", "lfae", "diffusion")
SAMPLERS = ("ddpm", "ddim")
LAYOUTS = ("aist",)


@dataclass
class SynthDataConfig:
    """Synthetic AIST++-layout data rendered by `train` when missing (`num_clips: 0` = use real data only)."""

    num_clips: int = 0
    size: int = 64
    seconds: float = 8.0
    fps: float = 10.0
    seed: int = 0


@dataclass
class DataConfig:
    """AIST++ (its layout: videos/, wavs/, splits/) resampled to `fps`, centre-cropped and resized (spec §3)."""

    root: str = "data/aistpp"  # recipes for real data read ${oc.env:AISTPP_ROOT}
    layout: str = "aist"
    split: str = "by_music"  # train on every music except `test_music` [P: split by music]
    cameras: list[str] = field(default_factory=lambda: ["all"])  # c01..c09 or all [P: all nine]
    test_music: list[str] = field(default_factory=lambda: ["mBR0", "mPO1", "mLO2", "mMH3", "mLH4", "mHO5", "mWA0",
                                                           "mKR2", "mJS3", "mJB5"])  # [A] G11
    resolution: int = 128  # [P]
    fps: float = 10.0  # [A] G1
    num_frames: int = 40  # N generated frames after the reference [P]; N + 1 frames are loaded (G6)
    window_stride: int = 4  # frames between the starts of training windows [A]
    synth: SynthDataConfig = field(default_factory=SynthDataConfig)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"data.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.num_frames < 2 or self.resolution < 8 or self.fps <= 0 or self.window_stride < 1:
            raise ValueError("data: num_frames >= 2, resolution >= 8, fps > 0 and window_stride >= 1 are required")


@dataclass
class MusicConfig:
    """The music embedding e = concat(e_c, e_w, e_b) (paper §3.2) or our from-scratch encoder.

    `encoder`: clap / wav2clip / clap+wav2clip (frozen pretrained encoders + trained MLP adapters, the paper's; need
    their weights in `clap` / `wav2clip`) or scratch (a small temporal conv net on librosa features, trained with the
    diffusion model; needs no weights). `beats`: add the per-frame beat vector e_b (Table 6). `per_frame`: [A] also
    condition every frame on its own music features (a per-frame FiLM in the U-Net); the paper feeds only the global
    vector. Features and beats are computed once per song at `fps`, then sliced per clip.
    """

    encoder: str = "clap+wav2clip"  # [P]
    beats: bool = True  # [P] Table 6
    beat_sigma: float = 0.0  # Gaussian smoothing of the beat vector in frames (0: one-hot) [A] G2
    per_frame: bool = False  # [A] our addition
    dim: int = 512  # scratch encoder width / adapter output [A]
    layers: int = 3  # scratch encoder depth [A]
    n_mels: int = 32
    tempogram_bins: int = 16
    start_bpm: float = 120.0  # beat_track tempo prior (AIST++ names give it per track when known) [F]
    clap: str | None = None  # local folder or hub id of a transformers ClapModel (e.g. laion/clap-htsat-unfused)
    wav2clip: str | None = None  # Wav2CLIP checkpoint file (null: looked up in the weights folders)
    embed_dim: int = 512  # width of the frozen CLAP / Wav2CLIP embeddings (both 512 for the released models)
    clip: str = "openai/clip-vit-base-patch32"  # CLIP image model: the Wav2CLIP adapter's target [A] spec §2.2
    adapter_epochs: int = 100  # [P]
    sample_rate: int = 22050  # analysis rate for librosa features and beats [T]

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"music.encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.dim < 1 or self.layers < 1 or self.n_mels < 1 or self.tempogram_bins < 1:
            raise ValueError("music: dim, layers, n_mels and tempogram_bins must be >= 1")
        if self.embed_dim < 1 or self.adapter_epochs < 0:
            raise ValueError("music: embed_dim >= 1 and adapter_epochs >= 0 are required")


@dataclass
class LFAEConfig:
    """Latent flow autoencoder (paper §3.3; FOMM sizes [L/FOMM], spec §2.3)."""

    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    num_bottleneck_blocks: int = 6
    num_kp: int = 10
    estimate_jacobian: bool = True
    kp_block_expansion: int = 32
    kp_max_features: int = 1024
    kp_num_blocks: int = 5
    kp_scale_factor: float = 0.25
    kp_temperature: float = 0.1
    dm_block_expansion: int = 64
    dm_max_features: int = 1024
    dm_num_blocks: int = 5
    dm_scale_factor: float = 0.25
    warp_skips: bool = False  # G7: paper-literal Eq. 1 warps only z


@dataclass
class LFAELossConfig:
    """LFAE loss (G5): FOMM's pyramid VGG-19 perceptual loss with `vgg_weights`, else a pixel pyramid substitute."""

    vgg_weights: str | None = None  # torchvision vgg19 state dict (.pth); null: the stated substitute
    perceptual_weights: list[float] = field(default_factory=lambda: [10.0, 10.0, 10.0, 10.0, 10.0])
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.125])
    equivariance_value: float = 10.0
    equivariance_jacobian: float = 10.0
    sigma_affine: float = 0.05


@dataclass
class UNetConfig:
    """The conditional 3D U-Net denoiser (VDM / LFDM Unet3D) [P/L]."""

    dim: int = 64
    dim_mults: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    attn_heads: int = 8
    attn_dim_head: int = 32
    resnet_groups: int = 8
    use_spatial_attention: bool = True
    use_temporal_attention: bool = True


@dataclass
class DiffusionConfig:
    """Gaussian diffusion on [flow, occlusion] (paper §3.4): T = 1000, cosine schedule, dynamic thresholding 0.9."""

    timesteps: int = 1000
    schedule: str = "cosine"
    dynamic_threshold: float = 0.9
    null_cond_prob: float = 0.1  # [L] condition dropout for classifier-free guidance
    # What the diffusion model generates [A]. "grid": the paper's / LFDM's a0 = [sampling grid, 2 occ - 1] as it is.
    # "normalized": the flow's offset from the identity grid divided by its standard deviation, and 2 occ - 1 minus its
    # mean over its standard deviation (statistics of the training targets, like SD's latent scaling factor); the
    # dynamic thresholding still acts on a0 itself (mapped back and forth). For small motions (64 px toy dancers:
    # offsets of std 0.03), "grid" leaves the denoiser to redraw an almost constant identity ramp through unit noise.
    target: str = "grid"
    target_stats: list[float] | None = None  # [flow_std, occlusion_mean, occlusion_std]; filled in by `train`
    prediction: str = "eps"  # the paper's (Eq. 6); "v" [A]: see diffusion.GaussianDiffusion
    # [A] weight of the frame-difference term of the loss (MDM's velocity loss on the prediction error; see
    # diffusion.GaussianDiffusion). 0 = the paper's loss. Beat timing lives in the flows' frame differences.
    velocity_weight: float = 0.0

    def __post_init__(self):
        if self.schedule != "cosine":
            raise ValueError(f"diffusion.schedule: only cosine is implemented (the paper's), got {self.schedule!r}")
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"diffusion.prediction must be eps or v, got {self.prediction!r}")
        if self.target not in ("grid", "normalized"):
            raise ValueError(f"diffusion.target must be grid or normalized, got {self.target!r}")
        if self.target_stats is not None and (len(self.target_stats) != 3 or min(self.target_stats[0],
                                                                                 self.target_stats[2]) <= 0):
            raise ValueError("diffusion.target_stats must be [flow_std > 0, occlusion_mean, occlusion_std > 0]")
        if self.velocity_weight < 0:
            raise ValueError(f"diffusion.velocity_weight must be >= 0, got {self.velocity_weight}")
        if not 0.0 < self.dynamic_threshold <= 1.0 or not 0.0 <= self.null_cond_prob < 1.0:
            raise ValueError("diffusion: dynamic_threshold in (0, 1] and null_cond_prob in [0, 1) are required")


@dataclass
class ModelConfig:
    lfae: LFAEConfig = field(default_factory=LFAEConfig)
    loss: LFAELossConfig = field(default_factory=LFAELossConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    init_from: str | None = None  # a trained model folder whose LFAE (and, if it matches, DM) starts this run


@dataclass
class StageConfig(BaseStageConfig):
    """One training stage: `adapters`, `lfae` (stage 1) or `diffusion` (stage 2, LFAE and adapters frozen).

    `adapters` fits the contrastive MLP adapters of the pretrained music branches (G3) for `music.adapter_epochs`
    epochs with Adam at `lr` on batches of `batch_size` pairs; its `steps`, `betas`, `milestones`, `gamma` and
    `grad_clip` are not used (an epoch count fixes its length, as in the paper).
    """

    lr: float = 2.0e-4  # [P]
    batch_size: int = 8
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    milestones: list[float] = field(default_factory=list)  # fractions of `steps` where lr *= gamma
    gamma: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self):
        if self.name not in STAGE_NAMES:
            raise ValueError(f"train.stages: unknown stage {self.name!r} (known: {', '.join(STAGE_NAMES)})")
        super().__post_init__()
        if self.batch_size < 1:
            raise ValueError(f"train.stages {self.name}: batch_size >= 1 is required")


@dataclass
class TrainConfig(StagedTrainConfig):
    """The stages and the loop settings shared by them (`core.stages`)."""

    stages: list[StageConfig] = field(default_factory=lambda: [
        StageConfig("lfae", steps=150_000, lr=2e-4, batch_size=100, betas=[0.5, 0.999], milestones=[0.4, 0.6, 0.8]),
        StageConfig("diffusion", steps=330_000, lr=2e-4, batch_size=16, betas=[0.9, 0.99],
                    milestones=[0.4, 0.6, 0.8])])
    log_every: int = 50
    keep_checkpoints: int = 2

    def __post_init__(self):
        super().__post_init__()
        names = [s.name for s in self.stages]
        if "adapters" in names and "diffusion" in names and names.index("adapters") > names.index("diffusion"):
            raise ValueError(f"train.stages: adapters must come before diffusion (the diffusion model is "
                             f"conditioned on the adapted embeddings), got {names}")


@dataclass
class InferenceConfig:
    """Sampling (G4): the paper's sampler is LFDM's 1000-step DDPM; DDIM is the fast option."""

    sampler: str = "ddpm"
    steps: int = 1000
    eta: float = 1.0
    cond_scale: float = 1.0  # [L] no guidance
    overlap: int = 4  # [A] frames shared by consecutive clips when a song is longer than one clip
    seed: int = 1234  # [A]
    device: str = "auto"

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"inference.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.steps < 1 or self.overlap < 0 or self.cond_scale < 0:
            raise ValueError("inference: steps >= 1, overlap >= 0 and cond_scale >= 0 are required")


@dataclass
class EvalConfig:
    """Metrics as `dancegen evaluate` names them, and the subsets of Tables 2 and 4 (spec §4)."""

    metrics: list[str] = field(default_factory=lambda: ["fvd", "lpips", "psnr", "ssim-gaussian"])
    cameras: list[str] = field(default_factory=list)  # Table 2 subsets (c01 ...)
    genres: list[str] = field(default_factory=list)  # Table 4 subsets (gBR ...)
    sigma: float = 3.0  # 2D-MM Align sigma in frames [F/A] G8
    samples_per_video: int = 1  # [P]


@dataclass
class DanceAnyBeatConfig:
    """A Dance Any Beat recipe."""

    method: str = METHOD_ID
    base: str | None = None
    description: str = ""
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    music: MusicConfig = field(default_factory=MusicConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if self.method.replace("_", "-") != METHOD_ID:
            raise ValueError(f"method must be {METHOD_ID!r}, got {self.method!r}")
        down = 2 ** self.model.lfae.num_down_blocks
        levels = 2 ** (len(self.model.unet.dim_mults) - 1)
        if self.data.resolution % (down * levels):
            raise ValueError(f"data.resolution {self.data.resolution} must be a multiple of {down * levels} "
                             f"(LFAE downsampling {down} x U-Net levels {levels})")
        if self.inference.overlap >= self.data.num_frames:
            raise ValueError(f"inference.overlap ({self.inference.overlap}) must be below data.num_frames "
                             f"({self.data.num_frames})")


def load_recipe(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> DanceAnyBeatConfig:
    """Load a recipe (and its `base:` chain) plus `--set` overrides into a `DanceAnyBeatConfig`."""
    from dancegen.config import load_recipe_chain

    return load_recipe_chain(DanceAnyBeatConfig, path, overrides)
