"""RAFT-large (torchvision-compatible state dict) and the image flow estimators (DIS, Farneback, RAFT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dancegen.errors import InputError, MissingWeightsError
from dancegen.flow.estimators import estimate_flow
from dancegen.flow.raft import (
    DEFAULT_RAFT_WEIGHTS,
    RAFT,
    RAFT_LARGE_NUM_PARAMS,
    CorrBlock,
    load_raft,
    resolve_raft_weights,
    upsample_flow,
)

FIXTURE = Path(__file__).parent / "fixtures" / "flow" / "raft_large_state_dict_keys.json"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RAFT().eval()


def test_state_dict_matches_torchvision_key_list(model):
    golden = json.loads(FIXTURE.read_text())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(golden["keys"]), set(ours) ^ set(golden["keys"])
    assert ours == golden["keys"]
    n = sum(p.numel() for p in model.parameters())
    assert n == RAFT_LARGE_NUM_PARAMS == golden["num_params"] == 5257536  # torchvision's registry metadata
    # A few layers spelled out from torchvision's raft.py.
    sd = model.state_dict()
    assert sd["update_block.motion_encoder.convcorr1.0.weight"].shape == (256, 324, 1, 1)
    assert sd["update_block.recurrent_block.convgru1.convz.weight"].shape == (128, 384, 1, 5)
    assert sd["update_block.recurrent_block.convgru2.convq.weight"].shape == (128, 384, 5, 1)
    assert sd["mask_predictor.conv.weight"].shape == (576, 256, 1, 1)
    assert sd["context_encoder.layer2.0.downsample.1.running_var"].shape == (96,)
    assert not any(k.startswith("feature_encoder.convnormrelu.1") for k in sd)  # InstanceNorm: no state


def test_forward_shapes_and_determinism(model):
    g = torch.Generator().manual_seed(0)
    x1 = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    x2 = torch.roll(x1, shifts=2, dims=-1)
    with torch.no_grad():
        preds = model(x1, x2, num_flow_updates=2)
        again = model(x1, x2, num_flow_updates=2)
    assert len(preds) == 2 and preds[-1].shape == (1, 2, 64, 64)
    assert torch.isfinite(preds[-1]).all()
    torch.testing.assert_close(preds[-1], again[-1])
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.zeros(1, 3, 60, 64), torch.zeros(1, 3, 60, 64), 1)


def test_state_dict_reloads_strictly_and_from_weights_dir(model, tmp_path, monkeypatch):
    (tmp_path / "raft").mkdir()
    path = tmp_path / "raft" / DEFAULT_RAFT_WEIGHTS
    torch.save(model.state_dict(), path)
    monkeypatch.setenv("DANCEGEN_WEIGHTS_DIR", str(tmp_path))
    loaded = load_raft()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert not loaded.training
    assert resolve_raft_weights(path) == path
    assert resolve_raft_weights(tmp_path / "raft") == path  # a folder holding the default file
    bad = dict(model.state_dict())
    bad.pop("mask_predictor.conv.bias")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="raft_large checkpoint"):
        load_raft(tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(InputError, match="junk.pth"):
        load_raft(tmp_path / "junk.pth")


def test_missing_weights_error_says_what_where_how(tmp_path, monkeypatch):
    monkeypatch.setenv("DANCEGEN_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError) as e:
        resolve_raft_weights()
    msg = str(e.value)
    assert DEFAULT_RAFT_WEIGHTS in msg and str(tmp_path / "raft") in msg and "torchvision" in msg
    assert "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth" in msg
    monkeypatch.delenv("DANCEGEN_WEIGHTS_DIR")
    with pytest.raises(MissingWeightsError, match="DANCEGEN_WEIGHTS_DIR is not set"):
        resolve_raft_weights()
    with pytest.raises(MissingWeightsError, match="nope.pth"):
        estimate_flow(np.zeros((2, 64, 64, 3), np.uint8), "raft", weights=tmp_path / "nope.pth")


def test_corr_lookup_channel_order():
    """Window channels run x-major: channel (i, j) samples offset (dx = i - r, dy = j - r)."""
    r = 2
    block = CorrBlock(num_levels=1, radius=r)
    h, w = 6, 7
    f1 = torch.zeros(1, h * w, h, w)
    f2 = torch.zeros(1, h * w, h, w)
    idx = torch.arange(h * w)
    f1.view(h * w, h * w)[idx, idx] = 1.0  # pixel p of fmap1 is the one-hot vector e_p
    # fmap2 pixel q = e_{q - (1, 0)}: the match of p is one pixel to the right (dx = +1, dy = 0).
    for y in range(h):
        for x in range(1, w):
            f2[0, y * w + (x - 1), y, x] = 1.0
    block.build_pyramid(f1, f2)
    from dancegen.flow.raft import coords_grid

    feats = block.index_pyramid(coords_grid(1, h, w))[0] * (h * w) ** 0.5
    side = 2 * r + 1
    peak = feats[:, 3, 3].argmax().item()
    assert peak == (1 + r) * side + (0 + r)


def test_upsample_flow_uniform_mask():
    flow = torch.full((1, 2, 4, 5), 1.5)
    flow[:, 1] = -0.5
    up = upsample_flow(flow, torch.zeros(1, 576, 4, 5))
    assert up.shape == (1, 2, 32, 40)
    torch.testing.assert_close(up[0, 0, 8:-8, 8:-8], torch.full((16, 24), 12.0))  # 8 * 1.5 where 3x3 is inside
    torch.testing.assert_close(upsample_flow(flow, None)[0, 1], torch.full((32, 40), -4.0))


def _textured_pair(dx, dy, h=64, w=72, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((h + 20, w + 20)).astype(np.float32), (0, 0), 2.0)
    big = (255 * (big - big.min()) / (big.max() - big.min())).astype(np.uint8)
    a = big[10:10 + h, 10:10 + w]
    b = big[10 - dy:10 - dy + h, 10 - dx:10 - dx + w]  # b(p) = a(p - d): content moves by +d
    return np.stack([np.repeat(a[..., None], 3, 2), np.repeat(b[..., None], 3, 2)])


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_opencv_estimators_recover_translation(method):
    frames = _textured_pair(2, -3)
    fw = estimate_flow(frames, method, "forward")
    bw = estimate_flow(frames, method, "backward")
    assert fw.shape == (1, 2, 64, 72) and fw.dtype == np.float32
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert np.median(fw[0][inner][0]) == pytest.approx(2.0, abs=0.15)
    assert np.median(fw[0][inner][1]) == pytest.approx(-3.0, abs=0.15)
    assert np.median(bw[0][inner][0]) == pytest.approx(-2.0, abs=0.15)
    assert np.median(bw[0][inner][1]) == pytest.approx(3.0, abs=0.15)


def test_estimator_input_errors():
    with pytest.raises(InputError, match="at least 2"):
        estimate_flow(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        estimate_flow(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="method"):
        estimate_flow(np.zeros((2, 8, 8, 3), np.uint8), "magic")


def test_raft_estimator_pads_and_crops(model):
    frames = _textured_pair(1, 1, h=60, w=68)
    frames = np.concatenate([frames, frames[:1]])
    out = estimate_flow(frames, "raft", "backward", model=model, iters=2, batch_size=2)
    assert out.shape == (2, 2, 60, 68) and np.isfinite(out).all()
