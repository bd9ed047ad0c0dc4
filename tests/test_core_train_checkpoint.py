"""Checkpoints of the training loop (dancegen/core/checkpoint.py): exact resume, atomic saves, pruning, export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_core_train_toys import Regression, TinyNet, build, mse_loss, params

from dancegen.core.checkpoint import (
    export_weights,
    latest_checkpoint,
    list_checkpoints,
    load_weights,
    resolve_resume,
)
from dancegen.core.train import read_metrics
from dancegen.core.train_config import OptimConfig
from dancegen.errors import InputError

# Dropout + batch norm (torch RNG, buffers), numpy jitter in the dataset, torch + Python RNG in the loss, shuffled data
# crossing epochs (24 samples, batch 4 -> 6 steps per epoch): resume has to restore all of it to be bit-identical.
TOY = dict(model_kw={"dropout": 0.2, "norm": True}, data_kw={"jitter": 0.05})


def _run(out, max_steps, **kw):
    data = Regression(**TOY["data_kw"])
    return build(out, data=data, model_kw=TOY["model_kw"], max_steps=max_steps, **kw)


def _assert_same_state(a, b):
    pa, pb = params(a.model), params(b.model)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k  # bit-identical, not close
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[i][k], sb[i][k])


@pytest.mark.parametrize("checkpoint_weights", ["trainable", "all"])
def test_resume_is_bit_identical(tmp_path, checkpoint_weights):
    straight = _run(tmp_path / "a", 10, checkpoint_every=5, checkpoint_weights=checkpoint_weights)
    straight.fit()
    first = _run(tmp_path / "b", 5, checkpoint_every=5, checkpoint_weights=checkpoint_weights)
    first.fit()
    assert first.data.state_dict()["epoch"] == 0 and first.data.state_dict()["index"] == 20
    # a new process would rebuild the model from the recipe (different seed here: the checkpoint must win)
    second = _run(tmp_path / "b", 10, checkpoint_every=5, checkpoint_weights=checkpoint_weights, seed=7)
    res = second.fit()
    assert res.step == 10
    _assert_same_state(straight, second)
    assert straight.data.state_dict() == second.data.state_dict()
    la, lb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in lb] == list(range(1, 11))
    assert [(r["loss"], r["mae"]) for r in la] == [(r["loss"], r["mae"]) for r in lb]


def test_trainable_only_checkpoints_hold_trainable_tensors_and_buffers(tmp_path):
    tr = _run(tmp_path, 2, checkpoint_every=2, frozen=["encoder.0"])
    tr.fit()
    saved = load_file(tmp_path / "checkpoints/checkpoint-00000002/model.safetensors")
    assert set(saved) == {"encoder.2.weight", "encoder.2.bias", "encoder.2.running_mean", "encoder.2.running_var",
                          "encoder.2.num_batches_tracked", "head.weight", "head.bias"}
    state = json.loads((tmp_path / "checkpoints/checkpoint-00000002/trainer_state.json").read_text())
    assert state["step"] == 2 and state["data"]["index"] == 8 and state["frozen"] == ["encoder.0"]
    # resuming with other trainable patterns is refused with a clear message
    other = _run(tmp_path, 4, checkpoint_every=2, frozen=["encoder"])
    with pytest.raises(InputError, match=r"trainable parameters differ from the checkpoint's \(2 no longer train, "
                                         r"e.g. encoder.2.bias, encoder.2.weight; 0 newly train"):
        other.fit()
    wider = _run(tmp_path, 4, checkpoint_every=2)
    with pytest.raises(InputError, match="2 newly train, e.g. encoder.0.bias, encoder.0.weight"):
        wider.fit()


def test_crash_while_saving_keeps_the_previous_checkpoint_and_auto_resumes(tmp_path):
    opt = OptimConfig(lr=1e-2, lr_schedule="cosine", warmup_steps=2)
    straight = _run(tmp_path / "a", 9, checkpoint_every=3, optim=opt)
    straight.fit()

    crashing = _run(tmp_path / "b", 9, checkpoint_every=3, optim=opt)
    save_state = crashing.accelerator.save_state

    def failing_save(path, *args, **kw):
        out = save_state(path, *args, **kw)  # the files are written, then the "disk" fails
        if "00000006" in str(path):
            raise OSError("disk full (simulated)")
        return out

    crashing.accelerator.save_state = failing_save
    with pytest.raises(OSError, match="simulated"):
        crashing.fit()
    ckdir = tmp_path / "b/checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["checkpoint-00000003"]  # the temp folder was removed
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4, 5, 6]

    # what a hard kill leaves behind: a temp folder, and a folder without trainer_state.json
    (ckdir / ".checkpoint-00000008.tmp").mkdir()
    (ckdir / "checkpoint-00000008").mkdir()
    (ckdir / "checkpoint-00000008" / "model.safetensors").write_bytes(b"half")
    assert latest_checkpoint(tmp_path / "b") == ckdir / "checkpoint-00000003"
    assert resolve_resume(tmp_path / "b", "auto") == ckdir / "checkpoint-00000003"
    with pytest.raises(InputError, match="incomplete"):
        resolve_resume(tmp_path / "b", str(ckdir / "checkpoint-00000008"))

    resumed = _run(tmp_path / "b", 9, checkpoint_every=3, optim=opt)
    resumed.fit()
    _assert_same_state(straight, resumed)
    # metrics logged after checkpoint 3 by the crashed run were dropped, not duplicated
    assert [r["loss"] for r in read_metrics(tmp_path / "b")] == [r["loss"] for r in read_metrics(tmp_path / "a")]
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == \
        ["checkpoint-00000003", "checkpoint-00000006", "checkpoint-00000009"]
    assert not (ckdir / ".checkpoint-00000008.tmp").exists()  # temp leftovers are cleaned after the next good save
    assert (ckdir / "checkpoint-00000008").exists()  # an incomplete folder is ignored, not deleted


def test_pruning_keeps_the_newest(tmp_path):
    _run(tmp_path / "a", 5, checkpoint_every=1, keep_checkpoints=2).fit()
    assert [p.name for p in list_checkpoints(tmp_path / "a")] == ["checkpoint-00000004", "checkpoint-00000005"]
    _run(tmp_path / "b", 7, checkpoint_every=3, keep_checkpoints=0).fit()
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == \
        ["checkpoint-00000003", "checkpoint-00000006", "checkpoint-00000007"]  # every 3 and the end


def test_resume_never_and_explicit_path(tmp_path):
    first = _run(tmp_path, 4, checkpoint_every=2)
    first.fit()
    again = _run(tmp_path, 4, checkpoint_every=2, resume="never")
    again.fit()
    _assert_same_state(first, again)  # started over from step 0 with the same seed
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    from_two = _run(tmp_path / "other", 4, checkpoint_every=2,
                    resume=str(tmp_path / "checkpoints/checkpoint-00000002"))
    from_two.fit()
    _assert_same_state(first, from_two)
    run_dir = _run(tmp_path / "other2", 6, checkpoint_every=2, resume=str(tmp_path))  # a run folder: its latest
    assert run_dir.fit().step == 6
    assert [r["step"] for r in read_metrics(tmp_path / "other2")] == [5, 6]
    with pytest.raises(InputError, match="not found"):
        _run(tmp_path / "x", 2, resume=str(tmp_path / "nowhere")).fit()


def test_resume_at_max_steps_does_nothing(tmp_path):
    first = _run(tmp_path, 3)
    first.fit()
    again = _run(tmp_path, 3)
    res = again.fit()
    assert res.step == 3 and res.checkpoint.name == "checkpoint-00000003"
    _assert_same_state(first, again)


def test_export_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(norm=True)
    with torch.no_grad():
        model.encoder[2].running_mean.fill_(0.5)
    for p in model.encoder[0].parameters():
        p.requires_grad_(False)
    names = export_weights(model, tmp_path / "w.safetensors")
    assert set(names) == {"encoder.2.weight", "encoder.2.bias", "encoder.2.running_mean", "encoder.2.running_var",
                          "encoder.2.num_batches_tracked", "head.weight", "head.bias"}
    torch.manual_seed(1)
    fresh = TinyNet(norm=True)
    frozen_before = fresh.encoder[0].weight.detach().clone()
    assert sorted(load_weights(fresh, tmp_path / "w.safetensors")) == sorted(names)
    assert torch.equal(fresh.head.weight, model.head.weight)
    assert torch.equal(fresh.encoder[2].running_mean, torch.full((16,), 0.5))
    assert torch.equal(fresh.encoder[0].weight, frozen_before)  # not in the file: untouched
    assert export_weights(model, tmp_path / "h.safetensors", patterns=["head"]) == ["head.weight", "head.bias"]
    with pytest.raises(InputError, match="'decoder' match no tensor"):
        export_weights(model, tmp_path / "x.safetensors", patterns=["decoder"])
    with pytest.raises(InputError, match="do not exist in TinyNet"):
        load_weights(TinyNet(norm=False), tmp_path / "w.safetensors")
    with pytest.raises(InputError, match="shape mismatch"):
        torch.nn.Module.__setattr__(fresh, "head", torch.nn.Linear(16, 3))
        load_weights(fresh, tmp_path / "h.safetensors")


def test_trainer_writes_trainable_weights_at_the_end(tmp_path):
    tr = build(tmp_path, loss_fn=mse_loss, max_steps=2, trainable=["head"])
    res = tr.fit()
    assert res.weights == tmp_path / "trainable.safetensors"
    saved = load_file(res.weights)
    assert set(saved) == {"head.weight", "head.bias"}
    assert torch.equal(saved["head.weight"], tr.model.head.weight.detach())


def test_stage_resume_sends_a_checkpoint_path_to_its_stage(tmp_path):
    from dancegen.core.checkpoint import stage_resume

    dirs = [tmp_path / "stage-1-a", tmp_path / "stage-2-b", tmp_path / "stage-3-c"]
    ck = dirs[1] / "checkpoints" / "checkpoint-00000010"
    assert [stage_resume("auto", dirs, k) for k in range(3)] == ["auto"] * 3
    assert [stage_resume("never", dirs, k) for k in range(3)] == ["never"] * 3
    assert [stage_resume(str(ck), dirs, k) for k in range(3)] == ["auto", str(ck.resolve()), "never"]
    assert [stage_resume(str(tmp_path / "elsewhere"), dirs, k) for k in range(3)] == ["auto"] * 3
