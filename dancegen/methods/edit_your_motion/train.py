"""One-shot fine-tuning of Edit-Your-Motion: spatio-temporal two-stage learning (paper §III-D, spec §2.7).

- ``temporal`` (stage 1): the temporal attention layers and MA train on the **masked** frames ``v * m`` (the person
  only), in order; everything else is frozen.
- ``spatial`` (stage 2): RCA (every attn1 projection; ``rca_trainable: q_only`` trains only ``to_q``) and MA train on
  the whole frames; the temporal attention keeps what stage 1 learned.
- ``joint`` (the w/o-STL ablation): all three on the whole frames in one stage.

Loss (Eq. 16): ``|| eps - eps_theta(z_t, t, p, MA(ControlNet(v_sk, p), u)) ||^2`` with ``z_t`` the DDPM q-sample of
the clip's latents (Eq. 13), one timestep per clip, independent noise per frame. The ControlNet is frozen and the
skeletons are the source's own.

The run folder is a `train` run folder (``core.stages``): ``recipe.yaml``, ``case.npz`` (the prepared source, reused
when a crashed run resumes), ``stage-<k>-<name>/`` with checkpoints and metrics, and ``model/``, the case folder
``animate --method edit-your-motion --model RUN`` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dancegen.methods.edit_your_motion.config import EditYourMotionConfig, StageConfig

TEMPORAL, MA = "unet.temporal_blocks", "adapter"
RCA_ALL, RCA_Q = "unet.unet.*.attn1", "unet.unet.*.attn1.to_q"


def stage_patterns(stage: StageConfig, model) -> list[str]:
    """The trainable parameter patterns of a stage (MA only when the model has it)."""
    rca = RCA_Q if stage.rca_trainable == "q_only" else RCA_ALL
    patterns = {"temporal": [TEMPORAL, MA], "spatial": [rca, MA], "joint": [TEMPORAL, rca, MA]}[stage.name]
    return [p for p in patterns if p != MA or model.adapter is not None]


def make_loss_fn(masked: bool, scheduler_config: dict, max_timestep: int | None = None):
    """``loss_fn(model, batch)`` for the shared Trainer (Eq. 16 on the masked or the whole frames).

    ``scheduler_config``: the base's scheduler config, from which the DDPM training schedule is built once.
    ``max_timestep`` caps the drawn timestep (``t ~ U{0, min(T, max_timestep) - 1}``); None draws from all T.
    """
    import torch
    from diffusers import DDPMScheduler

    from dancegen.core.schedulers import uniform_noising

    sched = DDPMScheduler.from_config(scheduler_config)
    alphas, num_t = sched.alphas_cumprod, sched.config.num_train_timesteps
    drawn_from = min(num_t, max_timestep or num_t)

    def loss_fn(m, batch):
        z0 = batch["masked_latents" if masked else "latents"]  # (B, C, F, h, w)
        t, noise, zt, _ = uniform_noising(alphas, z0, drawn_from)
        dtype = next(m.unet.parameters()).dtype
        pred = m.predict_noise(zt.to(dtype), t, batch["context"].to(dtype), batch["pose_images"].to(dtype))
        return torch.nn.functional.mse_loss(pred.float(), noise.float())

    return loss_fn


class _BarLogger:
    """The Trainer's logger as a progress bar of one stage (plus the usual status line with -v)."""

    def __init__(self, bar, total: int):
        self.bar, self.done, self.total = bar, 0, total

    def __call__(self, step: int, record: dict) -> None:
        from dancegen.console import debug

        self.bar.advance(step - self.done)
        self.done = step
        debug(f"step {step}/{self.total}  loss {record['loss']:.4g}")


def load_or_prepare_case(config: EditYourMotionConfig, out: Path, resume: str, say) -> dict:
    """The case arrays: ``out/case.npz`` when a run resumes, else prepared from the source and saved there."""
    from dancegen.io.atomic import save_npz
    from dancegen.methods.edit_your_motion.data import prepare_case

    file = out / "case.npz"
    if file.is_file() and resume != "never":
        with np.load(file, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    say("preparing the source: frames, skeletons, person masks")
    case = prepare_case(config, say)
    save_npz(file, True, **case)
    return case


def train(config: EditYourMotionConfig, output_dir: str | os.PathLike, resume: str = "auto", progress=None,
          dtype=None, allow_download: bool = False) -> dict:
    """Fine-tune on the recipe's case (``data.source``, ``data.prompt``) and write the case folder.

    The caller seeds the global RNGs first (``api.train`` / ``api.finetune_oneshot`` do).

    Args:
        config: the resolved recipe.
        output_dir: the run folder (module docstring).
        resume: "auto" (continue each stage from its latest checkpoint; finished stages are not re-run), "never",
            or a checkpoint folder of one stage.
        progress: optional ``progress(message)``.
        dtype: the networks' dtype (None: fp32).
        allow_download: let hub ids of the base / ControlNet download.

    Returns:
        Report: output_dir, model folder, per stage its steps, last loss and trainable parameter count.
    """
    from dancegen.console import progress_bar
    from dancegen.core.model_folder import MODEL_SUBDIR
    from dancegen.core.stages import loop_config, run_stages, start_run
    from dancegen.core.train import Trainer
    from dancegen.core.train_config import OptimConfig
    from dancegen.methods.edit_your_motion.data import CaseDataset
    from dancegen.methods.edit_your_motion.model import build_model

    say = progress or (lambda msg: None)
    out = start_run(config, output_dir)
    case = load_or_prepare_case(config, out, resume, say)
    say("loading the base and the pose ControlNet")
    model = build_model(config, dtype=dtype, allow_download=allow_download)
    dataset = CaseDataset(model, case)
    t = config.train

    def run_one(stage: StageConfig, stage_dir: Path, resume_k: str) -> dict:
        nonlocal model
        trainable = stage_patterns(stage, model)
        loop = loop_config(t, stage, stage_dir, resume_k, trainable, config.seed,
                           OptimConfig(name=t.optimizer, lr=stage.lr, weight_decay=t.weight_decay,
                                       grad_clip=t.grad_clip))
        with progress_bar(stage.steps, f"stage {stage.name}") as bar:
            loss_fn = make_loss_fn(stage.masked, model.scheduler.config, stage.max_timestep)
            trainer = Trainer(model, loss_fn, dataset, loop, logger=_BarLogger(bar, stage.steps))
            result = trainer.fit()
        model = trainer.accelerator.unwrap_model(trainer.model)
        return {"steps": result.step, "loss": result.loss, "masked": stage.masked,
                "trainable_parameters": sum(trainer.group_counts.values()), "dir": str(stage_dir)}

    report = {"output_dir": str(out), "frames": int(case["frames"].shape[0]),
              "stages": run_stages(config, out, resume, run_one, say)}
    model.eval().requires_grad_(False)
    model.to("cpu")
    model.save_pretrained(out / MODEL_SUBDIR, case)
    report["model"] = str(out / MODEL_SUBDIR)
    return report
