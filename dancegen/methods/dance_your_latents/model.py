"""Dance-Your-Latents model: DisCo's controls on an inflated video UNet with STSA / MF (paper §4, spec §2).

`build_model(config)` assembles, from an sd-image-variations-layout folder (real weights via
`core.weights.load_sd15_components`) or from the tiny sizes of `model.tiny`:
- the image UNet inflated with `VideoUNet.from_unet2d`, temporal blocks per variant / attention (`temporal_spec`);
- DisCo's pose ControlNet and background ControlNet (`DisCoControlNets.from_unet`, initialised from the UNet);
- the CLIP image encoder of the reference with DisCo's trainable projection (`ReferenceEncoder`);
- the VAE and the DDIM scheduler.
`DanceYourLatentsModel` holds them (an `nn.Module`, so the shared `Trainer` trains it by parameter names:
`unet.temporal_blocks.*`, `unet.unet.*`, `controlnets.pose.*`, `controlnets.background.*`, `reference.projection.*`,
`reference.image_encoder.*`, `vae.*`) and saves / loads a folder: `unet/` (the video UNet, temporal blocks
included), `vae/`, `controlnet_pose/`, `controlnet_background/`, `image_encoder/`, `reference_projection/`,
`scheduler/` and `dance_your_latents.yaml` (the resolved recipe). Every sub-model is a diffusers / transformers
model, so each folder also loads with its own `from_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from dancegen.core.controlnet import ControlNetSet, ControlResiduals, LatentControlNetModel
from dancegen.core.method_model import MethodModel
from dancegen.core.model_folder import MODEL_SUBDIR, FolderLayout  # noqa: F401  (MODEL_SUBDIR: train imports it)
from dancegen.errors import InputError, MissingWeightsError
from dancegen.methods.dance_your_latents.config import DanceYourLatentsConfig, ModelConfig, TinyModelConfig

MODEL_FILE = "dance_your_latents.yaml"
BUNDLED_MODEL = "dyl-tiny"
TINY_RECIPE = "recipes/dance_your_latents/tiny_synth.yaml"
TINY_DISCO_RECIPE = "recipes/dance_your_latents/tiny_synth_disco.yaml"
LAYOUT = FolderLayout(
    "dance-your-latents", MODEL_FILE, ("unet",), bundled=BUNDLED_MODEL,
    how_to_get=f"train it with `dancegen train --recipe {TINY_DISCO_RECIPE} -o runs/dyl-tiny-disco`, then `dancegen "
               f"train --recipe {TINY_RECIPE} -o runs/dyl-tiny` and `python -m dancegen.core.bundle runs/dyl-tiny/model "
               f"{BUNDLED_MODEL}`, or pass --model with a trained model folder or an sd-image-variations folder")
SUBFOLDERS = ("unet", "vae", "controlnet_pose", "controlnet_background", "image_encoder", "reference_projection",
              "scheduler")


# ------------------------------------------------------------------------------------------------ variants
def temporal_spec(model: ModelConfig) -> dict[str, Any]:
    """How a variant / attention ablation maps onto `VideoUNet.from_unet2d` (spec §6 item 6).

    - disco, vd: no temporal module ("VD" differs from DisCo only by the shared noise and the clip-level training).
    - vd_sa, vd_sa_mf + subspace: STSA pairs (MF additionally feeds flows at call time).
    - vd_sa + temporal: VDM-style temporal attention blocks.
    - vd_sa + crossframe_*: no new module; the spatial self-attention takes K/V from the named frame(s).

    Returns:
        ``{"temporal": "stsa"|"temporal"|"none", "spatial_attn": mode, "kwargs": {...}}``.
    """
    if not model.has_temporal_blocks:
        mode = model.attention.removeprefix("crossframe_") if model.attention.startswith("crossframe_") else "self"
        if model.variant in ("disco", "vd"):
            mode = "self"
        return {"temporal": "none", "spatial_attn": mode, "kwargs": {}}
    if model.attention == "temporal":
        return {"temporal": "temporal", "spatial_attn": "self",
                "kwargs": {"ff": model.ff, "frame_pos_emb": model.frame_pos_emb}}
    return {"temporal": "stsa", "spatial_attn": "self",
            "kwargs": {"subspace_size": [int(s) for s in model.subspace_size], "shift": model.shift, "ff": model.ff,
                       "frame_pos_emb": model.frame_pos_emb}}


# ------------------------------------------------------------------------------------------------ tiny parts
def tiny_unet_config(tiny: TinyModelConfig, latent_size: int) -> dict:
    """The recipe's `model.tiny` UNet (`core.tiny.tiny_unet_config`: SD layout, cross-attention on the first levels)."""
    from dancegen.core.tiny import tiny_unet_config as config

    return config(block_out_channels=tuple(tiny.unet_channels), cross_attention_dim=tiny.context_dim,
                  sample_size=latent_size, in_channels=tiny.latent_channels, out_channels=tiny.latent_channels,
                  layers_per_block=tiny.layers_per_block, attention_head_dim=tiny.attention_head_dim,
                  norm_num_groups=tiny.norm_num_groups, cross_attn_levels=tiny.cross_attn_levels)


def tiny_vae_config(tiny: TinyModelConfig, image_size: int) -> dict:
    """The recipe's `model.tiny` autoencoder (`core.tiny.tiny_vae_config`)."""
    from dancegen.core.tiny import tiny_vae_config as config

    return config(block_out_channels=tuple(tiny.vae_channels), latent_channels=tiny.latent_channels,
                  sample_size=image_size, norm_num_groups=tiny.norm_num_groups)


def _tiny_components(cfg: DanceYourLatentsConfig) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    from dancegen.core.conditioning import tiny_clip_vision_config
    from dancegen.core.schedulers import ddim_scheduler_sd15

    tiny = cfg.model.tiny
    size = max(int(r) for r in cfg.data.resolution)
    factor = 2 ** (len(tiny.vae_channels) - 1)
    vae = AutoencoderKL(**tiny_vae_config(tiny, size))
    unet = UNet2DConditionModel(**tiny_unet_config(tiny, size // factor))
    clip = CLIPVisionModelWithProjection(tiny_clip_vision_config(
        image_size=tiny.clip_image_size, patch_size=tiny.clip_patch_size, hidden_size=tiny.clip_width,
        intermediate_size=4 * tiny.clip_width, num_hidden_layers=tiny.clip_layers, projection_dim=tiny.context_dim))
    return {"unet": unet, "vae": vae, "image_encoder": clip, "scheduler": ddim_scheduler_sd15(),
            "pose_embedding_channels": list(tiny.pose_embedding_channels)}


def _config_only_components(folder: Path, device: str = "meta") -> dict[str, Any]:
    """Full-size parts from the folder's configs alone, no weights read: on the meta device (no memory; build checks)
    or randomly initialised on `device` (benchmarks at full size)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig.from_pretrained(folder / "image_encoder"))
    return {"unet": unet, "vae": vae, "image_encoder": clip,
            "scheduler": DDIMScheduler.from_pretrained(folder, subfolder="scheduler")}


# ------------------------------------------------------------------------------------------------ DisCo controls
class DisCoControlNets(ControlNetSet):
    """Pose + background ControlNets of DisCo, applied frame by frame to a clip (a ``ControlNetSet`` named
    ``pose`` and ``background``, summed in that order).

    ``forward`` keeps DisCo's argument names (``pose_images``, ``background_latents``, ``pose_scale``,
    ``background_scale``) rather than the set's ``conditions`` / ``scales`` dicts.

    Args:
        pose: ControlNet on rendered pose images (RGB in [0, 1], image resolution).
        background: ``LatentControlNetModel`` on the masked-background VAE latent, or None (pose only).
    """

    def __init__(self, pose: ControlNetModel | None, background: ControlNetModel | None = None):
        if pose is None and background is None:
            raise ValueError("DisCoControlNets needs at least one ControlNet")
        super().__init__({"pose": pose, "background": background})

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        pose: bool = True,
        background: bool = True,
        pose_embedding_channels: tuple[int, ...] = (16, 32, 96, 256),
    ) -> DisCoControlNets:
        """Initialise both ControlNets from the image UNet (DisCo ``Net.__init__``).

        Args:
            unet: the pretrained image UNet (``VideoUNet.unet`` works: it keeps the original module tree).
            pose / background: which ControlNets to build.
            pose_embedding_channels: the pose image encoder widths; each stage after the first halves the
                resolution, so ``len - 1`` halvings must equal the VAE downsampling (3 for SD: 256 px -> 32 latent).
        """
        pose_cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(pose_embedding_channels)) \
            if pose else None
        bg_cn = LatentControlNetModel.from_unet(unet) if background else None
        p = next(unet.parameters())
        out = cls(pose_cn, bg_cn)
        return out.to(device=p.device, dtype=p.dtype)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        pose_images: torch.Tensor | None = None,
        background_latents: torch.Tensor | None = None,
        pose_scale: float = 1.0,
        background_scale: float = 1.0,
        frame_chunk: int | None = None,
    ) -> ControlResiduals | None:
        """Run the ControlNets on every frame and sum their residuals (``ControlNetSet.forward``).

        Args:
            sample: ``(B, C, F, H, W)`` noisy latents (or already folded ``(B*F, C, H, W)``; then pass ``(B*F,)``-
                shaped conditions).
            timestep: scalar, ``(B,)`` or ``(B*F,)``.
            encoder_hidden_states: ``(B, L, D)`` reference embedding shared by frames, or ``(B*F, L, D)``.
            pose_images: ``(B, 3, F, Hi, Wi)`` or ``(B*F, 3, Hi, Wi)`` rendered skeletons in [0, 1].
            background_latents: ``(B, 4, H, W)`` (shared by the clip), ``(B, 4, F, H, W)`` or ``(B*F, 4, H, W)``;
                already multiplied by the VAE scaling factor.
            pose_scale / background_scale: conditioning scales (0 skips that ControlNet).
            frame_chunk: run at most this many folded frames at once (memory); None = all at once.

        Returns:
            Summed residuals for the folded batch, or None when no ControlNet ran.
        """
        return super().forward(sample, timestep, encoder_hidden_states,
                               {"pose": pose_images, "background": background_latents},
                               scales={"pose": pose_scale, "background": background_scale}, frame_chunk=frame_chunk)


# ------------------------------------------------------------------------------------------------ residual hook


# ------------------------------------------------------------------------------------------------ the container
class DanceYourLatentsModel(MethodModel):
    """Every network of Dance-Your-Latents in one module (what training sees) plus the scheduler.

    Args:
        unet: the inflated ``VideoUNet``.
        vae: ``AutoencoderKL`` (frozen).
        controlnets: ``DisCoControlNets`` (pose + background).
        reference: ``ReferenceEncoder`` (frozen CLIP tower + trainable projection).
        scheduler: the ``DDIMScheduler`` (its config also defines the training noise schedule).
        config: the resolved recipe the model was built from (architecture in ``config.model``).
    """

    def __init__(self, unet, vae, controlnets, reference, scheduler, config: DanceYourLatentsConfig):
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.controlnets = controlnets
        self.reference = reference
        self.scheduler = scheduler
        self.config = config

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def num_parameters_by_part(self) -> dict[str, int]:
        """Parameter counts: unet (image UNet), temporal, controlnet_pose, controlnet_background, clip, projection, vae."""
        groups = self.unet.num_parameters_by_group()
        count = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"unet": groups["unet"] + groups["spatial_attn"], "temporal": groups["temporal"],
                "controlnet_pose": count(self.controlnets.pose), "controlnet_background": count(self.controlnets.background),
                "clip": count(self.reference.image_encoder), "projection": count(self.reference.projection),
                "vae": count(self.vae)}

    def predict_noise(self, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pose_images: torch.Tensor,
                      background_latents: torch.Tensor | None, flow_to_ref: dict[int, torch.Tensor] | None = None,
                      pose_scale: float = 1.0, background_scale: float = 1.0) -> torch.Tensor:
        """eps_theta(z_t, t, f, tau(p), mu(g)) of DisCo Eq. 3 on a clip (see `predict_noise`)."""
        return predict_noise(self.unet, self.controlnets, z, t, context, pose_images, background_latents, flow_to_ref,
                             pose_scale, background_scale)

    # -------------------------------------------------------------------------------------------- save / load
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the model folder atomically (see the module docstring); returns it."""
        def write(tmp: Path) -> None:
            self.unet.save_pretrained(tmp / "unet")
            self.vae.save_pretrained(tmp / "vae")
            self.controlnets.save_pretrained(tmp)  # controlnet_pose/, controlnet_background/
            self.reference.image_encoder.save_pretrained(tmp / "image_encoder")
            if self.reference.projection is not None:
                self.reference.projection.save_pretrained(tmp / "reference_projection")
            self.scheduler.save_pretrained(tmp / "scheduler")

        return LAYOUT.save(folder, self.config, write)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, overrides: list[str] | None = None, dtype=None,
                        device=None) -> DanceYourLatentsModel:
        """Load a model folder written by `save_pretrained` (or a `train` output folder holding one in `model/`).

        Args:
            folder: the folder.
            overrides: `--set` overrides applied to the stored recipe (inference / flow settings; architecture keys
                must not change).
            dtype / device: where to put the networks (None: fp32 on CPU).
        """
        from diffusers import AutoencoderKL, DDIMScheduler
        from transformers import CLIPVisionModelWithProjection

        from dancegen.core.conditioning import ReferenceEncoder, ReferenceProjection
        from dancegen.core.unet3d import VideoUNet
        from dancegen.methods.dance_your_latents.config import load_recipe

        folder = model_folder(folder)
        if folder is None:
            raise InputError("not a Dance-Your-Latents model folder (no dance_your_latents.yaml)", path=folder)
        cfg = LAYOUT.load_recipe(folder, overrides, load_recipe)
        kw = {"dtype": dtype if dtype is not None else torch.float32}  # bundled models are stored in fp16
        unet = VideoUNet.from_pretrained(folder / "unet", **kw)
        vae = AutoencoderKL.from_pretrained(folder / "vae", **kw)
        nets = ControlNetSet.from_pretrained_folders(
            {name: folder / f"controlnet_{name}" for name in ("pose", "background")
             if (folder / f"controlnet_{name}").is_dir()}, **kw)
        pose, bg = (nets[name] if name in nets else None for name in ("pose", "background"))
        clip = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", **kw)
        proj = ReferenceProjection.from_pretrained(folder / "reference_projection", **kw) \
            if (folder / "reference_projection").is_dir() else None
        reference = ReferenceEncoder(clip, mode=cfg.model.reference, projection=proj)
        scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
        model = cls(unet, vae, DisCoControlNets(pose, bg), reference, scheduler, cfg).eval()
        model.requires_grad_(False)
        return model.to(device) if device is not None else model


def model_folder(path: str | os.PathLike) -> Path | None:
    """The DYL model folder at `path` (or `path/model/`, a `train` output), or None."""
    return LAYOUT.find(path)


def bundled_model_path() -> Path:
    """Where the bundled tiny model lives (``dancegen/assets/models/dyl-tiny``)."""
    return LAYOUT.bundled_path()


# ------------------------------------------------------------------------------------------------ building
def build_model(cfg: DanceYourLatentsConfig, base: str | os.PathLike | None = None, weights: str = "load",
                dtype=None, device=None) -> DanceYourLatentsModel:
    """Assemble the model of a recipe.

    Args:
        cfg: the recipe (``cfg.model.base`` is "tiny" or an sd-image-variations folder / hub id).
        base: overrides ``cfg.model.base``.
        weights: "load" (read the base weights), "meta" (build from the folder's configs on the meta device,
            no weights needed: checks that a full-size folder assembles, and counts parameters), or "random"
            (build from the folder's configs with random weights: full-size benchmarks without the real weights).
        dtype: torch dtype of the loaded base weights (None: as stored).
        device: "random" only: build the networks directly on this device (None: CPU).

    Returns:
        The model (train mode off, all gradients off; the trainer selects what trains). With
        ``cfg.model.init_from`` set, the weights of that trained model folder are loaded on top.

    Raises:
        MissingWeightsError / InputError: the base cannot be found or has the wrong layout.
    """
    from dancegen.core.conditioning import ReferenceEncoder
    from dancegen.core.unet3d import VideoUNet

    ref = str(base if base is not None else cfg.model.base)
    if weights not in ("load", "meta", "random"):
        raise ValueError(f"weights must be 'load', 'meta' or 'random', got {weights!r}")
    if ref == "tiny":
        parts = _tiny_components(cfg)
    else:
        parts = _sd_components(ref, weights, dtype, device)
        parts["pose_embedding_channels"] = list(cfg.model.pose_embedding_channels)
    unet2d = parts["unet"]
    spec = temporal_spec(cfg.model)
    meta = weights == "meta" and ref != "tiny"
    build_on = "meta" if meta else (device if weights == "random" and device is not None else None)
    with torch.device(build_on) if build_on else _nullcontext():
        controlnets = DisCoControlNets.from_unet(unet2d, pose=True, background=cfg.model.background_controlnet,
                                                 pose_embedding_channels=tuple(parts["pose_embedding_channels"]))
        unet = VideoUNet.from_unet2d(unet2d, temporal=spec["temporal"], spatial_attn=spec["spatial_attn"],
                                     **spec["kwargs"])
        reference = ReferenceEncoder(parts["image_encoder"], mode=cfg.model.reference)
    _check_sizes(cfg, unet2d, parts["vae"], reference, ref)
    model = DanceYourLatentsModel(unet, parts["vae"], controlnets, reference, recipe_scheduler(parts["scheduler"], cfg),
                                  cfg)
    if cfg.model.init_from and not meta:
        load_init_weights(model, cfg.model.init_from)
    model.eval().requires_grad_(False)
    return model


def recipe_scheduler(scheduler, cfg: DanceYourLatentsConfig):
    """The base's DDIM scheduler with the recipe's `model.prediction_type` and `model.zero_terminal_snr`.

    Zero terminal SNR (Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed") rescales the betas
    so that t = T is pure noise and starts DDIM at t = T ("trailing" spacing). With SD's schedule (SNR 0.0047 at T) a
    model learns to take the image's brightness from the noise it is given: the tiny model, whose conditioning is
    weak early in training, then paints every clip in the colours of the seed instead of the reference's.
    """
    from diffusers import DDIMScheduler

    m = cfg.model
    if scheduler.config.prediction_type == m.prediction_type and not m.zero_terminal_snr:
        return scheduler
    extra = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"} if m.zero_terminal_snr else {}
    return DDIMScheduler.from_config(scheduler.config, prediction_type=m.prediction_type, **extra)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _sd_components(ref: str, weights: str, dtype, device=None) -> dict[str, Any]:
    from dancegen.core.weights import load_sd15_components, resolve_model

    resolved = resolve_model(ref, kind="sd-image-variations")
    if weights in ("meta", "random"):
        if not resolved.is_local:
            raise InputError(f"a build from configs needs a local folder, got hub id {ref!r}")
        parts = _config_only_components(Path(resolved.location),
                                        "meta" if weights == "meta" else str(device or "cpu"))
        if weights == "random" and dtype is not None:
            for k in ("unet", "vae", "image_encoder"):
                parts[k] = parts[k].to(dtype)
        return parts
    comps = load_sd15_components(resolved, dtype=dtype, load_text_encoder=False)
    if comps.image_encoder is None:
        raise InputError("Dance-Your-Latents needs the CLIP image encoder of sd-image-variations (image_encoder/); "
                         "a text SD-1.5 folder has none", path=comps.path)
    return {"unet": comps.unet, "vae": comps.vae, "image_encoder": comps.image_encoder, "scheduler": comps.scheduler}


def _check_sizes(cfg: DanceYourLatentsConfig, unet2d, vae, reference, ref: str) -> None:
    proj = reference.projection
    ctx_dim = proj.config.out_dim if proj is not None else reference.image_encoder.config.projection_dim
    if unet2d.config.cross_attention_dim != ctx_dim:
        raise InputError(f"model {ref!r}: the UNet's cross_attention_dim {unet2d.config.cross_attention_dim} does "
                         f"not match the reference context width {ctx_dim}")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    levels = 2 ** (len(unet2d.config.block_out_channels) - 1)
    for r in cfg.data.resolution:
        if int(r) % (factor * levels):
            raise InputError(f"data.resolution {list(cfg.data.resolution)} must be a multiple of {factor * levels} "
                             f"(VAE factor {factor} x UNet downsampling {levels})")


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise MissingWeightsError(f"no .safetensors weights in {folder}")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def load_init_weights(model: DanceYourLatentsModel, source: str | os.PathLike) -> dict[str, int]:
    """Initialise from a trained DYL model folder (DisCo baseline or an earlier stage), spec §3 "Init".

    The image UNet, both ControlNets and the CLIP projection must match exactly; temporal blocks are copied when
    both models have the same ones and otherwise keep their (identity) initialisation. A model on the ``tiny`` base
    also takes the folder's VAE and CLIP image tower: they were trained from scratch with it (a real base keeps the
    pretrained ones it loaded).

    Returns:
        Number of tensors loaded per part.

    Raises:
        InputError: not a model folder, or a part whose tensors do not match.
    """
    folder = model_folder(source)
    if folder is None:
        raise InputError("model.init_from must be a Dance-Your-Latents model folder (with dance_your_latents.yaml)",
                         path=source)
    counts = {}
    parts = [("unet", model.unet), ("controlnet_pose", model.controlnets.pose),
             ("controlnet_background", model.controlnets.background),
             ("reference_projection", model.reference.projection)]
    if str(model.config.model.base) == "tiny":
        parts += [("vae", model.vae), ("image_encoder", model.reference.image_encoder)]
    for sub, module in parts:
        if module is None or not (folder / sub).is_dir():
            continue
        sd = _read_safetensors(folder / sub)
        if sub == "unet":
            own = module.state_dict()
            sd = {k: v for k, v in sd.items() if not k.startswith("temporal_blocks.") or k in own}
        missing, unexpected = module.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not (sub == "unet" and k.startswith("temporal_blocks."))]
        if missing or unexpected:
            raise InputError(f"model.init_from: {sub} does not match this recipe's model ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected tensors, e.g. {(missing + unexpected)[:2]})", path=folder)
        counts[sub] = len(sd)
        if sub == "vae" and (folder / sub / "config.json").is_file():  # the trained latent scale goes with it
            import json

            scale = json.loads((folder / sub / "config.json").read_text()).get("scaling_factor")
            if scale is not None:
                module.register_to_config(scaling_factor=scale)
    return counts


# ------------------------------------------------------------------------------------------------ the denoiser
def predict_noise(unet, controlnets, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                  pose_images: torch.Tensor, background_latents: torch.Tensor | None,
                  flow_to_ref: dict[int, torch.Tensor] | None = None, pose_scale: float = 1.0,
                  background_scale: float = 1.0) -> torch.Tensor:
    """The DisCo denoiser on a clip: ControlNet residuals per frame, then the video UNet (DisCo Eq. 3).

    Args:
        unet: ``VideoUNet``.
        controlnets: ``DisCoControlNets``.
        z: ``(B, C, F, h, w)`` noisy latents.
        t: timestep: scalar, ``(B,)`` or ``(B*F,)``.
        context: ``(B, L, D)`` reference CLIP context (shared by the frames).
        pose_images: ``(B, 3, F, H, W)`` rendered pose maps in [0, 1].
        background_latents: ``(B, C, h, w)`` VAE latent of the masked background (scaled), or None.
        flow_to_ref: MF flows ``{offset: (B, F, 2, h', w')}`` in pixels of their own grid, or None.
        pose_scale / background_scale: ControlNet conditioning scales.

    Returns:
        ``(B, C, F, h, w)`` predicted noise.
    """
    res = controlnets(z, t, context, pose_images=pose_images, background_latents=background_latents,
                      pose_scale=pose_scale, background_scale=background_scale)
    kwargs = res.as_kwargs() if res is not None else {}
    return unet(z, t, context, flow_to_ref=flow_to_ref, **kwargs).sample
