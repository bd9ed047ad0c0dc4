"""DabFusion latent-flow diffusion (spec dance-any-beat.md §2.4): the 3D U-Net and the Gaussian diffusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dancegen.methods.dance_any_beat.diffusion import GaussianDiffusion, cosine_betas
from dancegen.methods.dance_any_beat.flow_unet import FlowUNet3D

TINY = dict(dim=8, dim_mults=(1, 2), channels=3, cond_channels=4, attn_heads=2, attn_dim_head=8, resnet_groups=4,
            init_kernel=3)


def tiny_unet(**kw) -> FlowUNet3D:
    torch.manual_seed(0)
    return FlowUNet3D(**{**TINY, **kw}).eval()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------- schedule
def test_cosine_betas_closed_form_and_clipping():
    T, s = 1000, 0.008
    betas = cosine_betas(T, s=s, max_beta=0.9999)
    assert betas.shape == (T,) and betas.dtype == torch.float64
    f = np.cos(((np.arange(T + 1) / T) + s) / (1 + s) * np.pi / 2) ** 2
    alphas_bar = np.cumprod(1 - betas.numpy())
    # Unclipped steps reproduce alphas_bar(t) = f(t) / f(0) exactly; only the last beta (f(T) = 0 -> beta = 1) clips.
    np.testing.assert_allclose(alphas_bar[:-1], (f / f[0])[1:T], rtol=1e-10)
    assert betas[-1].item() == pytest.approx(0.9999)
    assert (betas[:-1] < 0.9999).all() and (betas > 0).all()
    assert betas[0].item() == pytest.approx(1 - f[1] / f[0], rel=1e-12)
    # A lower cap clips more steps, all to the cap.
    capped = cosine_betas(T, max_beta=0.02)
    assert capped.max().item() == pytest.approx(0.02) and int((capped == 0.02).sum()) > 1
    np.testing.assert_allclose(capped[:100].numpy(), betas[:100].numpy())


def test_linear_schedule_and_bad_arguments():
    d = GaussianDiffusion(timesteps=1000, schedule="linear")
    assert d.betas[0].item() == pytest.approx(1e-4) and d.betas[-1].item() == pytest.approx(0.02)
    with pytest.raises(ValueError):
        GaussianDiffusion(schedule="sigmoid")
    with pytest.raises(ValueError):
        GaussianDiffusion(dynamic_threshold=1.5)


# ---------------------------------------------------------------------------------------------------- q_sample
def test_q_sample_statistics_and_predict_x0_inverse():
    d = GaussianDiffusion(timesteps=1000)
    x0 = torch.full((2, 3, 4, 32, 32), 0.7)
    t = torch.tensor([100, 700])
    xt = d.q_sample(x0, t, generator=gen(1))
    for i, step in enumerate(t.tolist()):
        ab = d.alphas_bar[step].item()
        assert xt[i].mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.03)
        assert xt[i].std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.03)
    # predict_x0 inverts q_sample given the true noise, at every step including the extremes.
    x0 = torch.randn(4, 3, 4, 8, 8, generator=gen(2))
    noise = torch.randn(4, 3, 4, 8, 8, generator=gen(3))
    for steps in ([0, 1, 500, 900], [10, 250, 600, 990]):
        t = torch.tensor(steps)
        rec = d.predict_x0(d.q_sample(x0, t, noise), t, noise)
        torch.testing.assert_close(rec, x0, atol=2e-4, rtol=1e-4)
    # v-prediction: the v target inverts too, at every step including T - 1 (where alphas_bar ~ 2e-9) ...
    v = GaussianDiffusion(timesteps=1000, prediction="v")
    t = torch.tensor([0, 500, 990, 999])
    rec = v.predict_x0(v.q_sample(x0, t, noise), t, v.target(x0, t, noise))
    torch.testing.assert_close(rec, x0, atol=2e-4, rtol=1e-4)
    # ... and an output error of 0.01 stays <= 0.01 in x0, where the same error in eps becomes ~2e2 at T - 1
    t = torch.tensor([999] * 4)
    xt = d.q_sample(x0, t, noise)
    err_v = (v.predict_x0(xt, t, v.target(x0, t, noise) + 0.01) - x0).abs().max().item()
    err_eps = (d.predict_x0(xt, t, noise + 0.01) - x0).abs().max().item()
    assert err_v <= 0.01 + 1e-6 and err_eps > 100
    with pytest.raises(ValueError, match="prediction"):
        GaussianDiffusion(prediction="x0")
    # the noise argument is used as given: the same noise gives the same x_t
    torch.testing.assert_close(d.q_sample(x0, t, noise), d.q_sample(x0, t, noise.clone()))


# ---------------------------------------------------------------------------------------------------- thresholding
def test_dynamic_threshold():
    d = GaussianDiffusion(timesteps=10, dynamic_threshold=0.9)
    inside = torch.rand(2, 3, 4, 5, 5, generator=gen(0)) * 2 - 1
    torch.testing.assert_close(d.dynamic_threshold(inside), inside)
    # Sample 0: |x| spread over [0.4, 4.4] with its 90th percentile at 4 -> scaled by 1/4 into [-1, 1].
    mags = torch.linspace(0.4, 4.4, 101)  # 90th percentile (linear interpolation) = 0.4 + 0.9 * 4.0 = 4.0
    signs = torch.where(torch.arange(101) % 2 == 0, 1.0, -1.0)
    big = (mags * signs)[torch.randperm(101, generator=gen(1))]
    x = torch.stack([big, inside.flatten()[:101]]).view(2, 101, 1, 1, 1)
    out = d.dynamic_threshold(x)
    assert torch.quantile(big.abs(), 0.9).item() == pytest.approx(4.0)
    assert out[0].abs().max().item() == pytest.approx(1.0)
    torch.testing.assert_close(out[0].flatten(), big.clamp(-4, 4) / 4)
    torch.testing.assert_close(out[1], x[1])  # the other sample is untouched (per-sample s)
    assert d.dynamic_threshold(x * 0 + 4.0).max().item() == pytest.approx(1.0)
    assert GaussianDiffusion(timesteps=10, dynamic_threshold=None).dynamic_threshold(x).abs().max() == 1.0
    halved = GaussianDiffusion(timesteps=10, data_space=(lambda v: v / 2, lambda v: v * 2))  # thresholds x0 / 2
    torch.testing.assert_close(halved.dynamic_threshold(x), 2 * d.dynamic_threshold(x / 2))
    assert torch.equal(halved.dynamic_threshold(inside), inside)


# ---------------------------------------------------------------------------------------------------- UNet
@pytest.mark.parametrize("frames", [4, 8])
@pytest.mark.parametrize("size", [8, 16])
def test_unet_shapes_and_cond(frames, size):
    model = tiny_unet(cond_dim=6)
    x = torch.randn(2, 3, frames, size, size, generator=gen(0))
    z0 = torch.randn(2, 4, size, size, generator=gen(1))
    t = torch.tensor([3, 900])
    with torch.no_grad():
        eps_null = model(x, t, z0)
        eps_zero = model(x, t, z0, cond=torch.zeros(2, 6))
        eps_cond = model(x, t, z0, cond=torch.randn(2, 6, generator=gen(2)))
    assert eps_null.shape == (2, 3, frames, size, size) and torch.isfinite(eps_null).all()
    torch.testing.assert_close(eps_null, eps_zero)  # None is the null (zero) condition
    assert (eps_cond - eps_null).abs().mean() > 1e-4
    # z0 matters, and the batch rows are independent
    with torch.no_grad():
        eps_z = model(x, t, z0 + 1)
        eps_single = model(x[:1], t[:1], z0[:1])
    assert (eps_z - eps_null).abs().mean() > 1e-4
    torch.testing.assert_close(eps_single, eps_null[:1], atol=1e-5, rtol=1e-4)


def test_unet_gradient_checkpointing_gives_the_same_loss_and_gradients():
    model = tiny_unet(cond_dim=6)
    x = torch.randn(2, 3, 4, 8, 8, generator=gen(0))
    z0 = torch.randn(2, 4, 8, 8, generator=gen(1))
    cond = torch.randn(2, 6, generator=gen(2))
    t = torch.tensor([3, 900])

    def loss_and_grads():
        model.zero_grad()
        loss = model(x, t, z0, cond=cond).square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain = loss_and_grads()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    ckpt_loss, ckpt = loss_and_grads()
    assert torch.equal(plain_loss, ckpt_loss) and plain.keys() == ckpt.keys() and len(plain) > 20
    for name in plain:  # recomputation reruns the same ops; only the summation order of the backward may differ
        torch.testing.assert_close(ckpt[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_unet_frame_cond_is_local():
    model = tiny_unet(frame_cond_dim=2)
    x = torch.randn(1, 3, 6, 8, 8, generator=gen(0))
    z0 = torch.randn(1, 4, 8, 8, generator=gen(1))
    fc = torch.zeros(1, 6, 2)
    fc2 = fc.clone()
    fc2[0, 2] = torch.tensor([3.0, -2.0])
    t = torch.tensor([400])
    with torch.no_grad():
        base, changed = model(x, t, z0, frame_cond=fc), model(x, t, z0, frame_cond=fc2)
        torch.testing.assert_close(model(x, t, z0), base)  # None = zeros
    per_frame = (changed - base).abs().mean(dim=(0, 1, 3, 4))
    assert per_frame.argmax().item() == 2
    assert per_frame[2] > 3 * per_frame[[0, 1, 3, 4, 5]].max()


@pytest.mark.parametrize("temporal", [True, False])
def test_unet_temporal_attention_makes_frames_interact(temporal):
    model = tiny_unet(use_temporal_attention=temporal)
    x = torch.randn(1, 3, 5, 8, 8, generator=gen(0))
    z0 = torch.randn(1, 4, 8, 8, generator=gen(1))
    x2 = x.clone()
    x2[:, :, 0] += torch.randn(1, 3, 8, 8, generator=gen(2))
    t = torch.tensor([200])
    with torch.no_grad():
        diff = (model(x2, t, z0) - model(x, t, z0)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[0] > 1e-3  # the perturbed frame itself always changes
    if temporal:
        assert diff[3] > 1e-4
    else:
        assert diff[1:].max() < 1e-6  # all convs are (1, k, k) and norms per frame: frames stay independent


def test_unet_attention_chunking_matches(monkeypatch):
    """Large attention batches are split (CUDA grid limit); the result must not change."""
    from dancegen.methods.dance_any_beat import flow_unet

    model = tiny_unet()
    x, z0 = torch.randn(2, 3, 4, 8, 8, generator=gen(0)), torch.randn(2, 4, 8, 8, generator=gen(1))
    with torch.no_grad():
        ref = model(x, torch.tensor([5, 6]), z0)
        monkeypatch.setattr(flow_unet, "_SDPA_MAX_BATCH", 7)
        torch.testing.assert_close(model(x, torch.tensor([5, 6]), z0), ref, atol=1e-6, rtol=1e-5)


def test_unet_bad_sizes():
    model = tiny_unet()
    z = torch.zeros(1, 4, 7, 7)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.zeros(1, 3, 4, 7, 7), torch.tensor([1]), z)
    deep = tiny_unet(dim_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="divisible"):
        deep(torch.zeros(1, 3, 4, 6, 6), torch.tensor([1]), torch.zeros(1, 4, 6, 6))
    with pytest.raises(ValueError, match="z0"):
        model(torch.zeros(1, 3, 4, 8, 8), torch.tensor([1]), torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="cond"):
        model(torch.zeros(1, 3, 4, 8, 8), torch.tensor([1]), torch.zeros(1, 4, 8, 8), cond=torch.zeros(1, 3))
    assert deep(torch.zeros(1, 3, 2, 12, 12), torch.tensor([1]), torch.zeros(1, 4, 12, 12)).shape == (1, 3, 2, 12, 12)


def test_unet_save_load_roundtrip(tmp_path):
    model = tiny_unet(cond_dim=3, frame_cond_dim=1)
    model.save_pretrained(tmp_path)
    loaded = FlowUNet3D.from_pretrained(tmp_path).eval()
    assert tuple(loaded.config.dim_mults) == (1, 2) and loaded.config.frame_cond_dim == 1
    x, z0 = torch.randn(1, 3, 4, 8, 8, generator=gen(0)), torch.randn(1, 4, 8, 8, generator=gen(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, torch.tensor([5]), z0), model(x, torch.tensor([5]), z0))


# ---------------------------------------------------------------------------------------------------- training
def test_training_loss_falls_on_a_small_dataset():
    """A tiny UNet + diffusion fits 4 fixed smooth clips: the eps-MSE (fixed t and noise) drops clearly."""
    torch.manual_seed(0)
    model = FlowUNet3D(**{**TINY, "cond_dim": 2})
    diffusion = GaussianDiffusion(timesteps=1000)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
    phases = torch.arange(4).float()
    clips = torch.stack([
        torch.stack([torch.sin(2 * xx + 0.5 * f + p)[None].expand(3, 8, 8) * 0.8 for f in range(4)], dim=1)
        for p in phases])  # (4, 3, 4, 8, 8): a travelling wave, one phase per clip
    clips[:, 2] = clips[:, 2] * yy  # channel 2 differs from the flow channels
    z0 = clips[:, :, 0].repeat(1, 2, 1, 1)[:, :4]  # "reference latent": the first frame
    cond = torch.stack([phases.cos(), phases.sin()], dim=1)

    def loss_at(g):
        return diffusion.training_loss(lambda x, t: model(x, t, z0, cond=cond), clips, generator=g)

    def eval_loss():
        model.eval()
        with torch.no_grad():
            value = sum(loss_at(gen(100 + i)).item() for i in range(4)) / 4
        model.train()
        return value

    start = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = gen(7)
    for _ in range(150):
        opt.zero_grad()
        loss_at(g).backward()
        opt.step()
    end = eval_loss()
    assert end < 0.5 * start, (start, end)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_velocity_term_prices_timing_errors_not_constant_ones(prediction):
    """The frame-difference term: an output off by the same amount in every frame costs the plain MSE only; an
    output whose error alternates over frames (a motion stopping on the wrong frame) costs lambda * mean(diff^2) more;
    with lambda = 0 the loss is the paper's MSE whatever the error's shape."""
    x0 = torch.randn(2, 3, 6, 4, 4, generator=gen(0))
    t = torch.tensor([100, 700])
    noise = torch.randn(x0.shape, generator=gen(1))
    plain = GaussianDiffusion(prediction=prediction)
    weighted = GaussianDiffusion(prediction=prediction, velocity_weight=2.0)
    target = plain.target(x0, t, noise)
    constant = torch.full_like(x0, 0.3)
    alternating = 0.3 * torch.tensor([1.0, -1.0] * 3).view(1, 1, 6, 1, 1).expand_as(x0)

    def loss(d, err):  # the same generator seed: training_loss draws the same noise, so the target is `target`
        return d.training_loss(lambda x, tt: target + err, x0, generator=gen(1), t=t).item()

    assert loss(plain, constant) == pytest.approx(0.09, rel=1e-5)
    assert loss(weighted, constant) == pytest.approx(0.09, rel=1e-5)
    assert loss(plain, alternating) == pytest.approx(0.09, rel=1e-5)
    assert loss(weighted, alternating) == pytest.approx(0.09 + 2.0 * 0.36, rel=1e-5)  # (0.3 - -0.3)^2 = 0.36
    with pytest.raises(ValueError, match="velocity_weight"):
        GaussianDiffusion(velocity_weight=-1.0)


def test_diffusion_drops_conditions_with_its_null_probability():
    cond = torch.ones(2000, 3)
    assert GaussianDiffusion(null_cond_prob=1.0).drop_condition(cond).abs().sum() == 0
    assert GaussianDiffusion(null_cond_prob=0.0).drop_condition(cond) is cond
    rows = GaussianDiffusion(null_cond_prob=0.1).drop_condition(cond, generator=gen(0)).sum(dim=1)
    assert (rows == 0).float().mean().item() == pytest.approx(0.1, abs=0.02)  # the shared core.guidance rule


# ---------------------------------------------------------------------------------------------------- samplers
def _oracle(diffusion: GaussianDiffusion, target: torch.Tensor):
    """The exact eps (or v, by the diffusion's prediction) of a one-point data distribution at ``target``."""

    def fn(x, t):
        ab = diffusion.alphas_bar[t].float().view(-1, 1, 1, 1, 1)
        eps = (x - ab.sqrt() * target) / (1 - ab).sqrt()
        return ab.sqrt() * eps - (1 - ab).sqrt() * target if diffusion.prediction == "v" else eps

    return fn


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddpm_v", "ddim_v"])
def test_samplers_recover_a_point_distribution(sampler):
    d = GaussianDiffusion(timesteps=100, prediction="v" if sampler.endswith("_v") else "eps")
    sampler = sampler.removesuffix("_v")
    target = torch.rand(2, 3, 4, 8, 8, generator=gen(5)) * 1.6 - 0.8
    run = (lambda **kw: d.ddpm_sample(**kw)) if sampler == "ddpm" else (lambda **kw: d.ddim_sample(steps=10, **kw))
    out = run(model_fn=_oracle(d, target), shape=target.shape, generator=gen(0))
    torch.testing.assert_close(out, target, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim_eta1"])
def test_samplers_determinism_known_frames_and_range(sampler):
    d = GaussianDiffusion(timesteps=20)
    model = tiny_unet()
    z0 = torch.randn(1, 4, 8, 8, generator=gen(9))
    shape = (1, 3, 4, 8, 8)
    kw = {"ddpm": {}, "ddim": dict(steps=5), "ddim_eta1": dict(steps=5, eta=1.0)}[sampler]
    sample = d.ddpm_sample if sampler == "ddpm" else d.ddim_sample
    calls = []

    def fn(x, t):
        return model(x, t, z0)

    a = sample(fn, shape, generator=gen(1), progress=lambda i, n: calls.append((i, n)), **kw)
    b = sample(fn, shape, generator=gen(1), **kw)
    c = sample(fn, shape, generator=gen(2), **kw)
    assert a.shape == shape and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - c).abs().max() > 1e-3
    assert a.abs().max() <= 1.0 + 1e-6  # the last step returns the thresholded x0
    n = 20 if sampler == "ddpm" else 5
    assert calls == [(i, n) for i in range(1, n + 1)]

    values = torch.full((1, 3, 2, 8, 8), 0.25) + 0.1 * torch.randn(1, 3, 2, 8, 8, generator=gen(4))
    k = sample(fn, shape, generator=gen(1), known=(values, 2), **kw)
    torch.testing.assert_close(k[:, :, :2], values, atol=0, rtol=0)
    assert torch.isfinite(k).all() and k[:, :, 2:].abs().max() <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="known"):
        sample(fn, shape, generator=gen(1), known=(values, 3), **kw)


def test_thresholding_keeps_x0_in_range_for_a_wild_model():
    d = GaussianDiffusion(timesteps=20)

    def wild(x, t):  # eps far from the truth: x0 predictions of magnitude ~1e3
        return -50.0 * torch.ones_like(x)

    seen = []
    orig = d.dynamic_threshold

    def spy(x0):
        out = orig(x0)
        seen.append((x0.abs().max().item(), out.abs().max().item()))
        return out

    d.dynamic_threshold = spy
    for out in (d.ddpm_sample(wild, (2, 3, 4, 8, 8), generator=gen(0)),
                d.ddim_sample(wild, (2, 3, 4, 8, 8), steps=4, eta=1.0, generator=gen(0))):
        assert torch.isfinite(out).all() and out.abs().max() <= 1.0 + 1e-6
    assert max(raw for raw, _ in seen) > 10 and all(th <= 1.0 + 1e-6 for _, th in seen)


def test_known_frames_follow_q_sample_during_sampling():
    """RePaint replacement: the model sees q_sample(values, t) in the known frames at every step."""
    d = GaussianDiffusion(timesteps=50)
    values = torch.full((1, 1, 1, 4, 4), 0.5)
    seen = []

    def fn(x, t):
        seen.append((int(t[0]), x[:, :, :1].clone()))
        return torch.zeros_like(x)

    d.ddim_sample(fn, (1, 1, 3, 4, 4), steps=50, generator=gen(0), known=(values, 1))
    for step, frame in seen[::10]:
        ab = d.alphas_bar[step].item()
        # mean over 16 pixels of sqrt(ab) * 0.5 + sqrt(1 - ab) * N(0, 1): within 5 standard errors
        assert abs(frame.mean().item() - math.sqrt(ab) * 0.5) < 5 * math.sqrt(1 - ab) / 4 + 1e-6
    assert seen[-1][0] == 0 and (seen[-1][1] - 0.5).abs().max() < 0.1
