"""The training loop of the small single-network tools the project trains itself (SynthPose, t2m-tiny).

AdamW with linear warm-up then cosine decay, log / evaluation / checkpoint cadence, and exact resume: the checkpoint
holds the network, the optimiser, the step, the history and both random generators (the loop's numpy generator,
which draws the batches, and torch's). The domain libraries use it (they may not import `dancegen.core`, whose
accelerate-based `Trainer` serves the diffusion methods). Torch is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dancegen.errors import InputError


def cosine_lr(step: int, lr: float, warmup: int, steps: int) -> float:
    """Learning rate at ``step``: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train_network(net, tc: Any, out: Path, resume: str, seed: int,
                  batch_loss: Callable[[np.random.Generator], Any],
                  validate: Callable[[], tuple[Any, str]], say: Callable[[str], None],
                  grad_clip: float = 0.0, loss_digits: int = 4) -> tuple[int, list]:
    """Train ``net`` to ``tc.steps``, resuming from ``out/checkpoint.pt`` (or the file ``resume`` names).

    Args:
        net: the network (on ``tc.device``).
        tc: the loop settings: ``lr``, ``weight_decay``, ``warmup``, ``steps``, ``log_every``, ``eval_every``,
            ``checkpoint_every``, ``device``.
        out: the run folder (the checkpoint is written there, atomically).
        resume: "auto" (the run folder's checkpoint when it exists), "never", or a checkpoint file.
        seed: seed of the batch generator.
        batch_loss: ``rng -> scalar loss`` of one training batch (draws its batch from ``rng``).
        validate: ``() -> (scores, message)``; run at ``eval_every`` and at the end (``net`` is put back in training
            mode after it).
        say: progress messages.
        grad_clip: clip the gradient norm to this (0: no clipping).
        loss_digits: decimals of the logged loss.

    Returns:
        ``(step, history)``: the final step and the logged ``{"step", "loss", "lr"}`` / ``{"step", "val"}`` rows.

    Raises:
        InputError: ``resume`` names a checkpoint file that does not exist.
    """
    import torch

    from dancegen.io.atomic import atomic_path

    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    rng = np.random.default_rng(seed)
    step, history = 0, []
    ckpt = out / "checkpoint.pt"
    if resume not in ("auto", "never"):
        ckpt = Path(resume)
        if not ckpt.is_file():
            raise InputError("no such checkpoint", ckpt)
    if resume != "never" and ckpt.is_file():
        state = torch.load(ckpt, map_location=tc.device, weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        step, history = state["step"], state["history"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        say(f"resumed from {ckpt} at step {step}")

    def lr_at(k: int) -> float:
        return cosine_lr(k, tc.lr, tc.warmup, tc.steps)

    net.train()
    running = []
    while step < tc.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = batch_loss(rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        step += 1
        running.append(loss.item())
        if step % tc.log_every == 0 or step == tc.steps:
            history.append({"step": step, "loss": float(np.mean(running)), "lr": lr_at(step - 1)})
            running = []
            say(f"step {step}/{tc.steps} loss {history[-1]['loss']:.{loss_digits}f}")
        if step % tc.eval_every == 0 or step == tc.steps:
            scores, message = validate()
            history.append({"step": step, "val": scores})
            say(f"step {step}: {message}")
            net.train()
        if step % tc.checkpoint_every == 0 or step == tc.steps:
            with atomic_path(out / "checkpoint.pt") as tmp:
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "history": history,
                            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, tmp)
    return step, history
