"""Shared training loop (dancegen/core/train.py): learning, frozen groups, accumulation, precision, logging, data."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
import torch
from test_core_train_toys import Regression, TinyNet, build, config, mse_loss, noisy_loss, params

from dancegen.config import load_config
from dancegen.core.train import InfiniteLoader, LRSchedule, Trainer, read_metrics
from dancegen.core.train_config import OptimConfig, ParamGroup, TrainLoopConfig, pattern_matches
from dancegen.errors import InputError


def test_loss_goes_down_on_a_learnable_problem(tmp_path):
    tr = build(tmp_path, loss_fn=mse_loss, data=Regression(n=64), max_steps=150, batch_size=8, log_every=10,
               optim=OptimConfig(lr=2e-2, lr_schedule="cosine", warmup_steps=5))
    res = tr.fit()
    rec = read_metrics(tmp_path)
    assert [r["step"] for r in rec] == list(range(10, 151, 10))
    first, last = rec[0]["loss"], rec[-1]["loss"]
    assert last < first / 20, (first, last)
    assert res.step == 150 and res.loss == last
    # the run's end state: a final checkpoint and the exported trainable weights
    assert res.checkpoint.name == "checkpoint-00000150" and res.weights.is_file()


def test_metrics_jsonl_contents(tmp_path):
    tr = build(tmp_path, max_steps=7, log_every=3, optim=OptimConfig(lr=1e-2, warmup_steps=4, grad_clip=0.5))
    tr.fit()
    rec = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rec] == [3, 6, 7]  # every log_every steps and the last step
    for r in rec:
        assert {"step", "loss", "lr", "grad_norm", "mae", "samples", "epoch", "elapsed_s"} <= set(r)
        assert math.isfinite(r["loss"]) and r["loss"] > 0 and r["grad_norm"] > 0
    # lr of the step logged (warmup (step+1)/4 for steps 0..3, then 1); samples = steps * batch
    assert rec[0]["lr"] == pytest.approx(1e-2 * 3 / 4) and rec[1]["lr"] == pytest.approx(1e-2)
    assert [r["samples"] for r in rec] == [12, 24, 28]
    assert [r["epoch"] for r in rec] == [0, 1, 1]  # 24 samples per epoch, batch 4


def test_logged_loss_is_the_mean_of_the_step_losses(tmp_path):
    seen = []

    def loss_fn(model, batch):
        loss = mse_loss(model, batch)
        seen.append(loss.item())
        return loss

    build(tmp_path, loss_fn=loss_fn, max_steps=4, log_every=2).fit()
    rec = read_metrics(tmp_path)
    assert [r["loss"] for r in rec] == pytest.approx([np.mean(seen[0:2]), np.mean(seen[2:4])], rel=1e-6)


def test_frozen_parameters_stay_and_trainable_ones_change(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(norm=True)
    before = params(model)
    cfg = config(tmp_path, max_steps=5, trainable=["*"], frozen=["encoder.0"])
    tr = Trainer(model, mse_loss, Regression(), cfg, logger=lambda s, r: None)
    assert tr.group_counts == {"default": 16 * 2 + 16 * 2 + 2}  # BatchNorm(16) + head(16->2)
    assert tr.frozen_count == 4 * 16 + 16
    assert {id(p) for g in tr.optimizer.param_groups for p in g["params"]} == \
        {id(p) for n, p in model.named_parameters() if not n.startswith("encoder.0.")}
    tr.fit()
    after = params(model)
    for k in ("encoder.0.weight", "encoder.0.bias"):
        assert torch.equal(before[k], after[k]), k
    for k in ("encoder.2.weight", "encoder.2.bias", "head.weight", "head.bias", "encoder.2.running_mean"):
        assert not torch.equal(before[k], after[k]), k


def test_only_trainable_patterns_train(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    before = params(model)
    cfg = config(tmp_path, max_steps=3, trainable=["re:^head\\.w"])
    Trainer(model, mse_loss, Regression(), cfg, logger=lambda s, r: None).fit()
    after = params(model)
    assert [k for k in before if not torch.equal(before[k], after[k])] == ["head.weight"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight"]


def test_pattern_syntax():
    assert pattern_matches("unet.down.0.stsa.to_q.weight", "unet")
    assert pattern_matches("unet.down.0.stsa.to_q.weight", "*.stsa")
    assert pattern_matches("unet.down.0.stsa.to_q.weight", "unet.*")
    assert not pattern_matches("unet.down.0.stsa.to_q.weight", "stsa")
    assert not pattern_matches("unetx.a", "unet")
    assert pattern_matches("a.attn2.to_k.weight", "re:attn[12]\\.to_k")
    assert not pattern_matches("a.attn3.to_k.weight", "re:attn[12]\\.to_k")


@pytest.mark.parametrize("key, pattern", [("trainable", "nope*"), ("frozen", "re:^zzz")])
def test_pattern_matching_nothing_is_an_error_naming_it(tmp_path, key, pattern):
    kw = {"trainable": [pattern]} if key == "trainable" else {"frozen": ["head", pattern]}
    with pytest.raises(InputError, match=re.escape(f"{key} pattern(s) '{pattern}' match no parameter of TinyNet")):
        build(tmp_path, **kw)


def test_nothing_trainable_and_empty_group_errors(tmp_path):
    with pytest.raises(InputError, match="no parameter trains"):
        build(tmp_path, trainable=["head"], frozen=["head"])
    with pytest.raises(InputError, match="param group 'g'.*match no parameter"):
        build(tmp_path, param_groups=[ParamGroup("g", ["decoder"])])


def test_param_groups_get_their_lr_and_are_logged(tmp_path):
    tr = build(tmp_path, max_steps=2, param_groups=[ParamGroup("head", ["head"], lr=1e-1, weight_decay=0.0)])
    assert tr.group_counts == {"head": 34, "default": 80}
    lrs = {g["name"]: (g["lr"], g["weight_decay"]) for g in tr.optimizer.param_groups}
    assert lrs == {"head": (1e-1, 0.0), "default": (1e-2, 1e-2)}
    tr.fit()
    rec = read_metrics(tmp_path)[-1]
    assert rec["lr/head"] == pytest.approx(0.1) and rec["lr/default"] == pytest.approx(0.01)


def test_grad_accumulation_equals_the_bigger_batch(tmp_path):
    opt = OptimConfig(lr=1e-2, grad_clip=1.0)
    a = build(tmp_path / "a", loss_fn=mse_loss, max_steps=4, batch_size=2, grad_accum=2, optim=opt)
    b = build(tmp_path / "b", loss_fn=mse_loss, max_steps=4, batch_size=4, grad_accum=1, optim=opt)
    a.fit()
    b.fit()
    pa, pb = params(a.model), params(b.model)
    assert any(not torch.equal(pa[k], params(TinyNet())[k]) for k in pa)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-6)
    la, lb = [r["loss"] for r in read_metrics(tmp_path / "a")], [r["loss"] for r in read_metrics(tmp_path / "b")]
    assert la == pytest.approx(lb, rel=1e-5)


def test_bf16_mixed_precision_on_cpu(tmp_path):
    try:
        tr = build(tmp_path, loss_fn=mse_loss, max_steps=4, mixed_precision="bf16")
    except (ValueError, RuntimeError) as e:  # an accelerate/torch build without CPU bf16 autocast
        pytest.skip(f"bf16 on CPU not supported here: {e}")
    dtypes = []
    tr.model.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    before = params(tr.model)
    tr.fit()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the linear layers ran in bf16 under autocast
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())  # master weights stay fp32
    assert not torch.equal(before["head.weight"], tr.model.head.weight)
    assert all(math.isfinite(r["loss"]) for r in read_metrics(tmp_path))


def test_fp16_on_cpu_is_explained():
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        TrainLoopConfig(mixed_precision="fp16", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="fp16 needs a CUDA GPU"):
            build("unused", mixed_precision="fp16", device="auto")


@pytest.mark.parametrize("kw, msg", [
    ({"max_steps": 0}, "max_steps must be >= 1"), ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
    ({"trainable": []}, "trainable is empty"), ({"frozen": ["re:("]}, "not a valid regular expression"),
    ({"checkpoint_weights": "some"}, "checkpoint_weights must be one of"),
    ({"param_groups": [ParamGroup("a", ["x"]), ParamGroup("a", ["y"])]}, "param group names must be unique"),
])
def test_loop_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainLoopConfig(**kw)


def test_optim_config_validation():
    with pytest.raises(ValueError, match="optim.lr_schedule must be one of"):
        OptimConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="optim.betas"):
        OptimConfig(betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="optim.name"):
        OptimConfig(name="sgd")


def test_recipe_yaml_loads_into_typed_config(tmp_path):
    p = tmp_path / "stage1.yaml"
    p.write_text("max_steps: 50\ntrainable: ['*.stsa']\n"
                 "param_groups:\n  - {name: proj, patterns: [clip_proj], lr: 1.0e-3}\n"
                 "optim: {lr: 2.0e-4, betas: [0.5, 0.999], lr_schedule: cosine, grad_clip: null}\n")
    cfg = load_config(TrainLoopConfig, p, ["optim.warmup_steps=10"])
    assert cfg.max_steps == 50 and cfg.trainable == ["*.stsa"] and cfg.optim.betas == (0.5, 0.999)
    assert cfg.optim.grad_clip is None and cfg.optim.warmup_steps == 10 and cfg.param_groups[0].lr == 1e-3
    p.write_text("optim: {learning_rate: 1}\n")
    with pytest.raises(InputError, match="learning_rate"):
        load_config(TrainLoopConfig, p)
    p.write_text("mixed_precision: fp16\ndevice: cpu\n")
    with pytest.raises(InputError, match="fp16 needs a CUDA GPU"):
        load_config(TrainLoopConfig, p)


def test_lr_schedules():
    cos = LRSchedule("cosine", warmup_steps=2, total_steps=10, min_ratio=0.1)
    assert [cos(s) for s in (0, 1, 2)] == pytest.approx([0.5, 1.0, 1.0])
    assert cos(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cos(10) == pytest.approx(0.1) and cos(50) == pytest.approx(0.1)
    lin = LRSchedule("linear", warmup_steps=0, total_steps=4)
    assert [lin(s) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert LRSchedule("constant", 0, 4)(3) == 1.0
    # LFDM / DabFusion: x0.1 at epochs 60, 90, 120 of 150 -> fractions 0.4, 0.6, 0.8
    ms = LRSchedule("multistep", 0, 150, milestones=(0.4, 0.6, 0.8), gamma=0.1)
    assert [ms(s) for s in (0, 59, 60, 89, 90, 119, 120, 149)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    with pytest.raises(ValueError, match="milestones"):
        OptimConfig(lr_schedule="multistep", milestones=[0.6, 0.4])


def test_sample_fn_is_called_and_does_not_perturb_training(tmp_path):
    calls = []

    def sample_fn(model, step, out_dir):
        calls.append((step, model.training, torch.is_grad_enabled()))
        torch.randn(100), random.random(), np.random.rand()  # consumes every RNG
        (out_dir / "sample.txt").write_text(str(step))

    tr = build(tmp_path / "a", max_steps=6, sample_every=2, model_kw={"dropout": 0.2})
    tr.sample_fn = sample_fn
    tr.fit()
    plain = build(tmp_path / "b", max_steps=6, model_kw={"dropout": 0.2})
    plain.fit()
    assert calls == [(2, False, False), (4, False, False), (6, False, False)]
    assert (tmp_path / "a/samples/step-00000004/sample.txt").read_text() == "4"
    assert tr.model.training
    pa, pb = params(tr.model), params(plain.model)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_gradient_checkpointing_toggle(tmp_path):
    class CkptNet(TinyNet):
        enabled = False

        def enable_gradient_checkpointing(self):
            self.enabled = True

    torch.manual_seed(0)
    model = CkptNet()
    Trainer(model, mse_loss, Regression(), config(tmp_path, gradient_checkpointing=True), logger=lambda s, r: None)
    assert model.enabled
    with pytest.raises(InputError, match="TinyNet has no enable_gradient_checkpointing"):
        build(tmp_path, gradient_checkpointing=True)


def test_any_iterable_of_batches_and_dict_losses(tmp_path):
    data = Regression(n=8)
    batches = [{"x": data.x[i:i + 4], "y": data.y[i:i + 4]} for i in (0, 4)]  # a list, cycled

    def loss_fn(model, batch):
        return {"loss": mse_loss(model, batch), "scale": 2.0}

    tr = build(tmp_path, loss_fn=loss_fn, data=batches, max_steps=5)
    tr.fit()
    rec = read_metrics(tmp_path)
    assert len(rec) == 5 and all(r["scale"] == 2.0 for r in rec)
    with pytest.raises(TypeError, match="loss_fn must return a scalar tensor"):
        build(tmp_path / "bad", loss_fn=lambda m, b: m(b["x"]), max_steps=1).fit()


def test_infinite_loader_stream_order_and_resume():
    ds = Regression(n=10)
    ids = lambda batch: batch["index"].tolist()  # noqa: E731
    a = InfiniteLoader(ds, batch_size=4, shuffle=True, seed=3)
    stream = sum((ids(next(a)) for _ in range(5)), [])  # 20 samples = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert stream[:10] != stream[10:] and stream[:10] != list(range(10))  # reshuffled per epoch
    assert (a.epoch, a.index) == (2, 0)
    b = InfiniteLoader(ds, batch_size=2, shuffle=True, seed=3)  # the stream does not depend on the batch size
    assert sum((ids(next(b)) for _ in range(10)), []) == stream
    c = InfiniteLoader(ds, batch_size=4, shuffle=True, seed=3)
    next(c), next(c), next(c)
    state = c.state_dict()
    d = InfiniteLoader(ds, batch_size=4, shuffle=True, seed=3)
    d.load_state_dict(state)
    assert (d.epoch, d.index) == (1, 2) and ids(next(d)) == stream[12:16] == ids(next(c))
    with pytest.raises(InputError, match="num_samples=10.*num_samples=9"):
        InfiniteLoader(Regression(n=9), batch_size=4, seed=3).load_state_dict(state)


def test_infinite_loader_shards_and_workers():
    ds = Regression(n=10)
    ids = lambda batch: batch["index"].tolist()  # noqa: E731
    whole = InfiniteLoader(ds, batch_size=4, seed=1)
    r0 = InfiniteLoader(ds, batch_size=2, seed=1, rank=0, world_size=2)
    r1 = InfiniteLoader(ds, batch_size=2, seed=1, rank=1, world_size=2)
    for _ in range(3):
        assert ids(next(r0)) + ids(next(r1)) == ids(next(whole))
    assert r0.state_dict()["index"] == r1.state_dict()["index"] == whole.state_dict()["index"]
    w = InfiniteLoader(ds, batch_size=4, seed=1, num_workers=1)
    s = InfiniteLoader(ds, batch_size=4, seed=1)
    for _ in range(2):
        assert ids(next(w)) == ids(next(s))
    assert w.state_dict() == {**s.state_dict()}
    w.load_state_dict(InfiniteLoader(ds, batch_size=4, seed=1).state_dict())  # rewinds the worker stream
    assert ids(next(w)) == ids(next(InfiniteLoader(ds, batch_size=4, seed=1)))
    w.close()


def test_non_finite_loss_stops_the_run(tmp_path):
    with pytest.raises(FloatingPointError, match="training loss is nan at step 1"):
        build(tmp_path, loss_fn=lambda m, b: mse_loss(m, b) * float("nan"), max_steps=3).fit()


def test_noisy_loss_is_deterministic_given_the_seed(tmp_path):
    a = build(tmp_path / "a", max_steps=3, model_kw={"dropout": 0.3})
    a.fit()
    b = build(tmp_path / "b", max_steps=3, model_kw={"dropout": 0.3})
    b.fit()
    c = build(tmp_path / "c", max_steps=3, model_kw={"dropout": 0.3}, seed=1)
    c.fit()
    assert torch.equal(a.model.head.weight, b.model.head.weight)
    assert not torch.equal(a.model.head.weight, c.model.head.weight)
    assert noisy_loss  # used by build's default
