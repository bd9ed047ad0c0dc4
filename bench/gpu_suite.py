"""GPU suite (issue 19): full-size speed and memory of dancegen against a peer, GPU tests, mixed precision.

One script, one command, about five minutes on an H100/H200. Full-size networks are built with random weights in
the published SD-1.5 configurations (`dancegen.core.sd_configs`), so no weights are needed; speed and memory do not
depend on the weights' values. Sections (each writes its results as soon as it ends, so a run cut short still
reports what it did):

- ``pytest``: ``pytest -m gpu`` (tests/test_gpu.py and the other @gpu tests).
- ``dyl``: Dance-Your-Latents ``animate`` at the paper's size (VD + SA + MF, DisCo pose + background ControlNets,
  CLIP ViT-L/14 reference tokens): 16 frames at 512 px, 25 DDIM steps with guidance 1.5, in bf16 and fp16; seconds
  and peak memory; 64 frames in 16-frame context windows (2 steps): peak memory as a ratio to 16 frames.
- ``peer``: diffusers' ``AnimateDiffControlNetPipeline`` (SD-1.5 UNet + AnimateDiff v1-5-2 motion adapter + OpenPose
  ControlNet, random weights in the published configs) at the same shape and step count, guidance 7.5; the
  dancegen / peer ratios of time and memory.
- ``stsa``: the share of the STSA blocks in one video-UNet call (same UNet with and without them), and subspace vs
  full spatio-temporal attention at 16 x 64 x 64 tokens (bench/attention_bench.py).
- ``train``: one optimizer step of Dance-Your-Latents stage 2 (finetune) at 256 px, 16 frames, bf16 autocast, and of
  Dance Any Beat's flow diffusion (Table 1 model, batch 8, 40 frames at 128 px), each with and without gradient
  checkpointing: seconds and peak memory.
- ``agree``: the bundled models (dyl-tiny, dab-tiny) on the GPU in fp32, bf16 and fp16 against the same model on
  the CPU (outputs computed by ``--prepare`` on the CPU machine): mean absolute difference in 8-bit levels and PSNR.

    python bench/gpu_suite.py --prepare                 # on the CPU machine: inputs + CPU reference outputs
    python bench/gpu_suite.py --out $OUT                # on the GPU machine (all sections)
    python bench/gpu_suite.py --out /tmp/s --tiny --device cpu --sections dyl,peer,stsa,train,agree   # dry run

``--tiny`` swaps the full-size configs for tiny ones so the whole script can be checked on a CPU in a minute.
Writes ``gpu_suite.json`` and ``gpu_suite.md`` (a short table) to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
INPUTS = ROOT / ".gpu_inputs"  # written by --prepare (git-ignored through .git/info/exclude), carried to the GPU
SECTIONS = ("pytest", "dyl", "peer", "stsa", "train", "agree", "halfdiag")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------------------------------- measuring
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextlib.contextmanager
def measure(device: str, into: dict, key: str):
    """Wall seconds and (CUDA) peak allocated GiB of the block, stored as ``into[key + "_s"]`` / ``key + "_gib"``."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    yield
    sync(device)
    into[f"{key}_s"] = round(time.perf_counter() - t0, 3)
    if device.startswith("cuda"):
        into[f"{key}_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


# ----------------------------------------------------------------------------------------------------- inputs
def dance_poses(num_frames: int, size: int, fps: float = 24.0):
    """A COCO-18 dancer (standing, arms and legs swinging, drifting sideways) at `size` px: driving poses whose
    content does not matter for timing but exercises the pose maps and the pose flows like real ones."""
    from dancegen.pose.sequence import PoseSequence

    stand = np.array([[64, 20], [64, 34], [54, 34], [50, 50], [48, 64], [74, 34], [78, 50], [80, 64], [58, 68],
                      [57, 90], [57, 112], [70, 68], [71, 90], [71, 112], [61, 17], [67, 17], [58, 19], [70, 19]],
                     np.float32)
    kps = np.zeros((num_frames, 18, 3), np.float32)
    for t in range(num_frames):
        xy = stand.copy()
        xy[[4, 7]] += [[-6 * np.sin(t / 3), -10 * np.cos(t / 4)], [6 * np.sin(t / 3), -10 * np.cos(t / 5)]]
        xy[[10, 13]] += [[4 * np.sin(t / 2), 0], [-4 * np.sin(t / 2), 0]]
        xy[:, 0] += 8 * np.sin(t / 10)
        kps[t, :, :2] = xy * (size / 128.0)
        kps[t, :, 2] = 0.9
    return PoseSequence(kps, "coco18", size, size, fps=fps)


def reference_image(size: int) -> np.ndarray:
    g = np.random.default_rng(0)
    img = np.full((size, size, 3), 110, np.uint8)
    img[size // 6: size - size // 8, size * 3 // 8: size * 5 // 8] = (190, 70, 60)
    return np.clip(img + g.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------- models
def dyl_config(tiny: bool, size: int, num_frames: int, base: str):
    from dancegen.methods.dance_your_latents.config import load_recipe

    sets = [f"model.base={'tiny' if tiny else base}", f"data.resolution=[{size},{size}]",
            f"data.num_frames={num_frames}"]
    return load_recipe(None, sets)


def dyl_model(tiny: bool, size: int, num_frames: int, device: str, dtype, cfg_folder: Path):
    from dancegen.methods.dance_your_latents.model import build_model

    torch.manual_seed(0)
    cfg = dyl_config(tiny, size, num_frames, str(cfg_folder))
    model = build_model(cfg, weights="random", dtype=dtype, device=device)
    return model.to(device=device, dtype=dtype).eval()


def peer_pipeline(tiny: bool, device: str, dtype):
    """diffusers' AnimateDiff + ControlNet pipeline with random weights in the published configurations."""
    from diffusers import (
        AnimateDiffControlNetPipeline,
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        MotionAdapter,
        UNet2DConditionModel,
    )

    from dancegen.core.sd_configs import (
        ANIMATEDIFF_MOTION_ADAPTER_CONFIG,
        SD15_CONTROLNET_CONDITIONING_CHANNELS,
        SD15_SCHEDULER_CONFIG,
        SD15_VAE_CONFIG,
    )
    from dancegen.core.unet3d import SD15_UNET_CONFIG

    torch.manual_seed(0)
    if tiny:
        unet_cfg = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, attention_head_dim=8,
                        block_out_channels=(32, 64), cross_attention_dim=32, norm_num_groups=32,
                        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        vae_cfg = dict(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                       up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32)
        motion_cfg = dict(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                          motion_norm_num_groups=32, use_motion_mid_block=False)
        cond_channels = (16, 32)
    else:
        unet_cfg, vae_cfg, motion_cfg = SD15_UNET_CONFIG, SD15_VAE_CONFIG, ANIMATEDIFF_MOTION_ADAPTER_CONFIG
        cond_channels = SD15_CONTROLNET_CONDITIONING_CHANNELS
    sched = {k: v for k, v in SD15_SCHEDULER_CONFIG.items() if not k.startswith("_")}
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg)
        adapter = MotionAdapter(**motion_cfg)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(cond_channels))
        vae = AutoencoderKL(**vae_cfg)
    pipe = AnimateDiffControlNetPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet,
                                         motion_adapter=adapter, controlnet=controlnet,
                                         scheduler=DDIMScheduler(**sched))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------------- sections
def run_pytest(args, res: dict) -> None:
    files = ["tests/test_gpu.py", "tests/test_core_weights.py"]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rA", *files]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.pytest_timeout)
    lines = (p.stdout + p.stderr).strip().splitlines()
    res.update({"returncode": p.returncode, "seconds": round(time.perf_counter() - t0, 1),
                "summary": lines[-1] if lines else "",
                "failures": [ln for ln in lines if ln.startswith(("E ", "FAILED", "PASSED", "SKIPPED"))][-60:]})
    if args.out:
        (Path(args.out) / "pytest_gpu.log").write_text("\n".join(lines) + "\n")


def run_dyl(args, res: dict) -> None:
    from dancegen.methods.dance_your_latents.flows import reference_flows
    from dancegen.methods.dance_your_latents.pipeline import DanceYourLatentsPipeline

    size, frames, steps = (64, 8, 2) if args.tiny else (512, 16, 25)
    long_frames = 32 if args.tiny else 64
    window = 4 if args.tiny else 16
    poses = dance_poses(long_frames, size)
    ref = reference_image(size)
    res.update({"size": size, "frames": frames, "steps": steps, "guidance_scale": 1.5, "long_frames": long_frames,
                "window": window})
    t0 = time.perf_counter()
    reference_flows(poses[:frames], 4, True, (size // 8, size // 8))
    res["pose_flow_cpu_s"] = round(time.perf_counter() - t0, 3)
    model = None
    for name in args.dtypes:
        dtype = DTYPES[name]
        if model is None:
            with measure(args.device, res, f"build_{name}"):
                model = dyl_model(args.tiny, size, frames, args.device, dtype, args.cfg_folder)
            res["parameters"] = model.num_parameters_by_part()
        model = model.to(dtype=dtype)
        pipe = DanceYourLatentsPipeline.from_model(model)
        pipe.set_progress_bar_config(disable=True)

        def call(n, k, pipe=pipe, **kw):
            gen = torch.Generator().manual_seed(0)
            return pipe(ref, poses[:n], height=size, width=size, num_inference_steps=k,
                        guidance_scale=1.5, generator=gen, window=window, output_type="np", **kw).frames

        call(frames, 2)  # warm-up: kernels, cuDNN / SDPA choices
        with measure(args.device, res, f"animate_{name}"):
            out = call(frames, steps)
        res[f"animate_{name}_finite"] = bool(np.isfinite(out).all())
        res[f"animate_{name}_s_per_frame"] = round(res[f"animate_{name}_s"] / frames, 4)
        if name == args.dtypes[0]:
            with measure(args.device, res, f"short_{name}"):
                call(frames, 2)
            with measure(args.device, res, f"long_{name}"):
                call(long_frames, 2)
            res["long_over_short_memory"] = ratio(res.get(f"long_{name}_gib"), res.get(f"short_{name}_gib"))
            res["long_over_short_time"] = ratio(res[f"long_{name}_s"], res[f"short_{name}_s"])


def run_peer(args, res: dict) -> None:
    from PIL import Image

    from dancegen.pose.render import render_pose_sequence

    size, frames, steps = (64, 8, 2) if args.tiny else (512, 16, 25)
    maps = render_pose_sequence(dance_poses(frames, size))
    cond = [Image.fromarray(m) for m in maps]
    dim = 32 if args.tiny else 768
    res.update({"size": size, "frames": frames, "steps": steps, "guidance_scale": 7.5,
                "pipeline": "diffusers.AnimateDiffControlNetPipeline (SD-1.5 + motion adapter v1-5-2 + OpenPose "
                            "ControlNet, random weights)"})
    pipe = None
    for name in args.dtypes:
        dtype = DTYPES[name]
        if pipe is None:
            with measure(args.device, res, f"build_{name}"):
                pipe = peer_pipeline(args.tiny, args.device, dtype)
        pipe = pipe.to(dtype=dtype)
        emb = torch.randn(1, 77, dim, generator=torch.Generator().manual_seed(1)).to(args.device, dtype)
        neg = torch.zeros_like(emb)

        def call(k, pipe=pipe, emb=emb, neg=neg):
            return pipe(prompt_embeds=emb, negative_prompt_embeds=neg, num_frames=frames, height=size, width=size,
                        num_inference_steps=k, guidance_scale=7.5, conditioning_frames=cond, output_type="np",
                        decode_chunk_size=8, generator=torch.Generator(device=args.device).manual_seed(0)).frames

        call(2)
        with measure(args.device, res, f"animate_{name}"):
            out = call(steps)
        res[f"animate_{name}_finite"] = bool(np.isfinite(np.asarray(out)).all())


def run_stsa(args, res: dict) -> None:
    from diffusers import UNet2DConditionModel

    from dancegen.core.unet3d import SD15_UNET_CONFIG, TINY_UNET_CONFIG, VideoUNet

    dtype = DTYPES[args.dtypes[0]]
    latent, frames = (16, 8) if args.tiny else (64, 16)
    torch.manual_seed(0)
    with torch.device(args.device):
        unet2d = UNet2DConditionModel(**(TINY_UNET_CONFIG if args.tiny else SD15_UNET_CONFIG)).to(dtype)
        with_stsa = VideoUNet.from_unet2d(unet2d, temporal="stsa", subspace_size=(4, 4, 4)).to(dtype).eval()
        without = VideoUNet.from_unet2d(unet2d, temporal="none").eval()  # the same image UNet, no STSA blocks
    ctx_dim = unet2d.config.cross_attention_dim
    x = torch.randn(2, 4, frames, latent, latent, device=args.device, dtype=dtype)  # CFG: 2 clips
    ehs = torch.randn(2, 257, ctx_dim, device=args.device, dtype=dtype)
    from dancegen.core.align import required_reference_frames

    flows = {k: torch.zeros(2, frames, 2, latent, latent, device=args.device) for k in
             required_reference_frames(frames, 4)}
    times = {}
    with torch.no_grad():
        for name, m, kw in (("with_stsa", with_stsa, {}), ("with_stsa_mf", with_stsa, {"flow_to_ref": flows}),
                            ("without", without, {})):
            m(x, 500, ehs, **kw)
            runs = []
            for _ in range(3):
                sync(args.device)
                t0 = time.perf_counter()
                m(x, 500, ehs, **kw)
                sync(args.device)
                runs.append(time.perf_counter() - t0)
            times[name] = float(np.median(runs))
    res.update({"latent": latent, "frames": frames, "batch": 2, "dtype": args.dtypes[0],
                **{f"unet_call_{k}_s": round(v, 4) for k, v in times.items()},
                "stsa_share": round(1 - times["without"] / times["with_stsa"], 3),
                "stsa_mf_share": round(1 - times["without"] / times["with_stsa_mf"], 3)})
    torch_dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[args.dtypes[0]]
    cmd = [sys.executable, "bench/attention_bench.py", "--device", args.device, "--dtype", torch_dtype,
           "--frames", str(frames), "--sizes", str(latent), "--channels", "64" if args.tiny else "320",
           "--repeats", "3", "--max-gb", "64"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    res["attention_bench"] = (p.stdout + p.stderr).strip().splitlines()[-14:]


def _dyl_train_step(args, res: dict, checkpointing: bool) -> None:
    from dancegen.core.align import required_reference_frames
    from dancegen.methods.dance_your_latents.train import make_loss_fn

    size, frames = (64, 8) if args.tiny else (256, 16)
    model = dyl_model(args.tiny, size, frames, args.device, torch.float32, args.cfg_folder).train()
    model.requires_grad_(False)
    for n, p in model.named_parameters():  # stage 2 (finetune): the UNet + temporal blocks + CLIP projection
        if n.startswith(("unet.", "reference.projection.")):
            p.requires_grad_(True)
    if checkpointing:
        model.unet.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-5)
    loss_fn = make_loss_fn(model, model.config, "finetune")
    dev = args.device
    lat = size // model.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.rand(1, 3, frames, size, size, generator=g).mul(2).sub(1).to(dev),
             "pose_maps": torch.rand(1, 3, frames, size, size, generator=g).to(dev),
             "reference": torch.rand(1, 3, size, size, generator=g).mul(2).sub(1).to(dev),
             "background": torch.rand(1, 3, size, size, generator=g).mul(2).sub(1).to(dev),
             "flows": {k: torch.zeros(1, frames, 2, lat, lat, device=dev) for k in required_reference_frames(frames, 4)}}
    key = "ckpt" if checkpointing else "plain"
    autocast = torch.autocast(device_type="cuda" if dev.startswith("cuda") else "cpu", dtype=torch.bfloat16)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model, batch)
        loss.backward()
        opt.step()
        return float(loss.detach())

    step()  # warm-up (optimizer states allocated here)
    with measure(dev, res, f"dyl_{key}"):
        loss = step()
    res[f"dyl_{key}_loss_finite"] = bool(np.isfinite(loss))
    res["dyl_trainable_parameters"] = sum(p.numel() for p in params)
    res["dyl_shape"] = f"1 clip x {frames} frames x {size} px, bf16 autocast, AdamW"


def _dab_train_step(args, res: dict, checkpointing: bool) -> None:
    from dancegen.methods.dance_any_beat.config import load_recipe
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel
    from dancegen.methods.dance_any_beat.train import make_diffusion_loss

    if args.tiny:
        cfg = load_recipe(ROOT / "recipes/dance_any_beat/tiny_synth.yaml", ["model.diffusion.target=grid"])
        batch_size = 2
    else:
        cfg = load_recipe(ROOT / "recipes/dance_any_beat/table1.yaml")
        batch_size = 8
    dev = args.device
    torch.manual_seed(0)
    model = DanceAnyBeatModel(cfg).to(dev)
    model.lfae_frozen = True
    model.train()
    model.requires_grad_(False)
    for n, p in model.named_parameters():  # the diffusion stage: the flow U-Net (+ the music encoder / adapters)
        if not n.startswith("lfae."):
            p.requires_grad_(True)
    if checkpointing:
        model.unet.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-4, betas=(0.9, 0.99))
    loss_fn = make_diffusion_loss(cfg, cache_targets=False)
    n, r = cfg.data.num_frames, cfg.data.resolution
    from dancegen.methods.dance_any_beat.model import feature_dim

    g = torch.Generator().manual_seed(0)
    batch = {"ref": torch.rand(batch_size, 3, r, r, generator=g).to(dev),
             "frames": torch.rand(batch_size, n, 3, r, r, generator=g).to(dev),
             "features": torch.randn(batch_size, n, feature_dim(cfg), generator=g).to(dev),
             "beats": (torch.rand(batch_size, n, generator=g) > 0.8).float().to(dev),
             "video": torch.arange(batch_size), "start": torch.zeros(batch_size, dtype=torch.long)}
    from dancegen.methods.dance_any_beat.pretrained import pretrained_branches

    for branch in pretrained_branches(cfg.music):
        batch[branch] = torch.randn(batch_size, cfg.music.embed_dim, generator=g).to(dev)
    key = "ckpt" if checkpointing else "plain"

    def step():
        opt.zero_grad(set_to_none=True)
        loss, *_ = (lambda o: o if isinstance(o, tuple) else (o,))(loss_fn(model, batch))
        loss.backward()
        opt.step()
        return float(loss.detach())

    step()
    with measure(dev, res, f"dab_{key}"):
        loss = step()
    res[f"dab_{key}_loss_finite"] = bool(np.isfinite(loss))
    res["dab_trainable_parameters"] = sum(p.numel() for p in params)
    res["dab_shape"] = f"batch {batch_size} x {n} frames x {r} px, fp32 (the recipe's precision), Adam"


def run_train(args, res: dict) -> None:
    for ckpt in (False, True):
        _dyl_train_step(args, res, ckpt)
        torch.cuda.empty_cache() if args.device.startswith("cuda") else None
    for ckpt in (False, True):
        _dab_train_step(args, res, ckpt)
        torch.cuda.empty_cache() if args.device.startswith("cuda") else None
    for m in ("dyl", "dab"):
        res[f"{m}_ckpt_over_plain_time"] = ratio(res.get(f"{m}_ckpt_s"), res.get(f"{m}_plain_s"))
        res[f"{m}_ckpt_over_plain_memory"] = ratio(res.get(f"{m}_ckpt_gib"), res.get(f"{m}_plain_gib"))


# ----------------------------------------------------------------------------------------------------- agreement
AGREE_STEPS = 20
DAB_STEPS = 25


def bundled_dyl_frames(inputs: dict, device: str, dtype, autocast: bool = False, math_sdpa: bool = False
                       ) -> np.ndarray:
    from dancegen.methods.dance_your_latents.model import DanceYourLatentsModel, bundled_model_path
    from dancegen.methods.dance_your_latents.pipeline import DanceYourLatentsPipeline, to_uint8_video
    from dancegen.pose.sequence import PoseSequence

    model = DanceYourLatentsModel.from_pretrained(bundled_model_path())
    model = model.to(device=device, dtype=torch.float32 if autocast else dtype)
    pipe = DanceYourLatentsPipeline.from_model(model)
    pipe.set_progress_bar_config(disable=True)
    seq = PoseSequence(inputs["dyl_keypoints"], "coco18", int(inputs["dyl_size"]), int(inputs["dyl_size"]),
                       fps=float(inputs["dyl_fps"]))
    s = int(inputs["dyl_size"])
    kind = "cuda" if device.startswith("cuda") else "cpu"
    sdpa = contextlib.nullcontext()
    if math_sdpa:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        sdpa = sdpa_kernel(SDPBackend.MATH)
    with torch.autocast(kind, dtype=dtype, enabled=autocast), sdpa:
        out = pipe(inputs["dyl_ref"], seq, ref_mask=inputs["dyl_mask"], height=s, width=s,
                   num_inference_steps=AGREE_STEPS, guidance_scale=1.5,
                   generator=torch.Generator().manual_seed(0)).frames
    return to_uint8_video(out)


def bundled_dab_frames(inputs: dict, device: str, dtype) -> np.ndarray:
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel, resolve_model_folder
    from dancegen.methods.dance_any_beat.pipeline import decode_frames, sample_flows

    # Dance Any Beat's sampler keeps fp32 weights; half precision is autocast (its grids and occlusion maps stay fp32)
    m = DanceAnyBeatModel.from_pretrained(resolve_model_folder(None), device=device)
    x0 = torch.from_numpy(inputs["dab_ref"]).to(device=device)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    with torch.autocast(kind, dtype=dtype, enabled=dtype != torch.float32):
        a0 = sample_flows(m, x0, inputs["dab_features"], inputs["dab_beats"], steps=DAB_STEPS, sampler="ddim",
                          generator=torch.Generator().manual_seed(0))
        return decode_frames(m, x0, a0.float())


def prepare(args) -> None:
    """CPU machine: synthetic held-out inputs for the bundled models and their fp32 CPU outputs."""
    from dancegen.audio.features import frame_features
    from dancegen.audio.song import frame_count, song_from_track
    from dancegen.io.audio import read_audio
    from dancegen.io.video import read_image, read_video
    from dancegen.methods.dance_any_beat.data import clip_music
    from dancegen.methods.dance_any_beat.model import DanceAnyBeatModel, resolve_model_folder
    from dancegen.methods.dance_any_beat.pipeline import ref_tensor
    from dancegen.pose.openpose_json import read_openpose_folder
    from dancegen.synth import generate

    INPUTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "tiktok", num_clips=1, layout="tiktok", seed=7, size=64, num_frames=16, fps=24.0,
                 camera_motion="static")
        clip = next(p for p in (tmp / "tiktok").iterdir() if (p / "images").is_dir())
        images = sorted((clip / "images").glob("*.png"))
        masks = sorted((clip / "masks").glob("*.png"))
        seq = read_openpose_folder(clip / "openpose_json")
        dab = DanceAnyBeatModel.from_pretrained(resolve_model_folder(None))
        cfg = dab.config
        generate(tmp / "aist", num_clips=1, layout="aist", seed=7, size=cfg.data.resolution, num_frames=48,
                 fps=cfg.data.fps, camera_motion="static")
        video = next((tmp / "aist").rglob("*.mp4"))
        wav = next((tmp / "aist").rglob("*.wav"))
        frames = read_video(video).frames
        track, sr = read_audio(wav, mono=False)
        song = song_from_track(track, sr, wav, sr=cfg.music.sample_rate)
        n = frame_count(song.samples.size / song.sr, cfg.data.fps)
        feats = frame_features(song.samples, song.sr, cfg.data.fps, num_frames=n, n_mels=cfg.music.n_mels,
                               tempogram_bins=cfg.music.tempogram_bins, beats=True, start_bpm=cfg.music.start_bpm)
        f, beats = clip_music(feats, 1, cfg.data.num_frames, cfg.music)
        inputs = {"dyl_ref": read_image(images[0]), "dyl_mask": read_image(masks[0]).max(-1) > 127,
                  "dyl_keypoints": seq.keypoints.astype(np.float32), "dyl_size": np.int64(64),
                  "dyl_fps": np.float64(seq.fps), "dab_ref": ref_tensor(np.asarray(frames[0]), cfg.data.resolution,
                                                                      "cpu").numpy(),
                  "dab_features": f, "dab_beats": beats}
    inputs["cpu_dyl_frames"] = bundled_dyl_frames(inputs, "cpu", torch.float32)
    inputs["cpu_dab_frames"] = bundled_dab_frames(inputs, "cpu", torch.float32)
    np.savez_compressed(INPUTS / "agree_inputs.npz", **inputs)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    (INPUTS / "commit.txt").write_text(commit + (" (+ uncommitted changes)" if dirty.strip() else "") + "\n")
    print(f"wrote {INPUTS / 'agree_inputs.npz'}: dyl {inputs['cpu_dyl_frames'].shape}, "
          f"dab {inputs['cpu_dab_frames'].shape}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else round(float(10 * np.log10(255.0**2 / mse)), 2)


def run_agree(args, res: dict) -> None:
    path = INPUTS / "agree_inputs.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python bench/gpu_suite.py --prepare` on the CPU machine")
    inputs = dict(np.load(path, allow_pickle=False))
    for model, fn in (("dyl-tiny", bundled_dyl_frames), ("dab-tiny", bundled_dab_frames)):
        key = "dyl" if model.startswith("dyl") else "dab"
        cpu = inputs[f"cpu_{key}_frames"]
        outs = {}
        for name in ("fp32", *[d for d in args.dtypes if d != "fp32"]):
            try:
                outs[name] = fn(inputs, args.device, DTYPES[name])
            except Exception as e:  # one precision failing must not hide the others
                res[f"{model} {name} error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        for name, out in outs.items():
            row = {"mean_abs_vs_cpu_fp32": round(float(np.abs(out.astype(np.int16) - cpu).mean()), 3),
                   "psnr_vs_cpu_fp32": psnr(out, cpu)}
            if name != "fp32" and "fp32" in outs:
                row["mean_abs_vs_gpu_fp32"] = round(float(np.abs(out.astype(np.int16) - outs["fp32"]).mean()), 3)
                row["psnr_vs_gpu_fp32"] = psnr(out, outs["fp32"])
            res[f"{model} {name}"] = row
    if args.device.startswith("cuda"):  # where does the half-precision error of dyl-tiny come from?
        cpu = inputs["cpu_dyl_frames"]
        for label, kw in (("bf16 autocast (fp32 weights)", {"autocast": True}),
                          ("bf16 weights, math SDPA", {"math_sdpa": True}),
                          ("fp16 autocast (fp32 weights)", {"autocast": True, "dtype": torch.float16})):
            try:
                out = bundled_dyl_frames(inputs, args.device, kw.pop("dtype", torch.bfloat16), **kw)
                res[f"dyl-tiny {label}"] = {"mean_abs_vs_cpu_fp32": round(float(np.abs(
                    out.astype(np.int16) - cpu).mean()), 3), "psnr_vs_cpu_fp32": psnr(out, cpu)}
            except Exception as e:
                res[f"dyl-tiny {label} error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    res["protocol"] = (f"dyl-tiny: 16 frames of a held-out synth clip (seed 7), {AGREE_STEPS} DDIM steps, guidance "
                       f"1.5, seed 0; dab-tiny: one clip of held-out synth music, DDIM {DAB_STEPS}, seed 0; "
                       "8-bit frames")


def run_halfdiag(args, res: dict) -> None:
    """Which part of dyl-tiny loses precision when its weights are cast to bf16 on the GPU (autocast with fp32
    weights does not): each variant is compared with the same variant in fp32 on the same GPU."""
    from dancegen.methods.dance_your_latents.model import DanceYourLatentsModel, bundled_model_path
    from dancegen.methods.dance_your_latents.pipeline import DanceYourLatentsPipeline, to_uint8_video
    from dancegen.pose.sequence import PoseSequence

    inputs = dict(np.load(INPUTS / "agree_inputs.npz", allow_pickle=False))
    s = int(inputs["dyl_size"])
    seq = PoseSequence(inputs["dyl_keypoints"], "coco18", s, s, fps=float(inputs["dyl_fps"]))
    kind = "cuda" if args.device.startswith("cuda") else "cpu"

    def frames(dtype, fp32_parts=(), autocast=False, motion_flow=True):
        model = DanceYourLatentsModel.from_pretrained(bundled_model_path()).to(device=args.device, dtype=dtype)
        for part in fp32_parts:
            getattr(model, part).float()
        pipe = DanceYourLatentsPipeline.from_model(model)
        pipe.register_to_config(motion_flow=motion_flow)
        pipe.set_progress_bar_config(disable=True)
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=autocast):
            out = pipe(inputs["dyl_ref"], seq, ref_mask=inputs["dyl_mask"], height=s, width=s,
                       num_inference_steps=AGREE_STEPS, guidance_scale=1.5,
                       generator=torch.Generator().manual_seed(0)).frames
        return to_uint8_video(out)

    variants = {"bf16 weights": {}, "bf16 weights, VAE fp32": {"fp32_parts": ("vae",)},
                "bf16 weights, reference encoder fp32": {"fp32_parts": ("reference",)},
                "bf16 weights under bf16 autocast (norms, softmax in fp32)": {"autocast": True},
                "bf16 weights, no motion-flow align": {"motion_flow": False}}
    refs = {}
    for label, kw in variants.items():
        try:
            mf = kw.get("motion_flow", True)
            if mf not in refs:
                refs[mf] = frames(torch.float32, motion_flow=mf)
            out = frames(torch.bfloat16, **kw)
            res[label] = {"mean_abs_vs_fp32": round(float(np.abs(out.astype(np.int16) - refs[mf]).mean()), 3),
                          "psnr_vs_fp32": psnr(out, refs[mf])}
        except Exception as e:
            res[f"{label} error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


# ----------------------------------------------------------------------------------------------------- report
def environment(args) -> dict:
    import diffusers
    import transformers

    env = {"date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
           "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
           "device": args.device, "tiny": args.tiny, "dtypes": args.dtypes}
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        with contextlib.suppress(Exception):
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
    commit = INPUTS / "commit.txt"
    env["commit"] = commit.read_text().strip() if commit.is_file() else None
    return env


def table(results: dict) -> str:
    d, p, s, t, env = (results.get(k, {}) for k in ("dyl", "peer", "stsa", "train", "env"))
    rows = [f"# dancegen GPU suite: {env.get('gpu', env.get('device'))}, {env.get('date_utc')} UTC, torch "
            f"{env.get('torch')}, diffusers {env.get('diffusers')}", "",
            "| measurement | dancegen | peer (AnimateDiff + ControlNet) | dancegen / peer |", "|---|---|---|---|"]
    for name in ("bf16", "fp16"):
        if f"animate_{name}_s" in d:
            rows.append(f"| {d.get('frames')} frames {d.get('size')} px, {d.get('steps')} DDIM steps + CFG, {name}: "
                        f"seconds | {d.get(f'animate_{name}_s')} | {p.get(f'animate_{name}_s')} | "
                        f"{ratio(d.get(f'animate_{name}_s'), p.get(f'animate_{name}_s'))} |")
            rows.append(f"| same, peak GiB | {d.get(f'animate_{name}_gib')} | {p.get(f'animate_{name}_gib')} | "
                        f"{ratio(d.get(f'animate_{name}_gib'), p.get(f'animate_{name}_gib'))} |")
    if "long_over_short_memory" in d:
        rows.append(f"| {d.get('long_frames')} vs {d.get('frames')} frames (context windows of {d.get('window')}): "
                    f"memory ratio / time ratio | {d['long_over_short_memory']} / {d.get('long_over_short_time')} "
                    "| | |")
    if "stsa_share" in s:
        rows.append(f"| STSA blocks' share of one video-UNet call ({s.get('frames')} x {s.get('latent')}^2 latents, "
                    f"CFG batch) | {s['stsa_share']} (with MF align {s.get('stsa_mf_share')}) | | |")
    for m, label in (("dyl", "DYL stage-2 step"), ("dab", "DAB diffusion step")):
        if f"{m}_plain_s" in t:
            rows.append(f"| {label} ({t.get(f'{m}_shape')}): s / GiB, plain | {t.get(f'{m}_plain_s')} / "
                        f"{t.get(f'{m}_plain_gib')} | | |")
            rows.append(f"| same, gradient checkpointing | {t.get(f'{m}_ckpt_s')} / {t.get(f'{m}_ckpt_gib')} | | |")
    a = results.get("agree", {})
    for k, v in a.items():
        if isinstance(v, dict):
            rows.append(f"| {k} vs CPU fp32: mean abs (8-bit) / PSNR dB | {v.get('mean_abs_vs_cpu_fp32')} / "
                        f"{v.get('psnr_vs_cpu_fp32')} | | |")
    pt = results.get("pytest", {})
    if pt:
        rows.append(f"| pytest -m gpu | {pt.get('summary')} | | |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    ap.add_argument("--sections", default="all", help=f"comma list of {', '.join(SECTIONS)} (or all)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", default="bf16,fp16", help="half precisions to time (the first is the main one)")
    ap.add_argument("--tiny", action="store_true", help="tiny configs: check the script on a CPU")
    ap.add_argument("--prepare", action="store_true", help="CPU machine: write the agreement inputs and stop")
    ap.add_argument("--pytest-timeout", type=int, default=240)
    args = ap.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if args.prepare:
        prepare(args)
        return 0
    sections = SECTIONS if args.sections == "all" else tuple(s.strip() for s in args.sections.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = out / "gpu_suite.json"
    results = json.loads(report.read_text()) if report.is_file() else {}  # a rerun of some sections keeps the rest
    results["env"] = environment(args)
    tmp = tempfile.TemporaryDirectory()
    from dancegen.core.sd_configs import write_config_folder

    args.cfg_folder = write_config_folder(Path(tmp.name) / "sd-image-variations")
    runners = {"pytest": run_pytest, "dyl": run_dyl, "peer": run_peer, "stsa": run_stsa, "train": run_train,
               "agree": run_agree, "halfdiag": run_halfdiag}
    for name in sections:
        res: dict = {}
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            runners[name](args, res)
        except Exception as e:
            res["error"] = f"{type(e).__name__}: {e}"
            res["traceback"] = traceback.format_exc().splitlines()[-12:]
            print(f"   {name} failed: {res['error']}", flush=True)
        res["section_s"] = round(time.perf_counter() - t0, 1)
        results[name] = res
        report.write_text(json.dumps(results, indent=1, default=str))
        (out / "gpu_suite.md").write_text(table(results))
        print(json.dumps(res, default=str)[:1500], flush=True)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
