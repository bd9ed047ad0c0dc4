"""Time per video of the network metrics (random weights of the real architectures) vs straightforward references.

Each line compares our path with a plain reference on the same inputs, measured in one run (the machine is noisy:
read the ratios, not the seconds):
- LPIPS: both images through the trunk in one batch, 16 frame pairs per batch vs one pair at a time, two passes;
- FID Inception: 16 frames per batch vs one frame at a time;
- FVD I3D: 4 clips per batch vs one clip at a time (TorchScript-free StyleGAN-V path, same network);
- Fréchet distance: sample-space ("lowrank") vs scipy sqrtm on 2048-d features of 32 rows (the FID code path).
Outputs are checked equal before timing. Run: `python bench/evaluate_bench.py [--frames 16] [--size 128]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from dancegen.metrics.backbones.features import I3DExtractor, InceptionExtractor, LPIPSScorer, _to_float
    from dancegen.metrics.evaluate import frechet_distance_lowrank
    from dancegen.metrics.frechet import feature_stats, frechet_distance

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (args.frames, args.size, args.size, 3), dtype=np.uint8)
    b = rng.integers(0, 256, a.shape, dtype=np.uint8)
    rows = []

    lp = LPIPSScorer("alex", batch_size=16)

    def lpips_ref():
        with torch.no_grad():
            out = []
            for x, y in zip(a, b, strict=True):
                fx, fy = (lp.net.net(lp.net.scaling_layer(_to_float(v[None], "cpu") * 2 - 1)) for v in (x, y))
                d = sum(lin(((p / (p.norm(dim=1, keepdim=True) + 1e-10)) - (q / (q.norm(dim=1, keepdim=True) + 1e-10)))
                            ** 2).mean(dim=(2, 3)) for p, q, lin in zip(fx, fy, lp.net.lins, strict=True))
                out.append(float(d))
            return np.array(out)

    assert np.allclose(lp(a, b), lpips_ref(), rtol=1e-4, atol=1e-6)
    rows.append(("lpips (alex)", _best(lambda: lp(a, b), args.repeat), _best(lpips_ref, args.repeat)))

    inc = InceptionExtractor(batch_size=16)

    def inc_ref():
        with torch.no_grad():
            return np.concatenate([inc.net.features(_to_float(f[None], "cpu")).numpy() for f in a])

    assert np.allclose(inc(a), inc_ref(), rtol=1e-3, atol=1e-4)
    rows.append(("fid inception features", _best(lambda: inc(a), args.repeat), _best(inc_ref, args.repeat)))

    video = rng.integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)  # 4 clips of 16 frames
    i3d = I3DExtractor("styleganv", clips="all", batch_size=4)

    def i3d_ref():
        with torch.no_grad():
            return np.concatenate([i3d.net(i3d._prep(video[s:s + 16])[None]).numpy() for s in range(0, 64, 16)])

    assert np.allclose(i3d(video), i3d_ref(), rtol=1e-3, atol=1e-4)
    rows.append(("fvd i3d (4 clips)", _best(lambda: i3d(video), 1), _best(i3d_ref, 1)))

    f1, f2 = rng.normal(size=(32, 2048)), rng.normal(0.5, 1.5, size=(32, 2048))
    ref_fd = lambda: frechet_distance(*feature_stats(f1), *feature_stats(f2), method="sqrtm")  # noqa: E731
    assert np.isclose(frechet_distance_lowrank(f1, f2), ref_fd(), rtol=1e-6)
    rows.append(("frechet 32x2048", _best(lambda: frechet_distance_lowrank(f1, f2), args.repeat), _best(ref_fd, 1)))

    print(f"{'metric':26s} {'ours s/video':>13s} {'reference s/video':>18s} {'speed-up':>9s}")
    for name, ours, ref in rows:
        print(f"{name:26s} {ours:13.3f} {ref:18.3f} {ref / ours:8.1f}x")


if __name__ == "__main__":
    main()
