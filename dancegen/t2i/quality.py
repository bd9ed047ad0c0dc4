"""How well the bundled text-to-image model and its ControlNets follow text, pose and depth, on held-out synthetic data.

    python -m dancegen.t2i.quality --clips 24 --steps 20 -o runs/t2i-quality.json

Held-out data: clips of the synthetic world with master seed `HELDOUT_SEED` (the models train on seed 2000) whose
dancer wears plain clothes (`heldout_frames`). For each clip i we take one frame: its dancer's garment colours, its
OpenPose map, its depth map and its joints; the prompt is "a dancer in a <top> t-shirt and <bottom> trousers". With each
ControlNet and one fixed seed we generate two images: `matched` (prompt of clip i, control of clip i) and `crossed`
(prompt of clip j = `_derangement(n)[i]`, control of clip i).

Scores:
- colour accuracy: the colour name (nearest of the synthetic world's 16, `synth.appearance.COLOURS`) of the median
  pixel in the torso (shoulders-hips quadrilateral, shrunk) and on the thighs (hip-knee segments), placed by the
  driving joints, against a prompt's top / bottom colours. `matched` against its prompt is the model; `crossed`
  against clip i's colours is the shuffled-prompt control (what the control image alone implies); `crossed` against
  its own prompt (`colour_accuracy_crossed`) shows that changing only the prompt changes the colours, and, read from
  clip j's side, that changing only the pose keeps the described colours. The same measurement on the real frames is
  the ceiling (1.0 on these plain clothes); on the real frames encoded and decoded by the model's autoencoder
  (`real_through_vae`) it is the ceiling of any model on that autoencoder.
- pose error: SynthPose's joints on the generated image against the driving joints (mean px over the visible
  joints, and PCK@0.1 of the image size). `crossed` against clip j's joints is the other-pose control (clip j's
  prompt with another pose); `crossed` against clip i's joints (`pose_crossed`) shows a prompt change keeps the pose.
- text only (no ControlNet): the same colour accuracy with the regions placed by SynthPose's joints on the generated
  image, against the prompt and against a shuffled prompt.
- silhouette edges (depth): mean image-gradient magnitude on the driving person's outline (1 px band), divided by
  the image's mean gradient: above 1 when the generated person's outline lies where the depth map's does.

Every choice here (regions, namer, seeds) is ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HELDOUT_SEED = 7
T2I_BUNDLED = "t2i-tiny"
CONTROLNETS_BUNDLED = {"openpose": "controlnet-openpose-tiny", "depth": "controlnet-depth-tiny"}
# COCO-18 indices
NECK, R_SHO, R_HIP, R_KNEE, L_SHO, L_HIP, L_KNEE = 1, 2, 8, 9, 5, 11, 12


# ------------------------------------------------------------------------------------------------ colour regions
def _polygon_mask(pts: np.ndarray, size: int) -> np.ndarray:
    import cv2

    m = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(m, np.round(pts * 4).astype(np.int32), 1, shift=2)
    return m.astype(bool)


def garment_regions(kps: np.ndarray, size: int) -> dict[str, np.ndarray | None]:
    """Boolean masks of the torso ("top") and the thighs ("bottom") from COCO-18 joints ``(18, 3)``; None where a
    needed joint is not visible."""
    import cv2

    vis = kps[:, 2] > 0
    out: dict[str, np.ndarray | None] = {"top": None, "bottom": None}
    if vis[[R_SHO, L_SHO, L_HIP, R_HIP]].all():
        quad = kps[[R_SHO, L_SHO, L_HIP, R_HIP], :2].astype(np.float64)
        # shoulders -> a bit below them (not the neck), hips -> a bit above them (not the belt line)
        top = quad.copy()
        top[0:2] = quad[0:2] + 0.2 * (quad[[3, 2]] - quad[0:2])
        top[2:4] = quad[2:4] + 0.15 * (quad[[1, 0]] - quad[2:4])
        c = top.mean(0)
        top = c + 0.75 * (top - c)
        m = _polygon_mask(top, size)
        out["top"] = m if m.sum() >= 2 else None
    if vis[[R_HIP, R_KNEE, L_HIP, L_KNEE]].all():
        m = np.zeros((size, size), np.uint8)
        width = max(1, int(round(size / 40)))
        for hip, knee in ((R_HIP, R_KNEE), (L_HIP, L_KNEE)):
            a = kps[hip, :2] + 0.25 * (kps[knee, :2] - kps[hip, :2])
            b = kps[hip, :2] + 0.85 * (kps[knee, :2] - kps[hip, :2])
            cv2.line(m, tuple(np.round(a * 4).astype(int)), tuple(np.round(b * 4).astype(int)), 1, width, shift=2)
        out["bottom"] = m.astype(bool) if m.sum() >= 2 else None
    return out


def colour_name(rgb: np.ndarray) -> str:
    """The nearest of the synthetic world's colour names to an RGB value."""
    from dancegen.synth.appearance import nearest_colour_name

    return nearest_colour_name(rgb)


def garment_colours(image: np.ndarray, kps: np.ndarray) -> dict[str, str | None]:
    """Colour names of the top and bottom of the dancer in ``image`` (H, W, 3) uint8 placed by joints ``kps``."""
    regions = garment_regions(kps, image.shape[0])
    return {k: None if m is None else colour_name(np.median(image[m].reshape(-1, 3), axis=0))
            for k, m in regions.items()}


def silhouette_edge_ratio(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean gradient magnitude of ``image`` on the outline of ``mask`` over its mean on the whole image."""
    import cv2

    grey = image.astype(np.float32).mean(-1)
    mag = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    m = mask.astype(np.uint8)
    band = (cv2.dilate(m, np.ones((3, 3), np.uint8)) - cv2.erode(m, np.ones((3, 3), np.uint8))).astype(bool)
    if not band.any():
        return float("nan")
    return float(mag[band].mean() / max(float(mag.mean()), 1e-6))


# ------------------------------------------------------------------------------------------------ generation
@dataclass
class T2IBundle:
    """Loaded text-to-image model (SD-1.5 layout) with its prompt encoder and named ControlNets."""

    components: object
    prompts: object
    controlnets: object
    names: dict = field(default_factory=dict)

    @classmethod
    def load(cls, model: str = T2I_BUNDLED, controlnets: dict[str, str] | None = None) -> T2IBundle:
        """Load a text-to-image folder / bundled name / cached hub id and ControlNet folders by name."""
        import torch

        from dancegen.core.controlnet import ControlNetSet
        from dancegen.core.text import PromptEncoder
        from dancegen.core.weights import load_sd15_components, resolve_model

        # float32 on the CPU: bundled weights are stored in float16 (core.bundle)
        comps = load_sd15_components(resolve_model(model, kind="sd15"), dtype=torch.float32)
        folders = dict(CONTROLNETS_BUNDLED if controlnets is None else controlnets)
        nets = ControlNetSet.from_pretrained_folders(folders, dtype=torch.float32)
        nets.eval().requires_grad_(False)
        return cls(comps, PromptEncoder(comps.text_encoder, comps.tokenizer), nets, folders)

    def generate(self, prompt: str, controls: dict[str, np.ndarray] | None = None, seed: int = 0, steps: int = 20,
                 guidance: float = 4.0, size: int = 64) -> np.ndarray:
        """One image ``(size, size, 3)`` uint8 for ``prompt`` and ``{name: control image}`` (uint8, RGB or grey)."""
        import torch

        from dancegen.core.frames import generate_frames
        from dancegen.t2i.data import to_unit

        emb = self.prompts.encode(prompt, guidance=guidance != 1.0)
        conds = {k: to_unit(v[None])[:, :, None] for k, v in (controls or {}).items()}  # (1, 3, F=1, H, W)
        with torch.no_grad():
            out = generate_frames(self.components.unet, self.components.vae, self.components.scheduler, emb.cond,
                                  emb.uncond, num_frames=1, height=size, width=size, num_inference_steps=steps,
                                  guidance_scale=guidance, controlnets=self.controlnets if conds else None,
                                  conditions=conds or None, generator=torch.Generator().manual_seed(seed))
        return (out[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)

    def autoencode(self, images: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 images through the model's autoencoder (`autoencode`)."""
        return autoencode(self.components.vae, images)


def autoencode(vae, images: np.ndarray) -> np.ndarray:
    """``(N, S, S, 3)`` uint8 images encoded (posterior mean) and decoded by ``vae``."""
    import torch

    from dancegen.core.latents import decode_latents, encode_images
    from dancegen.t2i.data import to_unit

    with torch.no_grad():
        out = decode_latents(vae, encode_images(vae, to_unit(images) * 2 - 1))
    return (out.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)


def heldout_frames(count: int, seed: int = HELDOUT_SEED, size: int = 64) -> dict:
    """One frame (the 13th of 24) of each of the first ``count`` held-out clips whose dancer wears a plain top and
    plain bottoms (so the prompt "a red t-shirt and blue trousers" describes the real frame fully and the colour
    namer's ceiling is meaningful), with its controls, joints, mask and garment facts."""
    from dancegen.synth.clip import render_clip
    from dancegen.synth.layouts import clip_seed
    from dancegen.t2i.data import clip_facts, render_frames

    keys = ("frames", "keypoints", "pose_maps", "depth_maps", "masks")
    out: dict = {k: [] for k in keys}
    out["facts"], out["clip_index"] = [], []
    i = 0
    while len(out["facts"]) < count:
        app = render_clip(seed=clip_seed(seed, i), size=16, num_frames=1, render=False, flow=False).appearance
        if app.top_pattern == "solid" and app.bottom_pattern == "solid":
            a = render_frames(seed, i, 1, size=size, num_frames=24, frame_step=12, captions_per_clip=1)
            f = clip_facts(a)[0]
            for k in keys:
                out[k].append(a[k][1])
            out["facts"].append(f)
            out["clip_index"].append(i)
        i += 1
    return {k: (np.stack(v) if k in keys else v) for k, v in out.items()}


def clothes_prompt_of(facts: dict) -> str:
    from dancegen.t2i.captions import clothes_prompt

    return clothes_prompt(facts["top_colour"], facts["bottom_colour"], facts["bottom"])


def _derangement(n: int) -> np.ndarray:
    """Clip j for clip i: i + n/2 mod n (never i; colours of the pair usually differ)."""
    return (np.arange(n) + max(1, n // 2)) % n


def _colour_hits(image: np.ndarray, kps: np.ndarray, facts: dict) -> list[float]:
    got = garment_colours(image, kps)
    return [float(got[g] == facts[f"{g}_colour"]) for g in ("top", "bottom") if got[g] is not None]


def evaluate(bundle: T2IBundle, count: int = 16, steps: int = 20, guidance: float = 4.0, seed: int = 0,
             controls: tuple[str, ...] = ("openpose", "depth"), text_only: bool = True, progress=None) -> dict:
    """The scores of the module docstring, per ControlNet, plus the real frames' (ceiling) rows."""
    from dancegen.metrics.image import psnr
    from dancegen.metrics.pose_metrics import keypoint_scores
    from dancegen.pose.backends.synthpose import SynthPoseEstimator

    data = heldout_frames(count)
    facts, kps = data["facts"], data["keypoints"]
    other = _derangement(count)
    prompts = [clothes_prompt_of(f) for f in facts]
    estimator = SynthPoseEstimator.load(None)
    size = data["frames"].shape[1]

    def pose_scores(images: np.ndarray, truth: np.ndarray) -> dict:
        s = keypoint_scores(estimator(images), truth, float(size), threshold=0.1)
        return {"error_px": s["error_px"], "pck": s["pck"]}

    real_hits = [h for i in range(count) for h in _colour_hits(data["frames"][i], kps[i], facts[i])]
    through = bundle.autoencode(data["frames"])
    vae_hits = [h for i in range(count) for h in _colour_hits(through[i], kps[i], facts[i])]
    report: dict = {"clips": count, "steps": steps, "guidance": guidance, "seed": seed, "prompts": prompts,
                    "real": {"colour_accuracy": float(np.mean(real_hits)), **pose_scores(data["frames"], kps)},
                    "real_through_vae": {"colour_accuracy": float(np.mean(vae_hits)),
                                         "psnr": float(psnr(through, data["frames"]))}}
    images: dict = {}
    if text_only:
        # no ControlNet: the regions come from SynthPose's joints on the generated image itself
        gen_t = np.stack([bundle.generate(prompts[i], None, seed, steps, guidance, size) for i in range(count)])
        found = estimator(gen_t)
        hits = [h for i in range(count) for h in _colour_hits(gen_t[i], found[i], facts[i])]
        shuffled = [h for i in range(count) for h in _colour_hits(gen_t[i], found[i], facts[other[i]])]
        report["text_only"] = {"colour_accuracy": float(np.mean(hits)) if hits else float("nan"),
                               "colour_accuracy_shuffled_prompt": float(np.mean(shuffled)) if shuffled else float("nan"),
                               "garments_found": len(hits) / (2 * count)}
        images["text_only"] = gen_t
        if progress:
            progress("text only: done")
    same = np.arange(count)
    for name in controls:
        cmaps = data["pose_maps"] if name == "openpose" else data["depth_maps"]
        gen = {"matched": [], "crossed": []}
        for i in range(count):
            gen["matched"].append(bundle.generate(prompts[i], {name: cmaps[i]}, seed, steps, guidance, size))
            gen["crossed"].append(bundle.generate(prompts[other[i]], {name: cmaps[i]}, seed, steps, guidance, size))
            if progress:
                progress(f"{name}: clip {i + 1}/{count}")
        gen = {k: np.stack(v) for k, v in gen.items()}
        images[name] = gen
        matched, crossed = gen["matched"], gen["crossed"]

        def acc(imgs, fact_idx):
            return float(np.mean([h for i in range(count) for h in _colour_hits(imgs[i], kps[i], facts[fact_idx[i]])]))

        r = {
            "colour_accuracy": acc(matched, same),
            "colour_accuracy_shuffled_prompt": acc(crossed, same),
            "colour_accuracy_crossed": acc(crossed, other),
            "pose": pose_scores(matched, kps),
            "pose_other_control": pose_scores(crossed, kps[other]),
            "pose_crossed": pose_scores(crossed, kps),
        }
        if name == "depth":
            r["silhouette_edges"] = float(np.nanmean([silhouette_edge_ratio(matched[i], data["masks"][i])
                                                      for i in same]))
            r["silhouette_edges_other_control"] = float(np.nanmean(
                [silhouette_edge_ratio(crossed[i], data["masks"][other[i]]) for i in same]))
        report[name] = r
    report["_images"] = images
    report["_data"] = data
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Score the bundled text-to-image model and ControlNets on held-out "
                                "synthetic frames (see the module docstring).")
    p.add_argument("--model", default=T2I_BUNDLED)
    p.add_argument("--openpose", default=CONTROLNETS_BUNDLED["openpose"])
    p.add_argument("--depth", default=CONTROLNETS_BUNDLED["depth"])
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("-o", "--out", default=None, help="write the scores as JSON here")
    a = p.parse_args(argv)
    bundle = T2IBundle.load(a.model, {"openpose": a.openpose, "depth": a.depth})
    rep = evaluate(bundle, a.clips, a.steps, a.guidance, progress=lambda m: None)
    clean = {k: v for k, v in rep.items() if not k.startswith("_")}
    text = json.dumps(clean, indent=1)
    print(text)
    if a.out:
        from dancegen.io.atomic import write_text

        write_text(Path(a.out), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
