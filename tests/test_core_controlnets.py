"""ControlNetSet (named ControlNets, specs, step windows, save/load) and the ControlNet-to-UNet residual hook."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from dancegen.core.controlnet import (
    ControlNetSet,
    ControlSpec,
    LatentControlNetModel,
    control_residuals,
    control_window_keep,
)
from dancegen.core.tiny import tiny_unet_config, write_tiny_controlnet, write_tiny_sd15
from dancegen.core.unet3d import VideoUNet
from dancegen.errors import MissingWeightsError

B, F, H = 2, 2, 16  # clips, frames, latent side (control images are 2H: one VAE halving)


# ------------------------------------------------------------------------------------------------------ fixtures
def _unet2d():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**tiny_unet_config()).eval()


@pytest.fixture(scope="module")
def unet2d():
    return _unet2d()


@pytest.fixture(scope="module")
def nets(unet2d, tmp_path_factory):
    """Two image ControlNets (pose, depth) with random zero convs, loaded from their saved folders, and a latent
    (DisCo background) ControlNet with random output convs."""
    from diffusers import ControlNetModel

    root = tmp_path_factory.mktemp("cn")
    pose = ControlNetModel.from_pretrained(write_tiny_controlnet(root / "pose", unet2d, seed=1)).eval()
    depth = ControlNetModel.from_pretrained(write_tiny_controlnet(root / "depth", unet2d, seed=2)).eval()
    torch.manual_seed(3)
    background = LatentControlNetModel.from_unet(unet2d).eval()
    for conv in [*background.controlnet_down_blocks, background.controlnet_mid_block]:
        conv.reset_parameters()
    return {"pose": pose, "depth": depth, "background": background}


def _inputs(context_len: int = 77, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, F, H, H, generator=g)
    ehs = torch.randn(B, context_len, 32, generator=g)
    pose = torch.rand(B, 3, F, 2 * H, 2 * H, generator=g)
    depth = torch.rand(B, 3, F, 2 * H, 2 * H, generator=g)
    bg = torch.randn(B, 4, H, H, generator=g)
    return x, ehs, {"pose": pose, "depth": depth, "background": bg}


def _fold(v):
    """(B, C, F, H, W) -> (B*F, C, H, W), frame-major, as the set folds."""
    return v.permute(0, 2, 1, 3, 4).reshape(-1, v.shape[1], *v.shape[3:])


class CallCounter:
    """Forward pre-hook counting a module's calls."""

    def __init__(self, module):
        self.n = 0
        self.handle = module.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.n += 1


def _equal(a, b) -> bool:
    return len(a.down) == len(b.down) and all(torch.equal(x, y) for x, y in zip(a.down, b.down, strict=True)) \
        and torch.equal(a.mid, b.mid)


# ------------------------------------------------------------------------------------------- one net = diffusers
@pytest.mark.parametrize("context_len", [77, 4], ids=["text-context", "image-context"])
def test_one_net_equals_diffusers_controlnet_and_unet(unet2d, nets, context_len):
    cns = ControlNetSet({"pose": nets["pose"]})
    x, ehs, conds = _inputs(context_len)
    video = VideoUNet.from_unet2d(copy.deepcopy(unet2d), temporal="none").eval()
    t = torch.tensor([7, 500])  # one timestep per clip
    xf, tf, ehsf = _fold(x), t.repeat_interleave(F), ehs.repeat_interleave(F, 0)
    with torch.no_grad():
        res = cns(x, t, ehs, {"pose": conds["pose"]})
        down, mid = nets["pose"](xf, tf, encoder_hidden_states=ehsf, controlnet_cond=_fold(conds["pose"]),
                                 return_dict=False)
        y = video(x, t, ehs, **res.as_kwargs()).sample
        y2d = unet2d(xf, tf, ehsf, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        y_plain = video(x, t, ehs).sample
        # frames already folded: (B*F, ...) sample with per-frame or per-clip conditions and context
        folded = cns(xf, tf, ehsf, {"pose": _fold(conds["pose"])})
        shared = cns(xf, tf, ehs, {"pose": conds["pose"][:, :, 0]}, num_frames=F)
        shared_ref = cns(x, t, ehs, {"pose": conds["pose"][:, :, :1].expand(-1, -1, F, -1, -1)})
    assert len(res.down) == 4 and res.down[0].shape == (B * F, 32, H, H) and res.mid.shape == (B * F, 64, 8, 8)
    assert all(torch.equal(a, b) for a, b in zip(res.down, down, strict=True)) and torch.equal(res.mid, mid)
    assert _equal(folded, res) and _equal(shared, shared_ref)
    torch.testing.assert_close(y, y2d.reshape(B, F, 4, H, H).permute(0, 2, 1, 3, 4), atol=1e-6, rtol=0)
    assert (y - y_plain).abs().max().item() > 1e-3  # the residuals do change the output


# ------------------------------------------------------------------------------------------------ skipping rules
def test_skipped_nets_equal_running_without_them_and_are_never_called(nets):
    cns = ControlNetSet({"pose": nets["pose"], "depth": nets["depth"]})
    counts = {k: CallCounter(cns[k]) for k in cns}
    x, ehs, conds = _inputs()
    pose_only = {"pose": conds["pose"]}
    try:
        with torch.no_grad():
            base = cns(x, 7, ehs, pose_only)
            assert counts["pose"].n == 1 and counts["depth"].n == 0
            with_depth = {"pose": conds["pose"], "depth": conds["depth"]}
            both = cns(x, 7, ehs, with_depth)
            assert counts["depth"].n == 1
            assert (both.mid - base.mid).abs().max().item() > 1e-4  # depth does contribute when it runs
            variants = {
                "scale 0": cns(x, 7, ehs, with_depth, scales={"depth": 0.0}),
                "missing condition": cns(x, 7, ehs, {"pose": conds["pose"], "depth": None}),
                "empty window": cns(x, 7, ehs, with_depth, step=0, num_steps=2,
                                    specs={"depth": ControlSpec(start=0.5, end=0.5)}),
                "step after the window": cns(x, 7, ehs, with_depth, step=3, num_steps=4,
                                             specs={"depth": ControlSpec(end=0.5)}),
                "step before the window": cns(x, 7, ehs, with_depth, step=0, num_steps=4,
                                              specs={"depth": ControlSpec(start=0.25)}),
            }
            cns.set_spec("depth", 0.0)  # a stored zero scale skips too
            variants["stored scale 0"] = cns(x, 7, ehs, with_depth)
            cns.set_spec("depth", 1.0)
            assert counts["depth"].n == 1  # none of the variants ran it
            for name, res in variants.items():
                assert _equal(res, base), name
            assert cns(x, 7, ehs, {"depth": None}) is None  # nothing runs -> None
            assert cns(x, 7, ehs, with_depth, scales={"pose": 0, "depth": 0}) is None
            assert counts["pose"].n == 1 + 1 + len(variants)
    finally:
        for c in counts.values():
            c.handle.remove()
    with pytest.raises(ValueError, match="unknown ControlNet name"):
        cns(x, 7, ehs, {"posee": conds["pose"]})
    with pytest.raises(ValueError, match="unknown ControlNet name"):
        cns(x, 7, ehs, pose_only, scales={"dept": 0.5})
    with pytest.raises(ValueError, match="both step and num_steps"):
        cns(x, 7, ehs, pose_only, step=1)
    with pytest.raises(ValueError, match="start <= end"):
        ControlSpec(start=0.6, end=0.4)


# ---------------------------------------------------------------------------------------------- sums and scales
def test_two_nets_sum_and_per_call_scales_override_specs(nets):
    cns = ControlNetSet({"pose": nets["pose"], "background": nets["background"]}, specs={"pose": 0.5})
    assert cns.spec("pose") == ControlSpec(scale=0.5) and cns.spec("background") == ControlSpec()
    x, ehs, conds = _inputs()
    c = {"pose": conds["pose"], "background": conds["background"]}  # background: one latent shared by the clip
    xf, tf, ehsf = _fold(x), torch.full((B * F,), 7), ehs.repeat_interleave(F, 0)
    with torch.no_grad():
        both = cns(x, 7, ehs, c)
        pose = cns(x, 7, ehs, {"pose": c["pose"]})
        bg = cns(x, 7, ehs, {"background": c["background"]})
        over = cns(x, 7, ehs, {"pose": c["pose"]}, scales={"pose": 0.8})
        chunked = cns(x, 7, ehs, c, frame_chunk=3)

        def direct(scale):
            return nets["pose"](xf, tf, encoder_hidden_states=ehsf, controlnet_cond=_fold(c["pose"]),
                                conditioning_scale=scale, return_dict=False)

        d05, m05 = direct(0.5)
        d08, m08 = direct(0.8)
    assert all(torch.equal(s, p + q) for s, p, q in zip(both.down, pose.down, bg.down, strict=True))
    assert torch.equal(both.mid, pose.mid + bg.mid)
    assert all(torch.equal(a, b) for a, b in zip(pose.down, d05, strict=True)) and torch.equal(pose.mid, m05)
    assert all(torch.equal(a, b) for a, b in zip(over.down, d08, strict=True)) and torch.equal(over.mid, m08)
    assert cns.spec("pose").scale == 0.5  # a per-call scale does not change the stored spec
    assert (pose.mid - over.mid).abs().max().item() > 1e-4
    err = max((a - b).abs().max().item() for a, b in zip([*both.down, both.mid], [*chunked.down, chunked.mid],
                                                          strict=True))
    assert err < 1e-5  # frame_chunk only splits the batch


# ------------------------------------------------------------------------------------- windows = diffusers' rule
CASES = [(0.0, 1.0, 3), (0.0, 0.5, 4), (0.5, 1.0, 4), (0.2, 0.7, 5), (1 / 3, 2 / 3, 3), (0.1, 0.9, 7)]


def test_step_windows_match_diffusers_controlnet_keep(tmp_path):
    """Run diffusers' own StableDiffusionControlNetPipeline and record the conditioning scale it gives the
    ControlNet at every step (``scale * controlnet_keep[i]``): our window rule must keep exactly those steps."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    sd = write_tiny_sd15(tmp_path / "sd")
    cn = ControlNetModel.from_pretrained(write_tiny_controlnet(tmp_path / "cn", sd))
    pipe = StableDiffusionControlNetPipeline.from_pretrained(sd, controlnet=cn, safety_checker=None,
                                                             feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    seen: list[float] = []
    handle = cn.register_forward_pre_hook(lambda m, a, kw: seen.append(float(kw["conditioning_scale"])),
                                          with_kwargs=True)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cns = ControlNetSet({"pose": cn})
    try:
        for start, end, n in CASES:
            seen.clear()
            pipe("a dancer", image=image, num_inference_steps=n, height=32, width=32, guidance_scale=1.0,
                 control_guidance_start=start, control_guidance_end=end, output_type="latent",
                 generator=torch.Generator().manual_seed(0))
            assert len(seen) == n
            diffusers_keep = [s != 0 for s in seen]
            ours = [control_window_keep(i, n, start, end) for i in range(n)]
            spec = [ControlSpec(start=start, end=end).active(i, n) for i in range(n)]
            in_set = [cns.active_names({"pose": image}, i, n, specs={"pose": ControlSpec(start=start, end=end)})
                      == ["pose"] for i in range(n)]
            assert ours == diffusers_keep == spec == in_set, (start, end, n)
    finally:
        handle.remove()
    assert [control_window_keep(i, 4, 0.0, 0.5) for i in range(4)] == [True, True, False, False]
    assert not any(control_window_keep(i, 4, 0.5, 0.5) for i in range(4))  # empty window
    with pytest.raises(ValueError, match="step must be in"):
        control_window_keep(4, 4, 0.0, 1.0)


# --------------------------------------------------------------------------------------------- the residual hook
@pytest.fixture(scope="module")
def video_setup(unet2d, nets):
    video = VideoUNet.from_unet2d(copy.deepcopy(unet2d), temporal="stsa", subspace_size=(2, 2, 2)).eval()
    x, ehs, conds = _inputs()
    with torch.no_grad():
        res = ControlNetSet({"pose": nets["pose"]})(x, 7, ehs, {"pose": conds["pose"]})
    return video, x, ehs, res


def _hook_count(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_identity_hook_equals_plain_residuals_and_zero_hook_equals_no_controlnet(video_setup):
    video, x, ehs, res = video_setup
    before = _hook_count(video)
    with torch.no_grad():
        plain = video(x, 7, ehs, **res.as_kwargs()).sample
        ident = video(x, 7, ehs, **res.as_kwargs(), residual_hook=lambda k, c, u: c).sample
        none = video(x, 7, ehs).sample
        zero = video(x, 7, ehs, **res.as_kwargs(), residual_hook=lambda k, c, u: torch.zeros_like(c)).sample
    assert torch.equal(ident, plain)  # u + c either way; the mid gets (m + c) + 0
    assert torch.equal(zero, none)
    assert (plain - none).abs().max().item() > 1e-3
    assert _hook_count(video) == before  # hooks live only for the call
    with pytest.raises(ValueError, match="needs both"):
        video(x, 7, ehs, down_block_additional_residuals=res.down, residual_hook=lambda k, c, u: c)


def test_hook_receives_the_skip_features_diffusers_adds_to(video_setup):
    """The skips a hook sees, checked another way: in a run without ControlNet, the up blocks receive exactly the
    skip features (``res_hidden_states_tuple``, last ones first) and up block 0 receives the mid-block output."""
    video, x, ehs, res = video_setup
    unet = video.unet
    n_down = len(res.down)
    up_in: dict[int, tuple] = {}

    def recorder(i):
        def pre(module, args, kwargs):
            up_in[i] = (kwargs["hidden_states"], kwargs["res_hidden_states_tuple"])
        return pre

    handles = [blk.register_forward_pre_hook(recorder(i), with_kwargs=True) for i, blk in enumerate(unet.up_blocks)]
    try:
        with torch.no_grad():
            video(x, 7, ehs)
    finally:
        for h in handles:
            h.remove()
    skips_ref = [s for i in reversed(range(len(unet.up_blocks))) for s in up_in[i][1]]
    mid_ref = up_in[0][0]

    seen: list[tuple] = []

    def hook(k, c, u):
        seen.append((k, c, u, video.holder.peek().num_frames))
        return 0.5 * c + 0.1 * u  # uses the skip: new skip = u + 0.5 c + 0.1 u

    with torch.no_grad():
        y = video(x, 7, ehs, **res.as_kwargs(), residual_hook=hook).sample
    assert [s[0] for s in seen] == list(range(n_down + 1))
    assert all(s[3] == F for s in seen)  # the hook runs under the call's frame context
    assert all(c is r for (_, c, _, _), r in zip(seen, [*res.down, res.mid], strict=True))
    assert len(skips_ref) == n_down
    for (_, _, u, _), u_ref in zip(seen[:n_down], skips_ref, strict=True):
        assert u.shape == u_ref.shape and torch.equal(u, u_ref)
    assert torch.equal(seen[n_down][2], mid_ref)
    assert seen[0][2].shape == (B * F, 32, H, H)  # skip 0 is conv_in's output
    # what the hook returned went exactly where a plain residual goes
    hooked = [0.5 * c + 0.1 * u for _, c, u, _ in seen]
    with torch.no_grad():
        y_ref = video(x, 7, ehs, down_block_additional_residuals=hooked[:n_down],
                      mid_block_additional_residual=hooked[n_down]).sample
    assert torch.equal(y, y_ref)


def test_control_residuals_on_a_plain_unet2d(unet2d, nets):
    """The context manager on a diffusers UNet2DConditionModel: identity/zero hooks, two calls in one block (as with
    classifier-free guidance), and no hooks left behind."""
    x, ehs, conds = _inputs(context_len=5)
    xf, ehsf = _fold(x), ehs.repeat_interleave(F, 0)
    res = ControlNetSet({"pose": nets["pose"]})(xf, 7, ehsf, {"pose": _fold(conds["pose"])})
    before = _hook_count(unet2d)
    with torch.no_grad():
        plain = [unet2d(v, 7, ehsf, **res.as_kwargs()).sample for v in (xf, 2 * xf)]
        with control_residuals(unet2d, res, lambda k, c, u: c) as kw:
            ident = [unet2d(v, 7, ehsf, **kw).sample for v in (xf, 2 * xf)]
        with control_residuals(unet2d, res, lambda k, c, u: torch.zeros_like(c)) as kw:
            zero = unet2d(xf, 7, ehsf, **kw).sample
        with control_residuals(unet2d, None, lambda k, c, u: c) as kw:
            assert kw == {}
        none = unet2d(xf, 7, ehsf).sample
    assert torch.equal(ident[0], plain[0]) and torch.equal(ident[1], plain[1])
    assert torch.equal(zero, none)
    assert _hook_count(unet2d) == before


# ------------------------------------------------------------------------------------------------------ DisCo set
def test_disco_controlnets_is_a_set_with_the_same_keys(unet2d, nets):
    from dancegen.methods.dance_your_latents.model import DisCoControlNets  # Dance-Your-Latents' use of the set

    disco = DisCoControlNets(nets["pose"], nets["background"])
    assert isinstance(disco, ControlNetSet) and list(disco.keys()) == ["pose", "background"]
    keys = list(disco.state_dict())
    assert keys[0].startswith("pose.") and any(k.startswith("background.") for k in keys)
    assert disco.pose is nets["pose"] and disco.background is nets["background"]
    pose_only = DisCoControlNets(nets["pose"])
    assert pose_only.background is None and all(k.startswith("pose.") for k in pose_only.state_dict())
    x, ehs, conds = _inputs()
    with torch.no_grad():
        a = disco(x, 7, ehs, conds["pose"], conds["background"], pose_scale=0.7, background_scale=0.3)
        b = ControlNetSet({"pose": nets["pose"], "background": nets["background"]})(
            x, 7, ehs, {"pose": conds["pose"], "background": conds["background"]},
            scales={"pose": 0.7, "background": 0.3})
        c = pose_only(x, 7, ehs, conds["pose"], conds["background"])  # no background net: its latent is ignored
        d = disco(x, 7, ehs, conds["pose"])
    assert _equal(a, b) and _equal(c, d)
    with pytest.raises(ValueError, match="at least one"):
        DisCoControlNets(None, None)


# --------------------------------------------------------------------------------------------------- save / load
def test_save_pretrained_from_pretrained_folders_round_trip(nets, tmp_path):
    cns = ControlNetSet({"pose": nets["pose"], "background": nets["background"], "prev": None})
    paths = cns.save_pretrained(tmp_path / "model")
    assert paths == {"pose": tmp_path / "model" / "controlnet_pose",
                     "background": tmp_path / "model" / "controlnet_background"}
    again = ControlNetSet.from_pretrained_folders(paths, specs={"pose": ControlSpec(scale=0.5, end=0.8)})
    again.eval()
    assert type(again["background"]) is LatentControlNetModel and type(again["pose"]).__name__ == "ControlNetModel"
    assert again.spec("pose") == ControlSpec(scale=0.5, end=0.8)
    sd_a, sd_b = cns.state_dict(), again.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    x, ehs, conds = _inputs()
    c = {"pose": conds["pose"], "background": conds["background"]}
    with torch.no_grad():
        assert _equal(cns(x, 7, ehs, c), again(x, 7, ehs, c, scales={"pose": 1.0}))
    with pytest.raises(MissingWeightsError):
        ControlNetSet.from_pretrained_folders({"pose": tmp_path / "nowhere"})


def test_lllyasviel_style_folder_loads_unchanged(nets, tmp_path):
    """An SD-1.5 ControlNet folder as lllyasviel published them (diffusers 0.14 config without the keys added
    since, weights as ``diffusion_pytorch_model.bin``), narrowed, loads through the set."""
    net = nets["pose"]
    folder = tmp_path / "sd-controlnet-openpose"
    folder.mkdir()
    keep = ("act_fn", "attention_head_dim", "block_out_channels", "class_embed_type",
            "conditioning_embedding_out_channels", "controlnet_conditioning_channel_order", "cross_attention_dim",
            "down_block_types", "downsample_padding", "flip_sin_to_cos", "freq_shift", "in_channels",
            "layers_per_block", "mid_block_scale_factor", "norm_eps", "norm_num_groups", "num_class_embeds",
            "only_cross_attention", "projection_class_embeddings_input_dim", "resnet_time_scale_shift",
            "upcast_attention", "use_linear_projection")
    config = {"_class_name": "ControlNetModel", "_diffusers_version": "0.14.0.dev0",
              **{k: net.config[k] for k in keep}}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(net.state_dict(), folder / "diffusion_pytorch_model.bin")
    cns = ControlNetSet.from_pretrained_folders({"pose": folder}).eval()
    x, ehs, conds = _inputs()
    with torch.no_grad():
        assert _equal(cns(x, 7, ehs, {"pose": conds["pose"]}), ControlNetSet({"pose": net})(x, 7, ehs, {"pose": conds["pose"]}))

    config["_class_name"] = "ControlNetXSAdapter"  # not a ControlNetModel: refuse, naming the way out
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="classes="):
        ControlNetSet.from_pretrained_folders({"pose": folder})


@pytest.mark.slow
def test_real_sd15_openpose_controlnet_loads():
    """The real lllyasviel/sd-controlnet-openpose, when it is in the local Hugging Face cache."""
    try:
        cns = ControlNetSet.from_pretrained_folders({"pose": "lllyasviel/sd-controlnet-openpose"})
    except MissingWeightsError as e:
        pytest.skip(str(e))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        res = cns.eval()(torch.randn(1, 4, 1, 64, 64, generator=g), 500, torch.randn(1, 77, 768, generator=g),
                         {"pose": torch.rand(1, 3, 1, 512, 512, generator=g)})
    assert [tuple(r.shape[1:]) for r in res.down][:4] == [(320, 64, 64)] * 3 + [(320, 32, 32)]
    assert len(res.down) == 12 and tuple(res.mid.shape) == (1, 1280, 8, 8)
