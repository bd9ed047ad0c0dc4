"""Typed recipe of Dance-Your-Latents (spec dance-your-latents.md §7): model, data, flow, train, inference, eval.

Recipes are YAML files validated into `DanceYourLatentsConfig` with `dancegen.config.load_config` (unknown keys and
wrong types fail naming the key and the file). A recipe may overlay another with `base: other.yaml` (path relative
to the recipe); `load_recipe` checks every file of the chain on its own, then merges them in order (base first) and
applies `--set key=value` overrides last. Values the paper does not give are marked in the recipes with their source
(`choice` or `disco-code`); defaults here are the paper's / the spec's. No torch import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dancegen.core.stages import StageConfig as BaseStageConfig
from dancegen.core.stages import StagedTrainConfig

METHOD_ID = "dance-your-latents"
VARIANTS = ("disco", "vd", "vd_sa", "vd_sa_mf")
ATTENTIONS = ("subspace", "temporal", "crossframe_first", "crossframe_middle", "crossframe_previous",
              "crossframe_all")
STAGE_NAMES = ("vae", "disco", "stsa_only", "finetune")
LAYOUTS = ("tiktok",)
REFERENCE_FRAMES = ("first_frame", "clip_first", "random")
FLOW_SOURCES = ("pose", "raft")
RAFT_INPUTS = ("densepose", "openpose")
REFERENCE_MODES = ("local", "global")
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class SharedNoiseConfig:
    """One Gaussian noise sample for every frame (paper §4.2); `train` is a [choice] (spec §2.3)."""

    train: bool = True
    infer: bool = True


@dataclass
class TinyModelConfig:
    """Sizes of the tiny model (`model.base: tiny`): a small SD-layout UNet, VAE and CLIP vision tower.

    The VAE downsamples by 2**(len(vae_channels) - 1); `pose_embedding_channels` must halve the resolution as often
    (len - 1 == len(vae_channels) - 1) so pose maps at image size meet latents at latent size.
    """

    unet_channels: list[int] = field(default_factory=lambda: [32, 64])
    cross_attn_levels: int = 1  # how many of the first UNet levels have cross/self-attention (and so STSA blocks)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    vae_channels: list[int] = field(default_factory=lambda: [32, 64])
    latent_channels: int = 4
    clip_image_size: int = 32
    clip_patch_size: int = 8
    clip_width: int = 32
    clip_layers: int = 2
    context_dim: int = 32  # UNet cross_attention_dim = CLIP projection size
    pose_embedding_channels: list[int] = field(default_factory=lambda: [16, 32])

    def __post_init__(self):
        if len(self.unet_channels) < 1 or not 1 <= self.cross_attn_levels <= len(self.unet_channels):
            raise ValueError(f"model.tiny: need 1 <= cross_attn_levels <= len(unet_channels), got "
                             f"{self.cross_attn_levels} and {list(self.unet_channels)}")
        if len(self.pose_embedding_channels) != len(self.vae_channels):
            raise ValueError(f"model.tiny.pose_embedding_channels must have len(vae_channels) = {len(self.vae_channels)}"
                             f" entries (one halving per VAE downsampling), got {list(self.pose_embedding_channels)}")
        for name in ("unet_channels", "vae_channels", "pose_embedding_channels"):
            if any(c < 1 for c in getattr(self, name)):
                raise ValueError(f"model.tiny.{name} must be positive, got {list(getattr(self, name))}")
        if any(c % self.norm_num_groups for c in list(self.unet_channels) + list(self.vae_channels)):
            raise ValueError(f"model.tiny: channel counts must be multiples of norm_num_groups={self.norm_num_groups}")
        if self.clip_image_size % self.clip_patch_size:
            raise ValueError("model.tiny.clip_image_size must be a multiple of clip_patch_size")


@dataclass
class ModelConfig:
    """Architecture: which base weights, which DYL variant and attention ablation (spec §2, Tables 1-2)."""

    base: str = "lambdalabs/sd-image-variations-diffusers"  # "tiny", or a folder / hub id in sd-image-variations layout
    init_from: str | None = None  # a trained DYL model folder (e.g. the DisCo baseline, or stage 1's output)
    variant: str = "vd_sa_mf"  # disco (frame by frame, independent noise) | vd | vd_sa | vd_sa_mf  [paper Table 1]
    attention: str = "subspace"  # subspace | temporal | crossframe_{first,middle,previous,all}  [paper Table 2]
    subspace_size: list[int] = field(default_factory=lambda: [4, 4, 4])  # [s_f, s_h, s_w]  [paper]
    shift: bool = True  # shifted half of every STSA block, shift = s // 2  [paper]
    ff: bool = False  # feed-forward after the STSA pair  [choice]
    frame_pos_emb: bool = True  # sinusoidal -> linear frame embedding at the STSA input  [choice]
    shared_noise: SharedNoiseConfig = field(default_factory=SharedNoiseConfig)
    reference: str = "local"  # CLIP context: local (257 projected tokens, DisCo combine_clip_local) | global
    background_controlnet: bool = True  # DisCo's background ControlNet on the masked-background VAE latent
    prediction_type: str = "epsilon"  # what the UNet predicts: epsilon (SD-1.5, DisCo, the paper) | v_prediction
    zero_terminal_snr: bool = False  # rescale the betas to zero SNR at t = T, trailing DDIM timesteps (Lin et al.)
    pose_embedding_channels: list[int] = field(default_factory=lambda: [16, 32, 96, 256])  # SD pose ControlNet
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"model.variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"model.attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}")
        if len(self.subspace_size) != 3 or any(int(s) < 1 for s in self.subspace_size):
            raise ValueError(f"model.subspace_size must be 3 positive ints [s_f, s_h, s_w], got "
                             f"{list(self.subspace_size)}")
        if self.variant == "vd_sa_mf" and self.attention != "subspace":
            raise ValueError(f"model.variant vd_sa_mf (motion-flow align) needs attention subspace, got "
                             f"{self.attention!r}: flows guide the subspaces of STSA only")
        if self.variant in ("disco", "vd") and self.attention != "subspace":
            raise ValueError(f"model.attention {self.attention!r} is an ablation of the SA variant; use variant vd_sa "
                             f"(variant {self.variant} has no temporal attention)")
        if self.reference not in REFERENCE_MODES:
            raise ValueError(f"model.reference must be one of {', '.join(REFERENCE_MODES)}, got {self.reference!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"model.prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got "
                             f"{self.prediction_type!r}")
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise ValueError("model.zero_terminal_snr needs model.prediction_type v_prediction: at zero SNR an "
                             "epsilon prediction gives no x0 (DDIM divides by sqrt(alpha_T) = 0)")

    @property
    def uses_flow(self) -> bool:
        """Whether the model consumes motion flows (the MF variant)."""
        return self.variant == "vd_sa_mf"

    @property
    def has_temporal_blocks(self) -> bool:
        """Whether new (trainable) temporal blocks are inserted: STSA or temporal attention of the SA variants."""
        return self.variant in ("vd_sa", "vd_sa_mf") and self.attention in ("subspace", "temporal")


@dataclass
class SynthDataConfig:
    """Generate the training data with `dancegen synth --layout tiktok` when `data.root` holds no clips yet."""

    num_clips: int = 0  # 0: never generate (real data)
    size: int = 64
    num_frames: int = 24
    fps: float = 24.0
    seed: int = 0
    camera: str | None = "static"

    def __post_init__(self):
        if self.num_clips < 0 or self.size < 16 or self.num_frames < 2:
            raise ValueError("data.synth: num_clips >= 0, size >= 16 and num_frames >= 2 are required")


@dataclass
class DataConfig:
    """TikTok in the DisCo/HDNet layout (what `dancegen synth --layout tiktok` writes); see the recipe README."""

    root: str = "data/TikTok_dataset"
    layout: str = "tiktok"
    split: str | None = "train"  # reads <root>/<split>.txt (one video folder per line); all folders when it is missing
    resolution: list[int] = field(default_factory=lambda: [256, 256])  # [H, W]  [disco-code]
    num_frames: int = 16  # T  [paper]
    stride: int = 1  # frame stride  [choice]
    reference: str = "first_frame"  # first frame of the video [disco-code] | clip_first | random (a frame of the video)
    image_dir: str = "images"
    mask_dir: str = "masks"  # person masks (white = person); DisCo splits the reference into fg / bg with them
    pose_dir: str = "openpose_json"  # OpenPose JSON per frame (`dancegen extract-pose` writes it for real videos)
    densepose_dir: str = "densepose"  # IUV renders (only for flow.source raft with raft_input densepose)
    synth: SynthDataConfig = field(default_factory=SynthDataConfig)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"data.layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if len(self.resolution) != 2 or any(int(r) < 8 for r in self.resolution):
            raise ValueError(f"data.resolution must be [H, W] with both >= 8, got {list(self.resolution)}")
        if self.num_frames < 1 or self.stride < 1:
            raise ValueError(f"data.num_frames and data.stride must be >= 1, got {self.num_frames}, {self.stride}")
        if self.reference not in REFERENCE_FRAMES:
            raise ValueError(f"data.reference must be one of {', '.join(REFERENCE_FRAMES)}, got {self.reference!r}")


@dataclass
class FlowConfig:
    """Motion flow for the MF variant (paper §4.4.1, spec §2.5)."""

    source: str = "pose"  # pose: skeleton-driven flow (dancegen.flow.pose_flow) | raft: RAFT on rendered pose images
    raft_input: str = "densepose"  # raft only: densepose (IUV renders, paper) | openpose (rendered skeletons)
    raft_iters: int = 12  # [choice]
    raft_weights: str | None = None  # torchvision raft_large checkpoint (default $DANCEGEN_WEIGHTS_DIR/raft/)
    downsample: str = "area"  # flow -> latent resolution, vectors rescaled  [choice]

    def __post_init__(self):
        if self.source not in FLOW_SOURCES:
            raise ValueError(f"flow.source must be one of {', '.join(FLOW_SOURCES)}, got {self.source!r}")
        if self.raft_input not in RAFT_INPUTS:
            raise ValueError(f"flow.raft_input must be one of {', '.join(RAFT_INPUTS)}, got {self.raft_input!r}")
        if self.downsample not in ("area", "bilinear"):
            raise ValueError(f"flow.downsample must be area or bilinear, got {self.downsample!r}")
        if self.raft_iters < 1:
            raise ValueError(f"flow.raft_iters must be >= 1, got {self.raft_iters}")


@dataclass
class StageConfig(BaseStageConfig):
    """One training stage (paper §4.5 / spec §3).

    Stages: `stsa_only` trains only the inserted temporal blocks; `finetune` trains everything except the
    ControlNets, the VAE and the CLIP tower (the paper's two stages). `disco` trains the frame-by-frame baseline
    (UNet, both ControlNets, CLIP projection) and `vae` the autoencoder (reconstruction + KL); the tiny model, which
    has no pretrained weights, needs both first.
    """

    name: str = "stsa_only"
    steps: int = 50000
    lr: float = 2.0e-4
    trainable: list[str] | None = None  # parameter patterns replacing the stage's default set (advanced)
    kl_weight: float = 1.0e-6  # vae stage only: weight of the KL term (SD's autoencoder used 1e-6)

    def __post_init__(self):
        if self.name not in STAGE_NAMES:
            raise ValueError(f"train.stages: name must be one of {', '.join(STAGE_NAMES)}, got {self.name!r}")
        super().__post_init__()


def _default_stages() -> list[StageConfig]:
    return [StageConfig("stsa_only", 50000, 2.0e-4), StageConfig("finetune", 20000, 2.0e-5)]


@dataclass
class TrainConfig(StagedTrainConfig):
    """Both stages and the loop settings shared by them (`core.stages`)."""

    stages: list[StageConfig] = field(default_factory=_default_stages)
    batch_size: int = 1  # clips per GPU  [choice]
    grad_accum: int = 1
    optimizer: str = "adamw"  # [choice]
    weight_decay: float = 0.01  # [choice]
    grad_clip: float | None = 1.0
    ref_dropout: float = 0.05  # CFG reference dropout  [disco-code]

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.ref_dropout < 1.0:
            raise ValueError(f"train.ref_dropout must be in [0, 1), got {self.ref_dropout}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train.batch_size and train.grad_accum must be >= 1")


@dataclass
class InferenceConfig:
    """Sampling (spec §3): DDIM 50, eta 0, CFG 1.5 [disco-code]; 16-frame windows for long videos [choice]."""

    steps: int = 50
    eta: float = 0.0
    guidance_scale: float = 1.5
    window: int = 16  # frames per context window (long videos)
    overlap: int = 0  # frames shared by consecutive windows (0: DYL's non-overlapping windows)
    weighting: str = "triangular"  # blending of overlapping windows
    cfg_mode: str = "batched"  # batched | sequential (half the activation memory)
    pose_scale: float = 1.0  # pose ControlNet conditioning scale
    background_scale: float = 1.0  # background ControlNet conditioning scale
    decode_chunk_size: int = 8  # frames per VAE decode call
    device: str = "auto"
    dtype: str = "auto"  # auto (fp32 on CPU, bf16/fp16 on CUDA) | fp32 | fp16 | bf16

    def __post_init__(self):
        if self.steps < 1 or self.window < 1 or not 0 <= self.overlap < self.window:
            raise ValueError("inference: steps >= 1, window >= 1 and 0 <= overlap < window are required")
        if self.guidance_scale < 0 or self.decode_chunk_size < 1:
            raise ValueError("inference: guidance_scale >= 0 and decode_chunk_size >= 1 are required")
        if self.cfg_mode not in ("batched", "sequential"):
            raise ValueError(f"inference.cfg_mode must be batched or sequential, got {self.cfg_mode!r}")


@dataclass
class EvalConfig:
    """Metrics of Table 1 as `dancegen evaluate` names them (spec §4)."""

    metrics: list[str] = field(default_factory=lambda: ["fid", "ssim", "psnr-disco", "psnr", "lpips-disco",
                                                         "l1-tiktok", "fid-vid", "fvd-disco"])
    fvd_clips: str = "sliding"  # 16-frame clips, stride 1  [disco-code]


@dataclass
class DanceYourLatentsConfig:
    """A Dance-Your-Latents recipe."""

    method: str = METHOD_ID
    base: str | None = None  # recipe this one overlays (relative to this file); merged by load_recipe
    seed: int = 42  # [disco-code]
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if self.method.replace("_", "-") != METHOD_ID:
            raise ValueError(f"method must be {METHOD_ID!r}, got {self.method!r}")
        s_f = int(self.model.subspace_size[0])
        if self.inference.window < min(s_f, self.data.num_frames) and self.model.has_temporal_blocks:
            raise ValueError(f"inference.window ({self.inference.window}) is shorter than a temporal subspace "
                             f"(s_f={s_f})")


# ------------------------------------------------------------------------------------------------------ loading
def load_recipe(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> DanceYourLatentsConfig:
    """Load a recipe (and its `base:` chain) plus `--set` overrides into a `DanceYourLatentsConfig`.

    Each file is first checked alone with `dancegen.config.load_config` (so an unknown key or a wrong type names the
    file it is in); then the chain is merged base first and the overrides applied.

    Raises:
        InputError: unknown key / wrong type (naming key and file), malformed YAML, a failed validation.
    """
    from dancegen.config import load_recipe_chain

    return load_recipe_chain(DanceYourLatentsConfig, path, overrides)
