"""Draw the README's pictures of a Dance Any Beat model on held-out synthetic clips.

    python docs/dab_heldout_figure.py [--model dab-tiny] [--data data/synth_aist_tiny] [--video 0] [--videos 4]

Writes docs/images/dab-tiny-heldout.png (rows: the real clip `--video`, the LFAE rebuilding it from the real flows, the
model dancing the first frame to the same music; every 4th frame) and docs/images/dab-tiny-beats.png: left, the flows'
speed over time, frame to frame, with the music's beats as vertical lines (the real dancer's LFAE flows, the model
with the clip's music, the model with another held-out track's music); right, the same three speeds averaged by
distance to the nearest beat over the first `--videos` held-out clips. The data folder is a recipe's synthetic AIST++-layout
world (`dancegen train --recipe recipes/dance_any_beat/tiny_synth.yaml` renders it; its test tracks are held out).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "images"
OFFSETS = (-3, -2, -1, 0, 1, 2)


def beat_profile(speed: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Mean speed into frames at each offset (OFFSETS) from the nearest music beat, over the clip's mean speed."""
    frames = np.arange(1, len(speed) + 1)
    nearest = np.array([frames[i] - beats[np.argmin(np.abs(frames[i] - beats))] for i in range(len(frames))])
    return np.array([speed[nearest == k].mean() / speed.mean() if (nearest == k).any() else np.nan
                     for k in OFFSETS])


def profile_panel(rows: list[tuple[str, np.ndarray]], width: int = 300, row: int = 110):
    """Bars of `beat_profile` per row (1.0 = the mean speed, dashed)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, row * len(rows) + 20), "white")
    draw = ImageDraw.Draw(img)
    bar = (width - 40) // len(OFFSETS)
    for r, (label, prof) in enumerate(rows):
        top, bottom = r * row + 22, (r + 1) * row - 12
        scale = (bottom - top) / 1.6  # 1.6 x the mean at the top of the row
        for j, (k, v) in enumerate(zip(OFFSETS, prof, strict=True)):
            x = 30 + j * bar
            if np.isfinite(v):
                draw.rectangle([x + 4, bottom - min(v, 1.6) * scale, x + bar - 4, bottom], fill=(30, 60, 200))
            draw.text((x + bar // 2 - 6, bottom + 1), f"{k:+d}", fill=(90, 90, 90))
        y1 = bottom - scale
        for x in range(30, width - 10, 8):
            draw.line([(x, y1), (x + 4, y1)], fill=(200, 60, 60))
        draw.text((10, top - 16), label, fill="black")
    draw.text((10, row * len(rows) + 6), "frames from the nearest beat; red: mean speed", fill=(90, 90, 90))
    return img


def speed_panel(speeds: list[tuple[str, np.ndarray]], beats: np.ndarray, width: int = 720, row: int = 110):
    """One row per curve: the speed (scaled to its row), beat frames as grey lines, a label."""
    from PIL import Image, ImageDraw

    n = max(len(s) for _, s in speeds) + 1
    img = Image.new("RGB", (width, row * len(speeds) + 20), "white")
    draw = ImageDraw.Draw(img)
    left, right = 10, width - 10

    def x_of(frame):
        return left + (right - left) * frame / (n - 1)

    for r, (label, s) in enumerate(speeds):
        top, bottom = r * row + 22, (r + 1) * row
        for b in beats:
            draw.line([(x_of(b), top), (x_of(b), bottom)], fill=(200, 200, 200), width=2)
        peak = max(float(s.max()), 1e-12)  # each row from 0 to its own peak
        pts = [(x_of(i + 1), bottom - (bottom - top) * float(v) / peak) for i, v in enumerate(s)]
        draw.line(pts, fill=(30, 60, 200), width=2)
        for p in pts:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=(30, 60, 200))
        draw.text((left, top - 16), label, fill="black")
    draw.text((left, row * len(speeds) + 4), "frame ->   grey: music beats (librosa)", fill=(90, 90, 90))
    return img


def main() -> None:
    import torch
    from PIL import Image

    from dancegen.methods.dance_any_beat.data import _AistCache, clip_music, list_aist_videos
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel, resolve_model_folder
    from dancegen.methods.dance_any_beat.pipeline import decode_frames, sample_flows
    from dancegen.methods.dance_any_beat.quality import beat_frames_of, flow_speed

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dab-tiny")
    ap.add_argument("--data", default="data/synth_aist_tiny")
    ap.add_argument("--video", type=int, default=0, help="index of the held-out video drawn frame by frame")
    ap.add_argument("--videos", type=int, default=4, help="held-out videos averaged in the beat profile")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--out", type=Path, default=OUT, help="folder for the two PNGs")
    args = ap.parse_args()
    out = args.out

    model = DanceAnyBeatModel.from_pretrained(resolve_model_folder(args.model)).eval()
    cfg = model.config
    root = Path(args.data)
    videos = list_aist_videos(root, "test", cfg.data.test_music, cfg.data.cameras)
    cache = _AistCache(root, cfg)
    n_frames = int(round(args.seconds * cfg.data.fps))
    profiles: dict[str, list[np.ndarray]] = {"real": [], "music": [], "shuffled": []}
    for k in sorted({args.video, *range(min(args.videos, len(videos)))}):
        v, other = videos[k], videos[(k + 1) % len(videos)]
        frames = cache.video(v)[:n_frames]
        t = len(frames)
        beats = beat_frames_of(cache.features(v.music), t)
        ref = torch.from_numpy(np.ascontiguousarray(frames[0])).permute(2, 0, 1)[None].float() / 255.0
        real = torch.from_numpy(np.ascontiguousarray(frames[1:])).permute(0, 3, 1, 2)[None].float() / 255.0
        with torch.no_grad():
            flows = {"real": model.flow_targets(ref, real)[1]}
        for name, src in (("music", v), ("shuffled", other)):
            f, b = clip_music(cache.features(src.music), 1, t - 1, cfg.music)
            flows[name] = sample_flows(model, ref, f, b, steps=args.steps, generator=torch.Generator().manual_seed(0))
        speeds = {name: flow_speed(a0) for name, a0 in flows.items()}
        if k < args.videos:
            for name, sp in speeds.items():
                profiles[name].append(beat_profile(sp, beats))
        if k == args.video:
            shown = v.name
            with torch.no_grad():
                rebuilt = np.concatenate([frames[:1], decode_frames(model, ref, flows["real"])])
                dance = np.concatenate([frames[:1], decode_frames(model, ref, flows["music"])])
            strip_rows = (frames, rebuilt, dance)
            curves = speed_panel([("real dancer (LFAE flows of the real frames)", speeds["real"]),
                                  ("generated, this clip's music", speeds["music"]),
                                  ("generated, another track's music", speeds["shuffled"])], beats)

    out.mkdir(parents=True, exist_ok=True)
    pick = list(range(0, len(strip_rows[0]), 4))
    strip = np.concatenate([np.concatenate([rows[i] for i in pick], axis=1) for rows in strip_rows])
    Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(
        out / "dab-tiny-heldout.png")
    names = {"real": "real", "music": "this clip's music", "shuffled": "another track's music"}
    bars = profile_panel([(f"{names[k]}: mean of {len(p)} held-out clips", np.nanmean(p, axis=0))
                          for k, p in profiles.items()])
    panel = Image.new("RGB", (curves.width + bars.width, max(curves.height, bars.height)), "white")
    panel.paste(curves, (0, 0))
    panel.paste(bars, (curves.width, 0))
    panel.save(out / "dab-tiny-beats.png")
    print(f"wrote {out / 'dab-tiny-heldout.png'} and {out / 'dab-tiny-beats.png'} (frames of {shown})")


if __name__ == "__main__":
    main()
