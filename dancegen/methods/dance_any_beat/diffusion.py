"""Gaussian diffusion over latent flow sequences: cosine schedule, eps loss, DDPM/DDIM with dynamic thresholding.

Follows DabFusion §3.4 / §4.1 [P]: T = 1000, the cosine schedule of Nichol & Dhariwal [26], the eps-MSE loss of Eq. 6,
ancestral sampling (Eq. 4) with dynamic thresholding at the 90th percentile (Imagen [33]). What the paper leaves out
comes from LFDM (spec dance-any-beat.md §2.4) [L]: fixed posterior variance, eps prediction, the dynamic thresholding
rule s = max(1, quantile_q(|x0|)), x0 <- clip(x0, -s, s) / s before the posterior mean, and null-condition dropout with
probability 0.1 for classifier-free guidance. DDIM (Song et al.) is the fast option (gap G4).

Ours [A]: ``known=(values, k)`` fixes the first k frames of every sample, for chaining clips so that the next clip
continues the previous one seamlessly. At every step the first k frames of x_t are replaced by
``q_sample(values, t)`` (RePaint-style replacement, Lugmayr et al. 2022), and the returned sample holds ``values``
exactly there.

The model is any callable ``model_fn(x_t, t) -> eps`` with x_t ``(B, C, F, h, w)`` and t ``(B,)`` long; the caller
closes over z0 and the conditions. All randomness comes from the given ``torch.Generator`` (drawn on its device,
then moved to the sample's device), so one seed gives identical samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]
PREDICTIONS = ("eps", "v")
Known = tuple[torch.Tensor, int]
SCHEDULES = ("cosine", "linear")


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.9999) -> torch.Tensor:
    """Cosine noise schedule (Nichol & Dhariwal 2021, Eq. 17) [P].

    alphas_bar(t) = f(t) / f(0) with f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), and
    beta_t = min(1 - alphas_bar(t) / alphas_bar(t - 1), max_beta) for t = 1..T.

    Returns:
        ``(T,)`` float64 betas.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    steps = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((steps / T) + s) / (1 + s) * math.pi / 2) ** 2
    alphas_bar = f / f[0]
    return (1 - alphas_bar[1:] / alphas_bar[:-1]).clamp(max=max_beta)


def linear_betas(T: int = 1000) -> torch.Tensor:
    """DDPM's linear schedule (1e-4 to 0.02 at T = 1000, scaled for other T); float64 ``(T,)``."""
    scale = 1000 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)


def _randn(shape: Sequence[int], generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


def _rand(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gen_device).to(device)


class GaussianDiffusion:
    """Discrete-time Gaussian diffusion with eps prediction (DDPM) for ``(B, C, F, h, w)`` samples.

    Args:
        timesteps: T (the paper: 1000).
        schedule: "cosine" (the paper) or "linear".
        dynamic_threshold: quantile q of |x0| for dynamic thresholding at sampling (the paper: 0.9); None clips x0
            to [-1, 1] instead.
        null_cond_prob: probability of the null condition in training (LFDM: 0.1), the default of
            ``drop_condition``.
        data_space: ``(to_data, from_data)`` when the diffusion runs on a transform of the data (the normalised flows
            of ``model.diffusion.target: normalized`` [A]): x0 is thresholded in data space, where the rule's
            [-1, 1] range holds, i.e. ``from_data(threshold(to_data(x0)))``. None: x0 is the data.
        prediction: what the model outputs: "eps" (the paper's, Eq. 6) or "v" = sqrt(a_t) eps - sqrt(1 - a_t) x0
            (Salimans & Ho 2022) [A]. The cosine schedule ends at alphas_bar ~ 2e-9, where x0 from an eps
            prediction multiplies its error by 1 / sqrt(alphas_bar) ~ 2e4 and only the thresholding keeps the first
            sampling step in range; from v, x0 = sqrt(a_t) x_t - sqrt(1 - a_t) v stays well conditioned at every t.
        velocity_weight: lambda of a temporal-difference term added to the loss [A],
            ``lambda * mean((err[:, :, 1:] - err[:, :, :-1]) ** 2)`` with err = output - target over the frame axis
            (dim 2): MDM's velocity loss (Tevet et al. 2023) written on the prediction error, which is x0's error
            times a per-sample constant for eps and v alike. An error constant over frames costs nothing there; an
            error in when the motion stops and starts does. 0: the paper's loss.
    """

    def __init__(self, timesteps: int = 1000, schedule: str = "cosine", dynamic_threshold: float | None = 0.9,
                 null_cond_prob: float = 0.1, data_space: tuple[Callable, Callable] | None = None,
                 prediction: str = "eps", velocity_weight: float = 0.0):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if dynamic_threshold is not None and not 0 < dynamic_threshold <= 1:
            raise ValueError(f"dynamic_threshold must be in (0, 1] or None, got {dynamic_threshold}")
        if not 0 <= null_cond_prob <= 1:
            raise ValueError(f"null_cond_prob must be in [0, 1], got {null_cond_prob}")
        self.num_timesteps = int(timesteps)
        self.schedule = schedule
        self.threshold_quantile = dynamic_threshold
        self.data_space = data_space
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.prediction = prediction
        if velocity_weight < 0:
            raise ValueError(f"velocity_weight must be >= 0, got {velocity_weight}")
        self.velocity_weight = float(velocity_weight)
        self.null_cond_prob = float(null_cond_prob)
        betas = cosine_betas(self.num_timesteps) if schedule == "cosine" else linear_betas(self.num_timesteps)
        alphas_bar = torch.cumprod(1 - betas, dim=0)
        alphas_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_bar[:-1]])
        self.betas = betas
        self.alphas_bar = alphas_bar
        self.alphas_bar_prev = alphas_bar_prev
        # q(x_{t-1} | x_t, x0) = N(coef_x0 * x0 + coef_xt * x_t, var) (DDPM Eq. 6-7), fixed variance [L].
        self.posterior_variance = betas * (1 - alphas_bar_prev) / (1 - alphas_bar)
        # var is 0 at t = 0; its log is clipped to the t = 1 value (only used where noise is added, t > 0).
        self.posterior_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.posterior_coef_x0 = betas * alphas_bar_prev.sqrt() / (1 - alphas_bar)
        self.posterior_coef_xt = (1 - alphas_bar_prev) * (1 - betas).sqrt() / (1 - alphas_bar)

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``values[t]`` shaped ``(B, 1, 1, ...)`` on like's device and dtype."""
        out = values[t.detach().cpu().long()].to(device=like.device, dtype=like.dtype)
        return out.view(-1, *([1] * (like.ndim - 1)))

    def _steps(self, t: int | torch.Tensor, batch: int, device) -> torch.Tensor:
        return torch.full((batch,), int(t), device=device, dtype=torch.long)

    def drop_condition(self, cond, prob: float | None = None, generator: torch.Generator | None = None):
        """``drop_condition`` with ``null_cond_prob`` as the default probability."""
        from dancegen.core.guidance import drop_condition

        return drop_condition(cond, self.null_cond_prob if prob is None else prob, generator)

    # ---------------------------------------------------------------- forward process and loss
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x0) = N(sqrt(alphas_bar_t) x0, (1 - alphas_bar_t) I) [P Eq. 3, closed form].

        Args:
            x0: clean samples ``(B, ...)``.
            t: ``(B,)`` long steps in [0, T).
            noise: eps like x0; drawn from ``generator`` when None.
        """
        if noise is None:
            noise = _randn(x0.shape, generator, x0.device, x0.dtype)
        return self._at(self.alphas_bar.sqrt(), t, x0) * x0 + self._at((1 - self.alphas_bar).sqrt(), t, x0) * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """x0 from the model output: with eps, (x_t - sqrt(1 - alphas_bar_t) eps) / sqrt(alphas_bar_t) (inverts
        ``q_sample`` given the noise); with v, sqrt(alphas_bar_t) x_t - sqrt(1 - alphas_bar_t) v."""
        if self.prediction == "v":
            return self._at(self.alphas_bar.sqrt(), t, x_t) * x_t - self._at((1 - self.alphas_bar).sqrt(), t, x_t) * out
        return self._at((1 / self.alphas_bar).sqrt(), t, x_t) * x_t - self._at((1 / self.alphas_bar - 1).sqrt(), t,
                                                                             x_t) * out

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the model learns to output for x_t = q_sample(x0, t, noise): the noise, or v."""
        if self.prediction == "v":
            return self._at(self.alphas_bar.sqrt(), t, x0) * noise - self._at((1 - self.alphas_bar).sqrt(), t, x0) * x0
        return noise

    def training_loss(self, model_fn: ModelFn, x0: torch.Tensor, generator: torch.Generator | None = None,
                      t: torch.Tensor | None = None) -> torch.Tensor:
        """Eps-prediction MSE, L = E_{t, x0, eps} ||eps - eps_theta(x_t, t)||^2 [P Eq. 6] (the v-MSE with
        ``prediction="v"``), plus ``velocity_weight`` times the MSE of the error's frame-to-frame differences.

        Args:
            model_fn: ``(x_t, t) -> eps``; the caller closes over z0 / conditions (and drops them with
                ``drop_condition`` for classifier-free guidance).
            x0: clean samples ``(B, C, F, h, w)``.
            generator: source of t (uniform in [0, T)) and eps.
            t: optional fixed steps ``(B,)`` instead of random ones.

        Returns:
            Scalar loss (mean over all elements).
        """
        b = x0.shape[0]
        if t is None:
            gen_device = generator.device if generator is not None else x0.device
            t = torch.randint(0, self.num_timesteps, (b,), generator=generator, device=gen_device).to(x0.device)
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
        out = model_fn(self.q_sample(x0, t, noise), t)
        err = out.float() - self.target(x0, t, noise).float()
        loss = torch.mean(err**2)
        if self.velocity_weight and err.shape[2] > 1:
            loss = loss + self.velocity_weight * torch.mean((err[:, :, 1:] - err[:, :, :-1]) ** 2)
        return loss

    # ---------------------------------------------------------------- sampling
    def dynamic_threshold(self, x0: torch.Tensor) -> torch.Tensor:
        """Imagen's dynamic thresholding [P, L]: s = max(1, quantile_q(|x0|)) per sample, x0 <- clip(x0, -s, s) / s.

        Samples already inside [-1, 1] are unchanged. With ``dynamic_threshold=None``, plain clipping to [-1, 1].
        With ``data_space``, the rule applies to ``to_data(x0)`` and the result is mapped back.
        """
        if self.data_space is not None:
            to_data, from_data = self.data_space
            return from_data(self._threshold(to_data(x0)))
        return self._threshold(x0)

    def _threshold(self, x0: torch.Tensor) -> torch.Tensor:
        if self.threshold_quantile is None:
            return x0.clamp(-1, 1)
        flat = x0.detach().reshape(x0.shape[0], -1).abs().float()
        s = torch.quantile(flat, self.threshold_quantile, dim=1).clamp(min=1.0)
        s = s.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) / s

    def _check_known(self, known: Known | None, shape: Sequence[int]) -> tuple[torch.Tensor, int] | None:
        if known is None:
            return None
        values, k = known
        k = int(k)
        if k == 0:
            return None
        b, c, f, h, w = shape
        if not 0 < k <= f or tuple(values.shape) != (b, c, k, h, w):
            raise ValueError(f"known values must be (B, C, k, h, w) = ({b}, {c}, {k}, {h}, {w}) with 0 < k <= F, "
                             f"got {tuple(values.shape)} and k={k}")
        return values, k

    def _replace_known(self, x: torch.Tensor, known, t: int, generator) -> torch.Tensor:
        """First k frames of x_t <- q_sample(values, t) (fresh noise) [A]."""
        if known is None:
            return x
        values, k = known
        values = values.to(device=x.device, dtype=x.dtype)
        x = x.clone()
        x[:, :, :k] = self.q_sample(values, self._steps(t, x.shape[0], x.device), generator=generator)
        return x

    @staticmethod
    def _finish(x: torch.Tensor, known) -> torch.Tensor:
        if known is not None:
            values, k = known
            x = x.clone()
            x[:, :, :k] = values.to(device=x.device, dtype=x.dtype)
        return x

    @staticmethod
    def _start(shape, generator, device, dtype) -> torch.Tensor:
        if device is None:
            device = generator.device if generator is not None else "cpu"
        return _randn(shape, generator, torch.device(device), dtype)

    @torch.no_grad()
    def ddpm_sample(self, model_fn: ModelFn, shape: Sequence[int], generator: torch.Generator | None = None,
                    progress: ProgressFn | None = None, known: Known | None = None, device=None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Ancestral sampling over all T steps [P Eq. 4, L]: x0 from eps, dynamically thresholded, then the
        posterior mean plus fixed-variance noise.

        Args:
            model_fn: ``(x_t, t) -> eps``.
            shape: ``(B, C, F, h, w)``.
            generator: source of all noise (same seed -> same sample).
            progress: called as ``progress(i, n)`` after step i of n.
            known: ``(values (B, C, k, h, w), k)``: the first k frames are given [A] (module docstring).
            device: device of the sample (default: the generator's, else CPU); dtype: its dtype.

        Returns:
            ``(B, C, F, h, w)`` sample; without ``known`` it lies in [-1, 1] (the last step returns the
            thresholded x0).
        """
        known = self._check_known(known, shape)
        x = self._start(shape, generator, device, dtype)
        n = self.num_timesteps
        for i, step in enumerate(reversed(range(n))):
            x = self._replace_known(x, known, step, generator)
            t = self._steps(step, x.shape[0], x.device)
            x0 = self.dynamic_threshold(self.predict_x0(x, t, model_fn(x, t)))
            mean = self._at(self.posterior_coef_x0, t, x) * x0 + self._at(self.posterior_coef_xt, t, x) * x
            if step > 0:
                noise = _randn(x.shape, generator, x.device, x.dtype)
                x = mean + (0.5 * self._at(self.posterior_log_variance, t, x)).exp() * noise
            else:
                x = mean
            if progress is not None:
                progress(i + 1, n)
        return self._finish(x, known)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """The ``steps`` sampled steps, descending, evenly spread over [0, T) and ending at 0."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be in [1, {self.num_timesteps}], got {steps}")
        ts = torch.linspace(0, self.num_timesteps - 1, steps, dtype=torch.float64).round().long().tolist()
        return sorted(set(ts), reverse=True)

    @torch.no_grad()
    def ddim_sample(self, model_fn: ModelFn, shape: Sequence[int], steps: int = 50, eta: float = 0.0,
                    generator: torch.Generator | None = None, progress: ProgressFn | None = None,
                    known: Known | None = None, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """DDIM sampling (Song et al. 2021, Eq. 12) with the same dynamic thresholding of x0 (gap G4: the fast option).

        eps is recomputed from the thresholded x0 so that the update stays consistent with it. ``eta`` = 0 is
        deterministic given the start noise; ``eta`` = 1 has the DDPM posterior variance. Other arguments as in
        ``ddpm_sample``.
        """
        known = self._check_known(known, shape)
        x = self._start(shape, generator, device, dtype)
        ts = self.ddim_timesteps(steps)
        n = len(ts)
        for i, step in enumerate(ts):
            prev = ts[i + 1] if i + 1 < n else -1
            x = self._replace_known(x, known, step, generator)
            t = self._steps(step, x.shape[0], x.device)
            ab = float(self.alphas_bar[step])
            ab_prev = float(self.alphas_bar[prev]) if prev >= 0 else 1.0
            x0 = self.dynamic_threshold(self.predict_x0(x, t, model_fn(x, t)))
            eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
            sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
            x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma ** 2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * _randn(x.shape, generator, x.device, x.dtype)
            if progress is not None:
                progress(i + 1, n)
        return self._finish(x, known)
