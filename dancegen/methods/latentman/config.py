"""Typed recipe of LatentMan (spec latentman.md §7): models, motion, rendering, sampler, base, SLA, PWG, eval.

Defaults are the paper's setting with the official code's values where the paper is silent ([P] paper, [C] code,
[A] our choice; spec §6 "ambiguities -> choices"): SD-1.5 + depth ControlNet at 512 px, DDIM 100 steps with
eta 0 and CFG 9, one initial noise for every frame, cross-frame attention to frame 1 in the UNet and the ControlNet,
Spatial Latent Alignment in the first 40 % of the steps, Pixel-Wise Guidance in steps 20-69 of 100.

Step windows are fractions of the step count, ``[start, end)``: step index ``i`` (0 = the noisiest step) is in the
window when ``round(start * T) <= i < round(end * T)``; with T = 100, SLA's ``[0.0, 0.4]`` is iterations 0-39 and
PWG's ``[0.2, 0.7]`` is 20-69, the official code's windows (spec §2.5-2.6), and the same fractions give MasaCtrl's
T = 50 windows ([0, 19] and, with ``[0.4, 0.8]``, [20, 39]).

`BUNDLED_OVERRIDES` shrink the defaults to the bundled 64 px models (`t2i-tiny` + `controlnet-depth-tiny` +
`t2m-tiny`); `text2character` applies them when no `--model` / `--recipe` is given, and
`recipes/latentman/tiny_synth.yaml` spells the same values out (a test keeps the two equal). No torch import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

METHOD_ID = "latentman"
BASES = ("t2v-zero", "masactrl", "per-frame")
MOTION_SOURCES = ("t2m", "procedural", "file")
CHAINS = ("prev_new", "prev", "first")
FEATURES = ("official", "paper")
GRAD_MODES = ("official", "full")
QUALITY_SUFFIX = ", best quality, extremely detailed, HD, ultra-realistic, 8K, HQ, masterpiece, HDR"  # [C]
NEGATIVE_PROMPT = ("longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
                   "worst quality, low quality, deformed body, bloated, ugly, unrealistic")  # [C]


def _check_window(name: str, w: list[float]) -> None:
    if len(w) != 2 or not 0.0 <= w[0] <= w[1] <= 1.0:
        raise ValueError(f"{name} must be [start, end] fractions of the steps with 0 <= start <= end <= 1, got {w}")


def window_steps(window: list[float], num_steps: int) -> range:
    """The step indices ``i`` of a fractional window ``[start, end)`` (0 = the noisiest step)."""
    return range(int(round(window[0] * num_steps)), int(round(window[1] * num_steps)))


@dataclass
class ModelConfig:
    """The text-to-image base and its depth ControlNet (folders, bundled names or cached hub ids)."""

    base: str | None = None  # SD-1.5 layout; None: bundled t2i-tiny (spec: runwayml/stable-diffusion-v1-5)
    controlnet: str | None = None  # depth ControlNet; None: bundled controlnet-depth-tiny (spec: control_v11f1p_sd15_depth)
    device: str = "auto"
    dtype: str = "auto"  # fp16 on CUDA in the code [C]


@dataclass
class MotionConfig:
    """Where the 3D motion comes from and which of its frames become video frames (spec §2.1)."""

    source: str = "t2m"  # t2m (text-to-motion model) | procedural (the synthetic world's choreography) | file
    model: str | None = None  # t2m model folder; None: bundled t2m-tiny (MDM is run by the user: give its file)
    text: str | None = None  # the motion prompt; None: the character prompt is used for both [A]
    file: str | None = None  # a motion file (MDM results.npy, HumanML3D .npy, AIST++ .pkl, BVH, joints3d.npy)
    guidance: float = 2.5  # MDM's classifier-free guidance [C]
    num_frames: int = 60  # motion frames generated (3 s at 20 fps, the notebook's) [C]
    fps: float = 20.0  # MDM / HumanML3D rate [C]
    start: int = 0  # first motion frame used [C]
    stride: int = 2  # motion frames per video frame (`skip` in load_motion) [C]
    seed: int = 0

    def __post_init__(self):
        if self.source not in MOTION_SOURCES:
            raise ValueError(f"motion.source must be one of {', '.join(MOTION_SOURCES)}, got {self.source!r}")
        if self.num_frames < 1 or self.start < 0 or self.stride < 1 or not self.fps > 0:
            raise ValueError("motion: num_frames >= 1, start >= 0, stride >= 1 and fps > 0 are required")


@dataclass
class RenderConfig:
    """The body (capsules, or the user's SMPL model fitted to the joints) seen by one fixed perspective camera
    (spec §2.2)."""

    size: int = 512  # [P] 512 x 512
    yfov_deg: float = 60.0  # [C] pi / 3
    margin: float = 0.1  # [A] free border around the whole sequence's bounding box
    shift_px: list[int] = field(default_factory=lambda: [0, 0])  # (dx, dy) at `size` (the code's np.roll offsets)
    depth_encoding: str = "inverse_norm"  # inverse_norm (near bright, what depth ControlNets saw) | official_linear
    body: str = "capsule"  # capsule (analytic, no licensed files) | smpl (needs smpl_model, the user's SMPL file)
    smpl_model: str | None = None  # SMPL_NEUTRAL.npz (or .pkl, read with the restricted unpickler) for body: smpl
    smpl_iters: int = 150  # [C] fitting iterations (MDM's SMPLify runs 150)

    def __post_init__(self):
        from dancegen.pose.depth import DEPTH_ENCODINGS

        if self.body not in ("capsule", "smpl"):
            raise ValueError(f"render.body must be capsule or smpl, got {self.body!r}")
        if self.body == "smpl" and not self.smpl_model:
            raise ValueError("render.body smpl needs render.smpl_model (your SMPL_NEUTRAL.npz; SMPL is licensed and "
                             "not shipped: https://smpl.is.tue.mpg.de)")
        if self.smpl_iters < 1:
            raise ValueError("render.smpl_iters must be >= 1")

        if self.size < 16 or self.size % 8:
            raise ValueError(f"render.size must be a multiple of 8 and >= 16, got {self.size}")
        if self.depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(f"render.depth_encoding must be one of {', '.join(DEPTH_ENCODINGS)}")
        if len(self.shift_px) != 2:
            raise ValueError(f"render.shift_px must be [dx, dy], got {self.shift_px}")


@dataclass
class SamplerConfig:
    """DDIM with eta 0 from one shared initial noise, classifier-free guidance (spec §2.3)."""

    steps: int = 100  # [C] T2V-Zero base; 50 for the MasaCtrl base
    eta: float = 0.0  # [C]
    shared_noise: bool = True  # [P] the same x_T for every frame
    guidance_scale: float = 9.0  # [C]
    controlnet_scale: float = 1.0  # [C]
    prompt_suffix: str = QUALITY_SUFFIX
    negative_prompt: str = NEGATIVE_PROMPT

    def __post_init__(self):
        if self.steps < 1 or self.eta < 0 or self.guidance_scale < 0 or self.controlnet_scale < 0:
            raise ValueError("sampler: steps >= 1, eta >= 0, guidance_scale >= 0, controlnet_scale >= 0 required")


@dataclass
class BaseConfig:
    """The consistency baseline LatentMan is built on (Table 1): Text2Video-Zero's cross-frame attention, MasaCtrl's
    mutual self-attention, or plain per-frame generation (T2I + depth ControlNet with shared noise only)."""

    kind: str = "t2v-zero"
    cross_frame_modules: list[str] = field(default_factory=lambda: ["unet", "controlnet"])  # [C]
    masactrl_start_step: int = 4  # MasaCtrl's release defaults [A] (spec §5)
    masactrl_start_layer: int = 10

    def __post_init__(self):
        if self.kind not in BASES:
            raise ValueError(f"base.kind must be one of {', '.join(BASES)}, got {self.kind!r}")
        bad = set(self.cross_frame_modules) - {"unet", "controlnet"}
        if bad:
            raise ValueError(f"base.cross_frame_modules may list unet and controlnet, got {sorted(bad)}")


@dataclass
class CorrespondenceConfig:
    """Dense cross-frame correspondences from the part-UV maps (spec §2.4)."""

    features: str = "official"  # official: [U - mean, V - mean, E' (L1 to the bbox centre)] | paper: E Euclidean
    chain: str = "prev_new"  # [C] propagate the reference map along the chain | prev | first
    solver: str = "hungarian"
    max_part_pixels: int = 4000  # larger parts fall back to nearest-neighbour matching (bounds the O(n^3) cost)

    def __post_init__(self):
        if self.features not in FEATURES or self.chain not in CHAINS or self.solver not in ("hungarian", "nearest"):
            raise ValueError(f"correspondence: features in {FEATURES}, chain in {CHAINS}, solver hungarian|nearest")


@dataclass
class SLAConfig:
    """Spatial Latent Alignment (§2.5): hard copy of matched latents from frame i-1 to frame i, in frame order."""

    enabled: bool = True
    window: list[float] = field(default_factory=lambda: [0.0, 0.4])  # [C] range(40) of 100

    def __post_init__(self):
        _check_window("sla.window", self.window)


@dataclass
class PWGConfig:
    """Pixel-Wise Guidance (§2.6): x_{t-1} -= delta * grad_{x_t} sum_i mean (X_i[q] - sg(X_{i-1}[s]))^2."""

    enabled: bool = True
    window: list[float] = field(default_factory=lambda: [0.2, 0.7])  # [C] range(20, 70) of 100
    delta: float = 0.01  # [P] rho
    res: int = 256  # [P] guidance resolution (capped at the image size)
    pixel_scale: float = 25.0  # [C] decoded image in [0, 1] times 25
    loss: str = "mean"  # [C] per-frame mean over channels and pairs | sum
    grad_mode: str = "official"  # [C] unconditional UNet path only | full: literal grad through x0 and both halves

    def __post_init__(self):
        _check_window("pwg.window", self.window)
        if self.loss not in ("mean", "sum") or self.grad_mode not in GRAD_MODES or self.res < 8 or self.delta < 0:
            raise ValueError(f"pwg: loss mean|sum, grad_mode in {GRAD_MODES}, res >= 8, delta >= 0")


@dataclass
class EvalConfig:
    """H_MSE (Eq. 9) at `h_mse_res` on the 0-255 scale over the N-1 consecutive pairs (spec §4)."""

    h_mse_res: int = 256


@dataclass
class LatentManConfig:
    method: str = METHOD_ID
    base: str | None = None
    description: str = ""
    seed: int = 0  # the initial noise
    num_frames: int = 8  # [C] video frames (Table 2's runtime is for 8)
    fps: float | None = None  # None: motion.fps / motion.stride
    prompt: str | None = None  # the character prompt (the CLI's PROMPT)
    model: ModelConfig = field(default_factory=ModelConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    attention: BaseConfig = field(default_factory=BaseConfig)
    correspondence: CorrespondenceConfig = field(default_factory=CorrespondenceConfig)
    sla: SLAConfig = field(default_factory=SLAConfig)
    pwg: PWGConfig = field(default_factory=PWGConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if self.method != METHOD_ID:
            raise ValueError(f"method must be {METHOD_ID!r}, got {self.method!r}")
        if self.num_frames < 1 or (self.fps is not None and not self.fps > 0):
            raise ValueError("num_frames >= 1 and fps > 0 (or null) are required")

    @property
    def video_fps(self) -> float:
        return float(self.fps) if self.fps is not None else self.motion.fps / self.motion.stride


#: The bundled 64 px models' settings (recipes/latentman/tiny_synth.yaml holds the same values).
BUNDLED_OVERRIDES = (
    "render.size=64",
    "sampler.steps=20",
    "sampler.guidance_scale=4.0",
    "sampler.prompt_suffix=''",
    "sampler.negative_prompt=''",
    "attention.masactrl_start_layer=4",
    "pwg.res=64",
    "pwg.grad_mode=full",
    "pwg.delta=0.1",
    "eval.h_mse_res=64",
)


def load_recipe(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> LatentManConfig:
    """Load a recipe (and its `base:` chain) plus `--set` overrides into a `LatentManConfig`."""
    from dancegen.config import load_recipe_chain

    return load_recipe_chain(LatentManConfig, path, overrides)


load_config = load_recipe
