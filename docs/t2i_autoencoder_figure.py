"""Draw the README's autoencoder figure: held-out frames through each text-to-image model's autoencoder.

    python docs/t2i_autoencoder_figure.py [LABEL=]MODEL [[LABEL=]MODEL ...] [--columns 8] [--clips 24]

Writes docs/images/t2i-autoencoders.png. Row 1: held-out synthetic dancers in plain clothes
(`t2i.quality.heldout_frames`); one more row per model (a bundled name or a folder with a `vae/`): the same frames encoded
and decoded by its `vae/` (`t2i.quality.autoencode`). Each row's label gives, over `--clips` frames, how often the colour
of the top / bottom is still named right (`t2i.quality` colour namer and regions: the ceiling of any text-to-image
model on that autoencoder) and the PSNR, all 2x.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "images"


def main() -> None:
    import cv2
    from PIL import Image, ImageDraw

    from dancegen.metrics.image import psnr
    from dancegen.t2i.quality import _colour_hits, autoencode, heldout_frames
    from dancegen.t2i.train import load_vae

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="bundled names or model folders (their vae/ is used), each optionally "
                    "as LABEL=MODEL")
    ap.add_argument("--columns", type=int, default=8)
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--out", default=str(OUT / "t2i-autoencoders.png"))
    args = ap.parse_args()

    data = heldout_frames(max(args.clips, args.columns))
    frames, kps, facts = data["frames"], data["keypoints"], data["facts"]
    n = args.clips
    rows = [("held-out frames", frames)]
    for spec in args.models:
        name, _, model = spec.rpartition("=")
        out = autoencode(load_vae(model), frames)
        acc = np.mean([h for i in range(n) for h in _colour_hits(out[i], kps[i], facts[i])])
        name = name or ("/".join(Path(model).parts[-2:]) if Path(model).exists() else model)
        label = f"{name}: colour {acc:.2f}, PSNR {psnr(out[:n], frames[:n]):.1f} dB"
        rows.append((label, out))
        print(label)
    scale, cell, label_w = 2, 128, 300
    sheet = Image.new("RGB", (label_w + cell * args.columns, cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        strip = np.concatenate([cv2.resize(images[i], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
                                for i in range(args.columns)], axis=1)
        sheet.paste(Image.fromarray(strip), (label_w, r * cell))
        lines = textwrap.wrap(label, 40)
        for k, text in enumerate(lines):
            draw.text((6, r * cell + cell // 2 - 8 * len(lines) + 16 * k), text, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
