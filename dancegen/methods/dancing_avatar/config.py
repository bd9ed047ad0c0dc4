"""Typed recipe of Dancing Avatar (spec dancing-avatar.md §7): models, prompt refinement, the three alignment modules,
the sampler, and the training of the previous-frame (inter-frame alignment) module.

Defaults are the paper's setting ([P] the paper, [S] the spec's choice for a gap, [A] our choice here): an SD-1.5
base with the OpenPose ControlNet at 512 px, DPM-Solver++ 2M 25 steps ("DPM adaptive" in the paper, spec §2.4), CFG
7.5, prompt = refined clothes + refined face + background, the clothes and face LoRAs (r = 4 on the cross-attention
projections, 500 steps, AdamW 1e-4), a person-free background plate inpainted from the first pose's frame, person
masks dilated 8 px with a 4 px feather and pasted back, and the previous-frame ControlNet (scale 1, off for frame 0),
trained 20 epochs at lr 5e-5 (expressed in steps here).

`BUNDLED_OVERRIDES` shrink the defaults to the bundled 64 px models (`t2i-tiny`, `controlnet-openpose-tiny` and the
bundled previous-frame module); `text2character` applies them when no `--model` / `--recipe` is given, and
`recipes/dancing_avatar/tiny_synth.yaml` spells the same values out (a test keeps the two equal). No torch import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dancegen.core.stages import StageConfig, StagedTrainConfig

METHOD_ID = "dancing-avatar"
REFINERS = ("template", "cached", "llm")
PROMPT_PARTS = ("background", "clothes", "face")
SCHEDULERS = ("dpmsolver++", "ddim")
SEGMENTERS = ("pose", "blazepose", "sam")
INTER_CONDITIONS = ("image", "latent")
TRAIN_STAGES = ("prev_frame",)
# Paper line 78, verbatim ([clothes] / [face] are replaced by the coarse text).
CLOTHES_TEMPLATE = ("Imagine an image with [clothes], and describe the attribute of the clothes in 20 single words with "
                    "detailed precision, making sure that the words correspond to one and only one clothes only.")
FACE_TEMPLATE = ("Imagine the [face] and describe it with 20 single words, focusing on facial and hair details, making "
                 "sure that the description of the face and hair corresponds to the face and hair of one and only one "
                 "person.")


@dataclass
class ModelConfig:
    """The networks (folders, bundled names or cached hub ids); None picks the bundled toy model of each."""

    base: str | None = None  # SD-1.5 layout [P: MajicMIX-Realistic-v5]; None: bundled t2i-tiny
    pose_controlnet: str | None = None  # [P: control_v11p_sd15_openpose]; None: bundled controlnet-openpose-tiny
    # the previous-frame module (a ControlNet folder): no public weights; None: the one in the --model folder, else
    # the bundled one when the base is the bundled t2i-tiny, else off (said in one line)
    prev_controlnet: str | None = None
    inpaint: str | None = None  # an SD-1.5 inpainting model (9-channel UNet) for the plate; None: the base, latent blend
    sam: str | None = None  # transformers SamModel folder / id (segmenter "sam")
    device: str = "auto"
    dtype: str = "auto"


@dataclass
class PromptConfig:
    """The coarse text and how it becomes the frames' prompt (spec §2.1 "LLM prompt refinement", §2.4 prompt length)."""

    clothes: str | None = None  # e.g. "white pleated skirt"
    face: str | None = None  # e.g. "short black hair"
    place: str | None = None  # e.g. "in a classroom" (goes into the prompt as given)
    text: str | None = None  # one free-text prompt instead of the three fields (the CLI's PROMPT); not refined
    refiner: str = "template"  # template (offline) | cached (the words below) | llm (an OpenAI-compatible endpoint)
    n_words: int = 20  # [P] exactly 20 single words per field; 0: no refinement (coarse text verbatim)
    seed: int = 0  # the template backend's slot choices
    clothes_words: list[str] = field(default_factory=list)  # cached backend: the refined clothes words
    face_words: list[str] = field(default_factory=list)  # cached backend: the refined face words
    clothes_template: str = CLOTHES_TEMPLATE  # [P] line 78
    face_template: str = FACE_TEMPLATE  # [P] line 78
    llm_model: str = "gpt-3.5-turbo"  # [S] ChatGPT of 2023
    llm_url: str = "https://api.openai.com/v1/chat/completions"
    order: list[str] = field(default_factory=lambda: ["background", "clothes", "face"])  # [S] background first
    prefix: str = ""  # put before the composed prompt (toy: "a dancer in ", the synthetic captions' start) [A]
    negative_prompt: str = ""  # [S]
    plate_negative_prompt: str = "person, human"  # [S] the person-free plate's inpainting

    def __post_init__(self):
        if self.refiner not in REFINERS:
            raise ValueError(f"prompt.refiner must be one of {', '.join(REFINERS)}, got {self.refiner!r}")
        if self.n_words < 0:
            raise ValueError(f"prompt.n_words must be >= 0, got {self.n_words}")
        if sorted(self.order) != sorted(PROMPT_PARTS):
            raise ValueError(f"prompt.order must list {', '.join(PROMPT_PARTS)} once each, got {self.order}")


@dataclass
class SamplerConfig:
    """DPM-Solver++ with classifier-free guidance; the two ControlNets' scales (spec §2.3-2.4)."""

    scheduler: str = "dpmsolver++"  # [S] DPMSolverMultistep 2M for the paper's "DPM adaptive" | ddim
    steps: int = 25  # [P]
    guidance_scale: float = 7.5  # [P]
    pose_scale: float = 1.0  # [S]
    seed_per_frame: bool = True  # [S] one seed per clip, a new noise draw per frame (independent T2I frames); False:
    # every frame starts from the same noise (LatentMan's shared x_T)

    def __post_init__(self):
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"sampler.scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.steps < 1 or self.guidance_scale < 0 or self.pose_scale < 0:
            raise ValueError("sampler: steps >= 1, guidance_scale >= 0 and pose_scale >= 0 are required")


@dataclass
class IntraConfig:
    """Intra-frame alignment (§2.1): clothes and face LoRAs on cross-attention, trained on reference images."""

    enabled: bool = True
    character: str | None = None  # a character pack folder to reuse; None: made for this run (and cached)
    targets: str = "cross_attn"  # [P] attn2.{to_q,to_k,to_v,to_out.0} (core.lora.LORA_TARGETS)
    rank: int = 4  # [S]
    alpha: float = 4.0  # [S] alpha = r
    steps: int = 500  # [P] per module
    lr: float = 1.0e-4  # [S]
    batch_size: int = 1  # [S]
    n_ref_images: int = 32  # [S]
    ref_steps: int = 25  # sampling steps of the reference images [A]
    clothes_weight: float = 1.0  # [S] both adapters summed at full strength
    face_weight: float = 1.0
    ref_model: str | None = None  # the model that draws the references [P: Diffusion Fashion / MajicMIX-v6]; None: base

    def __post_init__(self):
        if self.rank < 1 or not self.alpha > 0 or self.steps < 1 or not self.lr > 0 or self.batch_size < 1:
            raise ValueError("intra: rank >= 1, alpha > 0, steps >= 1, lr > 0 and batch_size >= 1 are required")
        if self.n_ref_images < 1 or self.ref_steps < 1:
            raise ValueError("intra: n_ref_images >= 1 and ref_steps >= 1 are required")


@dataclass
class BackgroundConfig:
    """Background alignment (§2.2): one person-free plate, a person mask per frame, inpainting and paste-back."""

    enabled: bool = True
    segmenter: str = "pose"  # pose (the drawn body of the pose, dilated) | blazepose (pose backend) | sam
    body_width: float = 0.09  # "pose" segmenter: limb thickness as a fraction of the body height [A]
    mask_dilate_px: int = 8  # [S] at `size`
    feather_px: int = 4  # [S] inward feather of the paste-back mask
    paste_back: bool = True  # [S] x = m x_hat + (1 - m) B: outside the mask the plate exactly
    plate_steps: int | None = None  # sampling steps of the plate's two images (None: sampler.steps)

    def __post_init__(self):
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"background.segmenter must be one of {', '.join(SEGMENTERS)}, got {self.segmenter!r}")
        if self.mask_dilate_px < 0 or self.feather_px < 0 or not self.body_width > 0:
            raise ValueError("background: mask_dilate_px >= 0, feather_px >= 0 and body_width > 0 are required")


@dataclass
class InterConfig:
    """Inter-frame alignment (§2.3): a ControlNet on the previous generated frame, frames made in pose order."""

    enabled: bool = True
    scale: float = 1.0  # [S]
    condition: str = "image"  # [P] image: the previous RGB frame in [0, 1] | latent: its VAE latent (toy recipe)

    def __post_init__(self):
        if self.scale < 0 or self.condition not in INTER_CONDITIONS:
            raise ValueError(f"inter: scale >= 0 and condition in {INTER_CONDITIONS} are required")


@dataclass
class DataConfig:
    """Frame pairs of the synthetic world for the previous-frame module ([P]: 1162 real videos at 24 fps)."""

    num_clips: int = 400
    seed: int = 3000  # master seed (held-out evaluation: quality.HELDOUT_SEED)
    size: int = 64
    num_frames: int = 24
    fps: float = 24.0  # [P] resampled to 24 fps
    gap: int = 1  # [P] adjacent frames: (frame k, frame k + gap)
    camera: str | None = "static"  # [A] the plate is static at inference
    root: str | None = None  # a folder to cache the rendered pairs in (None: RUN/data)

    def __post_init__(self):
        if min(self.num_clips, self.size, self.num_frames, self.gap) < 1 or self.num_frames <= self.gap:
            raise ValueError("data: num_clips, size, gap >= 1 and num_frames > gap are required")


@dataclass
class DancingAvatarStageConfig(StageConfig):
    batch_size: int = 8  # [S]

    def __post_init__(self):
        super().__post_init__()
        if self.name not in TRAIN_STAGES:
            raise ValueError(f"train.stages: unknown stage {self.name!r} (one of {', '.join(TRAIN_STAGES)})")


@dataclass
class DancingAvatarTrainConfig(StagedTrainConfig):
    """Training of the previous-frame module on the frozen base ([P] 20 epochs, lr 5e-5, AdamW)."""

    stages: list[DancingAvatarStageConfig] = field(
        default_factory=lambda: [DancingAvatarStageConfig(name="prev_frame", steps=20000, lr=5e-5)])
    device: str = "auto"
    optimizer: str = "adamw"  # [P]
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 100
    lr_schedule: str = "constant"
    min_lr_ratio: float = 1.0
    prompt_dropout: float = 0.0  # [S] no caption dropout
    with_pose_controlnet: bool = False  # [P] trained alone; [A] toy: the frozen pose net runs too, as at inference
    zero_conv_lr_scale: float = 1.0  # lr multiplier of the new layers (condition embedding, zero convs)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 50


@dataclass
class DancingAvatarConfig:
    method: str = METHOD_ID
    base: str | None = None
    description: str = ""
    seed: int = 0
    size: int = 512  # [S] square frames; the poses are fitted into it
    num_frames: int | None = None  # None: every pose (the CLI's --frames limits it)
    fps: float | None = None  # None: the poses' rate [S: 24]
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    intra: IntraConfig = field(default_factory=IntraConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    inter: InterConfig = field(default_factory=InterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: DancingAvatarTrainConfig = field(default_factory=DancingAvatarTrainConfig)

    def __post_init__(self):
        if self.method != METHOD_ID:
            raise ValueError(f"method must be {METHOD_ID!r}, got {self.method!r}")
        if self.size < 16 or self.size % 8:
            raise ValueError(f"size must be a multiple of 8 and >= 16, got {self.size}")
        if (self.num_frames is not None and self.num_frames < 1) or (self.fps is not None and not self.fps > 0):
            raise ValueError("num_frames >= 1 (or null) and fps > 0 (or null) are required")


#: The bundled 64 px models' settings (recipes/dancing_avatar/tiny_synth.yaml holds the same values).
BUNDLED_OVERRIDES = (
    "size=64",
    "sampler.steps=20",
    "sampler.guidance_scale=4.0",
    "prompt.plate_negative_prompt=''",
    "prompt.n_words=0",
    "prompt.prefix='a dancer in '",
    "prompt.order=[clothes,face,background]",
    "background.mask_dilate_px=2",
    "background.feather_px=1",
    "intra.n_ref_images=16",
    "intra.steps=60",
    "intra.lr=1e-3",
    "intra.batch_size=4",
    "intra.ref_steps=20",
    "intra.clothes_weight=0.25",
    "intra.face_weight=0.25",
    "inter.condition=latent",
)


def load_recipe(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> DancingAvatarConfig:
    """Load a recipe (and its `base:` chain) plus `--set` overrides into a `DancingAvatarConfig`."""
    from dancegen.config import load_recipe_chain

    return load_recipe_chain(DancingAvatarConfig, path, overrides)


load_config = load_recipe
