"""Where the time of one denoising step goes: Dance-Your-Latents vs AnimateDiff + ControlNet, same shape, on the CPU.

The GPU suite (bench/gpu_suite.py) measured dancegen's animate 1.33x slower than diffusers' AnimateDiff + ControlNet
at 16 frames, 512 px, 25 steps (bench/results/gpu_suite.md). This script splits one classifier-free-guided step of
each into its parts with forward hooks (wall time of each module's forward; on the CPU no synchronisation is
needed): for dancegen the pose ControlNet, the background ControlNet, the STSA blocks (with the motion-flow align) and
the rest of the video UNet; for the peer its ControlNet, the motion modules and the rest of its UNet. Full-size
SD-1.5 channels with random weights, at a smaller frame size and frame count so it runs in minutes on 2 cores;
shares, not seconds, are what carries over to the GPU.

    .venv/bin/python bench/profile_vs_peer.py --size 128 --frames 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


class Timer:
    """Accumulates the wall time of every forward of the hooked modules under a label (outermost call only)."""

    def __init__(self):
        self.total = defaultdict(float)
        self._start: dict[int, float] = {}

    def hook(self, module: torch.nn.Module, label: str) -> None:
        def pre(mod, args):
            self._start[id(mod)] = time.perf_counter()

        def post(mod, args, out):
            self.total[label] += time.perf_counter() - self._start.pop(id(mod))

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def profile_dyl(size: int, frames: int) -> dict[str, float]:
    from gpu_suite import dance_poses, dyl_model, reference_image

    from dancegen.core.sd_configs import write_config_folder
    from dancegen.methods.dance_your_latents.pipeline import DanceYourLatentsPipeline

    with tempfile.TemporaryDirectory() as tmp:
        model = dyl_model(False, size, frames, "cpu", torch.float32, write_config_folder(Path(tmp) / "sd"))
    timer = Timer()
    timer.hook(model.controlnets.pose, "pose ControlNet")
    timer.hook(model.controlnets.background, "background ControlNet")
    timer.hook(model.unet, "video UNet (all)")
    for insert in model.unet.temporal_blocks.values():
        timer.hook(insert, "STSA blocks + MF align")
    pipe = DanceYourLatentsPipeline.from_model(model)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    pipe(reference_image(size), dance_poses(frames, size), height=size, width=size, num_inference_steps=1,
         guidance_scale=1.5, generator=torch.Generator().manual_seed(0), output_type="latent")
    out = dict(timer.total)
    out["video UNet without STSA"] = out.pop("video UNet (all)") - out["STSA blocks + MF align"]
    out["everything else (reference CLIP, VAE encode, pose flow, scheduler)"] = \
        time.perf_counter() - t0 - sum(out.values())
    return out


def profile_peer(size: int, frames: int) -> dict[str, float]:
    from gpu_suite import dance_poses, peer_pipeline
    from PIL import Image

    from dancegen.pose.render import render_pose_sequence

    pipe = peer_pipeline(False, "cpu", torch.float32)
    timer = Timer()
    timer.hook(pipe.controlnet, "ControlNet")
    timer.hook(pipe.unet, "motion UNet (all)")
    for name, mod in pipe.unet.named_modules():
        if name.endswith("motion_modules"):
            for sub in mod:
                timer.hook(sub, "motion modules")
    cond = [Image.fromarray(m) for m in render_pose_sequence(dance_poses(frames, size))]
    emb = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    pipe(prompt_embeds=emb, negative_prompt_embeds=torch.zeros_like(emb), num_frames=frames, height=size,
         width=size, num_inference_steps=1, guidance_scale=7.5, conditioning_frames=cond, output_type="latent",
         generator=torch.Generator().manual_seed(0))
    out = dict(timer.total)
    out["UNet without motion modules"] = out.pop("motion UNet (all)") - out.get("motion modules", 0.0)
    out["everything else (VAE, scheduler)"] = time.perf_counter() - t0 - sum(out.values())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=8)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    for name, fn in (("dancegen (Dance-Your-Latents, CFG 1.5)", profile_dyl),
                     ("peer (AnimateDiff + ControlNet, CFG 7.5)", profile_peer)):
        parts = fn(args.size, args.frames)
        total = sum(parts.values())
        print(f"== {name}: one guided step, {args.frames} frames at {args.size} px, {total:.1f} s on the CPU")
        for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"   {k:<70s} {v:7.2f} s  {v / total:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
