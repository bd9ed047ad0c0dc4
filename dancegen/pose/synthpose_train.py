"""Training of SynthPose (`dancegen.pose.backends.synthpose`), the bundled pose estimator of the synthetic world.

    dancegen train --recipe recipes/pose/synthpose_tiny.yaml -o runs/synthpose_tiny
    python -m dancegen.core.bundle runs/synthpose_tiny/model synthpose-tiny

Data: `data.num_clips` clips of `dancegen synth` (master seed `data.seed`, a different seed from the video models'
data so their held-out clips stay unseen), rendered once into `<run>/data/{train,val}.npz` (frames and COCO-18
ground truth). Every step draws a batch of frames and augments each one (`AugmentConfig`): a random similarity
transform (scale, shift, rotation, horizontal flip with left/right joints swapped) applied to the image and its
joints alike, then degradations the toy video models produce (Gaussian blur, down- and up-scaling, noise) and colour
changes (gain, channel permutation, grey) so the dancer's colours do not matter. Loss: heatmap MSE (the
SimpleBaseline objective), hidden joints trained to an all-zero map.

Run folder: `recipe.yaml`, `data/`, `checkpoint.pt` (network, optimiser, step, RNG states: `resume="auto"` continues
exactly), `model/` (the final model folder), `metrics.json` (validation keypoint error and PCK).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dancegen.pose.backends.synthpose import FLIP_PERM, SynthPoseConfig


@dataclass
class SynthDataConfig:
    """Which synthetic clips to render (see `dancegen.synth.render_clip`)."""

    num_clips: int = 400
    val_clips: int = 16
    seed: int = 1000
    size: int = 64
    num_frames: int = 48
    fps: float = 24.0
    frame_step: int = 2                    # keep every k-th frame (neighbours are near duplicates)
    camera: str | None = None              # None: each clip's scene samples its camera motion


@dataclass
class AugmentConfig:
    """Random augmentation of each training frame (probabilities and ranges)."""

    scale: list[float] = field(default_factory=lambda: [0.8, 1.2])
    shift: float = 0.08                    # of the image size
    rotate: float = 15.0                   # degrees
    flip: float = 0.5
    blur: float = 0.7                      # probability of a Gaussian blur with sigma in blur_sigma
    blur_sigma: list[float] = field(default_factory=lambda: [0.3, 1.6])
    downscale: float = 0.3                 # probability of a round trip through a smaller size in downscale_size
    downscale_size: list[int] = field(default_factory=lambda: [24, 48])
    noise: float = 0.5                     # probability of Gaussian noise with std (uint8 levels) in noise_std
    noise_std: list[float] = field(default_factory=lambda: [2.0, 10.0])
    gain: float = 0.25                     # per-channel gain in [1 - gain, 1 + gain]
    channel_shuffle: float = 0.5
    grey: float = 0.15


@dataclass
class TrainLoopConfig:
    steps: int = 6000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    log_every: int = 100
    eval_every: int = 1000
    checkpoint_every: int = 500
    threads: int | None = None             # torch CPU threads (None: torch's default)
    device: str = "cpu"


@dataclass
class SynthPoseRecipe:
    method: str = "synthpose"
    base: str | None = None
    seed: int = 0
    data: SynthDataConfig = field(default_factory=SynthDataConfig)
    model: SynthPoseConfig = field(default_factory=SynthPoseConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)

    def __post_init__(self):
        if self.method != "synthpose":
            raise ValueError(f"method must be 'synthpose', got {self.method!r}")
        if self.data.num_clips < 1 or self.data.val_clips < 1 or self.data.frame_step < 1:
            raise ValueError("data.num_clips, data.val_clips and data.frame_step must be positive")
        if self.data.size != self.model.input_size:
            raise ValueError(f"data.size {self.data.size} must equal model.input_size {self.model.input_size}")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> SynthPoseRecipe:
    from dancegen.config import load_recipe_chain

    return load_recipe_chain(SynthPoseRecipe, path, overrides)


# ---------------------------------------------------------------------------------------------------------- data
def render_split(cfg: SynthDataConfig, first: int, count: int, progress=None) -> dict[str, np.ndarray]:
    """Clips `first .. first + count - 1` of the world with master seed `cfg.seed`: frames `(N, S, S, 3)` uint8 and
    keypoints `(N, 18, 3)` (every `frame_step`-th frame of each clip)."""
    from dancegen.synth.clip import render_clip
    from dancegen.synth.layouts import clip_seed

    frames, kps = [], []
    for k, i in enumerate(range(first, first + count)):
        clip = render_clip(seed=clip_seed(cfg.seed, i), size=cfg.size, num_frames=cfg.num_frames, fps=cfg.fps,
                           camera_motion=cfg.camera, flow=False)
        frames.append(clip.frames[::cfg.frame_step])
        kps.append(clip.keypoints[::cfg.frame_step])
        if progress:
            progress(k + 1, count)
    return {"frames": np.concatenate(frames), "keypoints": np.concatenate(kps).astype(np.float32)}


def ensure_data(cfg: SynthDataConfig, folder: Path, progress=None) -> tuple[dict, dict]:
    """Render (once) and load the train and validation sets; a finished `.npz` made with the same settings is
    reused."""
    from dancegen.io.atomic import load_keyed_npz, save_keyed_npz

    folder.mkdir(parents=True, exist_ok=True)
    key = json.dumps({**cfg.__dict__}, sort_keys=True)
    out = []
    for split, first, count in (("train", 0, cfg.num_clips), ("val", cfg.num_clips, cfg.val_clips)):
        f = folder / f"{split}.npz"
        cached = load_keyed_npz(f, key)
        if cached is not None:
            out.append({"frames": cached["frames"], "keypoints": cached["keypoints"]})
            continue
        cb = ((lambda d, n, s=split: progress(f"render {s} clips {d}/{n}") if d % 50 == 0 or d == n else None)
              if progress else None)
        arrays = render_split(cfg, first, count, cb)
        save_keyed_npz(f, key, arrays)
        out.append(arrays)
    return out[0], out[1]


def augment(frame: np.ndarray, kps: np.ndarray, aug: AugmentConfig, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """One augmented `(S, S, 3)` uint8 frame and its `(18, 3)` keypoints (visibility 0 for joints moved off-image)."""
    import cv2

    s = frame.shape[0]
    kps = kps.copy()
    if rng.random() < aug.flip:
        frame = frame[:, ::-1]
        kps = kps[list(FLIP_PERM)]
        kps[:, 0] = np.where(kps[:, 2] > 0, s - 1 - kps[:, 0], 0.0)
    c = (s - 1) / 2
    m = cv2.getRotationMatrix2D((c, c), float(rng.uniform(-aug.rotate, aug.rotate)),
                                float(rng.uniform(*aug.scale)))
    m[:, 2] += rng.uniform(-aug.shift, aug.shift, 2) * s
    frame = cv2.warpAffine(np.ascontiguousarray(frame), m, (s, s), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    xy = kps[:, :2] @ m[:, :2].T + m[:, 2]
    vis = (kps[:, 2] > 0) & (xy >= 0).all(1) & (xy <= s - 1).all(1)
    img = frame.astype(np.float32)
    if rng.random() < aug.downscale:
        small = int(rng.integers(aug.downscale_size[0], aug.downscale_size[1] + 1))
        img = cv2.resize(cv2.resize(img, (small, small), interpolation=cv2.INTER_AREA), (s, s),
                         interpolation=cv2.INTER_LINEAR)
    if rng.random() < aug.blur:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(*aug.blur_sigma)))
    img = img * rng.uniform(1 - aug.gain, 1 + aug.gain, 3).astype(np.float32)
    if rng.random() < aug.channel_shuffle:
        img = img[..., rng.permutation(3)]
    if rng.random() < aug.grey:
        img = np.repeat(img.mean(-1, keepdims=True), 3, -1)
    if rng.random() < aug.noise:
        img = img + rng.normal(0, rng.uniform(*aug.noise_std), img.shape).astype(np.float32)
    out = np.concatenate([xy, vis[:, None]], 1).astype(np.float32)
    out[~vis, :2] = 0.0
    return np.clip(img, 0, 255).round().astype(np.uint8), out


# ----------------------------------------------------------------------------------------------------- scoring
def evaluate_estimator(estimator, frames: np.ndarray, kps: np.ndarray) -> dict[str, float]:
    """`keypoint_scores` of a `SynthPoseEstimator` (or any `frames -> (F, 18, 3)` callable) on frames with ground
    truth, clean and degraded like the toy models' output (Gaussian blur sigma 1.2 plus noise std 4)."""
    import cv2

    from dancegen.metrics.pose_metrics import keypoint_scores

    rng = np.random.default_rng(0)
    blurry = np.stack([np.clip(cv2.GaussianBlur(f.astype(np.float32), (0, 0), 1.2)
                               + rng.normal(0, 4, f.shape), 0, 255).round().astype(np.uint8) for f in frames])
    size = float(frames.shape[1])
    return {"clean": keypoint_scores(estimator(frames), kps, size),
            "degraded": keypoint_scores(estimator(blurry), kps, size)}


# ------------------------------------------------------------------------------------------------------- train
def train(config: SynthPoseRecipe, output_dir: str | os.PathLike, resume: str = "auto", progress=None) -> dict:
    """Train SynthPose from a recipe and write the model folder (the caller seeds the global RNGs first).

    Args:
        resume: "auto" (continue from `<run>/checkpoint.pt` when it exists), "never", or a checkpoint file.
        progress: optional `progress(message)` callback.
    """
    import torch

    from dancegen.config import save_config
    from dancegen.io.atomic import write_text
    from dancegen.pose.backends.synthpose import build_network, gaussian_targets, save_model, to_input
    from dancegen.tool_train import train_network

    say = progress or (lambda msg: None)
    tc = config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "recipe.yaml")
    train_set, val_set = ensure_data(config.data, out / "data", say)
    say(f"data: {len(train_set['frames'])} training frames, {len(val_set['frames'])} validation frames")

    mc = config.model
    net = build_network(mc).to(tc.device)
    frames, kps = train_set["frames"], train_set["keypoints"]
    hm, stride = mc.heatmap_size, mc.stride

    def batch_loss(rng):
        idx = rng.integers(0, len(frames), tc.batch_size)
        batch = [augment(frames[i], kps[i], config.augment, rng) for i in idx]
        x = to_input(np.stack([b[0] for b in batch])).to(tc.device)
        k = np.stack([b[1] for b in batch])
        target = torch.from_numpy(gaussian_targets((k[..., :2] + 0.5) / stride - 0.5, k[..., 2] > 0, hm,
                                                   mc.sigma)).to(tc.device)
        return torch.nn.functional.mse_loss(net(x), target) * 1000  # per-pixel MSE is tiny; scaled for readability

    def val():
        scores = _validate(net, mc, val_set, tc.device)
        return scores, (f"val error {scores['clean']['error_px']:.2f} px, PCK {scores['clean']['pck']:.3f} "
                        f"(degraded {scores['degraded']['error_px']:.2f} px, {scores['degraded']['pck']:.3f})")

    step, history = train_network(net, tc, out, resume, config.seed, batch_loss, val, say, loss_digits=3)
    save_model(net, mc, out / "model")
    final = _validate(net, mc, val_set, tc.device)
    report = {"output_dir": str(out), "model": str(out / "model"), "steps": step, "val": final,
              "parameters": sum(p.numel() for p in net.parameters()), "history": history}
    write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    return report


def _validate(net, mc: SynthPoseConfig, val_set: dict, device: str) -> dict:
    """Validation scores of the network being trained, through the estimator's own decoding."""
    from dancegen.pose.backends.synthpose import SynthPoseEstimator

    return evaluate_estimator(SynthPoseEstimator(net.eval(), mc, device), val_set["frames"], val_set["keypoints"])
