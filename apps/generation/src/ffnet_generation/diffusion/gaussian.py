"""Gaussian diffusion: forward process, posterior, learned-variance hybrid loss, DDPM and DDIM samplers.

Conventions are those of ADM / DiT / U-DiT (epsilon prediction; with ``learned_range`` the model outputs
``2*C`` channels: epsilon and an interpolation value v in [-1, 1] between log(beta_t) and the clipped log
posterior variance), so checkpoints, loss curves and step counts line up with what users of those code bases know.
A respaced chain (:func:`create_diffusion` with ``steps``) is the same class with fewer betas and a
``timestep_map`` that translates its step indices back to the timesteps the model was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

from metamixer.train.errors import FFNetError

from .likelihood import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .schedules import get_named_beta_schedule, respaced_betas, space_timesteps

__all__ = ["GaussianDiffusion", "create_diffusion", "VARIANCE_TYPES", "LOSS_TYPES"]

VARIANCE_TYPES = ("learned_range", "fixed_small", "fixed_large")
#: hybrid = MSE(eps) + L_vb (DiT/U-DiT); rescaled_hybrid multiplies L_vb by T/1000 (ADM); mse = eps loss only
LOSS_TYPES = ("hybrid", "rescaled_hybrid", "mse")

ModelFn = Callable[..., torch.Tensor]


class GaussianDiffusion:
    """Discrete-time Gaussian diffusion over ``len(betas)`` steps (see module docstring for conventions)."""

    def __init__(self, betas: np.ndarray, *, variance_type: str = "learned_range", loss_type: str = "hybrid",
                 timestep_map: Iterable[int] | None = None, original_num_steps: int | None = None) -> None:
        if variance_type not in VARIANCE_TYPES:
            raise FFNetError(f"diffusion.variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}")
        if loss_type not in LOSS_TYPES:
            raise FFNetError(f"diffusion.loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if loss_type == "mse" and variance_type == "learned_range":
            raise FFNetError("diffusion.loss_type='mse' trains no variance; use 'hybrid' with learned_range "
                             "or a fixed variance_type")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise FFNetError("betas must be a 1-D array in (0, 1]")
        self.variance_type = variance_type
        self.loss_type = loss_type
        self.betas = betas
        self.num_timesteps = len(betas)
        self.original_num_steps = original_num_steps or self.num_timesteps
        self.timestep_map = np.asarray(list(timestep_map) if timestep_map is not None
                                       else range(self.num_timesteps), dtype=np.int64)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, posterior_variance)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # the variance is 0 at t=0: clip the log with the t=1 value, as ADM does
        first = self.posterior_variance[1] if self.num_timesteps > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # ------------------------------------------------------------------ helpers
    @property
    def learn_sigma(self) -> bool:
        return self.variance_type == "learned_range"

    @staticmethod
    def _extract(arr: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """arr[t] as a tensor shaped [B, 1, 1, ...] in the dtype/device of ``like`` (computed in float64)."""
        out = torch.from_numpy(arr).to(device=t.device)[t].to(like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Timesteps the network sees: the original-chain index of each respaced step."""
        return torch.from_numpy(self.timestep_map).to(t.device)[t]

    # ------------------------------------------------------------------ forward process
    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log-variance of q(x_t | x_0)."""
        mean = self._extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
        var = self._extract(1.0 - self.alphas_cumprod, t, x_start)
        return mean, var, torch.log(var)

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
        noise = torch.randn_like(x_start) if noise is None else noise
        return (self._extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self._extract(self.posterior_mean_coef1, t, x_t) * x_start
                + self._extract(self.posterior_mean_coef2, t, x_t) * x_t)
        return (mean, self._extract(self.posterior_variance, t, x_t),
                self._extract(self.posterior_log_variance_clipped, t, x_t))

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        return ((self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart)
                / self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    # ------------------------------------------------------------------ reverse process
    def p_mean_variance_from_output(self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, *,
                                    clip_denoised: bool = True,
                                    denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
        """p(x_{t-1} | x_t) from a network output already computed for (x, t)."""
        channels = x.shape[1]
        if self.learn_sigma:
            if model_output.shape[1] != 2 * channels:
                raise FFNetError(f"learned_range variance needs a model with {2 * channels} output channels "
                                 f"(epsilon + variance), got {model_output.shape[1]}")
            eps, var_values = model_output.split(channels, dim=1)
            min_log = self._extract(self.posterior_log_variance_clipped, t, x)
            max_log = self._extract(np.log(self.betas), t, x)
            frac = (var_values + 1.0) / 2.0
            log_variance = frac * max_log + (1.0 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            eps = model_output[:, :channels]
            if self.variance_type == "fixed_large":
                var_arr = np.append(self.posterior_variance[1], self.betas[1:]) if self.num_timesteps > 1 else self.betas
                variance = self._extract(var_arr, t, x)
                log_variance = self._extract(np.log(var_arr), t, x)
            else:
                variance = self._extract(self.posterior_variance, t, x)
                log_variance = self._extract(self.posterior_log_variance_clipped, t, x)
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_xstart": pred_xstart, "eps": eps}

    def p_mean_variance(self, model: ModelFn, x: torch.Tensor, t: torch.Tensor, *, clip_denoised: bool = True,
                        model_kwargs: dict | None = None, denoised_fn=None) -> dict:
        """Run the network on (x, t) and return p(x_{t-1} | x_t) (see :meth:`p_mean_variance_from_output`)."""
        output = model(x, self.model_timesteps(t), **(model_kwargs or {}))
        return self.p_mean_variance_from_output(output, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn)

    # ------------------------------------------------------------------ training loss
    def vb_terms_bpd(self, model_output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor, *, clip_denoised: bool = False) -> dict:
        """Per-sample variational-bound term in bits/dim: KL(q(x_{t-1}|x_t,x_0) || p) for t>0, decoder NLL at t=0."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance_from_output(model_output, x_t, t, clip_denoised=clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])) / math.log(2.0)
        return {"output": torch.where(t == 0, nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(self, model: ModelFn, x_start: torch.Tensor, t: torch.Tensor, *,
                        model_kwargs: dict | None = None, noise: torch.Tensor | None = None) -> dict:
        """Per-sample losses for a batch: ``loss`` (what to minimise), ``mse`` (epsilon) and ``vb`` (bits/dim).

        The variational term sees the predicted epsilon through ``detach()``: it trains only the variance
        output, so the mean keeps the simple-loss gradient (Nichol & Dhariwal's hybrid objective, lambda=1 as in
        DiT, or T/1000 for ``rescaled_hybrid``).
        """
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise)
        output = model(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        channels = x_start.shape[1]
        expected = 2 * channels if self.learn_sigma else channels
        if output.shape[1] != expected:
            raise FFNetError(f"model outputs {output.shape[1]} channels but the diffusion "
                             f"(variance_type={self.variance_type}) expects {expected}")
        eps = output[:, :channels]
        # losses in at least float32: under bf16/fp16 autocast the network output is half precision
        terms = {"mse": mean_flat((_atleast_fp32(noise) - _atleast_fp32(eps)) ** 2)}
        if self.learn_sigma:
            frozen = _atleast_fp32(torch.cat([eps.detach(), output[:, channels:]], dim=1))
            vb = self.vb_terms_bpd(frozen, _atleast_fp32(x_start), _atleast_fp32(x_t), t)["output"]
            if self.loss_type == "rescaled_hybrid":
                vb = vb * self.num_timesteps / 1000.0
            terms["vb"] = vb
            terms["loss"] = terms["mse"] + vb
        else:
            terms["loss"] = terms["mse"]
        return terms

    # ------------------------------------------------------------------ samplers
    def p_sample(self, model: ModelFn, x: torch.Tensor, t: torch.Tensor, *, clip_denoised: bool = True,
                 model_kwargs: dict | None = None, generator: torch.Generator | None = None) -> dict:
        """One ancestral DDPM step x_t -> x_{t-1} (no noise added at t=0)."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        noise = _randn(x.shape, generator, x)
        nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(self, model: ModelFn, x: torch.Tensor, t: torch.Tensor, *, clip_denoised: bool = True,
                    model_kwargs: dict | None = None, eta: float = 0.0,
                    generator: torch.Generator | None = None) -> dict:
        """One DDIM step (Song et al. 2021, Eq. 12); eta=0 is deterministic, eta=1 matches DDPM's variance."""
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar = self._extract(self.alphas_cumprod, t, x)
        abar_prev = self._extract(self.alphas_cumprod_prev, t, x)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        mean = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma ** 2) * eps
        nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        sample = mean + nonzero * sigma * _randn(x.shape, generator, x) if eta > 0 else mean
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    @torch.no_grad()
    def sample_loop(self, model: ModelFn, shape: tuple[int, ...], *, method: str = "ddpm",
                    noise: torch.Tensor | None = None, clip_denoised: bool = True,
                    model_kwargs: dict | None = None, eta: float = 0.0, device: torch.device | str | None = None,
                    generator: torch.Generator | None = None, progress: Callable | None = None) -> torch.Tensor:
        """Run the whole reverse chain from pure noise (or ``noise``) and return x_0.

        ``method`` is ``ddpm`` (ancestral) or ``ddim``; ``progress`` wraps the step iterator (e.g. tqdm).
        """
        if method not in ("ddpm", "ddim"):
            raise FFNetError(f"sampling method must be 'ddpm' or 'ddim', got {method!r}")
        if device is None:
            device = noise.device if noise is not None else (generator.device if generator is not None else "cpu")
        x = noise if noise is not None else torch.randn(*shape, generator=generator, device=device)
        steps = list(range(self.num_timesteps))[::-1]
        iterator = progress(steps) if progress is not None else steps
        for i in iterator:
            t = torch.full((shape[0],), i, device=x.device, dtype=torch.long)
            if method == "ddpm":
                out = self.p_sample(model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs,
                                    generator=generator)
            else:
                out = self.ddim_sample(model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs,
                                       eta=eta, generator=generator)
            x = out["sample"]
        return x


def _atleast_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator, device=generator.device).to(device=like.device, dtype=like.dtype)


def create_diffusion(steps: str | int | None = None, *, schedule: str = "linear", num_steps: int = 1000,
                     variance_type: str = "learned_range", loss_type: str = "hybrid") -> GaussianDiffusion:
    """Build the training chain (``steps`` None/"") or a respaced sampling chain (``steps`` = 250, "ddim50"...).

    Defaults are DiT/U-DiT's: linear schedule, 1000 steps, learned-range variance, hybrid loss.
    """
    base = get_named_beta_schedule(schedule, num_steps)
    if steps in (None, "", 0) or str(steps) == str(num_steps):
        return GaussianDiffusion(base, variance_type=variance_type, loss_type=loss_type)
    use = space_timesteps(num_steps, steps)
    return GaussianDiffusion(respaced_betas(base, use), variance_type=variance_type, loss_type=loss_type,
                             timestep_map=use, original_num_steps=num_steps)
