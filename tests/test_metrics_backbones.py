"""Metric backbones: published key names/shapes, strict reloads, feature shapes, LPIPS maths, weights resolver."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dancegen.errors import DanceGenError, MissingWeightsError
from dancegen.metrics import weights as W
from dancegen.metrics.backbones.common import load_strict, read_checkpoint, state_dict_signature
from dancegen.metrics.backbones.i3d import InceptionI3d, TorchScriptI3D, map_torchscript_onto
from dancegen.metrics.backbones.inception import FIDInceptionV3
from dancegen.metrics.backbones.lpips import LPIPS
from dancegen.metrics.backbones.resnet3d import ResNet3D

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "metrics_backbones" / "golden_keys.json").read_text())


def _features_only(sig: dict) -> dict:
    return {k[len("features."):]: v for k, v in sig.items() if k.startswith("features.")}


@pytest.mark.parametrize("name,build", [
    ("pt_inception", FIDInceptionV3),
    ("i3d", InceptionI3d),
    ("resnet3d50", ResNet3D),
])
def test_state_dict_names_and_shapes_match_reference(name, build):
    assert state_dict_signature(build()) == GOLDEN[name]


@pytest.mark.parametrize("net,tv_name", [("alex", "alexnet"), ("vgg", "vgg16")])
def test_lpips_trunk_and_heads_match_torchvision_and_wheel(net, tv_name):
    m = LPIPS(net)
    assert state_dict_signature(m.net.features) == _features_only(GOLDEN[tv_name])
    heads = {k: v for k, v in state_dict_signature(m).items() if k.startswith("lin")}
    assert heads == GOLDEN[f"lpips_lin_{net}"]
    # a torchvision-layout file (features + classifier) and a wheel-layout head file load strictly
    torch.manual_seed(0)
    tv_sd = {f"features.{k}": torch.randn(v) for k, v in _features_only(GOLDEN[tv_name]).items()}
    tv_sd.update({k: torch.zeros(v) for k, v in GOLDEN[tv_name].items() if k.startswith("classifier.")})
    lin_sd = {k: torch.rand(v) for k, v in GOLDEN[f"lpips_lin_{net}"].items()}
    m.load_weights(tv_sd, lin_sd)
    assert torch.equal(m.net.features[0].weight, tv_sd["features.0.weight"])
    assert torch.equal(m.lin4.model[1].weight, lin_sd["lin4.model.1.weight"])
    with pytest.raises(DanceGenError, match="unexpected"):
        m.load_weights({**tv_sd, "fc.weight": torch.zeros(1)}, lin_sd)


def test_lpips_value_equals_its_definition():
    torch.manual_seed(0)
    m = LPIPS("alex").eval()
    for lin in m.lins:
        torch.nn.init.uniform_(lin.model[1].weight, 0.0, 1.0)
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        d = m(a, b)
        fa, fb = m.net(m.scaling_layer(a)), m.net(m.scaling_layer(b))
        ref = 0
        for x, y, lin in zip(fa, fb, m.lins, strict=True):
            x = x / (x.norm(dim=1, keepdim=True) + 1e-10)
            y = y / (y.norm(dim=1, keepdim=True) + 1e-10)
            w = lin.model[1].weight.view(1, -1, 1, 1)
            ref = ref + ((x - y) ** 2 * w).sum(1).mean(dim=(1, 2))
        assert torch.allclose(d, ref, rtol=1e-5, atol=1e-7)
        assert torch.allclose(m(a, a), torch.zeros(2), atol=1e-7)
        assert torch.allclose(m(a, b), m(b, a), atol=1e-6)


def test_inception_shapes_and_preprocessing():
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    x = torch.rand(1, 3, 40, 52)
    with torch.no_grad():
        f = net.features(x)
        assert f.shape == (1, 2048)
        assert net(x).shape == (1, 1008)
        # resize=True is exactly bilinear 299 (align_corners=False) followed by 2x-1
        manual = net.trunk(2 * torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear",
                                                               align_corners=False) - 1).mean(dim=(2, 3))
        assert torch.allclose(f, manual, atol=1e-6)


def test_i3d_and_resnet3d_published_feature_shapes():
    torch.manual_seed(0)
    i3d = InceptionI3d().eval()
    r3d = ResNet3D().eval()
    with torch.no_grad():
        x = torch.rand(1, 3, 16, 224, 224) * 2 - 1  # the published FVD input
        assert i3d(x).shape == (1, 400)
        assert i3d.features(x).shape == (1, 1024)
        v = torch.randn(1, 3, 16, 112, 112) * 50  # DisCo FID-VID input
        assert r3d.features(v).shape == (1, 2048)
        assert r3d(v).shape == (1, 400)


def test_checkpoint_roundtrip_strict(tmp_path):
    """A saved state dict reloads strictly; DataParallel/`state_dict` wrappers and pre-0.4 BN files are accepted."""
    torch.manual_seed(0)
    a = ResNet3D().eval()
    sd = {f"module.{k}": v for k, v in a.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": sd, "arch": "resnet-50", "epoch": 200}, tmp_path / "r3d.pth")
    b = load_strict(ResNet3D(), read_checkpoint(tmp_path / "r3d.pth")).eval()
    x = torch.randn(1, 3, 16, 64, 64)
    with torch.no_grad():
        assert torch.equal(a.features(x), b.features(x))
    bad = dict(read_checkpoint(tmp_path / "r3d.pth"))
    bad.pop("fc.bias")
    with pytest.raises(DanceGenError, match="missing.*fc.bias"):
        load_strict(ResNet3D(), bad)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DanceGenError, match="cannot read"):
        read_checkpoint(tmp_path / "junk.pth")


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchscript_i3d_maps_onto_definition(tmp_path):
    torch.manual_seed(0)
    src = InceptionI3d().eval()
    x = torch.rand(1, 3, 16, 64, 64) * 2 - 1
    traced = torch.jit.trace(src, x)
    traced.save(str(tmp_path / "i3d.pt"))
    loaded = torch.jit.load(str(tmp_path / "i3d.pt"))
    mapped = map_torchscript_onto(loaded, InceptionI3d()).eval()
    with torch.no_grad():
        assert torch.equal(mapped(x), src(x))
    with pytest.raises(DanceGenError, match="cannot map"):
        map_torchscript_onto(torch.jit.script(torch.nn.Linear(2, 2)), InceptionI3d())


def test_torchscript_wrapper_calls_with_reference_flags():
    class Fake(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False):
            flags = torch.tensor([float(rescale), float(resize), float(return_features)])
            return flags.repeat(x.shape[0], 1)

    out = TorchScriptI3D(torch.jit.script(Fake()))(torch.zeros(2, 3, 16, 8, 8))
    assert out.tolist() == [[0.0, 0.0, 1.0]] * 2  # rescale=False, resize=False, return_features=True


# ---- weights resolver -----------------------------------------------------------------------------------------------
@pytest.fixture
def no_weight_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DANCEGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DANCEGEN_WEIGHTS_DIR", raising=False)
    return tmp_path


def test_missing_weights_message_says_file_where_and_url(no_weight_env):
    wd = no_weight_env / "w"
    with pytest.raises(MissingWeightsError) as e:
        W.resolve_weight("inception-fid", weights_dir=wd)
    msg = str(e.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg
    assert str(wd) in msg and str(no_weight_env / "home" / "weights") in msg
    assert "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" in msg
    with pytest.raises(MissingWeightsError, match="lpips==0.1.4"):
        W.resolve_weight("lpips-alex", weights_dir=wd)


def test_resolve_order_and_hash_checks(no_weight_env, monkeypatch):
    env_dir, arg_dir = no_weight_env / "env", no_weight_env / "arg"
    env_dir.mkdir()
    arg_dir.mkdir()
    monkeypatch.setenv("DANCEGEN_WEIGHTS_DIR", str(env_dir))
    # a wrong file under the registered name fails its hash (full SHA-256 recorded for lpips-alex)
    (env_dir / "alex.pth").write_bytes(b"wrong")
    with pytest.raises(DanceGenError, match="SHA-256 mismatch"):
        W.resolve_weight("lpips-alex")
    # a file whose name carries a hash prefix: checked against the prefix
    (arg_dir / "alexnet-owt-7be5be79.pth").write_bytes(b"x")
    with pytest.raises(DanceGenError, match="7be5be79"):
        W.resolve_weight("alexnet", weights_dir=arg_dir)
    # explicit path wins; the hash is cached next to the file and reused while size/mtime hold
    spec = W.WeightSpec("t", "t.bin", "https://example.invalid/t.bin", "test",
                        sha256="2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    monkeypatch.setitem(W.WEIGHTS, "t", spec)
    (arg_dir / "t.bin").write_bytes(b"hello")
    rw = W.resolve_weight("t", weights_dir=arg_dir)
    assert rw.path == arg_dir / "t.bin" and rw.sha256.startswith("2cf24dba")
    cache = json.loads((arg_dir / "t.bin.sha256").read_text())
    assert cache["sha256"] == rw.sha256
    assert W.resolve_weight("t", path=arg_dir / "t.bin").protocol() == {"name": "t", "file": "t.bin",
                                                                        "sha256": rw.sha256}


def test_fetch_refuses_pages_without_direct_link(no_weight_env):
    with pytest.raises(DanceGenError, match="no direct download link"):
        W.fetch("resnet3d-50", no_weight_env / "d")


# ---- real weights (DANCEGEN_WEIGHTS_DIR) ----------------------------------------------------------------------------
@pytest.mark.slow
def test_real_fid_inception_loads_and_fid_of_set_with_itself_is_zero():
    from dancegen.metrics.backbones.features import InceptionExtractor
    from dancegen.metrics.frechet import feature_stats, frechet_distance

    rw = W.resolve_weight("inception-fid", weights_dir=os.environ.get("DANCEGEN_WEIGHTS_DIR"))
    ext = InceptionExtractor(rw.path)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    f = ext(frames)
    mu, s = feature_stats(f)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-3


@pytest.mark.slow
def test_real_styleganv_fvd_zeros_vs_255s(tmp_path):
    from dancegen.metrics.backbones.features import I3DExtractor
    from dancegen.metrics.frechet import feature_stats, frechet_distance

    rw = W.resolve_weight("i3d-styleganv", weights_dir=os.environ.get("DANCEGEN_WEIGHTS_DIR"))
    ext = I3DExtractor("styleganv", rw.path)
    zeros = np.concatenate([ext(np.zeros((16, 64, 64, 3), np.uint8)) for _ in range(16)])
    ones = np.concatenate([ext(np.full((16, 64, 64, 3), 255, np.uint8)) for _ in range(16)])
    fvd = frechet_distance(*feature_stats(zeros), *feature_stats(ones))
    assert 120 < fvd < 160  # TF reference ~131 (15 frames), common_metrics ~134-151
