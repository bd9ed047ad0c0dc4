"""Training of DabFusion on the shared loop: stage 1 the LFAE, stage 2 the flow diffusion model (paper §3.3-3.4).

- `lfae`: two frames of one video (x_ref, x_dri); the LFAE reconstructs x_dri by warping x_ref's latent; loss
  `LFAELoss` (VGG-19 pyramid perceptual + equivariance, or the stated pixel substitute without VGG weights).
  Trainable: ``lfae.*``.
- `diffusion`: clips of N + 1 frames; the frozen LFAE turns them into targets a0 = [flow, 2 occ - 1]; the U-Net
  learns eps-prediction (Eq. 6) conditioned on the reference latent and the music (condition dropped with
  `model.diffusion.null_cond_prob` for guidance [L]). Trainable: ``unet.*`` and the scratch music encoder
  ``music.*``; the CLAP / Wav2CLIP adapters are trained beforehand on their own objectives (`fit_adapters`).

Outputs in ``output_dir``: ``recipe.yaml``, ``stage-<k>-<name>/`` (metrics.jsonl, checkpoints/, model/) and
``model/`` (the final model folder: ``dancegen music2dance --model OUTPUT_DIR`` loads it).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dancegen.errors import InputError
from dancegen.methods.dance_any_beat.config import DanceAnyBeatConfig, StageConfig
from dancegen.methods.dance_any_beat.model import MODEL_SUBDIR, DanceAnyBeatModel, load_init

TRAINABLE = {"lfae": ["lfae"], "diffusion": ["unet", "music"]}
LOGGED = ("reconstruction", "equivariance_value", "equivariance_jacobian", "l1", "occlusion_mean")


def make_lfae_loss(cfg: DanceAnyBeatConfig):
    """`loss_fn(model, batch)` of stage 1 and the description of the loss used."""
    from dancegen.methods.dance_any_beat.lfae import LFAELoss

    lc = cfg.model.loss
    crit = LFAELoss(vgg_weights=lc.vgg_weights, perceptual_weights=tuple(lc.perceptual_weights),
                    scales=tuple(lc.scales), equivariance_value=lc.equivariance_value,
                    equivariance_jacobian=lc.equivariance_jacobian, sigma_affine=lc.sigma_affine)

    def loss_fn(m, batch):
        crit.to(batch["ref"].device)
        loss, logs = crit(m.lfae, batch["ref"], batch["dri"])
        return loss, {k: v for k, v in logs.items() if k in LOGGED}  # not the prediction image

    return loss_fn, getattr(crit, "description", "")


def make_diffusion_loss(cfg: DanceAnyBeatConfig):
    """`loss_fn(model, batch)` of stage 2: eps-MSE on LFAE flow targets with condition dropout."""
    p_null = cfg.model.diffusion.null_cond_prob

    def loss_fn(m, batch):
        z0, a0 = m.flow_targets(batch["ref"], batch["frames"])
        cond, frame = m.condition(batch)
        if p_null > 0:  # the null condition is all zeros [L], the same rows for both
            keep = (torch.rand(cond.shape[0], device=cond.device) >= p_null).to(cond.dtype)
            cond = cond * keep[:, None]
            frame = frame * keep[:, None, None] if frame is not None else None
        return m.diffusion.training_loss(m.denoiser(z0, cond, frame), a0)

    return loss_fn


def train(config: DanceAnyBeatConfig, output_dir: str | os.PathLike, resume: str = "auto", progress=None) -> dict:
    """Run the selected stages of a recipe and export the model (the caller seeds the global RNGs first).

    Args:
        config: the resolved recipe.
        output_dir: run folder (see the module docstring).
        resume: "auto" (continue every stage from its latest checkpoint), "never", or a checkpoint folder.
        progress: optional ``progress(message)`` callback.

    Returns:
        Report: output_dir, model folder, per stage steps / last loss / trainable parameter count.
    """
    from dancegen.config import save_config
    from dancegen.core.train import Trainer
    from dancegen.methods.dance_any_beat.data import FramePairs, MusicClips, _AistCache, ensure_synth_data

    say = progress or (lambda msg: None)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "recipe.yaml")
    if config.data.synth.num_clips > 0:
        say(f"synth: {config.data.synth.num_clips} AIST++-layout clips in {config.data.root}")
        ensure_synth_data(config)
    model = DanceAnyBeatModel(config)
    if config.model.init_from:
        loaded = load_init(model, config.model.init_from)
        say(f"init from {config.model.init_from}: {loaded}")
    stages = config.train.selected_stages()
    if not stages:
        raise InputError("train.run selects no stage")
    cache = _AistCache(Path(config.data.root), config)
    report: dict = {"output_dir": str(out), "stages": {}}
    t = config.train
    for k, stage in enumerate(config.train.stages):
        if stage not in stages:
            continue
        stage_dir = out / f"stage-{k + 1}-{stage.name}"
        if stage.name == "lfae":
            data = FramePairs(config, "train", cache=cache)
            loss_fn, desc = make_lfae_loss(config)
            report["lfae_loss"] = desc
            model.lfae_frozen = False
        else:
            data = MusicClips(config, "train", cache=cache)
            loss_fn = make_diffusion_loss(config)
            model.lfae_frozen = True
        say(f"stage {stage.name}: {stage.steps} steps at lr {stage.lr:g} on {len(data)} items")
        loop = _loop_config(stage, t, config.seed, stage_dir, resume)
        trainer = Trainer(model, loss_fn, data, loop)
        result = trainer.fit()
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.eval()
        model.save_pretrained(stage_dir / MODEL_SUBDIR)
        report["stages"][stage.name] = {"steps": result.step, "loss": result.loss, "dir": str(stage_dir),
                                        "trainable_parameters": sum(trainer.group_counts.values())}
    model.lfae_frozen = False
    model.eval().requires_grad_(False).to("cpu")
    model.save_pretrained(out / MODEL_SUBDIR)
    report["model"] = str(out / MODEL_SUBDIR)
    return report


def _loop_config(stage: StageConfig, t, seed: int, stage_dir: Path, resume: str):
    from dancegen.core.train_config import OptimConfig, TrainLoopConfig

    stage_resume = resume
    if resume not in ("auto", "never"):
        stage_resume = resume if stage_dir.resolve() in Path(resume).resolve().parents else "auto"
    return TrainLoopConfig(
        max_steps=stage.steps, batch_size=stage.batch_size, mixed_precision=t.mixed_precision, seed=seed,
        device=t.device, num_workers=t.num_workers, log_every=min(t.log_every, stage.steps),
        checkpoint_every=min(t.checkpoint_every, stage.steps), keep_checkpoints=t.keep_checkpoints,
        output_dir=str(stage_dir), resume=stage_resume, trainable=TRAINABLE[stage.name],
        optim=OptimConfig(name="adam", lr=stage.lr, betas=tuple(stage.betas), weight_decay=0.0,
                          grad_clip=stage.grad_clip, lr_schedule="multistep" if stage.milestones else "constant",
                          milestones=list(stage.milestones), gamma=stage.gamma))
