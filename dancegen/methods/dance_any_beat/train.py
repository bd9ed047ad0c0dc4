"""Training of DabFusion: the music adapters, then on the shared loop stage 1 the LFAE and stage 2 the flow diffusion
model (paper §3.2-3.4).

- `adapters` (pretrained music branches only, spec §2.2, G3 [A]): the contrastive MLP adapters on frozen embeddings
  of the training clips (`music.fit_adapters`, `music.adapter_epochs` epochs [P]). CLAP: the clip's audio embedding vs
  the CLAP text embedding of "a {genre} dance music" (clips of one genre share a caption and are positives of each
  other); Wav2CLIP: the clip's audio embedding vs the renormalised mean CLIP image embedding (`music.clip`) of its N
  frames. The audio-side adapters become ``clap_adapter`` / ``wav2clip_adapter`` and stay frozen afterwards. Writes
  ``adapters.json`` (per-epoch losses, retrieval accuracies) and ``adapters/<branch>/`` (both sides of each pair).
- `lfae`: two frames of one video (x_ref, x_dri); the LFAE reconstructs x_dri by warping x_ref's latent; loss
  `LFAELoss` (VGG-19 pyramid perceptual + equivariance, or the stated pixel substitute without VGG weights).
  Trainable: ``lfae.*``.
- `diffusion`: clips of N + 1 frames; the frozen LFAE turns them into targets a0 = [flow, 2 occ - 1] (as they are or
  normalised, `model.diffusion.target`); the U-Net learns eps-prediction (Eq. 6; v with `model.diffusion.prediction:
  v`) conditioned on the reference latent and the music (condition dropped with `model.diffusion.null_cond_prob` for
  guidance [L]). Trainable: ``unet.*`` and the scratch music encoder
  ``music.*``; the CLAP / Wav2CLIP adapters come from the `adapters` stage (or `model.init_from`) and stay frozen.

Outputs in ``output_dir``: ``recipe.yaml``, ``stage-<k>-<name>/`` (metrics.jsonl, checkpoints/, model/) and
``model/`` (the final model folder: ``dancegen music2dance --model OUTPUT_DIR`` loads it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from dancegen.errors import InputError
from dancegen.methods.dance_any_beat.config import DanceAnyBeatConfig, StageConfig
from dancegen.methods.dance_any_beat.model import MODEL_SUBDIR, DanceAnyBeatModel, load_init
from dancegen.methods.dance_any_beat.pretrained import pretrained_branches

TRAINABLE = {"lfae": ["lfae"], "diffusion": ["unet", "music"]}  # `adapters` trains outside the Trainer
ADAPTERS_REPORT = "adapters.json"
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


def make_diffusion_loss(cfg: DanceAnyBeatConfig, cache_targets: bool = True):
    """`loss_fn(model, batch)` of stage 2: eps- (or v-) MSE on LFAE flow targets with condition dropout.

    The LFAE is frozen (eval mode), so a clip's targets never change: with `cache_targets` they are computed the first
    time a clip is drawn and reused (on CPU memory) afterwards (spec §2.4: caching offline is fine).
    """
    p_null = cfg.model.diffusion.null_cond_prob
    cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def targets(m, batch):
        keys = list(zip(batch["video"].tolist(), batch["start"].tolist(), strict=True))
        if not cache_targets or any(k not in cache for k in keys):
            z0, a0 = m.flow_targets(batch["ref"], batch["frames"])
            if cache_targets:
                for i, k in enumerate(keys):
                    cache[k] = (z0[i].cpu(), a0[i].cpu())
            return z0, a0
        dev = batch["ref"].device
        return (torch.stack([cache[k][0] for k in keys]).to(dev), torch.stack([cache[k][1] for k in keys]).to(dev))

    def loss_fn(m, batch):
        z0, a0 = targets(m, batch)
        cond, frame = m.condition(batch)
        cond, frame = m.diffusion.drop_condition((cond, frame), p_null)  # zeros [L], the same rows for both
        return m.diffusion.training_loss(m.denoiser(z0, cond, frame), m.to_diffusion(a0))

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
    from dancegen.core.model_folder import RUN_RECIPE
    from dancegen.core.stages import run_stages, start_run
    from dancegen.core.train import Trainer
    from dancegen.methods.dance_any_beat.data import FramePairs, MusicClips, _AistCache, ensure_synth_data

    say = progress or (lambda msg: None)
    out = start_run(config, output_dir)
    if config.data.synth.num_clips > 0:
        say(f"synth: {config.data.synth.num_clips} AIST++-layout clips in {config.data.root}")
        ensure_synth_data(config)
    model = DanceAnyBeatModel(config)
    with_adapters: set[str] = set()
    if config.model.init_from:
        loaded = load_init(model, config.model.init_from)
        say(f"init from {config.model.init_from}: {loaded}")
        with_adapters = {b for b in pretrained_branches(config.music) if f"{b}_adapter" in loaded}
    check_adapters_trained(config, [s.name for s in config.train.selected_stages()], with_adapters)
    cache = _AistCache(Path(config.data.root), config)
    report: dict = {"output_dir": str(out)}

    def run_one(stage: StageConfig, stage_dir: Path, resume_k: str) -> dict:
        nonlocal model
        if stage.name == "adapters":
            rep = fit_music_adapters(model, config, stage, stage_dir, cache, resume_k, say)
            model.save_pretrained(stage_dir / MODEL_SUBDIR)
            return rep
        if stage.name == "lfae":
            data = FramePairs(config, "train", cache=cache)
            loss_fn, desc = make_lfae_loss(config)
            report["lfae_loss"] = desc
            model.lfae_frozen = False
        else:
            data = MusicClips(config, "train", cache=cache)
            if data.branches:
                say(f"stage {stage.name}: {data.precompute_embeddings()} frozen music embeddings ready")
            loss_fn = make_diffusion_loss(config)
            model.lfae_frozen = True
            d = config.model.diffusion
            if d.target == "normalized" and d.target_stats is None:
                d.target_stats = target_statistics(model.eval(), data)  # the same numbers again on a resume
                say("stage {}: normalized targets, flow std {:.5f}, occlusion mean {:.5f} std {:.5f}".format(
                    stage.name, *d.target_stats))
                save_config(config, out / RUN_RECIPE)
        say(f"stage {stage.name}: {len(data)} items")
        trainable = [p for p in TRAINABLE[stage.name] if p != "music" or model.music is not None]
        trainer = Trainer(model, loss_fn, data, _loop_config(stage, config.train, config.seed, stage_dir, resume_k,
                                                             trainable))
        result = trainer.fit()
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.eval()
        model.save_pretrained(stage_dir / MODEL_SUBDIR)
        return {"steps": result.step, "loss": result.loss, "dir": str(stage_dir),
                "trainable_parameters": sum(trainer.group_counts.values())}

    report["stages"] = run_stages(config, out, resume, run_one, say)
    model.lfae_frozen = False
    model.eval().requires_grad_(False).to("cpu")
    model.save_pretrained(out / MODEL_SUBDIR)
    report["model"] = str(out / MODEL_SUBDIR)
    return report


@torch.no_grad()
def target_statistics(model: DanceAnyBeatModel, data, count: int = 64, chunk: int = 8) -> list[float]:
    """[flow_std, occlusion_mean, occlusion_std] of the LFAE's targets a0 on `count` evenly spaced training clips.

    flow_std is the standard deviation of the sampling grid's offset from the identity (both axes together, about a
    zero mean), the occlusion numbers are those of 2 occ - 1: `model.diffusion.target: normalized` divides by them.
    Deterministic (fixed clips, frozen LFAE), so a resumed run computes the same values.
    """
    from torch.utils.data import default_collate

    from dancegen.methods.dance_any_beat.model import identity_a0

    idx = np.unique(np.linspace(0, len(data) - 1, min(count, len(data))).round().astype(int))
    device = next(model.parameters()).device
    sq, occ = [], []
    for s in range(0, len(idx), chunk):
        batch = default_collate([data[int(i)] for i in idx[s:s + chunk]])
        _, a0 = model.flow_targets(batch["ref"].to(device), batch["frames"].to(device))
        offsets = (a0 - identity_a0(*a0.shape[-2:], device=a0.device))[:, :2]
        sq.append((offsets ** 2).flatten().double().cpu())
        occ.append(a0[:, 2].flatten().double().cpu())
    sq_all, occ_all = torch.cat(sq), torch.cat(occ)
    return [float(sq_all.mean().sqrt().clamp(min=1e-4)), float(occ_all.mean()), float(occ_all.std().clamp(min=1e-4))]


def check_adapters_trained(config: DanceAnyBeatConfig, run: list[str], from_init: set[str]) -> None:
    """Refuse a `diffusion` stage whose pretrained branches' adapters were never trained (before anything runs).

    Args:
        config: the recipe.
        run: names of the stages this run executes, in order.
        from_init: branches whose adapters `model.init_from` provided.

    Raises:
        InputError: says to run the adapters stage (or to init from a model that has them).
    """
    if "diffusion" not in run or "adapters" in run[:run.index("diffusion")]:
        return
    missing = [b for b in pretrained_branches(config.music) if b not in from_init]
    if missing:
        raise InputError(f"music.encoder {config.music.encoder}: the {' and '.join(missing)} adapter(s) were never "
                         "trained; run the adapters stage before diffusion (train.stages [{name: adapters, steps: 1}, "
                         "...] with adapters in train.run) or set model.init_from to a model folder that has them")


def genre_caption(genre: str) -> str:
    """The CLAP target caption of an AIST++ genre code [A] (G3): "a {genre} dance music", e.g. "a house dance music"."""
    from dancegen.methods.dance_any_beat.data import GENRES

    return f"a {GENRES.get(genre, genre.lstrip('g')).lower()} dance music"


@torch.no_grad()
def retrieval_accuracy(pair, audio: np.ndarray, target: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Top-1 audio -> target retrieval through a trained `ContrastiveAdapterPair`, on cosine similarity.

    Candidates are the distinct targets: one per label when `labels` is given (for CLAP the genre captions, so this is
    the genre accuracy), else every row's own target (row i is right when it retrieves target i).
    """
    labels = np.arange(len(audio)) if labels is None else np.asarray(labels)
    cand_labels, first = np.unique(labels, return_index=True)
    pair = pair.to("cpu").eval()
    a = pair.encode_audio(torch.from_numpy(np.asarray(audio, np.float32)))
    t = torch.nn.functional.normalize(pair.target(torch.from_numpy(np.asarray(target, np.float32)[first])), dim=-1)
    pred = cand_labels[(a @ t.t()).argmax(dim=1).numpy()]
    return float((pred == labels).mean())


def _clip_frame_targets(encoders, cache, data) -> np.ndarray:
    """Per training clip, the unit-length mean of the CLIP image embeddings of its frames s+1 .. s+N [A] (G3).

    Every frame of a video is embedded once (clips overlap), and only one video's embeddings are held at a time.
    """
    rows, current, emb = [], None, None
    for vi, s in data.index:
        if vi != current:
            current, emb = vi, encoders.image_embeddings(cache.video(data.videos[vi]))
        m = emb[s + 1:s + 1 + data.n].mean(axis=0)
        rows.append(m / max(float(np.linalg.norm(m)), 1e-12))
    return np.stack(rows).astype(np.float32)


def fit_music_adapters(model: DanceAnyBeatModel, config: DanceAnyBeatConfig, stage: StageConfig, stage_dir: Path,
                       cache, resume: str = "auto", say=lambda msg: None) -> dict:
    """The `adapters` stage: fit each pretrained branch's contrastive adapters and copy the audio side into `model`.

    Epochs `music.adapter_epochs`, Adam at `stage.lr`, `stage.batch_size` pairs per step, seeded by the recipe's seed.
    A finished stage folder (``adapters.json`` + ``model/``) is reused unless `resume` is "never".

    Returns:
        Report: clips, epochs and per branch the first / final loss, the retrieval accuracy and its chance level.
    """
    from safetensors.torch import load_file

    from dancegen.io.atomic import write_text
    from dancegen.methods.dance_any_beat.data import MusicClips
    from dancegen.methods.dance_any_beat.model import WEIGHTS_FILE
    from dancegen.methods.dance_any_beat.music import fit_adapters
    from dancegen.runtime import resolve_device

    branches = pretrained_branches(config.music)
    if not branches:
        say("stage adapters: music.encoder scratch has no pretrained branch; nothing to fit")
        return {"dir": str(stage_dir), "skipped": "music.encoder scratch has no adapters"}
    done = stage_dir / ADAPTERS_REPORT
    if resume != "never" and done.is_file() and (stage_dir / MODEL_SUBDIR / WEIGHTS_FILE).is_file():
        sd = load_file(stage_dir / MODEL_SUBDIR / WEIGHTS_FILE)
        model.load_state_dict({k: v for k, v in sd.items() if k.split(".")[0] in {f"{b}_adapter" for b in branches}},
                              strict=False)
        say(f"stage adapters: reusing {stage_dir}")
        return {k: v for k, v in json.loads(done.read_text()).items() if k != "losses"}
    data = MusicClips(config, "train", cache=cache)
    encoders = cache.encoders
    n_epochs = config.music.adapter_epochs
    say(f"stage adapters: {', '.join(branches)} on {len(data)} clips, {n_epochs} epochs at lr {stage.lr:g}")
    report: dict = {"dir": str(stage_dir), "clips": len(data), "epochs": n_epochs}
    losses_all: dict[str, list[float]] = {}
    for branch in branches:
        audio = np.stack([cache.embedding(branch, data.videos[vi].music, s) for vi, s in data.index])
        if branch == "clap":
            codes = sorted({data.videos[vi].genre for vi, _ in data.index})
            labels = np.array([codes.index(data.videos[vi].genre) for vi, _ in data.index])
            target = encoders.caption_embeddings([genre_caption(c) for c in codes])[labels]
        else:
            labels, target = None, _clip_frame_targets(encoders, cache, data)
        pair, losses = fit_adapters(audio, target, epochs=n_epochs, lr=stage.lr, batch_size=stage.batch_size,
                                    seed=config.seed, labels=labels, device=resolve_device(config.train.device))
        pair = pair.to("cpu")
        getattr(model, f"{branch}_adapter").load_state_dict(pair.audio.state_dict())
        pair.save_pretrained(stage_dir / "adapters" / branch)
        candidates = len(np.unique(labels)) if labels is not None else len(audio)
        report[branch] = {"loss": losses[-1] if losses else None, "first_loss": losses[0] if losses else None,
                          "retrieval_accuracy": retrieval_accuracy(pair, audio, target, labels),
                          "chance": 1.0 / candidates}
        losses_all[branch] = losses
        say(f"adapters {branch}: loss {report[branch]['first_loss']} -> {report[branch]['loss']}, retrieval "
            f"accuracy {report[branch]['retrieval_accuracy']:.3f} (chance {1.0 / candidates:.3f})")
    write_text(done, json.dumps({**report, "losses": losses_all}, indent=1))
    return report


def _loop_config(stage: StageConfig, t, seed: int, stage_dir: Path, resume: str, trainable: list[str]):
    from dancegen.core.stages import loop_config
    from dancegen.core.train_config import OptimConfig

    return loop_config(t, stage, stage_dir, resume, trainable, seed,
                       OptimConfig(name="adam", lr=stage.lr, betas=tuple(stage.betas), weight_decay=0.0,
                                   grad_clip=stage.grad_clip, lr_schedule="multistep" if stage.milestones else "constant",
                                   milestones=list(stage.milestones), gamma=stage.gamma))
