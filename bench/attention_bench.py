"""Benchmark: STSA subspace attention vs full spatio-temporal vs per-frame spatial (and temporal) attention.

Dance-Your-Latents §4.3 / spec §2.4 complexity: full ~ N^2, STSA ~ N*W, spatial ~ N*(h*w), temporal ~ N*T with
``N = T*h*w`` and ``W = s_f*s_h*s_w``. Shapes follow the paper: 16 frames, batch 1, SD-1.5 latent sizes at 256 px
(32x32) and 512 px (64x64), 8 heads; the real first-level width is 320 channels (``--channels 320``), the default
run uses 64 channels to stay near a minute on 2 CPU cores. Every row is one module call (q/k/v/out projections
included) under ``torch.no_grad()``, all through fused ``F.scaled_dot_product_attention``.

Columns: analytic score entries per clip (all heads) and their ratio to full attention; the size of one head's
score matrix if it were materialised (configs above ``--max-gb`` are skipped, e.g. full attention at 64x64 needs
17.2 GB); measured time (median of repeats; one timed call when a call takes > 1 s); measured peak memory above the
inputs (CPU: peak-RSS delta with the high-water mark reset through /proc/self/clear_refs, the script re-executing
itself with ``MALLOC_MMAP_THRESHOLD_=65536`` so every tensor is mmapped and returned to the OS when freed, which makes
RSS follow live tensors; CUDA: max_memory_allocated). Ratios are within this one run.

    .venv/bin/python bench/attention_bench.py                    # 64 ch, sizes 32,64
    .venv/bin/python bench/attention_bench.py --channels 320 --repeats 3
    .venv/bin/python bench/attention_bench.py --device cuda --channels 320 --max-gb 64
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from einops import rearrange

from dancegen.core.attention import TemporalAttention
from dancegen.core.stsa import STSABlock, SubspaceAttention


class TokenAttention(torch.nn.Module):
    """Plain multi-head self-attention over a token axis (diffusers attn1 layout): used for spatial and full."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (torch.nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.to_out = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(p(x), "b n (h d) -> b h n d", h=self.heads) for p in (self.to_q, self.to_k, self.to_v))
        return self.to_out(rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)"))


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(rf"{field}:\s+(\d+)", fh.read()).group(1))


class PeakMemory:
    """Peak memory above the current level during a block (CPU via VmHWM reset, CUDA via allocator stats)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb: float | None = None

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
                self.base = _rss_kb("VmRSS")
            except OSError:
                self.base = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        elif self.base is not None:
            self.mb = (_rss_kb("VmHWM") - self.base) / 1024
        return False


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, device, repeats: int) -> tuple[float, float | None]:
    """Return (median seconds, peak MB of the first call)."""
    with PeakMemory(device) as pm:
        t = time.perf_counter()
        fn()
        _sync(device)
        first = time.perf_counter() - t
    if first > 1.0 or repeats <= 1:
        return first, pm.mb
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), pm.mb


def rows_for(T: int, h: int, w: int, C: int, heads: int, s: tuple[int, int, int], device, dtype):
    """(name, score entries per clip, entries of one head's largest score matrix, callable) for each variant."""
    N, hw = T * h * w, h * w
    W = s[0] * s[1] * s[2]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, T, h, w, C, generator=g).to(device, dtype)
    tokens_frames = x.reshape(T, hw, C)
    tokens_clip = x.reshape(1, N, C)

    def build(m):
        torch.manual_seed(0)
        m = m.to(device, dtype).eval()
        for p in m.parameters():  # non-zero output projections so nothing is short-circuited
            torch.nn.init.normal_(p, std=0.02)
        return m

    spatial = build(TokenAttention(C, heads))
    sub = build(SubspaceAttention(C, heads, s, shift=False))
    sub_shift = build(SubspaceAttention(C, heads, s, shift=True))
    block = build(STSABlock(C, heads, s))
    temporal = build(TemporalAttention(C, heads))
    flow = torch.randint(-2, 3, (1, T, 2, h, w), generator=g).float().to(device)
    from dancegen.core.align import align_index

    idx = align_index(flow, h, w)
    align = {0: idx, s[0] // 2: idx}
    return [
        ("spatial per-frame", T * hw * hw * heads, hw * hw, lambda: spatial(tokens_frames)),
        ("full spatio-temporal", N * N * heads, N * N, lambda: spatial(tokens_clip)),
        ("temporal per-pixel", hw * T * T * heads, T * T, lambda: temporal(tokens_frames, T)),
        (f"STSA {s} unshifted", N * W * heads, W * W, lambda: sub(x)),
        (f"STSA {s} shifted+mask", N * W * heads, W * W, lambda: sub_shift(x)),
        ("STSA block (pair)", 2 * N * W * heads, W * W, lambda: block(tokens_frames, T, h, w)),
        ("STSA block + MF align", 2 * N * W * heads, W * W, lambda: block(tokens_frames, T, h, w, align_idx=align)),
    ]


def _reexec_with_mmap_malloc() -> None:
    """Re-run this script with glibc's mmap threshold pinned low, so freed tensors leave the resident set."""
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--sizes", default="32,64", help="latent sides (SD-1.5: 32 = 256 px, 64 = 512 px)")
    ap.add_argument("--channels", type=int, default=64, help="320 is SD-1.5's first level (slower)")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--subspace", default="4,4,4")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-gb", type=float, default=4.0, help="skip a row whose one-head score matrix exceeds this")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = ap.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    s = tuple(int(v) for v in args.subspace.split(","))
    esize = torch.finfo(dtype).bits // 8
    print(f"attention bench: T={args.frames}, C={args.channels}, heads={args.heads}, subspace={s}, batch 1, "
          f"{args.dtype} on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    for side in (int(v) for v in args.sizes.split(",")):
        T, h, w = args.frames, side, side
        print(f"\n== latent {side}x{side} ({side * 8} px), N = {T}x{side}x{side} = {T * h * w} tokens")
        print(f"{'variant':<28}{'scores/clip':>13}{'vs full':>10}{'1-head GB':>11}{'time ms':>11}{'x spatial':>11}"
              f"{'x full':>9}{'peak MB':>10}{'mem x sp':>10}")
        results = []
        with torch.no_grad():
            for name, entries, head_entries, fn in rows_for(T, h, w, args.channels, args.heads, s, device, dtype):
                gb = head_entries * esize / 1e9
                if gb > args.max_gb:
                    results.append((name, entries, gb, None, None, f"skipped (needs {gb:.1f} GB)"))
                    continue
                sec, mb = measure(fn, device, args.repeats)
                results.append((name, entries, gb, sec, mb, None))
        full_entries = T * h * w * T * h * w * args.heads
        by = {r[0]: r for r in results}
        sp, fu = by["spatial per-frame"], by["full spatio-temporal"]
        for name, entries, gb, sec, mb, note in results:
            line = f"{name:<28}{entries:>13.3g}{entries / full_entries:>10.2e}{gb:>11.3g}"
            if note:
                print(line + f"  {note}")
                continue
            xs = f"{sec / sp[3]:.3g}" if sp[3] else "-"
            xf = f"{sec / fu[3]:.3g}" if fu[3] else "-"
            mem = f"{mb:.1f}" if mb is not None else "n/a"
            mx = f"{mb / sp[4]:.3g}" if (mb is not None and sp[4]) else "-"
            print(f"{line}{1000 * sec:>11.1f}{xs:>11}{xf:>9}{mem:>10}{mx:>10}")


if __name__ == "__main__":
    _reexec_with_mmap_malloc()
    main()
