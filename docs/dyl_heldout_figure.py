"""Draw the README's picture of the bundled Dance-Your-Latents models on held-out synthetic clips.

    python docs/dyl_heldout_figure.py [--data data/synth_tiktok_tiny] [--clips 2] [--frames 16] [--every 2]

Writes docs/images/dyl-tiny-heldout.png: for each of the first `--clips` test clips of the synthetic TikTok-layout
world (`dancegen train --recipe recipes/dance_your_latents/tiny_synth.yaml` renders it; `test.txt` is held out), four
rows of every `--every`-th frame: the real clip, `dyl-tiny` animating its first frame with the clip's own poses,
`dyl-tiny` with another clip's poses, and the frame-by-frame `dyl-tiny-framewise` with the clip's poses. The samples
come from `quality.animate_item`, as in `quality.heldout_quality` (the recipe's DDIM steps and guidance, seed 0).

Also writes docs/images/dyl-tiny-poses.png: the same rows at 3x, with the joints the bundled SynthPose estimator finds
on each frame (the skeleton in OpenPose colours) over the driving pose's joints (white dots): how `pose_error` is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "images"


def skeleton_strip(video: np.ndarray, found: np.ndarray, driving: np.ndarray, scale: int = 3) -> np.ndarray:
    """Frames side by side, upscaled, with the found skeleton (OpenPose limb colours) and the driving joints."""
    import cv2

    from dancegen.pose.render import COLORS
    from dancegen.pose.skeletons import COCO18

    out = []
    for frame, f, d in zip(video, found, driving, strict=True):
        img = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        for (a, b), colour in zip(COCO18.limbs, COLORS[:len(COCO18.limbs)], strict=True):
            if d[a, 2] > 0 and d[b, 2] > 0:  # draw the limbs the driving pose shows
                pa, pb = ((f[[a, b], :2] + 0.5) * scale).round().astype(int)
                cv2.line(img, tuple(pa), tuple(pb), tuple(int(c) for c in colour), 2, cv2.LINE_AA)
        for x, y, c in d:
            if c > 0:
                cv2.circle(img, (int(round((x + 0.5) * scale)), int(round((y + 0.5) * scale))), 2, (255, 255, 255),
                           -1, cv2.LINE_AA)
        out.append(img)
    return np.concatenate(out, axis=1)


def main() -> None:
    from PIL import Image

    from dancegen.core.weights import BUNDLED_ROOT
    from dancegen.methods.dance_your_latents.data import TikTokClips
    from dancegen.methods.dance_your_latents.model import DanceYourLatentsModel
    from dancegen.methods.dance_your_latents.quality import _uint8, animate_item, clip_poses, pose_estimator

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/synth_tiktok_tiny")
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--every", type=int, default=2)
    args = ap.parse_args()

    models = {name: DanceYourLatentsModel.from_pretrained(BUNDLED_ROOT / name)
              for name in ("dyl-tiny", "dyl-tiny-framewise")}
    h, w = (int(r) for r in models["dyl-tiny"].config.data.resolution)
    data = TikTokClips(args.data, split="test", num_frames=args.frames, resolution=(h, w), reference="first_frame")
    starts = [i for i, (_, s) in enumerate(data.index) if s == 0]

    label_w, scale = 150, 2
    estimator = pose_estimator()
    blocks, pose_blocks = [], []
    for k in range(args.clips):
        item = data[starts[k]]
        own = clip_poses(data, starts[k], args.frames)
        other = clip_poses(data, starts[(k + 1) % len(starts)], args.frames)
        rows = [("real clip", _uint8(item["frames"])), ("dyl-tiny", animate_item(models["dyl-tiny"], item, own)),
                ("dyl-tiny, other poses", animate_item(models["dyl-tiny"], item, other)),
                ("frame-by-frame", animate_item(models["dyl-tiny-framewise"], item, own))]
        for label, video in rows:
            strip = np.concatenate(list(video[:: args.every]), axis=1)
            img = Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST)
            blocks.append(_labelled(img, label, label_w))
            shown = video[:: args.every]
            found = estimator(shown)
            pose_blocks.append(_labelled(Image.fromarray(skeleton_strip(shown, found, own.keypoints[:: args.every])),
                                         label, label_w))
        for b in (blocks, pose_blocks):
            b.append(np.full((8, b[-1].shape[1], 3), 255, np.uint8))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, b in (("dyl-tiny-heldout.png", blocks), ("dyl-tiny-poses.png", pose_blocks)):
        Image.fromarray(np.concatenate(b[:-1], axis=0)).save(OUT / name, optimize=True)
        print(OUT / name)


def _labelled(img, label: str, label_w: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (label_w + img.width, img.height), "white")
    canvas.paste(img, (label_w, 0))
    ImageDraw.Draw(canvas).text((6, img.height // 2 - 6), label, fill="black")
    return np.asarray(canvas)


if __name__ == "__main__":
    main()
