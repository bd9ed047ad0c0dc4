"""Classifier-free guidance (Ho & Salimans 2022): the guided combine, batched/sequential evaluation, condition dropout.

- ``cfg_combine``: ``pred = pred_u + s * (pred_c - pred_u)`` (Ho & Salimans Eq. 6 written for any model output: eps,
  v or x0 alike, since the combine is linear).
- ``guided_prediction``: one denoiser evaluation with CFG, batched (one call on the concatenated ``2B`` batch,
  unconditional half first as in diffusers) or sequential (two calls on ``B``, half the peak activation memory).
- ``guided_fn``: the same combine around two separate model functions (DabFusion/LFDM's null-condition model).
- ``drop_condition``: training-time condition dropout, the other half of CFG: each sample's condition is replaced by
  the null condition with probability p (DisCo ``drop_ref`` 0.05 for DYL; LFDM 0.1 for Dance Any Beat), with the
  same rows dropped in every tensor of a structured condition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

UnetFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
CFG_MODES = ("batched", "sequential")


def cfg_combine(pred_uncond: torch.Tensor, pred_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance combine ``pred_u + scale * (pred_c - pred_u)``.

    Args:
        pred_uncond: the unconditional prediction, any shape.
        pred_cond: the conditional prediction, same shape.
        scale: guidance scale s; 1 returns ``pred_cond`` itself (exactly, not up to rounding), 0 the unconditional.

    Returns:
        The guided prediction, the inputs' shape.
    """
    if scale == 1.0:
        return pred_cond
    return pred_uncond + scale * (pred_cond - pred_uncond)


def guided_fn(fn_cond: Callable[..., torch.Tensor], fn_uncond: Callable[..., torch.Tensor], scale: float
              ) -> Callable[..., torch.Tensor]:
    """Wrap two model functions of the same arguments into one guided function (``cfg_combine`` of their outputs).

    For models whose conditional and null branches are separate closures (e.g. Dance Any Beat's
    ``model_fn(x, t)`` with the music condition bound in). The unconditional branch is evaluated first.

    Args:
        fn_cond / fn_uncond: ``(*args, **kwargs) -> prediction``.
        scale: guidance scale; 1 returns ``fn_cond`` itself (the null branch is never run).

    Returns:
        ``(*args, **kwargs) -> guided prediction``.
    """
    if scale == 1.0:
        return fn_cond

    def fn(*args, **kwargs):
        pred_u = fn_uncond(*args, **kwargs)
        return cfg_combine(pred_u, fn_cond(*args, **kwargs), scale)

    return fn


def concat_batch(a: Any, b: Any) -> Any:
    """Concatenate two conditioning structures along the batch dim (tensors: dim 0; other values must agree).

    Used for batched CFG: ``concat_batch(uncond, cond)`` puts the unconditional half first (diffusers convention).

    Args:
        a / b: a tensor ``(B, ...)``, a dict / list / tuple of such (nested), None, or a plain value.

    Returns:
        The same structure with tensors ``(2B, ...)``.

    Raises:
        ValueError: when the structures differ (keys, lengths) or plain values disagree.
    """
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b], dim=0)
    if isinstance(a, dict):
        if a.keys() != b.keys():
            raise ValueError(f"cond and uncond have different keys: {sorted(a)} vs {sorted(b)}")
        return {k: concat_batch(a[k], b[k]) for k in a}
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            raise ValueError("cond and uncond lists differ in length")
        return type(a)(concat_batch(x, y) for x, y in zip(a, b, strict=True))
    if a is None and b is None:
        return None
    if a != b:
        raise ValueError(f"non-tensor conditioning values differ between cond and uncond: {a!r} vs {b!r}")
    return a


def guided_prediction(
    unet_fn: UnetFn,
    latents: torch.Tensor,
    t: torch.Tensor,
    cond: Any,
    uncond: Any = None,
    guidance_scale: float = 1.0,
    cfg_mode: str = "batched",
) -> torch.Tensor:
    """One denoiser evaluation with classifier-free guidance.

    Args:
        unet_fn: ``(latents, t, cond) -> prediction``.
        latents: ``(B, ...)``.
        t: the timestep (0-d tensor).
        cond / uncond: conditioning of the conditional / unconditional branch (uncond None: no guidance).
        guidance_scale: s; 1 (or no uncond) evaluates only the conditional branch.
        cfg_mode: "batched" (one call on ``2B``) or "sequential" (two calls on ``B``; lower peak memory).

    Returns:
        The guided prediction, ``latents``' shape.

    Raises:
        ValueError: for an unknown ``cfg_mode``.
    """
    if cfg_mode not in CFG_MODES:
        raise ValueError(f"cfg_mode must be 'batched' or 'sequential', got {cfg_mode!r}")
    if uncond is None or guidance_scale == 1.0:
        return unet_fn(latents, t, cond)
    if cfg_mode == "batched":
        pred = unet_fn(torch.cat([latents, latents], 0), t, concat_batch(uncond, cond))
        pred_u, pred_c = pred.chunk(2)
    else:
        pred_u = unet_fn(latents, t, uncond)
        pred_c = unet_fn(latents, t, cond)
    return cfg_combine(pred_u, pred_c, guidance_scale)


def _leaves(x: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) dict / list / tuple structure, in traversal order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [leaf for v in x.values() for leaf in _leaves(v)]
    if isinstance(x, (list, tuple)):
        return [leaf for v in x for leaf in _leaves(v)]
    return []


def _replace_rows(x: Any, null: Any, keep: torch.Tensor, path: str) -> Any:
    """``x`` with the rows where ``keep`` is False replaced by ``null`` (a matching structure; None = zeros)."""
    if isinstance(x, torch.Tensor):
        if null is None:
            null = torch.zeros((), dtype=x.dtype, device=x.device)
        elif not isinstance(null, torch.Tensor):
            raise ValueError(f"null{path} must be a tensor or None for a tensor condition, got {type(null).__name__}")
        else:
            null = null.to(device=x.device, dtype=x.dtype)
        mask = keep.to(x.device).view(-1, *([1] * (x.ndim - 1)))
        try:  # the null broadcasts over the batch: (B, ...), (1, ...) or the per-sample shape (...)
            return torch.where(mask, x, null)
        except RuntimeError as err:
            raise ValueError(f"null{path} of shape {tuple(null.shape)} does not broadcast to the condition's "
                             f"{tuple(x.shape)}") from err
    if isinstance(x, dict):
        if null is not None and (not isinstance(null, dict) or null.keys() != x.keys()):
            raise ValueError(f"null{path} must be None or a dict with the condition's keys {sorted(x)}")
        return {k: _replace_rows(v, None if null is None else null[k], keep, f"{path}[{k!r}]") for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        if null is not None and (not isinstance(null, (list, tuple)) or len(null) != len(x)):
            raise ValueError(f"null{path} must be None or a sequence of the condition's length {len(x)}")
        out = [_replace_rows(v, None if null is None else null[i], keep, f"{path}[{i}]") for i, v in enumerate(x)]
        return type(x)(out)
    return x  # None and plain values (strings, flags) pass through


def drop_condition(cond: Any, prob: float, generator: torch.Generator | None = None, null: Any = None) -> Any:
    """Replace whole rows (samples) of a condition by the null condition with probability ``prob`` (CFG training).

    One Bernoulli draw per sample decides for every tensor of the structure together (e.g. DAB's music embedding and
    per-frame beats, or a dict of ControlNet and reference conditions), so a sample is either fully conditioned or
    fully unconditioned.

    Args:
        cond: a tensor ``(B, ...)``, or a (nested) dict / list / tuple of tensors ``(B, ...)`` with one B; None and
            plain values inside are passed through.
        prob: drop probability per sample in [0, 1]; 0 returns ``cond`` itself (same object, no random draw), 1
            replaces every row.
        generator: source of the coin flips. The draw is ``torch.rand(B)`` on the generator's device (CPU when None,
            using the global CPU generator), so a CPU generator gives the same decisions whatever device ``cond`` is
            on. Sample i is kept when its draw is ``>= prob``.
        null: the unconditional replacement: None (zeros), or for a tensor condition a tensor broadcastable to it
            (``(B, ...)``, ``(1, ...)`` or the per-sample shape ``(...)``, e.g. the encoding of an empty prompt or a
            blank reference), or for a structure a matching structure of such tensors / None.

    Returns:
        The same structure (new tensors) with the dropped rows replaced.

    Raises:
        ValueError: ``prob`` outside [0, 1], tensors with different batch sizes, or a ``null`` that does not match.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {prob}")
    leaves = _leaves(cond)
    if not leaves or prob == 0.0:
        return cond
    batch = leaves[0].shape[0] if leaves[0].ndim else None
    if batch is None or any(leaf.ndim == 0 or leaf.shape[0] != batch for leaf in leaves):
        raise ValueError(f"every tensor of the condition needs the same batch size first; got shapes "
                         f"{[tuple(leaf.shape) for leaf in leaves]}")
    device = generator.device if generator is not None else torch.device("cpu")
    keep = torch.rand(batch, generator=generator, device=device) >= prob
    return _replace_rows(cond, null, keep, "")
