"""Draw the README's contact sheet of the bundled text-to-image model and its ControlNets.

    python docs/t2i_contact_sheet.py [--model t2i-tiny] [--rows 5] [--steps 20] [--guidance 4]

Writes docs/images/t2i-tiny-contact.png. One row per prompt ("a dancer in a <top> t-shirt and <bottom> trousers",
the colours of a held-out synthetic dancer in plain clothes, `t2i.quality.heldout_frames`); columns: the real
held-out frame, `t2i-tiny` from text alone (seeds 0 and 1), the frame's OpenPose map and the image with
`controlnet-openpose-tiny`, its depth map and the image with `controlnet-depth-tiny` (seed 0), all 2x.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "images"
COLUMNS = ("real frame", "text, seed 0", "text, seed 1", "OpenPose map", "+ OpenPose CN", "depth map", "+ depth CN")


def main() -> None:
    import cv2
    from PIL import Image, ImageDraw

    from dancegen.t2i.quality import CONTROLNETS_BUNDLED, T2I_BUNDLED, T2IBundle, clothes_prompt_of, heldout_frames

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=T2I_BUNDLED)
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--out", default=str(OUT / "t2i-tiny-contact.png"))
    args = ap.parse_args()

    bundle = T2IBundle.load(args.model, CONTROLNETS_BUNDLED)
    data = heldout_frames(args.rows)
    scale, cell, label_w, head_h = 2, 64 * 2, 330, 22
    rows = []
    for i in range(args.rows):
        prompt = clothes_prompt_of(data["facts"][i])
        pose, depth = data["pose_maps"][i], data["depth_maps"][i]
        def gen(controls, seed, prompt=prompt):
            return bundle.generate(prompt, controls, seed, args.steps, args.guidance)

        tiles = [data["frames"][i], gen(None, 0), gen(None, 1), pose, gen({"openpose": pose}, 0),
                 np.repeat(depth[..., None], 3, -1), gen({"depth": depth}, 0)]
        strip = np.concatenate([cv2.resize(t, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
                                for t in tiles], axis=1)
        rows.append((prompt, strip))
    width = label_w + cell * len(COLUMNS)
    sheet = Image.new("RGB", (width, head_h + cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(COLUMNS):
        draw.text((label_w + k * cell + 4, 5), name, fill="black")
    for r, (prompt, strip) in enumerate(rows):
        y = head_h + r * cell
        sheet.paste(Image.fromarray(strip), (label_w, y))
        lines = textwrap.wrap(prompt, 46)
        for k, text in enumerate(lines):
            draw.text((6, y + cell // 2 - 8 * len(lines) + 16 * k), text, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
