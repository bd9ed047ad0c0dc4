"""Benchmark: music2dance on this machine: seconds of compute per generated second of video, and peak memory vs the
song length (chained clips) and vs the model's clip length N.

Times are of plain runs; memory is measured in a second, profiled run. Uses the bundled dab-tiny model when
installed (random weights of the same recipe otherwise: the cost does not depend
on the values). Songs are synthetic drum tracks (`dancegen.synth.music.compose_music`). Every number is measured in
this run; memory is the CPU profiler's running peak of op allocations (see context_window_bench.py), a lower bound
that is comparable between rows.

    .venv/bin/python bench/music2dance_bench.py
    .venv/bin/python bench/music2dance_bench.py --seconds 4 8 16 32 --clip-frames 16 32 64 --steps 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from context_window_bench import peak_bytes


def load_model(num_frames: int | None = None):
    from dancegen.methods.dance_any_beat.config import load_recipe
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel, bundled_model_path, model_folder

    if num_frames is None and model_folder(bundled_model_path()) is not None:
        return DanceAnyBeatModel.from_pretrained(bundled_model_path()), "bundled dab-tiny"
    sets = [f"data.num_frames={num_frames}"] if num_frames else []
    torch.manual_seed(0)
    return DanceAnyBeatModel(load_recipe("recipes/dance_any_beat/tiny_synth.yaml", sets)).eval(), \
        f"tiny_synth recipe, random weights, N={num_frames or 16}"


def song(seconds: float, sr: int = 22050) -> np.ndarray:
    from dancegen.synth.music import compose_music

    return compose_music(seconds, np.random.default_rng(0), sample_rate=sr).audio


def generate(model, samples: np.ndarray, sr: int, steps: int):
    """features -> chained flow sampling -> decoding, as music2dance does (without file I/O)."""
    from dancegen.audio.features import frame_features
    from dancegen.audio.song import frame_count
    from dancegen.methods.dance_any_beat.data import clip_music
    from dancegen.methods.dance_any_beat.pipeline import decode_frames, sample_flows

    cfg = model.config
    fps = cfg.data.fps
    n = frame_count(samples.size / sr, fps)
    feats = frame_features(samples, sr, fps, num_frames=n, n_mels=cfg.music.n_mels,
                           tempogram_bins=cfg.music.tempogram_bins, start_bpm=cfg.music.start_bpm)
    f, b = clip_music(feats, 1, n - 1, cfg.music)
    ref = torch.rand(1, 3, cfg.data.resolution, cfg.data.resolution, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def run():
        a0 = sample_flows(model, ref, f, b, steps=steps, sampler="ddim", generator=torch.Generator().manual_seed(0))
        return decode_frames(model, ref, a0)

    return run, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[4.0, 8.0, 16.0])
    ap.add_argument("--clip-frames", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's recipe)")
    args = ap.parse_args()
    sr = 22050

    model, what = load_model()
    steps = args.steps or model.config.inference.steps
    print(f"music2dance, {what}, {model.config.data.resolution} px, {model.config.data.fps:g} fps, DDIM {steps} "
          f"steps, {torch.get_num_threads()} threads")
    run, _ = generate(model, song(2.0), sr, steps)
    run()  # warm-up
    print(f"{'song s':>7} {'frames':>7} {'clips':>6} {'wall s':>7} {'s per video s':>14} {'peak MiB':>9} {'ratio':>6}")
    base = peak = None
    from dancegen.methods.dance_any_beat.pipeline import clip_starts

    for s in args.seconds:
        run, n = generate(model, song(s), sr, steps)
        t0 = time.perf_counter()
        run()  # timed without the profiler (it slows every op down)
        dt = time.perf_counter() - t0
        peak, _ = peak_bytes(run, "cpu")
        base = base or peak
        clips = len(clip_starts(n - 1, model.config.data.num_frames, model.config.inference.overlap))
        print(f"{s:7.1f} {n:7d} {clips:6d} {dt:7.2f} {dt / s:14.2f} {peak / 2**20:9.1f} {peak / base:6.2f}")
    print(f"peak memory, longest / shortest song: {peak / base:.2f} (clips are sampled one after another, then "
          "decoded in chunks)")

    print(f"\none clip vs the model's clip length N (random weights, {steps} steps)")
    print(f"{'N':>4} {'wall s':>7} {'peak MiB':>9} {'ratio':>6}")
    base = None
    for n in args.clip_frames:
        m, _ = load_model(n)
        run, _ = generate(m, song((n + 1) / m.config.data.fps + 0.05), sr, steps)
        t0 = time.perf_counter()
        run()
        dt = time.perf_counter() - t0
        peak, _ = peak_bytes(run, "cpu")
        base = base or peak
        print(f"{n:4d} {dt:7.2f} {peak / 2**20:9.1f} {peak / base:6.2f}")


if __name__ == "__main__":
    main()
