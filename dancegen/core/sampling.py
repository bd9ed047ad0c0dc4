"""The one sampling loop of dancegen: any diffusers scheduler, CFG, per-step hooks and a gradient switch.

Every method samples through ``sample`` (DYL: DDIM 50 + CFG; Dancing Avatar: DPM-Solver++ 25 + CFG 7.5; LatentMan
spec §2.5/§2.6/§2.8: Spatial Latent Alignment in a ``before_model`` hook and pixel-wise guidance
``x_{t-1} <- x_{t-1} - delta * grad_{x_t} loss(D(x0_hat(x_t)))`` in an ``after_step`` hook at the steps listed in
``grad_steps``) and inverts through ``invert`` (Edit-Your-Motion §2.6: DDIM inversion with the sampling conditions,
no CFG). One step of ``sample``:

1. ``before_model(state)`` may replace x_t;
2. the denoiser runs on ``scheduler.scale_model_input(x_t)`` (with CFG, ``guidance.guided_prediction``), under
   ``torch.no_grad`` except at ``grad_steps``, where it runs with gradients on a leaf copy of x_t
   (``state.latents_grad``);
3. ``scheduler.step`` gives x_{t-1}, always without gradients on detached tensors;
4. ``after_step(state)`` may replace x_{t-1} (``guidance_gradient`` gives grad_{x_t} of a loss on ``state.x0``);
5. ``callback(i, t, x_{t-1})``.

The loop never looks at the latents' layout: ``(B, C, F, H, W)``, frames folded into the batch, or image latents are
all the denoiser's business.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dancegen.core.guidance import guided_prediction

UnetFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
StepHook = Callable[["StepState"], "torch.Tensor | None"]


@dataclass
class StepState:
    """What a hook sees of one sampling step.

    Attributes:
        i: step index, 0-based (``scheduler.timesteps[i] == t``).
        num_steps: total number of steps.
        t: the timestep (0-d tensor, as the scheduler gives it).
        latents: x_t as the scheduler sees it (after ``before_model``), detached.
        scheduler: the scheduler being stepped.
        model_output: the (guided) denoiser output; None in ``before_model``. At a grad step it carries the graph
            back to ``latents_grad``.
        latents_grad: at a grad step, the leaf copy of x_t (``requires_grad``) the denoiser ran on; else None.
        prev: x_{t-1} as the scheduler produced it (None in ``before_model``).
    """

    i: int
    num_steps: int
    t: torch.Tensor
    latents: torch.Tensor
    scheduler: Any = None
    model_output: torch.Tensor | None = None
    latents_grad: torch.Tensor | None = None
    prev: torch.Tensor | None = None
    _x0: torch.Tensor | None = field(default=None, init=False, repr=False)

    @property
    def x0(self) -> torch.Tensor:
        """The predicted clean latents x0_hat(x_t) (``predicted_x0``), computed on first use.

        At a grad step it is computed from ``latents_grad`` with gradients enabled, so a loss on it backpropagates
        to x_t (whatever the ambient grad mode of the hook).

        Raises:
            RuntimeError: in ``before_model`` (no model output yet).
        """
        if self._x0 is None:
            if self.model_output is None:
                raise RuntimeError("state.x0 is available after the model call (after_step), not in before_model")
            grad = self.latents_grad is not None
            with torch.set_grad_enabled(grad):
                sample = self.latents_grad if grad else self.latents
                self._x0 = predicted_x0(self.scheduler, self.model_output, self.t, sample, step_index=self.i)
        return self._x0


def _sigma_at(scheduler, t: torch.Tensor, step_index: int | None) -> float | None:
    """The scheduler's own sigma = sqrt((1 - a) / a) at ``t`` when it keeps a per-step ``sigmas`` table, else None.

    Sigma-table schedulers (Euler, DPM-Solver, UniPC, ...) may place timesteps off the integer grid of
    ``alphas_cumprod`` (Karras sigmas, interpolation), so their x0 must use the sigma they step with.
    """
    sigmas, timesteps = getattr(scheduler, "sigmas", None), getattr(scheduler, "timesteps", None)
    if not isinstance(sigmas, torch.Tensor) or timesteps is None or len(sigmas) != len(timesteps) + 1:
        return None  # no table, or set_timesteps not called yet (the table then holds the training sigmas)
    if step_index is None or not 0 <= step_index < len(timesteps) or timesteps[step_index] != t:
        match = (timesteps.to(torch.as_tensor(t).device) == t).nonzero()
        if len(match) == 0:
            return None
        step_index = int(match[0])
    return float(sigmas[step_index])


def predicted_x0(scheduler, model_output: torch.Tensor, t: torch.Tensor | int, sample: torch.Tensor,
                 step_index: int | None = None) -> torch.Tensor:
    """The predicted clean sample x0_hat from one model output, for any ``prediction_type``.

    With a = alphas_cumprod[t] (or 1 / (1 + sigma^2) for a scheduler stepping with its own sigma table), in the
    variance-preserving parametrisation x_t = sqrt(a) x0 + sqrt(1 - a) eps:
    epsilon: x0 = (x_t - sqrt(1 - a) eps) / sqrt(a); v_prediction: x0 = sqrt(a) x_t - sqrt(1 - a) v; sample: the
    output itself. Sigma-space schedulers (Euler, LMS, Heun: ``init_noise_sigma`` > 1) keep x = x_t / sqrt(a); the
    same formulas are applied to x * sqrt(a). No clipping or thresholding (DDIM's ``clip_sample`` /
    ``thresholding`` options are not mirrored). Differentiable in ``model_output`` and ``sample``.

    Args:
        scheduler: a diffusers scheduler with ``alphas_cumprod`` and ``config.prediction_type``.
        model_output: the denoiser's output for ``sample`` at ``t``, ``sample``'s shape.
        t: the timestep.
        sample: x_t in the scheduler's space (the latents the loop steps, before ``scale_model_input``).
        step_index: index of ``t`` in ``scheduler.timesteps`` when known (disambiguates repeated timesteps).

    Returns:
        x0_hat, ``sample``'s shape and dtype.

    Raises:
        NotImplementedError: for schedulers without ``alphas_cumprod`` (flow matching, EDM) or other prediction types.
    """
    pred_type = scheduler.config.prediction_type
    if pred_type in ("sample", "original_sample"):
        return model_output
    if pred_type not in ("epsilon", "v_prediction"):
        raise NotImplementedError(f"predicted_x0: prediction_type {pred_type!r} is not supported")
    if getattr(scheduler, "alphas_cumprod", None) is None or getattr(scheduler.config, "use_flow_sigmas", False):
        raise NotImplementedError(f"predicted_x0 needs a variance-preserving scheduler with alphas_cumprod; "
                                  f"{type(scheduler).__name__} has none")
    t = torch.as_tensor(t)
    sigma = _sigma_at(scheduler, t, step_index)
    if sigma is not None:
        alpha = torch.tensor(1.0 / (1.0 + sigma**2), dtype=torch.float64)
    else:
        alpha = scheduler.alphas_cumprod[int(t)].double()
    sqrt_a = alpha.sqrt().to(device=sample.device, dtype=sample.dtype)
    sqrt_1ma = (1 - alpha).sqrt().to(device=sample.device, dtype=sample.dtype)
    if float(getattr(scheduler, "init_noise_sigma", 1.0)) != 1.0:
        sample = sample * sqrt_a  # sigma space (x0 + sigma * eps) -> variance-preserving x_t
    if pred_type == "epsilon":
        return (sample - sqrt_1ma * model_output) / sqrt_a
    return sqrt_a * sample - sqrt_1ma * model_output


def guidance_gradient(state: StepState, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                      retain_graph: bool = False) -> torch.Tensor:
    """grad_{x_t} loss_fn(x0_hat(x_t)) at a grad step (LatentMan §2.8 pixel-wise guidance).

    Only x_t receives the gradient (``torch.autograd.grad``), so the denoiser's and VAE's parameters keep their
    ``.grad`` untouched. The result is also stored in ``state.latents_grad.grad``.

    Args:
        state: the ``after_step`` state of a step listed in ``grad_steps``.
        loss_fn: ``x0 -> scalar loss`` (e.g. decode with the VAE and compare pixels); run with gradients enabled.
        retain_graph: keep the graph for another ``guidance_gradient`` call at the same step.

    Returns:
        The gradient, x_t's shape, detached.

    Raises:
        RuntimeError: at a step that is not a grad step.
    """
    if state.latents_grad is None:
        raise RuntimeError(f"step {state.i} ran without gradients: list it in sample(..., grad_steps=...)")
    with torch.enable_grad():
        loss = loss_fn(state.x0)
        (grad,) = torch.autograd.grad(loss, state.latents_grad, retain_graph=retain_graph)
    state.latents_grad.grad = grad
    return grad


def _accepts(fn: Callable, name: str) -> bool:
    """Whether ``fn`` names the keyword ``name`` (a catch-all ``**kwargs`` does not count: it may reject it)."""
    return name in inspect.signature(fn).parameters


def _is_grad_step(grad_steps: Container[int] | Callable[[int], bool] | None, i: int) -> bool:
    if grad_steps is None:
        return False
    return bool(grad_steps(i)) if callable(grad_steps) else i in grad_steps


def sample(
    denoiser: UnetFn,
    latents: torch.Tensor,
    scheduler,
    num_inference_steps: int | None,
    *,
    cond: Any = None,
    uncond: Any = None,
    guidance_scale: float = 1.0,
    cfg_mode: str = "batched",
    generator: torch.Generator | list[torch.Generator] | None = None,
    eta: float = 0.0,
    timesteps: Sequence[int] | None = None,
    before_model: StepHook | None = None,
    after_step: StepHook | None = None,
    grad_steps: Container[int] | Callable[[int], bool] | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` (initial noise) with any diffusers scheduler.

    Args:
        denoiser: ``(latents, t, cond) -> model output`` (eps / v / x0 as ``scheduler.config.prediction_type``
            says), called on ``scheduler.scale_model_input(latents, t)``.
        latents: initial noise, any shape the denoiser takes; multiplied by ``scheduler.init_noise_sigma`` here.
        scheduler: a diffusers scheduler (DDIM, DDPM, DPMSolverMultistep, Euler, ...). ``set_timesteps`` is called on
            it first, which also resets multistep state, so the same object can be sampled with again.
        num_inference_steps: number of steps (ignored when ``timesteps`` is given).
        cond / uncond: conditioning of the conditional / unconditional branch (see ``guidance.guided_prediction``).
        guidance_scale: CFG scale s (1 = no guidance; only the conditional branch runs).
        cfg_mode: "batched" | "sequential".
        generator: for stochastic schedulers (DDIM eta > 0, DDPM, SDE-DPM-Solver, Euler with churn); passed to
            ``step`` when it takes one.
        eta: DDIM eta; must stay 0 for schedulers whose ``step`` takes no ``eta``.
        timesteps: custom descending timesteps, for schedulers whose ``set_timesteps`` takes ``timesteps``.
        before_model: ``hook(state) -> latents | None`` before the model call; a tensor replaces x_t (e.g.
            LatentMan's Spatial Latent Alignment). Runs under ``torch.no_grad``.
        after_step: ``hook(state) -> latents | None`` after the scheduler step; a tensor replaces x_{t-1} (e.g.
            pixel-wise guidance with ``guidance_gradient``). Runs under ``torch.no_grad``; ``state.x0`` and
            ``guidance_gradient`` enable gradients themselves at grad steps.
        grad_steps: step indices (a container, or ``i -> bool``) at which the denoiser runs with gradients on
            ``state.latents_grad``; everywhere else it runs under ``torch.no_grad``.
        callback: ``callback(i, t, latents)`` after each step (progress, previews).

    Returns:
        The denoised latents, ``latents``' shape, without autograd history.

    Raises:
        ValueError: eta != 0 for a scheduler without eta, or ``timesteps`` for one that cannot take them.
    """
    device = latents.device
    if timesteps is not None:
        if not _accepts(scheduler.set_timesteps, "timesteps"):
            raise ValueError(f"{type(scheduler).__name__}.set_timesteps takes no custom timesteps")
        scheduler.set_timesteps(timesteps=list(timesteps), device=device)
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)
    step_kwargs = {}
    if _accepts(scheduler.step, "eta"):
        step_kwargs["eta"] = eta
    elif eta != 0:
        raise ValueError(f"eta={eta} needs a scheduler whose step takes eta (DDIM); {type(scheduler).__name__} does not")
    if _accepts(scheduler.step, "generator"):
        step_kwargs["generator"] = generator

    z = latents.detach() * scheduler.init_noise_sigma
    steps = scheduler.timesteps
    for i, t in enumerate(steps):
        state = StepState(i=i, num_steps=len(steps), t=t, latents=z, scheduler=scheduler)
        if before_model is not None:
            with torch.no_grad():
                new = before_model(state)
            if new is not None:
                z = state.latents = new.detach()
        if _is_grad_step(grad_steps, i):
            with torch.enable_grad():
                state.latents_grad = z.clone().requires_grad_(True)
                model_in = scheduler.scale_model_input(state.latents_grad, t)
                pred = guided_prediction(denoiser, model_in, t, cond, uncond, guidance_scale, cfg_mode)
        else:
            with torch.no_grad():
                model_in = scheduler.scale_model_input(z, t)
                pred = guided_prediction(denoiser, model_in, t, cond, uncond, guidance_scale, cfg_mode)
        state.model_output = pred
        with torch.no_grad():
            z = state.prev = scheduler.step(pred.detach(), t, z, **step_kwargs).prev_sample
            if after_step is not None:
                new = after_step(state)  # guidance_gradient re-enables grad for its own graph
                if new is not None:
                    z = new.detach()
        if callback is not None:
            callback(i, t, z)
    return z


def invert(
    denoiser: UnetFn,
    latents: torch.Tensor,
    scheduler,
    num_inference_steps: int,
    *,
    cond: Any = None,
    callback: StepCallback | None = None,
    return_trajectory: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """DDIM inversion: clean latents -> the noise latents that DDIM sampling maps back to them (EYM §2.6, Eq. 6/17).

    Runs ``sample`` with diffusers' ``DDIMInverseScheduler`` built from ``scheduler.config`` (same timestep grid as
    sampling, ascending), so the denoiser sees the same conditioning machinery as in sampling; no CFG (EYM choice).

    Args:
        denoiser: ``(latents, t, cond) -> eps``, conditioned on the source (ControlNet, adapters, ...).
        latents: ``z_0 = E(x) * scaling_factor``, any shape the denoiser takes.
        scheduler: the sampling scheduler (or anything with a DDIM-compatible ``config``).
        num_inference_steps: number of inversion steps (use the sampling step count).
        cond: conditioning for the denoiser.
        callback: ``callback(step_index, t, latents)`` after each step.
        return_trajectory: also return the latents after every step (``[z_t1, ..., z_T]``).

    Returns:
        ``z_T`` (and the trajectory when asked).
    """
    from diffusers import DDIMInverseScheduler

    inverse = DDIMInverseScheduler.from_config(scheduler.config)
    traj: list[torch.Tensor] = []

    def record(i: int, t: torch.Tensor, z: torch.Tensor) -> None:
        if return_trajectory:
            traj.append(z)
        if callback is not None:
            callback(i, t, z)

    z = sample(denoiser, latents, inverse, num_inference_steps, cond=cond, callback=record)
    return (z, traj) if return_trajectory else z
