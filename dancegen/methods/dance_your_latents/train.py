"""Training of Dance-Your-Latents: the paper's two stages on the shared loop (paper §4.5, spec §3).

- `stsa_only` (stage 1): everything of the DisCo baseline frozen, only the inserted temporal blocks train
  (lr 2e-4, 50k steps in the paper).
- `finetune` (stage 2): everything except the pose and background ControlNets (and the frozen VAE / CLIP tower)
  trains: the image UNet, the temporal blocks and DisCo's CLIP projection (lr 2e-5, 20k steps).
- `disco`: trains the frame-by-frame DisCo baseline itself (UNet, both ControlNets, projection) for the t1_disco row
  and as the initialisation of the others when no DisCo checkpoint is at hand.
- `vae`: trains the autoencoder (L2 reconstruction + KL), then sets its latent scaling factor to 1 / std of the
  latents (how SD's 0.18215 was chosen). Only the tiny model, which starts from random weights, needs it.

Loss: DisCo Eq. 3 on the whole clip, ``|| eps - eps_theta(z_t, t, f, tau(p), mu(g)) ||^2`` with eps-prediction (or
the v target ``sqrt(a) eps - sqrt(1 - a) z_0`` with ``model.prediction_type: v_prediction``), one
timestep per clip and (``model.shared_noise.train``) one noise sample shared by all frames; the frame-by-frame
``disco`` variant and every variant's ``disco`` stage use independent noise and timesteps per frame. The reference is dropped with probability
``train.ref_dropout`` (DisCo's CFG training).

Outputs in ``output_dir``: ``recipe.yaml`` (resolved), ``stage-<k>-<name>/`` (metrics.jsonl, checkpoints/, samples/,
and ``model/``, the model as that stage left it: another recipe's ``model.init_from`` can start from it) and
``model/`` (the trained model folder: ``dancegen animate --model OUTPUT_DIR`` loads it).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dancegen.methods.dance_your_latents.config import DanceYourLatentsConfig, StageConfig
from dancegen.methods.dance_your_latents.model import MODEL_SUBDIR

# Parameter patterns (core.train_config syntax) per stage: (trainable, frozen).
STAGE_PATTERNS: dict[str, tuple[list[str], list[str]]] = {
    "vae": (["vae"], []),
    "disco": (["unet.unet", "controlnets", "reference.projection"], []),
    "stsa_only": (["unet.temporal_blocks"], []),
    "finetune": (["unet", "reference.projection"], []),
}


def stage_patterns(stage: StageConfig, model) -> tuple[list[str], list[str]]:
    """Trainable / frozen patterns of a stage for this model (parts the model lacks are left out)."""
    trainable, frozen = STAGE_PATTERNS[stage.name]
    if stage.trainable:
        trainable = list(stage.trainable)
    names = [n for n, _ in model.named_parameters()]
    from dancegen.core.train_config import pattern_matches

    kept = [p for p in trainable if any(pattern_matches(n, p) for n in names)]
    return kept, list(frozen)


def make_loss_fn(model, cfg: DanceYourLatentsConfig, stage: str | None = None):
    """``loss_fn(model, batch)`` for the shared Trainer: eps-MSE of DisCo Eq. 3 over the clip.

    The frame-by-frame variant, and the `disco` stage of any variant (it trains the DisCo image model, whose frames
    are independent), draw independent noise and timesteps per frame: with one noise sample and one timestep per clip
    the frames of a batch are near copies of each other, which wastes most of the batch (measured on the tiny model:
    its samples from pure noise were still unstable after 1,500 such steps).
    """
    from diffusers import DDPMScheduler

    from dancegen.core.schedulers import prediction_target

    noise_sched = DDPMScheduler.from_config(model.scheduler.config)
    alphas = noise_sched.alphas_cumprod
    per_frame = cfg.model.variant == "disco" or stage == "disco"
    shared = cfg.model.shared_noise.train and not per_frame
    ref_dropout = cfg.train.ref_dropout
    uses_flow = cfg.model.uses_flow
    v_pred = noise_sched.config.prediction_type == "v_prediction"

    def loss_fn(m, batch):
        frames = batch["frames"]  # (B, 3, F, H, W) in [-1, 1]
        b, _, f = frames.shape[:3]
        with torch.no_grad():
            z0 = _encode(m.vae, frames.permute(0, 2, 1, 3, 4).reshape(b * f, *frames.shape[1:2], *frames.shape[3:]))
            z0 = z0.reshape(b, f, *z0.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, C, F, h, w)
            bg = _encode(m.vae, batch["background"]) if m.controlnets.background is not None else None
        context = m.reference(batch["reference"], drop_prob=ref_dropout)
        n_t = b * f if per_frame else b
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (n_t,), device=z0.device)
        if shared:
            noise = torch.randn(b, z0.shape[1], 1, *z0.shape[3:], device=z0.device).expand_as(z0).contiguous()
        else:
            noise = torch.randn_like(z0)
        a = alphas.to(z0.device)[t].float()
        a = a.view(b, 1, f, 1, 1) if per_frame else a.view(b, 1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        flows = batch.get("flows") if uses_flow else None
        pred = m.predict_noise(zt, t, context, batch["pose_maps"], bg, flows)
        target = prediction_target(a, z0, noise, v_pred)
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    return loss_fn


def make_vae_loss_fn(kl_weight: float):
    """Autoencoder loss (`core.latents.autoencoder_loss`: squared error + ``kl_weight`` KL) on every frame of the
    clip."""
    from dancegen.core.latents import autoencoder_loss

    def loss_fn(m, batch):
        frames = batch["frames"]
        b, c, f = frames.shape[:3]
        return autoencoder_loss(m.vae, frames.permute(0, 2, 1, 3, 4).reshape(b * f, c, *frames.shape[3:]), kl_weight)

    return loss_fn


def calibrate_vae_scaling(model, dataset, max_clips: int = 16) -> float:
    """Set ``vae.config.scaling_factor`` to 1 / std of the latent means over up to `max_clips` clips."""
    from dancegen.core.latents import calibrate_scaling_factor

    frames = torch.cat([dataset[i]["frames"].permute(1, 0, 2, 3) for i in range(min(max_clips, len(dataset)))])
    return calibrate_scaling_factor(model.vae, frames)


def _encode(vae, images: torch.Tensor) -> torch.Tensor:
    from dancegen.core.latents import encode_images

    return encode_images(vae, images)


def make_sample_fn(cfg: DanceYourLatentsConfig, dataset):
    """Write a short sample video of the first training clip (poses of that clip, its reference)."""

    def sample_fn(model, step, out_dir):
        import numpy as np

        from dancegen.io.video import write_video
        from dancegen.methods.dance_your_latents.pipeline import DanceYourLatentsPipeline, to_uint8_video

        item = dataset[0]
        video = dataset.videos[dataset.index[0][0]]
        seq = video["poses"][list(range(dataset.index[0][1], dataset.index[0][1] + dataset.num_frames * dataset.stride,
                                         dataset.stride))]
        ref = ((item["reference"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        pipe = DanceYourLatentsPipeline.from_model(model)
        pipe.set_progress_bar_config(disable=True)
        h, w = cfg.data.resolution
        bg = ((item["background"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        out = pipe(ref, seq, background=bg, height=h, width=w, num_inference_steps=cfg.inference.steps,
                   guidance_scale=cfg.inference.guidance_scale, generator=torch.Generator().manual_seed(cfg.seed),
                   window=cfg.inference.window).frames
        gt = ((item["frames"].permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        write_video(Path(out_dir) / "sample.mp4", np.concatenate([gt, to_uint8_video(out)], axis=2), fps=8)

    return sample_fn


def train(config: DanceYourLatentsConfig, output_dir: str | os.PathLike, resume: str = "auto",
          progress=None) -> dict:
    """Run the selected stages (`train.run`) of a recipe and export the model.

    The caller seeds the global RNGs (``dancegen.runtime.seed_everything(config.seed)``, as ``api.train`` does)
    before calling: model initialisation draws from them.

    Args:
        config: the resolved recipe.
        output_dir: run folder (see the module docstring).
        resume: "auto" (continue every stage from its latest checkpoint; finished stages are restored, not re-run),
            "never" (start over), or the path of a checkpoint folder of one stage (earlier stages resume "auto",
            later ones start over).
        progress: optional ``progress(message)`` callback.

    Returns:
        Report dict: output_dir, model folder, per stage its steps, last loss, trainable parameter count.
    """
    from dancegen.core.stages import loop_config, run_stages, start_run
    from dancegen.core.train import Trainer
    from dancegen.core.train_config import OptimConfig
    from dancegen.methods.dance_your_latents.data import dataset_from_config, ensure_synth_data
    from dancegen.methods.dance_your_latents.model import build_model

    say = progress or (lambda msg: None)
    out = start_run(config, output_dir)
    if config.data.synth.num_clips > 0:
        say(f"synth: {config.data.synth.num_clips} TikTok-layout clips in {config.data.root}")
        ensure_synth_data(config)

    say("building the model")
    model = build_model(config)
    latent_hw = tuple(int(r) // model.vae_scale_factor for r in config.data.resolution)
    dataset = dataset_from_config(config, latent_hw=latent_hw)
    say(f"data: {len(dataset)} clips of {config.data.num_frames} frames from {len(dataset.videos)} videos")
    t = config.train

    def run_one(stage: StageConfig, stage_dir: Path, resume_k: str) -> dict:
        nonlocal model
        trainable, frozen = stage_patterns(stage, model)
        if not trainable:
            say(f"stage {stage.name}: skipped, this variant has no parameters it trains")
            return {"skipped": "no trainable parameters for this variant"}
        loop = loop_config(t, stage, stage_dir, resume_k, trainable, config.seed,
                           OptimConfig(name=t.optimizer, lr=stage.lr, weight_decay=t.weight_decay,
                                       grad_clip=t.grad_clip), frozen=frozen)
        is_vae = stage.name == "vae"
        loss_fn = make_vae_loss_fn(stage.kl_weight) if is_vae else make_loss_fn(model, config, stage.name)
        trainer = Trainer(model, loss_fn, dataset, loop,
                          sample_fn=make_sample_fn(config, dataset) if t.sample_every and not is_vae else None)
        result = trainer.fit()
        model = trainer.accelerator.unwrap_model(trainer.model)
        rep = {"steps": result.step, "loss": result.loss, "trainable_parameters": sum(trainer.group_counts.values()),
               "dir": str(stage_dir)}
        if is_vae:
            model.eval()
            rep["scaling_factor"] = calibrate_vae_scaling(model, dataset)
            say(f"vae latent scaling factor {model.scaling_factor:.4g}")
        if not (stage_dir / MODEL_SUBDIR).is_dir():  # each stage's model: the `model.init_from` of other recipes
            model.save_pretrained(stage_dir / MODEL_SUBDIR)
        rep["model"] = str(stage_dir / MODEL_SUBDIR)
        return rep

    report = {"output_dir": str(out), "num_clips": len(dataset), "stages": run_stages(config, out, resume, run_one, say)}
    model.eval().requires_grad_(False)
    model.to("cpu")
    model.save_pretrained(out / MODEL_SUBDIR)
    report["model"] = str(out / MODEL_SUBDIR)
    return report
