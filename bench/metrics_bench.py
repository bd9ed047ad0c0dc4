"""Time per video of dancegen's weight-free metrics vs straightforward reference implementations (issue #3).

Run: `.venv/bin/python bench/metrics_bench.py [--frames 16] [--size 256] [--repeat 3]`. Needs scikit-image (dev
extra) for the SSIM/PSNR references. Every row times both sides on the same inputs in one run and prints the ratio
(reference time / ours; > 1 means ours is faster) and the largest difference of the results.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _naive_ba_score(music_beats, motion_beats):
    ba = 0.0
    for bb in music_beats:
        ba += np.exp(-np.min((motion_beats - bb) ** 2) / 2 / 9)
    return ba / len(music_beats)


def _naive_niqe(gray: np.ndarray) -> float:
    """NIQE with one AGGD fit per patch and per product, in Python loops (BasicSR's structure)."""
    from scipy.special import gamma

    from dancegen.metrics import noref

    p = noref._load_npz("niqe_pristine.npz")
    nr, nc = gray.shape[0] // 96, gray.shape[1] // 96
    im = gray[:nr * 96, :nc * 96]
    scales = []
    for scale in (1, 2):
        s = noref._mscn(im, "niqe")
        b = 96 // scale
        rows = []
        for i in range(nr):
            for j in range(nc):
                blk = s[i * b:(i + 1) * b, j * b:(j + 1) * b]
                a, bl, br = (v[0] for v in noref.aggd_fit_grid(blk.reshape(1, -1)))
                feat = [a, (bl + br) / 2]
                for sh in ((0, 1), (1, 0), (1, 1), (-1, 1)):
                    pair = blk * np.roll(blk, sh, axis=(0, 1))
                    a, bl, br = (v[0] for v in noref.aggd_fit_grid(pair.reshape(1, -1)))
                    feat += [a, (br - bl) * gamma(2 / a) / gamma(1 / a), bl, br]
                rows.append(feat)
        scales.append(np.array(rows))
        im = noref.matlab_imresize(im, 0.5)
    feats = np.concatenate(scales, axis=1)
    d = p["mu"] - feats.mean(0)
    return float(np.sqrt(d @ np.linalg.pinv((p["cov"] + np.cov(feats, rowvar=False)) / 2) @ d))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import cv2
    from scipy import linalg
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from dancegen.metrics import consistency, frechet, image, noref, rhythm

    rng = np.random.default_rng(0)
    f, s = args.frames, args.size
    base = cv2.resize(rng.integers(0, 256, (s // 8, s // 8, 3), dtype=np.uint8), (s, s), interpolation=cv2.INTER_CUBIC)
    gt = np.stack([np.roll(base, 2 * t, axis=1) for t in range(f)])
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)

    rows = []

    def bench(name, ours, ref):
        # alternate the two sides so load spikes on this shared machine hit both alike
        t_o = t_r = float("inf")
        for _ in range(args.repeat):
            t, v_o = _best(ours, 1)
            t_o = min(t_o, t)
            t, v_r = _best(ref, 1)
            t_r = min(t_r, t)
        rows.append((name, t_o, t_r, float(np.max(np.abs(np.asarray(v_o) - np.asarray(v_r))))))

    bench("psnr (correct) vs skimage loop", lambda: image.psnr(pred, gt),
          lambda: np.mean([peak_signal_noise_ratio(g, p, data_range=255) for p, g in zip(pred, gt, strict=False)]))
    bench("ssim tiktok vs skimage(cv2 gray) loop", lambda: image.ssim(pred, gt),
          lambda: np.mean([structural_similarity(cv2.cvtColor(p, cv2.COLOR_RGB2GRAY), cv2.cvtColor(g, cv2.COLOR_RGB2GRAY))
                           for p, g in zip(pred, gt, strict=False)]))
    bench("ssim gaussian vs skimage loop", lambda: image.ssim(pred, gt, mode="gaussian"),
          lambda: np.mean([structural_similarity(p, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                                 data_range=255, channel_axis=-1) for p, g in zip(pred, gt, strict=False)]))
    bench("l1 tiktok vs per-frame loop", lambda: image.l1(pred, gt, mode="tiktok"),
          lambda: np.mean([np.mean(np.abs(p.astype(float) - g.astype(float)) / (s * s)) for p, g in zip(pred, gt, strict=False)]))
    bench("adjacent-frame mse vs loop", lambda: consistency.adjacent_frame_mse(pred),
          lambda: np.mean([np.mean((pred[t + 1].astype(float) - pred[t].astype(float)) ** 2) for t in range(f - 1)]))

    d = 512
    a = rng.normal(size=(2 * d, d))
    b = rng.normal(0.1, 1.1, size=(2 * d, d))
    (m1, s1), (m2, s2) = frechet.feature_stats(a), frechet.feature_stats(b)

    def scipy_fd():
        return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))

    bench(f"frechet sqrtm (D={d}) vs direct scipy", lambda: frechet.frechet_distance(m1, s1, m2, s2), scipy_fd)
    bench(f"frechet eig (D={d}) vs direct scipy", lambda: frechet.frechet_distance(m1, s1, m2, s2, method="eig"),
          scipy_fd)

    music = np.sort(rng.choice(20000, 2000, replace=False))
    motion = np.sort(rng.choice(20000, 2500, replace=False))
    bench("BAS (2000 beats) vs naive loop", lambda: rhythm.beat_alignment_score(motion, music),
          lambda: _naive_ba_score(music, motion))

    small = pred[: min(f, 4)]
    bench(f"niqe ({len(small)} frames) vs per-patch loop", lambda: noref.niqe(small),
          lambda: np.mean([_naive_niqe(noref.matlab_rgb2gray(x)) for x in small]))

    t_w, _ = _best(lambda: consistency.warping_error(pred), 1)
    t_b, _ = _best(lambda: noref.brisque(small), 1)

    print(f"# {f} frames of {s}x{s} RGB (NIQE: {len(small)} frames); best of {args.repeat}")
    print(f"{'metric':48s} {'ours s':>9s} {'ref s':>9s} {'ref/ours':>9s} {'max |diff|':>11s}")
    for name, t_o, t_r, diff in rows:
        print(f"{name:48s} {t_o:9.4f} {t_r:9.4f} {t_r / t_o:9.2f} {diff:11.2e}")
    print(f"{'warping error (DIS fwd+bwd), no reference':48s} {t_w:9.4f}")
    print(f"{f'brisque ({len(small)} frames), no reference':48s} {t_b:9.4f}")


if __name__ == "__main__":
    main()
