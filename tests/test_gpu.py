"""CUDA checks: the video UNet, STSA, the flow U-Net and the bundled dancers on a GPU agree with the CPU in fp32 and
stay close in half precision; mixed-precision training steps learn. Skipped without CUDA (bench/gpu_suite.py runs
them on the lent GPU machine: `pytest -m gpu`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _no_tf32():
    """Exact fp32 on the GPU for the CPU comparisons (TF32 convolutions and matmuls round to 10 mantissa bits)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square difference relative to the reference's spread (garbage gives about 1.4)."""
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).square().mean().sqrt() / b.std().clamp_min(1e-8))


def _video_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    from dancegen.core.unet3d import TINY_UNET_CONFIG, VideoUNet

    torch.manual_seed(seed)
    unet = VideoUNet.from_unet2d(UNet2DConditionModel(**TINY_UNET_CONFIG), temporal="stsa",
                                 subspace_size=(2, 2, 2)).eval()
    with torch.no_grad():  # non-identity temporal blocks, so the STSA path is exercised
        g = torch.Generator().manual_seed(7)
        for p in unet.temporal_blocks.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return unet


def test_video_unet_with_motion_flow_cuda_matches_cpu_and_half_stays_close():
    unet = _video_unet()
    g = torch.Generator().manual_seed(1)
    x, ehs = torch.randn(2, 4, 4, 16, 16, generator=g), torch.randn(2, 5, 32, generator=g)
    flows = {0: torch.randn(2, 4, 2, 16, 16, generator=g), 1: torch.randn(2, 4, 2, 16, 16, generator=g)}
    with torch.no_grad():
        cpu = unet(x, 10, ehs, flow_to_ref=flows).sample
        unet.to("cuda")
        gpu = unet(x.cuda(), 10, ehs.cuda(), flow_to_ref={k: v.cuda() for k, v in flows.items()}).sample
        halves = {}
        for dtype in (torch.bfloat16, torch.float16):
            unet.to(dtype)
            halves[dtype] = unet(x.cuda().to(dtype), 10, ehs.cuda().to(dtype),
                                 flow_to_ref={k: v.cuda() for k, v in flows.items()}).sample
            unet.float()
    errors = {"fp32": _close(gpu, cpu), "fp16": _close(halves[torch.float16], cpu),
              "bf16": _close(halves[torch.bfloat16], cpu)}
    assert errors["fp32"] < 1e-4 and errors["fp16"] < 0.02 and errors["bf16"] < 0.08, errors


def test_subspace_attention_shifted_and_padded_cuda_matches_cpu():
    from dancegen.core.stsa import STSABlock

    torch.manual_seed(0)
    block = STSABlock(64, 4, subspace_size=(4, 4, 4), shift=True)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2 * 6, 10 * 12, 64, generator=torch.Generator().manual_seed(3))  # 6 frames, 10x12: padding
    with torch.no_grad():
        cpu = block(x, 6, 10, 12)
        gpu = block.cuda()(x.cuda(), 6, 10, 12)
    assert _close(gpu, cpu) < 1e-4


def test_flow_unet_cuda_matches_cpu():
    from dancegen.methods.dance_any_beat.flow_unet import FlowUNet3D

    torch.manual_seed(0)
    model = FlowUNet3D(dim=16, dim_mults=(1, 2), cond_channels=4, cond_dim=6, attn_heads=2, attn_dim_head=8,
                       resnet_groups=4).eval()
    g = torch.Generator().manual_seed(1)
    x, z0, cond = torch.randn(2, 3, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g), torch.randn(
        2, 6, generator=g)
    t = torch.tensor([3, 900])
    with torch.no_grad():
        cpu = model(x, t, z0, cond)
        gpu = model.cuda()(x.cuda(), t.cuda(), z0.cuda(), cond.cuda())
        bf16 = model.to(torch.bfloat16)(x.cuda().bfloat16(), t.cuda(), z0.cuda().bfloat16(), cond.cuda().bfloat16())
    errors = {"fp32": _close(gpu, cpu), "bf16": _close(bf16, cpu)}
    assert errors["fp32"] < 1e-4 and errors["bf16"] < 0.08, errors


def _dyl_frames(model, dtype, seed: int, num_frames: int = 8, autocast: bool = False) -> np.ndarray:
    from tests_helpers import dance_sequence

    from dancegen.methods.dance_your_latents.pipeline import DanceYourLatentsPipeline

    model = model.to(device="cuda", dtype=torch.float32 if autocast else dtype)
    pipe = DanceYourLatentsPipeline.from_model(model)
    pipe.set_progress_bar_config(disable=True)
    ref = np.full((64, 64, 3), 90, np.uint8)
    ref[16:56, 24:40] = (200, 60, 60)  # a red figure on grey
    seq = dance_sequence(num_frames).resized(64, 64)
    with torch.autocast("cuda", dtype=dtype, enabled=autocast):
        out = pipe(ref, seq, height=64, width=64, num_inference_steps=6, guidance_scale=1.5,
                   generator=torch.Generator().manual_seed(seed)).frames
    return np.asarray(out, np.float32)


def _half_precision_gaps(autocast: bool) -> tuple[dict, float]:
    from dancegen.methods.dance_your_latents.model import DanceYourLatentsModel, bundled_model_path

    model = DanceYourLatentsModel.from_pretrained(bundled_model_path())
    fp32 = _dyl_frames(model, torch.float32, seed=0)
    seed_gap = float(np.abs(_dyl_frames(model, torch.float32, seed=1) - fp32).mean())  # control: another sample
    gaps = {str(dtype): float(np.abs(_dyl_frames(model, dtype, seed=0, autocast=autocast) - fp32).mean())
            for dtype in (torch.bfloat16, torch.float16)}
    return gaps, seed_gap


def test_bundled_dyl_tiny_under_autocast_stays_close_to_fp32():
    gaps, seed_gap = _half_precision_gaps(autocast=True)
    assert all(np.isfinite(v) and v < 0.1 * seed_gap for v in gaps.values()), (gaps, seed_gap)


def test_bundled_dyl_tiny_with_half_weights_stays_close_to_fp32():
    # With bf16 latents in the scheduler this was 0.039 / 0.042 against a seed gap of 0.051 (H200, 2026-12-04); the
    # pipeline now keeps the latents in fp32 and only the networks run in half precision.
    gaps, seed_gap = _half_precision_gaps(autocast=False)
    assert all(np.isfinite(v) and v < 0.1 * seed_gap for v in gaps.values()), (gaps, seed_gap)


def _toy_regression(mixed_precision: str, tmp_path) -> list[float]:
    from dancegen.core.train import Trainer, read_metrics
    from dancegen.core.train_config import OptimConfig, TrainLoopConfig

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(256, 8, generator=g)
    ys = xs @ torch.randn(8, 1, generator=g)  # a linear target: a working optimiser step gets it quickly
    data = [{"x": xs[i:i + 32], "y": ys[i:i + 32]} for i in range(0, 256, 32)]

    def loss_fn(m, batch):
        return torch.nn.functional.mse_loss(m(batch["x"]).float(), batch["y"].float())

    cfg = TrainLoopConfig(max_steps=60, device="cuda", mixed_precision=mixed_precision, log_every=10,
                          checkpoint_every=60, output_dir=str(tmp_path / mixed_precision),
                          optim=OptimConfig(lr=3e-3))
    Trainer(model, loss_fn, data, cfg, logger=lambda *a: None).fit()
    return [r["loss"] for r in read_metrics(tmp_path / mixed_precision)]


@pytest.mark.parametrize("mixed_precision", ["bf16", "fp16"])
def test_mixed_precision_training_on_cuda_learns(mixed_precision, tmp_path):
    losses = _toy_regression(mixed_precision, tmp_path)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
