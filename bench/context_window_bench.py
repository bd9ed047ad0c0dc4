"""Benchmark: peak memory of a 64-frame denoising call with context windows vs a plain 16-frame call.

The denoiser is the tiny inflated video UNet (channels 32/64, STSA blocks) at a 32x32 latent (a 256 px clip for an
SD VAE), no weights needed. Three calls of the same UNet: 16 frames in one pass, 64 frames with context windows
(``--window`` 16, ``--overlap`` 4, triangular blending), and 64 frames in one pass. Memory is measured in one run:

- CPU: ``torch.profiler`` with ``profile_memory=True``; the peak of the running sum of every op's self-allocated bytes
  (allocations attributed to the op that made them, frees where they happen) over time. Allocations made and freed
  inside one op (e.g. attention workspaces) are not seen, so the numbers are lower bounds, comparable across calls.
- CUDA (``--device cuda``): ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call.

    .venv/bin/python bench/context_window_bench.py
    .venv/bin/python bench/context_window_bench.py --frames 128 --window 16 --overlap 4 --steps 2
"""

from __future__ import annotations

import argparse
import time

import torch


def build_model(device: str, subspace: tuple[int, int, int]):
    from diffusers import UNet2DConditionModel

    from dancegen.core.unet3d import TINY_UNET_CONFIG, VideoUNet

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    return VideoUNet.from_unet2d(unet, temporal="stsa", subspace_size=subspace).eval().to(device)


def peak_bytes(fn, device: str) -> tuple[int, float]:
    """(peak bytes above the start, seconds) of ``fn()``."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, time.perf_counter() - t0
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--overlap", type=int, default=4)
    ap.add_argument("--latent", type=int, default=32, help="latent side (32 = 256 px with an SD VAE)")
    ap.add_argument("--steps", type=int, default=0, help="0: one UNet call; N: a full N-step DDIM sample")
    ap.add_argument("--subspace", default="4,4,4")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from dancegen.core.context_windows import context_windows, windowed
    from dancegen.core.schedulers import ddim_sample, ddim_scheduler_sd15, shared_noise

    subspace = tuple(int(v) for v in args.subspace.split(","))
    model = build_model(args.device, subspace)
    ehs = torch.randn(1, 5, 32, device=args.device)
    t = torch.tensor(500, device=args.device)

    def unet_fn(z, tt, c):
        return model(z, tt, c).sample

    def run(num_frames: int, window: int | None):
        z = shared_noise((1, 4, num_frames, args.latent, args.latent), torch.Generator().manual_seed(0),
                         device=args.device)
        fn = windowed(unet_fn, window, args.overlap) if window else unet_fn

        @torch.no_grad()
        def call():
            if args.steps:
                return ddim_sample(fn, z, ddim_scheduler_sd15(), args.steps, 1.0, ehs)
            return fn(z, t, ehs)

        return call

    run(args.window, None)()  # warm-up (allocator, lazy init)
    rows = [
        (f"{args.window} frames, one pass", *peak_bytes(run(args.window, None), args.device)),
        (f"{args.frames} frames, windows {args.window}/{args.overlap} "
         f"({len(context_windows(args.frames, args.window, args.overlap))} windows)",
         *peak_bytes(run(args.frames, args.window), args.device)),
        (f"{args.frames} frames, one pass", *peak_bytes(run(args.frames, None), args.device)),
    ]
    base = rows[0][1]
    what = f"{args.steps}-step DDIM sample" if args.steps else "one UNet call"
    print(f"tiny video UNet (STSA {subspace}), latent {args.latent}x{args.latent}, {what}, device {args.device}")
    print(f"{'call':<44} {'peak MiB':>9} {'ratio':>6} {'time s':>7}")
    for name, peak, dt in rows:
        print(f"{name:<44} {peak / 2**20:9.1f} {peak / base:6.2f} {dt:7.2f}")
    print(f"context windows: {args.frames}-frame peak / {args.window}-frame peak = {rows[1][1] / base:.2f} "
          f"(one pass: {rows[2][1] / base:.2f})")


if __name__ == "__main__":
    main()
