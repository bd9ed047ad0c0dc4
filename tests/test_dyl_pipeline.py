"""DanceYourLatentsPipeline on tiny models: shapes, determinism, output types, variants, flows, context windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dancegen.methods.dance_your_latents.config import load_recipe
from dancegen.methods.dance_your_latents.model import build_model
from dancegen.methods.dance_your_latents.pipeline import DanceYourLatentsPipeline
from dancegen.pose.sequence import PoseSequence

TINY = ["model.base=tiny", "data.resolution=[32,32]", "data.num_frames=4", "model.subspace_size=[2,2,2]",
        "inference.window=4"]
F, S = 4, 32


def _model(*sets):
    torch.manual_seed(0)
    return build_model(load_recipe(None, TINY + list(sets)))


def _randomise_new_blocks(model):
    """Temporal blocks start as the identity (zero output); give them weights so they change the output."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.unet.temporal_blocks.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _pipe(model):
    pipe = DanceYourLatentsPipeline.from_model(model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _poses(n=F, scale=1.0):
    rng = np.random.default_rng(0)
    kp = np.zeros((n, 18, 3), np.float32)
    kp[0, :, :2] = rng.uniform(8, 24, (18, 2))
    kp[:, :, :2] = kp[0, :, :2] + np.arange(n)[:, None, None] * 1.5 * scale  # drifting dancer
    kp[..., 2] = 1.0
    return PoseSequence(kp, width=S, height=S, fps=8.0)


@pytest.fixture(scope="module")
def mf_pipe():
    model = _model()
    _randomise_new_blocks(model)
    return _pipe(model)


def _ref():
    return np.random.default_rng(1).integers(0, 255, (S, S, 3), dtype=np.uint8)


def _run(pipe, seed=0, **kw):
    kw.setdefault("num_inference_steps", 2)
    return pipe(_ref(), kw.pop("poses", _poses()), height=S, width=S, generator=torch.Generator().manual_seed(seed),
                **kw).frames


def test_shape_dtype_determinism(mf_pipe):
    a = _run(mf_pipe, 0)
    assert a.shape == (F, S, S, 3) and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, _run(mf_pipe, 0))
    assert np.abs(a - _run(mf_pipe, 1)).max() > 1e-3


def test_output_types(mf_pipe):
    lat = _run(mf_pipe, 0, output_type="latent")
    assert lat.shape == (1, 4, F, S // 2, S // 2)
    assert torch.equal(lat[:, :, :1].expand_as(lat), lat) is False  # denoised frames differ (poses differ)
    pt = _run(mf_pipe, 0, output_type="pt")
    assert pt.shape == (F, 3, S, S)
    pil = _run(mf_pipe, 0, output_type="pil")
    assert len(pil) == F and pil[0].size == (S, S)
    np_out = _run(mf_pipe, 0)
    assert np.allclose(pt.permute(0, 2, 3, 1).numpy(), np_out)
    tup = mf_pipe(_ref(), _poses(), height=S, width=S, num_inference_steps=2, return_dict=False,
                  generator=torch.Generator().manual_seed(0))
    assert isinstance(tup, tuple) and np.array_equal(tup[0], np_out)


def test_shared_noise_and_callback(mf_pipe):
    seen = []

    def cb(pipe, i, t, kw):
        seen.append((i, kw["latents"].clone()))
        return {"latents": kw["latents"] * 0}  # replaces the latents: the next step starts from zeros

    _run(mf_pipe, 0, output_type="latent", num_inference_steps=1, callback_on_step_end=None)
    out = _run(mf_pipe, 0, output_type="latent", num_inference_steps=2, callback_on_step_end=cb)
    assert [i for i, _ in seen] == [0, 1] and torch.count_nonzero(seen[1][1]) > 0
    z0 = mf_pipe(_ref(), _poses(), height=S, width=S, num_inference_steps=1, output_type="latent",
                 generator=torch.Generator().manual_seed(0), callback_on_step_end=lambda *a: None).frames
    assert z0.shape == out.shape
    # the initial noise is one sample repeated over frames (paper §4.2)
    from dancegen.core.schedulers import shared_noise

    noise = shared_noise((1, 4, F, S // 2, S // 2), generator=torch.Generator().manual_seed(0))
    assert torch.equal(noise[:, :, 0], noise[:, :, 3])


def test_mf_consumes_flows(mf_pipe):
    a = _run(mf_pipe, 0)
    zero = {o: torch.zeros(F, 2, S // 2, S // 2) for o in (0, 1)}
    b = _run(mf_pipe, 0, flow=zero)
    assert np.abs(a - b).max() > 1e-3  # pose flow vs identity align
    assert np.array_equal(b, _run(mf_pipe, 0, flow=zero))
    c = _run(mf_pipe, 0, poses=_poses(scale=2.0))
    assert np.abs(a - c).max() > 1e-3
    with pytest.raises(ValueError, match="needs flows"):
        mf_pipe(_ref(), (np.ones((F, S, S, 3)) * 255).astype(np.uint8), height=S, width=S, num_inference_steps=1)


def test_identity_flow_equals_sa_variant():
    """MF with zero flow is the SA ablation: same weights, vd_sa and vd_sa_mf(zero flow) give the same video."""
    mf = _model()
    _randomise_new_blocks(mf)
    sa = _model("model.variant=vd_sa")
    sa.load_state_dict(mf.state_dict())
    zero = {o: torch.zeros(F, 2, S // 2, S // 2) for o in (0, 1)}
    a = _run(_pipe(mf), 0, flow=zero)
    b = _run(_pipe(sa), 0)
    assert np.abs(a - b).max() < 1e-5


def test_variants_switch_the_right_modules():
    from dancegen.core.attention import FrameAttnProcessor
    from dancegen.core.stsa import STSABlock

    vd = _model("model.variant=vd")
    assert len(vd.unet.temporal_blocks) == 0 and vd.unet.config.temporal == "none"
    assert not any(isinstance(p, FrameAttnProcessor) for p in vd.unet.unet.attn_processors.values())
    sa = _model("model.variant=vd_sa")
    assert len(sa.unet.temporal_blocks) == 4  # down 0, mid, up 1 (x2) in the tiny UNet
    assert all(isinstance(b.block, STSABlock) for b in sa.unet.temporal_blocks.values())
    assert not _pipe(sa).config.motion_flow and _pipe(_model()).config.motion_flow
    cf = _model("model.variant=vd_sa", "model.attention=crossframe_first")
    procs = cf.unet.unet.attn_processors
    attn1 = {k: v for k, v in procs.items() if k.endswith("attn1.processor")}
    assert attn1 and all(isinstance(p, FrameAttnProcessor) and p.mode == "first" for p in attn1.values())
    assert len(cf.unet.temporal_blocks) == 0
    tmp = _model("model.variant=vd_sa", "model.attention=temporal")
    from dancegen.core.attention import TemporalAttention

    assert all(isinstance(b.block, TemporalAttention) for b in tmp.unet.temporal_blocks.values())
    disco = _model("model.variant=disco", "model.shared_noise.infer=false")
    assert len(disco.unet.temporal_blocks) == 0 and not _pipe(disco).config.shared_noise


def _randomise_pose_controlnet(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # zero convs start at 0: give them weights so the pose changes the output
        for name, p in model.controlnets.pose.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_disco_variant_is_frame_by_frame_with_independent_noise():
    disco = _model("model.variant=disco", "model.shared_noise.infer=false")
    _randomise_pose_controlnet(disco)
    pipe = _pipe(disco)
    lat = _run(pipe, 0, output_type="latent", num_inference_steps=1)
    # frame by frame: frame 0 does not depend on the other frames' poses
    poses = _poses()
    other = poses.replace(keypoints=np.concatenate([poses.keypoints[:1], poses.keypoints[1:] * 0.5]))
    lat2 = _run(pipe, 0, output_type="latent", num_inference_steps=1, poses=other)
    assert (lat[:, :, 0] - lat2[:, :, 0]).abs().max() < 1e-6
    assert (lat[:, :, 1] - lat2[:, :, 1]).abs().max() > 1e-4
    # the same pose on every frame: independent noise gives different frames, VD's shared noise identical ones
    still = poses.replace(keypoints=np.repeat(poses.keypoints[:1], F, 0))
    a = _run(pipe, 0, output_type="latent", num_inference_steps=1, poses=still)
    assert (a[:, :, 0] - a[:, :, 1]).abs().max() > 0.1
    vd = _model("model.variant=vd")
    vd.load_state_dict(disco.state_dict())
    b = _run(_pipe(vd), 0, output_type="latent", num_inference_steps=1, poses=still)
    assert (b[:, :, 0] - b[:, :, 1]).abs().max() < 1e-5


def test_long_video_in_context_windows(mf_pipe):
    poses = _poses(n=7)
    out = _run(mf_pipe, 0, poses=poses, window=4, overlap=1)
    assert out.shape == (7, S, S, 3)
    whole = _run(mf_pipe, 0, poses=poses[:4], window=4)
    first = _run(mf_pipe, 0, poses=poses, window=4, overlap=0, num_frames=4)
    assert np.array_equal(whole, first)


def test_check_inputs(mf_pipe):
    with pytest.raises(ValueError, match="multiples of"):
        mf_pipe(_ref(), _poses(), height=30, width=32)
    with pytest.raises(ValueError, match="output_type"):
        mf_pipe(_ref(), _poses(), height=S, width=S, output_type="gif")
    with pytest.raises(ValueError, match="num_frames"):
        mf_pipe(_ref(), _poses(), height=S, width=S, num_frames=9)
    with pytest.raises(TypeError, match="pose_video"):
        mf_pipe(_ref(), [1, 2], height=S, width=S)
