"""Training of Dancing Avatar's previous-frame module (inter-frame alignment, spec §2.3) on the shared loop.

    dancegen train --recipe recipes/dancing_avatar/prev_frame_tiny.yaml -o runs/dancing-avatar-tiny

Stage `prev_frame`: the base (UNet, text encoder, VAE) stays frozen and only the previous-frame ControlNet trains
([P] "the pre-trained T2I diffusion model remains static, and the sole optimization occurs within the inter-frame
alignment module"), on ``[current, next, caption(next)]`` pairs of the synthetic world (`data.FramePairDataset`).
Objective [std]: ``|| target - eps_theta(z_t, t, tau(c); ControlNet_phi(current)) ||^2`` with ``z_0`` the next
frame's latent and the target the base's (eps or v, its scheduler's ``prediction_type``). With
``train.with_pose_controlnet`` the frozen OpenPose ControlNet adds its residuals for the next frame's pose as at
inference, so the module learns what the pose does not say (appearance, background) [A].

The run folder holds ``recipe.yaml``, ``data/`` (rendered pairs, latents), ``stage-1-prev_frame/`` (metrics,
checkpoints: ``resume="auto"`` continues exactly) and ``model/`` (``dancing_avatar.yaml`` + ``controlnet_prev/``: the
model folder `text2character --model RUN` uses).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dancegen.methods.dancing_avatar.model import MODEL_SUBDIR

#: The new layers of the previous-frame ControlNet (core.train_config patterns): the residual outputs and the
#: condition embedding; the rest is the copied UNet encoder.
NEW_LAYERS = ("controlnets.prev.controlnet_down_blocks", "controlnets.prev.controlnet_mid_block",
              "controlnets.prev.controlnet_cond_embedding")


def make_loss_fn(scheduler_config: dict):
    """MSE to the base's target at a uniform timestep, with the ControlNet set's summed residuals (when the model has
    ``controlnets``); a batch's ``context`` (precomputed text embeddings) replaces its ``input_ids``."""
    from diffusers import DDPMScheduler

    from dancegen.core.schedulers import prediction_target, uniform_noising

    sched = DDPMScheduler.from_config({k: v for k, v in scheduler_config.items() if k != "set_alpha_to_one"})
    alphas = sched.alphas_cumprod
    v_pred = sched.config.prediction_type == "v_prediction"

    def loss_fn(m, batch):
        z0 = batch["latents"]
        t, noise, zt, a = uniform_noising(alphas, z0, sched.config.num_train_timesteps)
        context = batch.get("context")
        if context is None:
            with torch.no_grad():
                context = m.text_encoder(batch["input_ids"])[0]
        kw = {}
        if getattr(m, "controlnets", None) is not None:
            res = m.controlnets(zt, t, context, {"prev": batch["prev"], "pose": batch.get("pose")}, num_frames=1)
            kw = res.as_kwargs() if res is not None else {}
        pred = m.unet(zt, t, encoder_hidden_states=context, **kw).sample
        target = prediction_target(a, z0, noise, v_pred)
        return ((pred.float() - target.float()) ** 2).mean()

    return loss_fn


def train(config, output_dir: str | os.PathLike, resume: str = "auto", progress=None) -> dict:
    """Train the previous-frame module and write ``output_dir/model`` (the caller seeds the global RNGs first).

    Args:
        config: a `DancingAvatarConfig`.
        output_dir: the run folder.
        resume: "auto" | "never" | a checkpoint folder.
        progress: optional ``progress(message)``.
    """
    from dancegen.core.controlnet import ControlNetSet
    from dancegen.core.stages import loop_config, run_stages, start_run
    from dancegen.core.train import Trainer
    from dancegen.core.train_config import OptimConfig, ParamGroup
    from dancegen.methods.dancing_avatar.data import FramePairDataset, encode_frames, ensure_pairs
    from dancegen.methods.dancing_avatar.model import (
        LAYOUT,
        PREV_SUBDIR,
        PrevFrameModel,
        load_base,
        load_controlnets,
        new_prev_controlnet,
    )

    say = progress or (lambda msg: None)
    out = start_run(config, output_dir)
    t, d = config.train, config.data
    comps = load_base(config.model.base)
    halvings = comps.vae_scale_factor.bit_length() - 1
    if d.size % comps.vae_scale_factor:
        from dancegen.errors import InputError

        raise InputError(f"data.size {d.size} must be a multiple of the VAE factor {comps.vae_scale_factor}")
    pose = load_controlnets(config.model.pose_controlnet, None)["pose"] if t.with_pose_controlnet else None
    prev = new_prev_controlnet(comps.unet, config.inter.condition, halvings)
    nets = ControlNetSet({"pose": pose, "prev": prev}, {"pose": config.sampler.pose_scale})
    model = PrevFrameModel(comps.unet, comps.text_encoder, nets)

    say(f"data: {d.num_clips} synthetic clips of {d.num_frames} frames at {d.size}px (master seed {d.seed})")
    arrays = ensure_pairs(Path(d.root) if d.root else out / "data", d, say)
    n, f = arrays["frames"].shape[:2]
    latents_file = (Path(d.root) if d.root else out / "data") / "latents.pt"
    if latents_file.is_file() and torch.load(latents_file, weights_only=True).get("shape") == [n, f]:
        latents = torch.load(latents_file, weights_only=True)["latents"]
    else:
        say("encoding the frames with the autoencoder")
        latents = encode_frames(comps.vae, arrays["frames"].reshape(n * f, *arrays["frames"].shape[2:]))
        latents = latents.reshape(n, f, *latents.shape[1:])
        from dancegen.io.atomic import atomic_path

        with atomic_path(latents_file) as tmp:
            torch.save({"shape": [n, f], "latents": latents}, tmp)
    tok = comps.tokenizer

    def ids(texts):
        return tok(list(texts), padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").input_ids

    dataset = FramePairDataset(latents, arrays["frames"], arrays["pose_maps"] if pose is not None else None,
                               ids([str(c) for c in arrays["captions"]]), ids([""])[0], d.gap, t.prompt_dropout,
                               config.inter.condition)
    say(f"data: {len(dataset)} frame pairs")
    loss_fn = make_loss_fn(dict(comps.scheduler.config))

    def run_one(stage, stage_dir: Path, resume_k: str) -> dict:
        loop = loop_config(t, stage, stage_dir, resume_k, ["controlnets.prev"], config.seed,
                           OptimConfig(name=t.optimizer, lr=stage.lr, weight_decay=t.weight_decay,
                                       grad_clip=t.grad_clip, warmup_steps=t.warmup_steps,
                                       lr_schedule=t.lr_schedule, min_lr_ratio=t.min_lr_ratio))
        groups = None
        if t.zero_conv_lr_scale != 1.0:
            groups = [ParamGroup("new_layers", list(NEW_LAYERS), lr=stage.lr * t.zero_conv_lr_scale)]
        trainer = Trainer(model, loss_fn, dataset, loop, param_groups=groups)
        result = trainer.fit()
        stage_model = stage_dir / MODEL_SUBDIR
        LAYOUT.save(stage_model, config, lambda tmp: prev.save_pretrained(tmp / PREV_SUBDIR))
        return {"steps": result.step, "loss": result.loss, "dir": str(stage_dir),
                "trainable_parameters": sum(trainer.group_counts.values())}

    report = {"output_dir": str(out), "pairs": len(dataset),
              "stages": run_stages(config, out, resume, run_one, say)}
    model.eval().requires_grad_(False)
    folder = out / MODEL_SUBDIR
    LAYOUT.save(folder, config, lambda tmp: prev.save_pretrained(tmp / PREV_SUBDIR))
    report["model"] = str(folder)
    return report
