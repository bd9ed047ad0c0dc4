"""Edit-Your-Motion's networks (spec §2.2-2.5): the inflated SD UNet, the pose ControlNet and the Motion Attention bank.

`build_model(cfg)` loads the base named by ``model.base`` (an SD-1.5-layout folder, a single file, a cached hub id,
or the bundled ``t2i-tiny``) and the OpenPose ControlNet named by ``model.controlnet`` (a diffusers folder such as
``lllyasviel/sd-controlnet-openpose``, or the bundled ``controlnet-openpose-tiny``) with the same loaders as every
other method, then inflates the UNet with ``core.unet3d.VideoUNet``:

- the spatial self-attention of every transformer block becomes Recurrent Causal Attention (keys / values from the
  previous and next frame, clamped at the ends; ``FrameAttnProcessor("rca")``, weights those of SD's attn1), or stays
  per-frame (``self``, the w/o-RCA ablation) or Tune-A-Video's ``sparse_causal``;
- a temporal attention after every cross-attention (``temporal_position="after_cross_attn"``, the paper's order:
  spatial -> cross -> temporal -> FF), zero-initialised so the inflated net starts as SD applied per frame;
- one `MotionAttention` per ControlNet residual between the ControlNet and the UNet (``residual_hook``).

The model folder `finetune-oneshot` writes (``<case>/model/``): ``unet/`` (the video UNet, temporal blocks and RCA
weights included; ``VideoUNet.from_pretrained`` loads it), ``motion_adapter/`` (``config.json`` +
``diffusion_pytorch_model.safetensors``), ``case.npz`` (the prepared source: frames, person masks, skeleton
keypoints, prompt) and ``edit_your_motion.yaml`` (the resolved recipe; ``model.base`` / ``model.controlnet`` name the
frozen VAE, text encoder and ControlNet, which are loaded from there again rather than copied).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dancegen.core.method_model import MethodModel
from dancegen.core.model_folder import FolderLayout
from dancegen.errors import InputError
from dancegen.methods.edit_your_motion.config import EditYourMotionConfig, load_recipe
from dancegen.methods.edit_your_motion.motion_attention import MotionAdapterBank, residual_channels

MODEL_FILE = "edit_your_motion.yaml"
CASE_FILE = "case.npz"
T2I_BUNDLED, POSE_BUNDLED = "t2i-tiny", "controlnet-openpose-tiny"
LAYOUT = FolderLayout(
    "edit-your-motion", MODEL_FILE, ("unet", CASE_FILE),
    how_to_get="fine-tune one with `dancegen finetune-oneshot --source CLIP --prompt TEXT -o runs/case1`, then pass "
               "--model runs/case1")


def inflate(unet2d, cfg: EditYourMotionConfig):
    """The video UNet of the recipe around a (pretrained) image UNet (weights shared, not copied)."""
    from dancegen.core.unet3d import VideoUNet

    m = cfg.model
    kw = {"value_frames": m.rca_value_frames, "include_self": m.rca_include_self} if m.spatial_attn == "rca" else {}
    return VideoUNet.from_unet2d(unet2d, temporal="temporal", spatial_attn=m.spatial_attn,
                                 temporal_position="after_cross_attn", spatial_attn_kwargs=kw,
                                 zero_init=True, frame_pos_emb=True)


def make_adapter(unet2d, cfg: EditYourMotionConfig) -> MotionAdapterBank | None:
    ma = cfg.model.motion_adapter
    if not ma.enabled:
        return None
    return MotionAdapterBank(residual_channels(dict(unet2d.config)), ma.levels, ma.heads, ma.inner_dim_ratio)


class EditYourMotionModel(MethodModel):
    """The trainable networks (``unet``, ``adapter``) with the frozen ``controlnets`` (one net, ``pose``), ``vae`` and
    ``text_encoder``; ``tokenizer`` and ``scheduler`` ride along. Parameter names for the stages: the temporal
    attention is ``unet.temporal_blocks.*``, RCA is ``unet.unet.*.attn1.*``, MA is ``adapter.*``."""

    def __init__(self, unet, controlnets, adapter, vae, text_encoder, tokenizer, scheduler,
                 config: EditYourMotionConfig):
        super().__init__()
        self.unet, self.controlnets, self.adapter = unet, controlnets, adapter
        self.vae, self.text_encoder = vae, text_encoder
        self.tokenizer, self.scheduler, self.config = tokenizer, scheduler, config

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def residual_hook(self):
        if self.adapter is None:
            return None
        holder = self.unet.holder
        return self.adapter.hook(lambda: holder.peek().num_frames)

    def predict_noise(self, latents: torch.Tensor, t, context: torch.Tensor, pose_images: torch.Tensor,
                      controlnet_scale: float = 1.0) -> torch.Tensor:
        """eps of ``(B, C, F, h, w)`` latents given the text context ``(B, L, D)`` and the skeleton images
        ``(B, 3, F, H, W)`` in [0, 1] (ControlNet frozen, run without a graph; MA carries the gradient)."""
        b, _, f = latents.shape[:3]
        with torch.no_grad():
            res = self.controlnets(latents, t, context, {"pose": pose_images}, scales={"pose": controlnet_scale})
        kw = {}
        if res is not None:
            kw = {"down_block_additional_residuals": res.down, "mid_block_additional_residual": res.mid,
                  "residual_hook": self.residual_hook()}
        return self.unet(latents, t, context, **kw).sample

    # ------------------------------------------------------------------------------------------------ save / load
    def save_pretrained(self, folder: str | os.PathLike, case: dict) -> Path:
        """Write the model folder atomically: the video UNet, the MA bank, the prepared case and the recipe."""
        import numpy as np

        def write(tmp: Path) -> None:
            self.unet.save_pretrained(tmp / "unet")
            if self.adapter is not None:
                save_adapter(self.adapter, tmp / "motion_adapter", self.config)
            np.savez_compressed(tmp / CASE_FILE, **case)

        return LAYOUT.save(folder, self.config, write)


def save_adapter(adapter: MotionAdapterBank, folder: Path, cfg: EditYourMotionConfig) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    ma = cfg.model.motion_adapter
    channels = [adapter[k].gate.in_features for k in adapter]
    (folder / "config.json").write_text(json.dumps({"levels": [int(k) for k in adapter], "channels": channels,
                                                    "heads": ma.heads, "inner_dim_ratio": ma.inner_dim_ratio}))
    save_file({k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()},
              str(folder / "diffusion_pytorch_model.safetensors"))


def load_base(cfg: EditYourMotionConfig, dtype=None, allow_download: bool = False):
    """``(SD15Components, ControlNetSet)`` of the recipe's base and pose ControlNet (frozen, eval)."""
    from dancegen.core.controlnet import ControlNetSet
    from dancegen.core.weights import load_sd15_components, resolve_model

    dtype = dtype if dtype is not None else torch.float32
    base = resolve_model(cfg.model.base or T2I_BUNDLED, kind="sd15", allow_download=allow_download)
    comps = load_sd15_components(base, dtype=dtype)
    if comps.text_encoder is None:
        raise InputError(f"{cfg.model.base}: Edit-Your-Motion needs a text-to-image model with text_encoder/ and "
                         "tokenizer/")
    cn = resolve_model(cfg.model.controlnet or POSE_BUNDLED, kind="any", allow_download=allow_download)
    nets = ControlNetSet.from_pretrained_folders({"pose": cn.location if cn.is_local else cn.ref}, dtype=dtype)
    nets.eval().requires_grad_(False)
    return comps, nets


def build_model(cfg: EditYourMotionConfig, dtype=None, allow_download: bool = False) -> EditYourMotionModel:
    """The un-fine-tuned model of a recipe: the base inflated, MA at its identity initialisation."""
    comps, nets = load_base(cfg, dtype, allow_download)
    unet = inflate(comps.unet, cfg)
    adapter = make_adapter(comps.unet, cfg)
    if adapter is not None:
        adapter.to(dtype=next(comps.unet.parameters()).dtype)
    model = EditYourMotionModel(unet, nets, adapter, comps.vae, comps.text_encoder, comps.tokenizer, comps.scheduler,
                                cfg)
    for m in (comps.vae, comps.text_encoder):
        m.requires_grad_(False)
    return model


def load_model(folder: str | os.PathLike, overrides: list[str] | None = None, dtype=None,
               allow_download: bool = False) -> tuple[EditYourMotionModel, dict]:
    """A fine-tuned case folder (or its run folder) -> ``(model, case arrays)``.

    Raises:
        MissingWeightsError: no model folder there (names what is missing and how to make one).
    """
    import numpy as np
    from safetensors.torch import load_file

    from dancegen.core.unet3d import VideoUNet

    found = LAYOUT.resolve(folder)
    cfg = LAYOUT.load_recipe(found, overrides, load_recipe)
    comps, nets = load_base(cfg, dtype, allow_download)
    unet = VideoUNet.from_pretrained(found / "unet", dtype=dtype or torch.float32)
    unet.eval().requires_grad_(False)
    adapter = None
    if (found / "motion_adapter").is_dir():
        meta = json.loads((found / "motion_adapter" / "config.json").read_text())
        adapter = MotionAdapterBank(_channels_from(meta), meta["levels"], meta["heads"], meta["inner_dim_ratio"])
        adapter.load_state_dict(load_file(str(found / "motion_adapter" / "diffusion_pytorch_model.safetensors")))
        adapter.to(dtype=dtype or torch.float32).eval().requires_grad_(False)
    with np.load(found / CASE_FILE, allow_pickle=False) as z:
        case = {k: z[k] for k in z.files}
    model = EditYourMotionModel(unet, nets, adapter, comps.vae, comps.text_encoder, comps.tokenizer, comps.scheduler,
                                cfg)
    return model, case


def _channels_from(meta: dict) -> list[int]:
    n = max(meta["levels"]) + 1
    chans = [1] * n
    for lvl, c in zip(meta["levels"], meta["channels"], strict=True):
        chans[lvl] = c
    return chans
