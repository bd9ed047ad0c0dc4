"""Training of the tiny text-to-motion model (`dancegen.motion.t2m.model`) on the synthetic world, on CPU.

    dancegen train --recipe recipes/motion/t2m_tiny.yaml -o runs/t2m_tiny
    python -m dancegen.core.bundle runs/t2m_tiny/model t2m-tiny

Data (`dancegen.motion.t2m.data`): `data.num_samples` (text, joints) pairs of master seed `data.seed` and
`data.val_samples` pairs of the held-out master seed `data.val_seed` (7, like the other tiny models' held-out
clips), made once into `<run>/data/{train,val}.npz` (no video is rendered). The per-feature mean / std of the
training motions z-score every motion and go into the model folder.

Each step: a batch of training pairs, a timestep t ~ U{0 .. T-1} per sample, x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε,
the text of `cond_drop` (10 %) of the samples masked (classifier-free guidance), and the loss
`|x0_hat - x0|^2 + vel_weight |Δx0_hat - Δx0|^2` on the z-scored features (MDM's x0 objective plus its velocity
term; the features are joint positions, so the position term is the x0 term itself), each channel weighted, the root
trajectory's three (heading change, pelvis x, z) by `root_weight`: with weight 1 they are 3 of 67 channels and the
model trained so walked 0.2-0.3 m where the world walks 0.9-1.5 m. AdamW, linear warm-up then
cosine decay, gradient clipping.

Run folder: `recipe.yaml`, `data/`, `checkpoint.pt` (network, optimiser, step, history, numpy and torch RNG states:
`resume="auto"` continues exactly), `model/` (the final model folder), `metrics.json` (loss history, held-out x0
error, and the primitive hit rates of `dancegen.motion.t2m.quality` when `train.quality_count` > 0).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dancegen.motion.t2m.model import T2MConfig


@dataclass
class T2MDataConfig:
    """Which synthetic pairs to make (see `dancegen.motion.t2m.data.make_split`)."""

    num_samples: int = 5000
    val_samples: int = 64
    seed: int = 3000                       # training master seed
    val_seed: int = 7                      # held-out master seed (the quality check's texts come from it too)
    num_frames: int = 60
    fps: float = 20.0


@dataclass
class T2MTrainLoopConfig:
    steps: int = 2800
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200
    grad_clip: float = 1.0
    cond_drop: float = 0.1                 # text dropout for classifier-free guidance
    vel_weight: float = 1.0
    root_weight: float = 5.0               # loss weight of the root trajectory channels (data.ROOT_CHANNELS)
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 200
    quality_count: int = 0                 # > 0: motions per primitive for the final quality report
    threads: int | None = None             # torch CPU threads (None: torch's default)
    device: str = "cpu"


@dataclass
class T2MRecipe:
    method: str = "t2m"
    base: str | None = None
    seed: int = 0
    data: T2MDataConfig = field(default_factory=T2MDataConfig)
    model: T2MConfig = field(default_factory=T2MConfig)
    train: T2MTrainLoopConfig = field(default_factory=T2MTrainLoopConfig)

    def __post_init__(self):
        if self.method != "t2m":
            raise ValueError(f"method must be 't2m', got {self.method!r}")
        if self.data.num_samples < 1 or self.data.val_samples < 1:
            raise ValueError("data.num_samples and data.val_samples must be positive")
        if self.data.seed == self.data.val_seed:
            raise ValueError("data.seed and data.val_seed must differ (the held-out pairs must be unseen)")
        if self.data.num_frames != self.model.num_frames or self.data.fps != self.model.fps:
            raise ValueError(f"data.num_frames / data.fps ({self.data.num_frames}, {self.data.fps}) must equal "
                             f"model.num_frames / model.fps ({self.model.num_frames}, {self.model.fps})")
        if not 0 <= self.train.cond_drop < 1:
            raise ValueError("train.cond_drop must be in [0, 1)")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T2MRecipe:
    from dancegen.config import load_recipe_chain

    return load_recipe_chain(T2MRecipe, path, overrides)


# ---------------------------------------------------------------------------------------------------------- data
def ensure_data(cfg: T2MDataConfig, folder: Path, progress=None) -> tuple[dict, dict]:
    """Make (once) and load the training and held-out pairs; a finished `.npz` made with the same settings is
    reused."""
    from dancegen.io.atomic import load_keyed_npz, save_keyed_npz
    from dancegen.motion.t2m.data import DATA_VERSION, make_split

    folder.mkdir(parents=True, exist_ok=True)
    key = json.dumps({**cfg.__dict__, "version": DATA_VERSION}, sort_keys=True)
    out = []
    for split, seed, count in (("train", cfg.seed, cfg.num_samples), ("val", cfg.val_seed, cfg.val_samples)):
        f = folder / f"{split}.npz"
        cached = load_keyed_npz(f, key)
        if cached is not None:
            out.append({"texts": [str(t) for t in cached["texts"]], "joints": cached["joints"]})
            continue
        cb = ((lambda d, n, s=split: progress(f"make {s} pairs {d}/{n}") if d % 1000 == 0 or d == n else None)
              if progress else None)
        pairs = make_split(seed, 0, count, cfg.num_frames, cfg.fps, cb)
        save_keyed_npz(f, key, {"texts": np.array(pairs["texts"]), "joints": pairs["joints"]})
        out.append({"texts": pairs["texts"], "joints": pairs["joints"]})
    return out[0], out[1]


def feature_stats(joints: np.ndarray, floor: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std `(67,)` of `(N, T, 22, 3)` motions (std at least `floor`)."""
    from dancegen.motion.t2m.data import NUM_FEATURES, to_features

    f = to_features(joints).reshape(-1, NUM_FEATURES).astype(np.float64)
    return f.mean(0).astype(np.float32), np.maximum(f.std(0), floor).astype(np.float32)


# ------------------------------------------------------------------------------------------------------- train
def diffusion_loss(net, x0, ids, alphas_cumprod, cond_drop: float, vel_weight: float, weights=None):
    """One batch's loss (see the module docstring); draws t, noise and the text dropout from torch's global RNG.
    `weights`: optional `(67,)` per-channel loss weights (normalised to mean 1)."""
    import torch

    w = torch.ones(x0.shape[-1], device=x0.device) if weights is None else weights.to(x0.device) / weights.mean()

    def mse(a, b):
        return (w * (a - b) ** 2).mean()

    b = x0.shape[0]
    t = torch.randint(0, len(alphas_cumprod), (b,), device=x0.device)
    ab = alphas_cumprod.to(x0.device)[t].view(b, 1, 1)
    noise = torch.randn_like(x0)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    cond = torch.rand(b, device=x0.device) >= cond_drop
    pred = net(xt, t, ids, cond)
    loss = mse(pred, x0)
    if vel_weight:
        loss = loss + vel_weight * mse(pred[:, 1:] - pred[:, :-1], x0[:, 1:] - x0[:, :-1])
    return loss


def train(config: T2MRecipe, output_dir: str | os.PathLike, resume: str = "auto", progress=None) -> dict:
    """Train the text-to-motion model from a recipe and write the model folder (the caller seeds the global RNGs).

    Args:
        resume: "auto" (continue from `<run>/checkpoint.pt` when it exists), "never", or a checkpoint file.
        progress: optional `progress(message)` callback.
    """
    import torch
    import yaml

    from dancegen.config import config_to_dict, save_config
    from dancegen.io.atomic import write_text
    from dancegen.motion.t2m.data import ROOT_CHANNELS, to_features, vocabulary_words
    from dancegen.motion.t2m.model import Vocab, build_network, cosine_alphas_cumprod, save_model
    from dancegen.tool_train import train_network

    say = progress or (lambda msg: None)
    tc, mc = config.train, config.model
    if tc.threads:
        torch.set_num_threads(tc.threads)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "recipe.yaml")
    train_set, val_set = ensure_data(config.data, out / "data", say)
    say(f"data: {len(train_set['texts'])} training pairs, {len(val_set['texts'])} held-out pairs")

    vocab = Vocab(vocabulary_words())
    mean, std = feature_stats(train_set["joints"])
    zscore = lambda j: torch.from_numpy((to_features(j) - mean) / std).float()  # noqa: E731
    x_train, x_val = zscore(train_set["joints"]), zscore(val_set["joints"])
    ids_train = torch.from_numpy(vocab.encode(train_set["texts"], mc.max_words))
    ids_val = torch.from_numpy(vocab.encode(val_set["texts"], mc.max_words))
    ab = torch.from_numpy(cosine_alphas_cumprod(mc.diffusion_steps)).float()
    weights = torch.ones(mc.num_features)
    weights[list(ROOT_CHANNELS)] = tc.root_weight

    net = build_network(mc, len(vocab)).to(tc.device)

    def batch_loss(rng):
        idx = torch.from_numpy(rng.integers(0, len(x_train), tc.batch_size))
        return diffusion_loss(net, x_train[idx].to(tc.device), ids_train[idx].to(tc.device), ab, tc.cond_drop,
                              tc.vel_weight, weights)

    def val():
        scores = validate(net, x_val, ids_val, ab, tc.device)
        return scores, f"held-out x0 error {scores}"

    step, history = train_network(net, tc, out, resume, config.seed, batch_loss, val, say, grad_clip=tc.grad_clip)
    recipe_yaml = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    save_model(net.eval(), mc, vocab, mean, std, out / "model", recipe_yaml)
    report = {"output_dir": str(out), "model": str(out / "model"), "steps": step,
              "val": validate(net, x_val, ids_val, ab, tc.device),
              "parameters": sum(p.numel() for p in net.parameters()), "history": history}
    if tc.quality_count > 0:
        from dancegen.motion.t2m.model import TextToMotion
        from dancegen.motion.t2m.quality import evaluate

        say("quality: primitive hit rates on held-out texts")
        report["quality"] = evaluate(TextToMotion.load(out / "model"), count=tc.quality_count,
                                     seed=config.data.val_seed)
    write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    return report


def validate(net, x_val, ids_val, alphas_cumprod, device: str,
             timesteps: tuple[int, ...] = (50, 250, 500, 750)) -> dict[str, float]:
    """Held-out x0 MSE (z-scored features) of the conditional branch at fixed timesteps and fixed noise (a private
    generator: the training RNG is not touched)."""
    import torch

    net.eval()
    g = torch.Generator().manual_seed(0)
    out = {}
    with torch.inference_mode():
        for t in timesteps:
            t = min(t, len(alphas_cumprod) - 1)
            noise = torch.randn(x_val.shape, generator=g)
            ab = alphas_cumprod[t]
            xt = (ab.sqrt() * x_val + (1 - ab).sqrt() * noise).to(device)
            tt = torch.full((len(x_val),), t, dtype=torch.long, device=device)
            pred = net(xt, tt, ids_val.to(device), torch.ones(len(x_val), dtype=torch.bool, device=device))
            out[f"t{t}"] = round(float(((pred.cpu() - x_val) ** 2).mean()), 5)
    return out
