"""The shared training loop of every method (issue 4), on HF accelerate: multi-GPU with `accelerate launch` unchanged.

One step is one optimizer update over `grad_accum` micro-batches. The loop is method-agnostic: a method supplies a
model, `loss_fn(model, batch) -> loss | (loss, {name: value})`, data, and optionally `sample_fn(model, step, out_dir)`
(which writes pictures or videos). Parameters train or stay frozen by name patterns (train_config.py), e.g. the two
stages of dance-your-latents.md §3: `trainable: ["*.stsa"]`, then `frozen: [pose_controlnet, background_controlnet]`.

Outputs in `output_dir`: `metrics.jsonl` (one JSON object per logged step), `checkpoints/checkpoint-<step>/` (exact
resume, see checkpoint.py), `samples/step-<step>/` (whatever sample_fn writes), `trainable.safetensors` at the end.

Determinism: the loop never reseeds global RNGs (house-style §6): the caller seeds before building the model; the
InfiniteLoader's order comes from `config.seed`; checkpoints restore the RNG states, so training 2N steps straight is
bit-identical to N steps, stop, resume, N more. sample_fn runs with the RNG states saved and restored around it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dancegen.core.checkpoint import (
    export_weights,
    load_checkpoint,
    read_checkpoint_state,
    resolve_resume,
    save_checkpoint,
    use_trainable_only_weights,
)
from dancegen.core.train_config import OptimConfig, ParamGroup, TrainLoopConfig, fp16_on_cpu_message, pattern_matches
from dancegen.errors import InputError

METRICS_FILE = "metrics.jsonl"
WEIGHTS_FILE = "trainable.safetensors"


# --- data -----------------------------------------------------------------------------------------------------------


class InfiniteLoader:
    """Endless batches from a map-style dataset, with a resumable position (epoch, index).

    Epoch `e` visits every sample once, in `np.random.default_rng([seed, e]).permutation(n)` order when shuffling.
    The stream of samples does not depend on the batch size: batches run across epoch boundaries and nothing is
    dropped. With `world_size` processes, each call takes the next `world_size * batch_size` samples of the stream
    and process `rank` gets its slice, so processes see disjoint samples and all keep the same position.

    Args:
        dataset: Anything with `__len__` and `__getitem__(int)`.
        batch_size: Samples per batch on this process.
        shuffle: Permute each epoch (else natural order).
        seed: Seed of the epoch permutations.
        collate: Turns a list of samples into a batch (default `torch.utils.data.default_collate`).
        num_workers: Loading processes (a torch DataLoader over this stream). The sample order stays exact on
            resume; random augmentation inside workers is not restored.
        rank: This process's index; world_size: the number of processes.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                 collate: Callable[[list], Any] | None = None, num_workers: int = 0, rank: int = 0,
                 world_size: int = 1):
        if len(dataset) == 0:
            raise InputError("the training dataset is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.collate, self.num_workers = collate, num_workers
        self.rank, self.world_size = 0, 1
        self.shard(rank, world_size)
        self.epoch, self.index = 0, 0
        self._perm: tuple[int, np.ndarray] | None = None
        self._workers: Iterator | None = None

    def shard(self, rank: int, world_size: int) -> None:
        """Take slice `rank` of every `world_size * batch_size` samples."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.rank, self.world_size = rank, world_size
        self.close()

    def __len__(self) -> int:
        """Samples per epoch."""
        return len(self.dataset)

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            n = len(self.dataset)
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._perm = (epoch, order)
        return self._perm[1]

    def _take(self, epoch: int, index: int) -> tuple[list[int], int, int]:
        """This process's indices of the next batch from position (epoch, index), and the position after it."""
        n, want, out = len(self.dataset), self.batch_size * self.world_size, []
        while len(out) < want:
            k = min(want - len(out), n - index)
            out.extend(self._order(epoch)[index:index + k].tolist())
            index += k
            if index == n:
                epoch, index = epoch + 1, 0
        return out[self.rank * self.batch_size:(self.rank + 1) * self.batch_size], epoch, index

    def __iter__(self) -> InfiniteLoader:
        return self

    def __next__(self):
        if self.num_workers > 0:
            if self._workers is None:
                self._workers = iter(self._worker_loader())
            batch = next(self._workers)
            _, self.epoch, self.index = self._take(self.epoch, self.index)
            return batch
        indices, self.epoch, self.index = self._take(self.epoch, self.index)
        return self._collate_fn()([self.dataset[i] for i in indices])

    def _collate_fn(self):
        if self.collate is not None:
            return self.collate
        from torch.utils.data import default_collate

        return default_collate

    def _worker_loader(self):
        import copy

        import torch

        snapshot = copy.copy(self)  # frozen at the current position; no reference cycle through the workers
        snapshot._workers = None
        return torch.utils.data.DataLoader(
            self.dataset, batch_sampler=_IndexStream(snapshot), num_workers=self.num_workers,
            collate_fn=self._collate_fn(), generator=torch.Generator().manual_seed(self.seed))

    def close(self) -> None:
        """Stop the worker processes (they restart at the current position on the next batch)."""
        self._workers = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "num_samples": len(self.dataset),
                "batch_size": self.batch_size, "world_size": self.world_size, "shuffle": int(self.shuffle)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        mine = self.state_dict()
        for key in ("seed", "num_samples", "shuffle"):
            if state[key] != mine[key]:
                raise InputError(f"cannot resume the data stream: the checkpoint has {key}={state[key]}, "
                                 f"this run has {key}={mine[key]}")
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self.close()


class _IndexStream:
    """Batch sampler for the worker DataLoader: a loader's index lists from its position on, forever."""

    def __init__(self, loader: InfiniteLoader):
        self.loader = loader

    def __iter__(self):
        epoch, index = self.loader.epoch, self.loader.index
        while True:
            indices, epoch, index = self.loader._take(epoch, index)
            yield indices


def _cycle(data: Iterable) -> Iterator:
    """Re-iterate `data` forever (calling `set_epoch` when it has one). A one-shot iterator is used once."""
    if isinstance(data, Iterator):
        yield from data
        raise ValueError("the training data iterator ran out; pass a re-iterable (Dataset, DataLoader, list) or an "
                         "InfiniteLoader")
    epoch = 0
    while True:
        if hasattr(data, "set_epoch"):
            data.set_epoch(epoch)
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training data yields no batches")
        epoch += 1


# --- parameters, optimizer, schedule --------------------------------------------------------------------------------


def _name_examples(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def select_trainable(model, trainable: list[str], frozen: list[str]) -> list[str]:
    """Set `requires_grad` on every parameter: True iff a `trainable` pattern and no `frozen` pattern selects it.

    The model's earlier flags are overwritten. Returns the trainable names.

    Raises:
        InputError: a pattern selects no parameter (named in the message), or nothing is left to train.
    """
    names = [n for n, _ in model.named_parameters()]
    for key, patterns in (("trainable", trainable), ("frozen", frozen)):
        unused = [p for p in patterns if not any(pattern_matches(n, p) for n in names)]
        if unused:
            raise InputError(f"{key} pattern(s) {', '.join(map(repr, unused))} match no parameter of "
                             f"{type(model).__name__} (names look like: {_name_examples(names)})")
    chosen = []
    for n, p in model.named_parameters():
        on = any(pattern_matches(n, t) for t in trainable) and not any(pattern_matches(n, f) for f in frozen)
        p.requires_grad_(on)
        if on:
            chosen.append(n)
    if not chosen:
        raise InputError(f"no parameter trains: trainable {list(trainable)} minus frozen {list(frozen)} is empty")
    return chosen


@dataclass
class _Group:
    name: str
    lr: float
    weight_decay: float
    names: list[str]
    params: list


def group_parameters(model, groups: list[ParamGroup], optim: OptimConfig) -> list[_Group]:
    """Split the trainable parameters into the `groups` (first match wins) and `default`.

    Raises:
        InputError: a group's patterns select no parameter of the model at all.
    """
    all_names = [n for n, _ in model.named_parameters()]
    out = [_Group(g.name, g.lr if g.lr is not None else optim.lr,
                  g.weight_decay if g.weight_decay is not None else optim.weight_decay, [], []) for g in groups]
    default = _Group("default", optim.lr, optim.weight_decay, [], [])
    for g in groups:
        if not any(pattern_matches(n, p) for n in all_names for p in g.patterns):
            raise InputError(f"param group {g.name!r}: pattern(s) {list(g.patterns)} match no parameter of "
                             f"{type(model).__name__} (names look like: {_name_examples(all_names)})")
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        matching = (o for o, g in zip(out, groups, strict=True) if any(pattern_matches(n, q) for q in g.patterns))
        target = next(matching, default)
        target.names.append(n)
        target.params.append(p)
    return out + [default]


def build_optimizer(groups: list[_Group], optim: OptimConfig):
    """AdamW (or Adam) over the non-empty groups, each with its lr and weight decay."""
    import torch

    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[optim.name]
    torch_groups = [{"params": g.params, "lr": g.lr, "weight_decay": g.weight_decay, "name": g.name}
                    for g in groups if g.params]
    return cls(torch_groups, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, weight_decay=optim.weight_decay)


@dataclass
class LRSchedule:
    """lr multiplier per optimizer step: linear warmup ((step+1)/warmup), then constant, cosine or linear decay
    to `min_ratio` at `total_steps`, or `gamma ** (milestones passed)` (multistep)."""

    kind: str
    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.0
    milestones: tuple[float, ...] = ()  # multistep: fractions of total_steps
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        import math

        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "multistep":  # step decay at fixed points of the run (LFDM's MultiStepLR over epochs)
            return self.gamma ** sum(step >= round(m * self.total_steps) for m in self.milestones)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress
        return self.min_ratio + (1.0 - self.min_ratio) * shape


def build_scheduler(optimizer, optim: OptimConfig, total_steps: int):
    import torch

    schedule = LRSchedule(optim.lr_schedule, optim.warmup_steps, total_steps, optim.min_lr_ratio,
                          tuple(optim.milestones), optim.gamma)

    def factor(step: int) -> float:  # a plain function: LambdaLR then keeps only its step count in checkpoints,
        return schedule(step)  # so a resumed run follows its own config (e.g. a longer max_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- accelerate, logging, RNG ---------------------------------------------------------------------------------------


def make_accelerator(config: TrainLoopConfig):
    """An `Accelerator` for `config` (CPU when the device resolves to cpu).

    In a single process, accelerate's process-wide state is reset first, so that one Python session can run several
    trainings with different precisions (stage 1 then stage 2, or tests). Under `accelerate launch` it is kept.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from dancegen.runtime import resolve_device

    device = resolve_device(config.device)
    if config.mixed_precision == "fp16" and device == "cpu":
        raise InputError(fp16_on_cpu_message())
    if PartialState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    # step_scheduler_with_optimizer=False: one scheduler step per optimizer step whatever the process count, so
    # warmup_steps and max_steps count optimizer updates.
    return Accelerator(cpu=device == "cpu", mixed_precision=config.mixed_precision,
                       step_scheduler_with_optimizer=False)


@contextlib.contextmanager
def preserve_rng():
    """Restore the Python, numpy and torch (CPU and CUDA) RNG states on exit."""
    import random

    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


class MetricsLog:
    """`metrics.jsonl`: one JSON object per logged step, appended. On resume, lines after the resumed step (logged
    after the checkpoint by an interrupted run) are dropped, so no step appears twice."""

    def __init__(self, path: str | os.PathLike, resume_step: int, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if enabled and self.path.exists():
            from dancegen.io.atomic import write_text

            keep = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            write_text(self.path, "".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class ConsoleLogger:
    """Default logger: one status line per logged step on stderr (dancegen.console, silent with --quiet)."""

    def __init__(self, max_steps: int):
        self.max_steps = max_steps

    def __call__(self, step: int, record: dict[str, Any]) -> None:
        from dancegen.console import info

        skip = {"step", "loss", "lr", "elapsed_s", "samples", "epoch"}
        extra = "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in skip and isinstance(v, float))
        info(f"step {step}/{self.max_steps}  loss {record['loss']:.4g}  lr {record['lr']:.3g}  {extra}".rstrip())


def _split_loss(out) -> tuple[Any, dict[str, Any]]:
    import torch

    if isinstance(out, dict):
        logs = dict(out)
        loss = logs.pop("loss", None)
    elif isinstance(out, (tuple, list)) and len(out) == 2:
        loss, logs = out
    else:
        loss, logs = out, {}
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError("loss_fn must return a scalar tensor, (loss, {name: value}) or {'loss': ..., name: value}; "
                        f"got {type(loss).__name__}")
    return loss.reshape(()), dict(logs or {})


# --- the loop -------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What `Trainer.fit` did: steps done, the last logged loss, the last checkpoint and exported weights."""

    step: int
    loss: float | None
    checkpoint: Path | None
    weights: Path | None
    output_dir: Path


class Trainer:
    """Method-agnostic training loop on accelerate.

    Args:
        model: A torch module. Its parameters are frozen / unfrozen by `config.trainable` and `config.frozen`.
        loss_fn: `loss_fn(model, batch)` -> scalar loss tensor, or `(loss, {name: scalar})`, or
            `{"loss": loss, name: scalar, ...}`. Runs under the mixed-precision autocast; the batch is already on
            the device. Extra scalars are averaged and logged next to the loss.
        data: A map-style torch Dataset (wrapped in an InfiniteLoader of `config.batch_size`, shuffled with
            `config.seed`), an InfiniteLoader, a torch DataLoader (prepared by accelerate; its position is not
            restored on resume), or any re-iterable of batches. An object with `state_dict`/`load_state_dict` is
            stored in checkpoints.
        config: The loop config.
        sample_fn: `sample_fn(model, step, out_dir)`, called every `config.sample_every` steps on the main process
            with the unwrapped model in eval mode, under no_grad, with the RNG states restored afterwards.
        param_groups: Replaces `config.param_groups` when given.
        logger: `logger(step, record)` called on the main process for every metrics record (default: a console
            line).
        announce: say the trainable groups and the frozen parameter count at the start (off for training that is a
            step inside another verb, e.g. a character pack's adapters).
    """

    def __init__(self, model, loss_fn: Callable, data, config: TrainLoopConfig, sample_fn: Callable | None = None,
                 param_groups: list[ParamGroup] | None = None, logger: Callable | None = None,
                 announce: bool = True):
        # Building the trainer leaves the global RNG states as the caller seeded them (first imports of some libraries,
        # e.g. rich, draw from Python's `random`), so a run is the same whether or not it is the first in its process.
        with preserve_rng():
            self.config, self.loss_fn, self.sample_fn = config, loss_fn, sample_fn
            self.logger = logger if logger is not None else ConsoleLogger(config.max_steps)
            self.accelerator = acc = make_accelerator(config)
            self.output_dir = Path(config.output_dir)
            if acc.is_main_process:
                self.output_dir.mkdir(parents=True, exist_ok=True)

            self.trainable_names = select_trainable(model, list(config.trainable), list(config.frozen))
            groups = group_parameters(model, list(config.param_groups if param_groups is None else param_groups),
                                      config.optim)
            self.group_counts = {g.name: sum(p.numel() for p in g.params) for g in groups}
            self.frozen_count = sum(p.numel() for p in model.parameters() if not p.requires_grad)
            if config.gradient_checkpointing:
                enable = getattr(model, "enable_gradient_checkpointing", None) or getattr(
                    model, "gradient_checkpointing_enable", None)
                if enable is None:
                    raise InputError(f"gradient_checkpointing is on, but {type(model).__name__} has no "
                                     "enable_gradient_checkpointing()")
                enable()

            optimizer = build_optimizer(groups, config.optim)
            scheduler = build_scheduler(optimizer, config.optim, config.max_steps)
            self.model, self.optimizer, self.scheduler = acc.prepare(model, optimizer, scheduler)
            self._params = [p for p in self.model.parameters() if p.requires_grad]
            self.data = self._wrap_data(data)
            self._data_has_state = hasattr(self.data, "state_dict") and hasattr(self.data, "load_state_dict") and \
                not _is_torch_dataloader(self.data)
            if self._data_has_state:
                acc.register_for_checkpointing(self.data)
            if config.checkpoint_weights == "trainable":
                use_trainable_only_weights(acc)
            self.step = 0
            if announce:
                self._report_groups(groups)

    def _wrap_data(self, data):
        import torch

        acc, cfg = self.accelerator, self.config
        if isinstance(data, InfiniteLoader):
            if acc.num_processes > 1 and data.world_size == 1:
                data.shard(acc.process_index, acc.num_processes)
            return data
        if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
            return InfiniteLoader(data, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers,
                                  rank=acc.process_index, world_size=acc.num_processes)
        if _is_torch_dataloader(data):
            return acc.prepare(data)
        return data

    def _report_groups(self, groups: list[_Group]) -> None:
        if not self.accelerator.is_main_process:
            return
        from dancegen.console import info

        for g in groups:
            if g.params:
                info(f"train group {g.name}: {self.group_counts[g.name]:,} parameters in {len(g.params)} tensors, "
                     f"lr {g.lr:g}, weight decay {g.weight_decay:g}")
            elif g.name != "default":
                info(f"train group {g.name}: no trainable parameter (all its parameters are frozen); skipped")
        info(f"frozen: {self.frozen_count:,} parameters")

    # -- one optimizer step --

    def _train_step(self, batches: Iterator):
        import torch
        from accelerate.utils import send_to_device

        acc, cfg = self.accelerator, self.config
        total, extras = torch.zeros((), device=acc.device), {}
        for micro in range(cfg.grad_accum):
            batch = send_to_device(next(batches), acc.device)
            # Gradients are all-reduced once per step, on the last micro-batch.
            sync = contextlib.nullcontext() if micro == cfg.grad_accum - 1 else acc.no_sync(self.model)
            with sync:
                with acc.autocast():
                    loss, logs = _split_loss(self.loss_fn(self.model, batch))
                acc.backward(loss / cfg.grad_accum)  # mean over micro-batches == mean over the full batch
            total = total + loss.detach().float()
            for k, v in logs.items():
                v = v.detach().float().reshape(()) if isinstance(v, torch.Tensor) else float(v)
                extras[k] = extras.get(k, 0.0) + v
        grad_norm = None
        if cfg.optim.grad_clip:
            grad_norm = acc.clip_grad_norm_(self._params, cfg.optim.grad_clip)
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total / cfg.grad_accum, {k: v / cfg.grad_accum for k, v in extras.items()}, grad_norm, lrs

    # -- the loop --

    def fit(self) -> TrainResult:
        """Train from the resumed (or initial) step to `config.max_steps`; checkpoint, sample and log on the way."""
        acc, cfg = self.accelerator, self.config
        elapsed0, resumed = 0.0, resolve_resume(self.output_dir, cfg.resume)
        if resumed is not None:
            self._check_same_trainable(resumed)
            state = load_checkpoint(acc, resumed)
            self.step, elapsed0 = int(state["step"]), float(state.get("elapsed_s", 0.0))
            if acc.is_main_process:
                from dancegen.console import info

                info(f"resumed from {resumed} at step {self.step}" + (
                    "" if self._data_has_state else " (the data position is not restored: the data has no state)"))
        metrics = MetricsLog(self.output_dir / METRICS_FILE, self.step, enabled=acc.is_main_process)
        batches = self.data if isinstance(self.data, InfiniteLoader) else _cycle(self.data)
        self.model.train()

        t0, last_loss, checkpoint = time.perf_counter(), None, resumed
        window: dict[str, Any] = {}
        n_window = 0
        while self.step < cfg.max_steps:
            loss, extras, grad_norm, lrs = self._train_step(batches)
            self.step += 1
            n_window += 1
            for k, v in {"loss": loss, **extras}.items():
                window[k] = window.get(k, 0.0) + v
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                record = self._record(window, n_window, grad_norm, lrs, elapsed0 + time.perf_counter() - t0)
                last_loss = record["loss"]
                metrics.write(record)
                if acc.is_main_process:
                    with preserve_rng():
                        self.logger(self.step, record)
                window, n_window = {}, 0
            if cfg.sample_every and self.sample_fn is not None and self.step % cfg.sample_every == 0:
                self._sample()
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                checkpoint = save_checkpoint(acc, self.output_dir, self.step,
                                             self._loop_state(elapsed0 + time.perf_counter() - t0),
                                             keep=cfg.keep_checkpoints)

        weights = None
        if cfg.export_trainable and acc.is_main_process:
            weights = self.output_dir / WEIGHTS_FILE
            export_weights(acc.unwrap_model(self.model), weights, metadata={"step": str(self.step)})
        acc.wait_for_everyone()
        return TrainResult(self.step, last_loss, checkpoint, weights, self.output_dir)

    def _check_same_trainable(self, checkpoint: Path) -> None:
        saved = read_checkpoint_state(checkpoint).get("trainable_names")
        if saved is not None and saved != self.trainable_names:
            gone, new = sorted(set(saved) - set(self.trainable_names)), sorted(set(self.trainable_names) - set(saved))
            raise InputError(f"the trainable parameters differ from the checkpoint's ({len(gone)} no longer train, "
                             f"e.g. {_name_examples(gone, 2) or '-'}; {len(new)} newly train, e.g. "
                             f"{_name_examples(new, 2) or '-'}): resume with the same trainable/frozen patterns, "
                             "or start a new stage in another output_dir", checkpoint)

    def _record(self, window: dict[str, Any], n: int, grad_norm, lrs: list[float], elapsed: float) -> dict[str, Any]:
        import torch

        acc, cfg = self.accelerator, self.config
        keys = sorted(window)  # same order on every process
        vec = torch.stack([torch.as_tensor(window[k], dtype=torch.float32, device=acc.device) for k in keys]) / n
        vec = acc.reduce(vec, reduction="mean").tolist()
        values = dict(zip(keys, vec, strict=True))
        if not np.isfinite(values["loss"]) and cfg.mixed_precision != "fp16":
            raise FloatingPointError(f"the training loss is {values['loss']} at step {self.step}")
        record: dict[str, Any] = {"step": self.step, "loss": values.pop("loss"), "lr": lrs[0]}
        if len(lrs) > 1:
            record.update({f"lr/{g['name']}": lr for g, lr in zip(self.optimizer.param_groups, lrs, strict=True)})
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        record.update(values)
        record["samples"] = self.step * cfg.grad_accum * acc.num_processes * self._batch_size()
        if isinstance(self.data, InfiniteLoader):
            record["epoch"] = self.data.epoch
        record["elapsed_s"] = round(elapsed, 3)
        return record

    def _batch_size(self) -> int:
        return self.data.batch_size if isinstance(self.data, InfiniteLoader) else self.config.batch_size

    def _loop_state(self, elapsed: float) -> dict[str, Any]:
        cfg, acc = self.config, self.accelerator
        state = {"max_steps": cfg.max_steps, "elapsed_s": round(elapsed, 3), "num_processes": acc.num_processes,
                 "batch_size": self._batch_size(), "grad_accum": cfg.grad_accum,
                 "mixed_precision": cfg.mixed_precision, "trainable": list(cfg.trainable), "frozen": list(cfg.frozen),
                 "trainable_names": self.trainable_names}
        if isinstance(self.data, InfiniteLoader):
            state["data"] = self.data.state_dict()  # informative; the restored copy lives in custom_checkpoint_0.pkl
        return state

    def _sample(self) -> None:
        import torch

        acc = self.accelerator
        if acc.is_main_process:
            out = self.output_dir / "samples" / f"step-{self.step:08d}"
            out.mkdir(parents=True, exist_ok=True)
            model = acc.unwrap_model(self.model)
            model.eval()
            try:
                with preserve_rng(), torch.no_grad():
                    self.sample_fn(model, self.step, out)
            finally:
                model.train()
        acc.wait_for_everyone()


def _is_torch_dataloader(data) -> bool:
    import torch

    return isinstance(data, torch.utils.data.DataLoader)
