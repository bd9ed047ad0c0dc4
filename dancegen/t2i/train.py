"""Training of the bundled text-to-image model (`t2i-tiny`) and its ControlNets on the shared loop.

    dancegen train --recipe recipes/t2i/t2i_tiny.yaml -o runs/t2i-tiny
    dancegen train --recipe recipes/t2i/controlnet_openpose_tiny.yaml -o runs/controlnet-openpose-tiny
    dancegen train --recipe recipes/t2i/controlnet_depth_tiny.yaml -o runs/controlnet-depth-tiny

- Stage `vae` (`control: null`, `model.vae_from: null`, first): an SD-layout autoencoder (`AutoencoderKL`, narrowed)
  trained from random weights on the frames (squared error + L1 + a 1e-6 KL, the dancer weighted by
  `person_weight`), then its latent scaling factor set to 1 / std of the latents (`core.latents`). Its `model/vae/` is
  the autoencoder of the stages after it.
- Stage `t2i` (`control: null`): a UNet and a CLIP text encoder trained together from random weights on the frames'
  latents and captions (the autoencoder of `model.vae_from` or the vae stage, frozen; the tokenizer built from the
  captions' words, `captions.tokenizer_words`). Loss: MSE to the v target (`model.prediction_type`) at a uniform timestep of a
  zero-terminal-SNR schedule (Lin et al. 2024). Output: an SD-1.5-layout folder (unet/, vae/, text_encoder/,
  tokenizer/, scheduler/, model_index.json): every SD-1.5 code path loads it.
- Stage `controlnet` (`control: openpose | depth`): `ControlNetModel.from_unet` of the base (the encoder copied, the
  zero convolutions at zero), trained on the control images with the base frozen; prompts dropped with
  `train.prompt_dropout` (ControlNet's 50 % is for a model that already follows text; ours uses less). Output: a
  diffusers ControlNet folder, like lllyasviel/sd-controlnet-openpose.

The run folder holds `recipe.yaml`, `data/` (rendered frames and latents), `stage-1-<name>/` (metrics,
checkpoints: `resume="auto"` continues exactly) and `model/`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from dancegen.core.model_folder import MODEL_SUBDIR

#: The new layers of a diffusers ControlNet (core.train_config pattern syntax): the zero-initialised residual outputs
#: and the condition embedding (whose last conv starts at zero); the rest is the copied UNet encoder.
ZERO_CONVS = ("controlnet.controlnet_down_blocks", "controlnet.controlnet_mid_block",
              "controlnet.controlnet_cond_embedding")


class AutoencoderModel(nn.Module):
    """The vae stage's model: the autoencoder alone (its checkpoints hold nothing else)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae


def build_vae(model_cfg, size: int):
    """A fresh autoencoder (SD's block layout, narrowed: `model.vae_channels`, each level after the first halves)."""
    from diffusers import AutoencoderKL

    from dancegen.core.tiny import tiny_vae_config

    return AutoencoderKL(**tiny_vae_config(tuple(model_cfg.vae_channels), model_cfg.vae_latent_channels, size))


def make_vae_loss_fn(stage):
    from dancegen.core.latents import autoencoder_loss

    def loss_fn(m, batch):
        return autoencoder_loss(m.vae, batch["images"], stage.kl_weight, stage.l1_weight, batch.get("weights"))

    return loss_fn


class T2IModel(nn.Module):
    """What one training step needs: the UNet, the text encoder and, for ControlNet recipes, the ControlNet."""

    def __init__(self, unet, text_encoder, controlnet=None):
        super().__init__()
        self.unet, self.text_encoder, self.controlnet = unet, text_encoder, controlnet


def sd15_scheduler_config(model_cfg) -> dict:
    """The DDIM scheduler config of the bundled model: SD-1.5's betas, rescaled to zero terminal SNR when asked."""
    from dancegen.core.schedulers import sd15_scheduler_kwargs

    extra = dict(rescale_betas_zero_snr=True, timestep_spacing="trailing") if model_cfg.zero_terminal_snr else {}
    return sd15_scheduler_kwargs(prediction_type=model_cfg.prediction_type, **extra)


def build_base(model_cfg, tokenizer):
    """A fresh UNet (SD-1.5's block layout, narrowed) and CLIP text encoder for the recipe's sizes."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from dancegen.core.tiny import tiny_clip_text_config

    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in model_cfg.attention]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(model_cfg.attention)]
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=tuple(model_cfg.unet_channels),
        down_block_types=tuple(down), up_block_types=tuple(up), layers_per_block=model_cfg.layers_per_block,
        cross_attention_dim=model_cfg.text_width, attention_head_dim=model_cfg.attention_head_dim,
        norm_num_groups=model_cfg.norm_num_groups)
    text = CLIPTextModel(tiny_clip_text_config(
        tokenizer, hidden_size=model_cfg.text_width, intermediate_size=4 * model_cfg.text_width,
        num_attention_heads=model_cfg.text_heads, num_hidden_layers=model_cfg.text_layers,
        projection_dim=model_cfg.text_width))
    return unet, text


def save_base_folder(folder: Path, unet, text_encoder, tokenizer_dir: Path, vae, scheduler_config: dict) -> Path:
    """Write an SD-1.5-layout folder (the files `StableDiffusionPipeline.from_pretrained` reads); the tokenizer's
    files are copied as built (`core.text.build_clip_tokenizer`: SD-1.5's four files, byte-stable)."""
    import shutil

    from diffusers import DDIMScheduler

    from dancegen.core.tiny import sd15_model_index, write_json

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet")
    text_encoder.save_pretrained(folder / "text_encoder")
    shutil.copytree(tokenizer_dir, folder / "tokenizer", dirs_exist_ok=True)
    vae.save_pretrained(folder / "vae")
    DDIMScheduler(**scheduler_config).save_pretrained(folder / "scheduler")
    write_json(folder / "model_index.json", sd15_model_index(with_text=True))
    return folder


def make_loss_fn(scheduler_config: dict):
    """MSE to the scheduler's target (v or eps) at a uniform timestep; text and ControlNet as the model has them; a
    batch's ``weights`` (``person_weights``) weight the latent pixels."""
    from diffusers import DDPMScheduler

    from dancegen.core.schedulers import prediction_target, uniform_noising

    sched = DDPMScheduler(**{k: v for k, v in scheduler_config.items() if k != "set_alpha_to_one"})
    alphas = sched.alphas_cumprod
    v_pred = sched.config.prediction_type == "v_prediction"

    def loss_fn(m, batch):
        z0 = batch["latents"]
        t, noise, zt, a = uniform_noising(alphas, z0, sched.config.num_train_timesteps)
        context = m.text_encoder(batch["input_ids"])[0]
        kw = {}
        if m.controlnet is not None:
            down, mid = m.controlnet(zt, t, encoder_hidden_states=context, controlnet_cond=batch["control"],
                                     return_dict=False)
            kw = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        pred = m.unet(zt, t, encoder_hidden_states=context, **kw).sample
        target = prediction_target(a, z0, noise, v_pred)
        err = (pred.float() - target.float()) ** 2
        if "weights" in batch:  # a weighted mean over the batch
            w = batch["weights"]
            return (err * w).sum() / (w.sum() * err.shape[1])
        return err.mean()

    return loss_fn


def load_vae(ref: str):
    """The ``vae/`` of a bundled name or a local model folder (any model with an SD-layout autoencoder)."""
    from diffusers import AutoencoderKL

    from dancegen.core.weights import resolve_model
    from dancegen.errors import MissingWeightsError

    folder = Path(resolve_model(ref, kind="any").location) / "vae"
    if not (folder / "config.json").is_file():
        raise MissingWeightsError("model.vae_from has no vae/ folder", path=folder.parent)
    return AutoencoderKL.from_pretrained(folder, dtype=torch.float32)  # bundled weights are fp16


@torch.no_grad()
def match_cond_embedding(net, vae, frames, controls) -> float:
    """Give the ControlNet's condition embedding a random last conv whose output std equals the std of the copied
    encoder's ``conv_in`` features on these frames (see `T2ITrainConfig.cond_embedding_init`); returns the scale."""
    from dancegen.t2i.data import encode_latents, to_unit

    conv = net.controlnet_cond_embedding.conv_out
    conv.reset_parameters()
    feats = net.conv_in(encode_latents(vae, frames))
    emb = net.controlnet_cond_embedding(to_unit(controls))
    scale = float(feats.std() / emb.std().clamp_min(1e-8))
    conv.weight.mul_(scale)
    conv.bias.mul_(scale)
    return scale


def _load_base(folder):
    from dancegen.core.weights import load_sd15_components, resolve_model

    comps = load_sd15_components(resolve_model(str(folder), kind="sd15"), dtype=torch.float32)  # bundled: fp16
    if comps.text_encoder is None or comps.tokenizer is None:
        from dancegen.errors import MissingWeightsError

        raise MissingWeightsError("model.base has no text_encoder/ + tokenizer/ (a text-to-image folder is needed)",
                                  path=folder)
    return comps


def train(config, output_dir: str | os.PathLike, resume: str = "auto", progress=None) -> dict:
    """Train the recipe's model and write `output_dir/model` (the caller seeds the global RNGs first).

    Args:
        config: a `T2IRecipe`.
        output_dir: the run folder.
        resume: "auto" (continue from the latest checkpoint), "never", or a checkpoint folder.
        progress: optional `progress(message)` callback.
    """
    import numpy as np

    from dancegen.core.stages import loop_config, run_stages, start_run
    from dancegen.core.train import Trainer
    from dancegen.core.train_config import OptimConfig
    from dancegen.t2i.data import T2IDataset, ensure_frames, ensure_latents, person_weights, tokenize

    say = progress or (lambda msg: None)
    out = start_run(config, output_dir)
    mc, t = config.model, config.train
    control = config.control
    say(f"data: {config.data.num_clips} synthetic clips (master seed {config.data.seed})")
    arrays = ensure_frames(out / "data", config.data, say)

    if control is None:
        from dancegen.core.text import build_clip_tokenizer
        from dancegen.t2i.captions import tokenizer_words

        vae = load_vae(mc.vae_from) if mc.vae_from else None  # None: the vae stage trains it
        sched_cfg = sd15_scheduler_config(mc)
        if mc.init_from:  # the model's own tokenizer (and, without vae_from, autoencoder) comes with it
            base = _load_base(mc.init_from)
            unet, text, tokenizer = base.unet, base.text_encoder, base.tokenizer
            tokenizer_dir = Path(base.path) / "tokenizer"
            vae = vae or base.vae
        else:
            tokenizer_dir = out / "data" / "tokenizer"
            tokenizer = build_clip_tokenizer(tokenizer_dir, tokenizer_words())
            unet, text = build_base(mc, tokenizer)
        model = T2IModel(unet, text)
        trainable = ["unet", "text_encoder"]
    else:
        from diffusers import ControlNetModel

        from dancegen.core.tiny import controlnet_embedding_channels

        base = _load_base(mc.base)
        tokenizer, vae, sched_cfg = base.tokenizer, base.vae, dict(base.scheduler.config)
        halvings = len(vae.config.block_out_channels) - 1
        if mc.init_from:
            from dancegen.core.weights import resolve_model

            net = ControlNetModel.from_pretrained(resolve_model(mc.init_from, kind="unet").location,
                                                  dtype=torch.float32)
        else:
            net = ControlNetModel.from_unet(base.unet, conditioning_channels=3,
                                            conditioning_embedding_out_channels=controlnet_embedding_channels(halvings))
        if not mc.init_from and t.cond_embedding_init == "matched":
            arrays_c = arrays["pose_maps" if control == "openpose" else "depth_maps"]
            match_cond_embedding(net, vae, arrays["frames"][:64], arrays_c[:64])
        model = T2IModel(base.unet, base.text_encoder, net)
        trainable = ["controlnet"]

    ids = tokenize(tokenizer, [c for caps in arrays["captions"] for c in caps])
    ids = ids.reshape(len(arrays["captions"]), -1, ids.shape[-1])
    control_images = None if control is None else arrays["pose_maps" if control == "openpose" else "depth_maps"]
    empty = tokenize(tokenizer, [""])[0]
    loss_fn = make_loss_fn(sched_cfg)
    latents = None

    def optim(stage):
        return OptimConfig(name=t.optimizer, lr=stage.lr, weight_decay=t.weight_decay, grad_clip=t.grad_clip,
                           warmup_steps=t.warmup_steps, lr_schedule=t.lr_schedule, min_lr_ratio=t.min_lr_ratio)

    def run_vae(stage, stage_dir: Path, resume_k: str) -> dict:
        from dancegen.core.latents import calibrate_scaling_factor
        from dancegen.t2i.data import FrameDataset, to_unit

        nonlocal vae
        frames = arrays["frames"]
        weights = (person_weights(arrays["masks"], frames.shape[1], stage.person_weight)
                   if stage.person_weight > 0 else None)
        ae = AutoencoderModel(build_vae(mc, frames.shape[1]))
        loop = loop_config(t, stage, stage_dir, resume_k, ["vae"], config.seed, optim(stage))
        result = Trainer(ae, make_vae_loss_fn(stage), FrameDataset(frames, weights), loop).fit()
        vae = ae.vae.eval().requires_grad_(False)
        pick = np.linspace(0, len(frames) - 1, min(len(frames), 512)).round().astype(int)
        scale = calibrate_scaling_factor(vae, to_unit(frames[pick]) * 2 - 1)
        vae.save_pretrained(stage_dir / MODEL_SUBDIR / "vae")
        say(f"vae latent scaling factor {scale:.4g}")
        return {"steps": result.step, "loss": result.loss, "dir": str(stage_dir), "scaling_factor": scale,
                "trainable_parameters": sum(p.numel() for p in vae.parameters())}

    def ensure_vae_latents():
        nonlocal vae, latents
        if vae is None:  # the vae stage ran in an earlier process (train.run selected the later stages only)
            from dancegen.core.stages import stage_dir as folder_of

            vae_dir = folder_of(out, 0, t.stages[0]) / MODEL_SUBDIR / "vae"
            if not (vae_dir / "config.json").is_file():
                from dancegen.errors import InputError

                raise InputError(f"{vae_dir}: the vae stage has not run yet (train.run must select it first)")
            from diffusers import AutoencoderKL

            vae = AutoencoderKL.from_pretrained(vae_dir, dtype=torch.float32)
        if latents is None:
            vae.eval().requires_grad_(False)
            latents = ensure_latents(out / "data" / "latents.pt", vae, arrays["frames"], say)
            say(f"data: {len(latents)} frames, {ids.shape[0] * ids.shape[1]} captions")
        return latents

    def run_one(stage, stage_dir: Path, resume_k: str) -> dict:
        if stage.name == "vae":
            return run_vae(stage, stage_dir, resume_k)
        latents = ensure_vae_latents()
        weights = (person_weights(arrays["masks"], latents.shape[-1], stage.person_weight)
                   if stage.person_weight > 0 else None)
        dataset = T2IDataset(latents, ids, np.asarray(arrays["clip"]), empty, t.prompt_dropout, control_images,
                             weights)
        loop = loop_config(t, stage, stage_dir, resume_k, trainable, config.seed, optim(stage))
        groups = None
        if control is not None and t.zero_conv_lr_scale != 1.0:
            from dancegen.core.train_config import ParamGroup

            groups = [ParamGroup("zero_convs", list(ZERO_CONVS), lr=stage.lr * t.zero_conv_lr_scale)]
        trainer = Trainer(model, loss_fn, dataset, loop, param_groups=groups)
        result = trainer.fit()
        if control is None:  # each stage's model: a ControlNet recipe's model.base may name it
            save_base_folder(stage_dir / MODEL_SUBDIR, model.unet, model.text_encoder, tokenizer_dir, vae, sched_cfg)
        return {"steps": result.step, "loss": result.loss, "dir": str(stage_dir),
                "trainable_parameters": sum(trainer.group_counts.values())}

    report = {"output_dir": str(out), "frames": len(arrays["frames"]),
              "stages": run_stages(config, out, resume, run_one, say)}
    model.eval().requires_grad_(False)
    folder = out / MODEL_SUBDIR
    if control is None and latents is None:  # only the vae stage ran: the model folder is its autoencoder
        vae.save_pretrained(folder / "vae")
    elif control is None:
        save_base_folder(folder, model.unet, model.text_encoder, tokenizer_dir, vae, sched_cfg)
    else:
        model.controlnet.save_pretrained(folder)
    report["model"] = str(folder)
    return report
