"""Model reference resolver, SD-1.5-layout loading and the device/dtype plan. Offline, tiny components."""

from __future__ import annotations

import pytest
import torch

from dancegen.core import weights
from dancegen.core.conditioning import tiny_clip_vision_config
from dancegen.core.schedulers import ddim_scheduler_sd15
from dancegen.core.unet3d import TINY_UNET_CONFIG
from dancegen.core.weights import ResolvedModel, apply_runtime, load_sd15_components, plan_runtime, resolve_model
from dancegen.errors import InputError, MissingWeightsError


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny sd-image-variations-layout folder (unet/, vae/, scheduler/, image_encoder/)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("models") / "tiny-sd"
    torch.manual_seed(0)
    UNet2DConditionModel(**TINY_UNET_CONFIG).save_pretrained(root / "unet")
    AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32,
                  sample_size=32).save_pretrained(root / "vae")
    # the published folder names a PNDM scheduler; the loader turns its config into DDIM
    PNDMScheduler.from_config(ddim_scheduler_sd15().config).save_pretrained(root / "scheduler")
    CLIPVisionModelWithProjection(tiny_clip_vision_config()).save_pretrained(root / "image_encoder")
    return root


def test_local_folder_resolves_and_loads(sd_folder):
    r = resolve_model(sd_folder, kind="sd-image-variations")
    assert r.source == "local" and r.is_local and r.location == str(sd_folder.resolve())
    comps = load_sd15_components(r)
    from diffusers import DDIMScheduler

    assert isinstance(comps.scheduler, DDIMScheduler) and comps.scheduler.config.steps_offset == 1
    assert comps.image_encoder is not None and comps.text_encoder is None
    assert comps.vae_scale_factor == 2 and comps.scaling_factor == pytest.approx(0.18215)
    assert set(comps.models()) == {"image_encoder", "unet", "vae"}
    assert not any(p.requires_grad for m in comps.models().values() for p in m.parameters())
    with torch.no_grad():
        lat = comps.vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean
        out = comps.unet(lat, 10, torch.zeros(1, 1, 32)).sample
    assert out.shape == (1, 4, 16, 16)


def test_bundled_name_resolves(sd_folder):
    r = resolve_model("tiny-sd", kind="sd15", bundled_root=sd_folder.parent)
    assert r.source == "bundled" and r.location == str(sd_folder.resolve())


def test_missing_model_error_says_what_where_how(tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        resolve_model("lambdalabs/sd-image-variations-diffusers", kind="sd-image-variations", bundled_root=tmp_path)
    msg = str(e.value)
    assert "sd-image-variations-diffusers" in msg and "local path" in msg and "Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE is set" in msg
    assert "hf download lambdalabs/sd-image-variations-diffusers" in msg and "--model PATH" in msg
    assert "\n" not in msg  # one line for the CLI
    with pytest.raises(MissingWeightsError, match="bundled models"):
        resolve_model("no-such-bundle", kind="sd15", bundled_root=tmp_path)


def test_default_reference_and_hub_policy(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "_hub_cache_snapshot", lambda repo: None)
    with pytest.raises(MissingWeightsError, match="stable-diffusion-v1-5"):
        resolve_model(None, kind="sd15", bundled_root=tmp_path)  # offline in tests
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("DANCEGEN_ALLOW_DOWNLOAD", raising=False)
    # online, but nothing downloads unless asked: a one-line error saying how to get it or allow it
    with pytest.raises(MissingWeightsError, match="downloads not allowed") as e:
        resolve_model("org/model", kind="unet", bundled_root=tmp_path)
    assert "--allow-download" in str(e.value) and "hf download org/model" in str(e.value)
    assert "\n" not in str(e.value)
    r = resolve_model("org/model", kind="unet", bundled_root=tmp_path, allow_download=True)
    assert r == ResolvedModel("org/model", "hub", "org/model", "unet") and not r.is_local
    monkeypatch.setenv("DANCEGEN_ALLOW_DOWNLOAD", "1")
    assert resolve_model("org/model", kind="unet", bundled_root=tmp_path).source == "hub"


def test_hub_cache_snapshot_is_used_offline(sd_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "_hub_cache_snapshot", lambda repo: sd_folder if repo == "org/tiny" else None)
    r = resolve_model("org/tiny", kind="sd-image-variations", bundled_root=tmp_path)
    assert r.source == "hub-cache" and r.location == str(sd_folder)


def test_wrong_layout_and_unknown_kind(tmp_path, sd_folder):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    with pytest.raises(InputError, match="missing unet/config.json"):
        resolve_model(tmp_path / "half", kind="sd15")
    with pytest.raises(InputError, match="unknown model kind"):
        resolve_model(sd_folder, kind="sdxl")
    (tmp_path / "half" / "unet" / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="missing vae/config.json"):
        load_sd15_components(tmp_path / "half")


def test_runtime_plan_cpu():
    plan = plan_runtime("cpu", cpu_offload=True)
    assert plan.dtype is torch.float32 and plan.cpu_offload is False and not plan.vae_slicing
    assert plan.notes == ["cpu_offload ignored on cpu"]
    assert plan.as_dict()["dtype"] == "float32"
    assert plan_runtime("cpu", "bf16").dtype is torch.bfloat16
    with pytest.raises(InputError, match="fp16"):
        plan_runtime("cpu", "fp16")
    with pytest.raises(InputError, match="--dtype"):
        plan_runtime("cpu", "int8")


def test_apply_runtime_sets_dtype_and_vae_slicing(sd_folder):
    comps = load_sd15_components(sd_folder)
    plan = plan_runtime("cpu", "bf16", vae_slicing=True)
    hooks = apply_runtime(plan, comps.models())
    assert hooks == [] and comps.unet.dtype == torch.bfloat16 and comps.vae.use_slicing


@pytest.mark.gpu
def test_runtime_plan_cuda_half_and_offload(sd_folder):
    plan = plan_runtime("cuda", cpu_offload=True)
    assert plan.dtype in (torch.float16, torch.bfloat16) and plan.cpu_offload and plan.vae_slicing
    comps = load_sd15_components(sd_folder)
    hooks = apply_runtime(plan, comps.models())
    assert len(hooks) == 3
    with torch.no_grad():
        out = comps.unet(torch.zeros(1, 4, 16, 16, device="cuda", dtype=plan.dtype), 10,
                         torch.zeros(1, 1, 32, device="cuda", dtype=plan.dtype)).sample
    assert out.device.type == "cuda"
