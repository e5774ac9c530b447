"""Noise schedules and timestep respacing (DDPM/ADM conventions).

The formulas follow Ho et al. 2020 (linear betas), Nichol & Dhariwal 2021 (cosine alpha-bar, respacing by
section counts / ``ddimN`` strides) so that a model trained here can be sampled with the same step sets that
DiT / U-DiT users know (``250`` DDPM steps, ``ddim50``...). Everything is float64 numpy: the cumulative products
over 1000 steps lose precision in float32, which shows up as biased posterior variances near t=0.
"""

from __future__ import annotations

import math

import numpy as np

from metamixer.train.errors import FFNetError

__all__ = ["get_named_beta_schedule", "betas_for_alpha_bar", "space_timesteps", "respaced_betas"]


def betas_for_alpha_bar(num_steps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    """Discretise a continuous alpha-bar(t), t in [0, 1], into betas: beta_i = 1 - abar((i+1)/T) / abar(i/T).

    ``max_beta`` caps the last betas (the cosine schedule reaches abar=0 at t=1, which would give beta=1 and a
    singular posterior).
    """
    betas = [min(1.0 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta) for i in range(num_steps)]
    return np.asarray(betas, dtype=np.float64)


def get_named_beta_schedule(name: str, num_steps: int = 1000) -> np.ndarray:
    """Return the betas of the ``linear`` or ``cosine`` schedule with ``num_steps`` steps.

    ``linear`` is scaled by 1000/T so that any T spans the same total noise as the 1000-step schedule of DDPM
    (beta from 1e-4 to 0.02 at T=1000).
    """
    if num_steps < 1:
        raise FFNetError(f"diffusion.num_steps must be >= 1, got {num_steps}")
    if name == "linear":
        scale = 1000.0 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if name == "cosine":
        return betas_for_alpha_bar(num_steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise FFNetError(f"diffusion.schedule must be 'linear' or 'cosine', got {name!r}")


def space_timesteps(num_timesteps: int, section_counts: str | int | list[int]) -> list[int]:
    """Pick the original timesteps kept by a respaced sampler (sorted ascending).

    ``section_counts`` is either ``"ddimN"`` (a fixed stride giving exactly N steps, starting at 0, the DDIM
    paper's choice), an int / ``"N"`` (N evenly spread steps including the first and the last), or a comma list
    ``"10,15,20"`` that splits [0, T) into equal sections and spreads that many steps in each.
    """
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if text.startswith("ddim"):
            wanted = _parse_positive(text[4:], section_counts)
            if wanted > num_timesteps:
                raise FFNetError(f"cannot take {wanted} DDIM steps from {num_timesteps} diffusion steps")
            for stride in range(1, num_timesteps + 1):
                steps = list(range(0, num_timesteps, stride))
                if len(steps) == wanted:
                    return steps
            raise FFNetError(f"no integer stride gives exactly {wanted} steps out of {num_timesteps}; "
                             f"use a plain step count such as '{wanted}' instead of '{text}'")
        counts = [_parse_positive(part, section_counts) for part in text.split(",")]
    elif isinstance(section_counts, int):
        counts = [_parse_positive(str(section_counts), section_counts)]
    else:
        counts = [_parse_positive(str(c), section_counts) for c in section_counts]

    size_per, extra = divmod(num_timesteps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise FFNetError(f"cannot take {count} steps from a section of {size} diffusion steps "
                             f"(sampling steps must be <= diffusion.num_steps={num_timesteps})")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        kept.extend(start + round(j * stride) for j in range(count))
        start += size
    return sorted(set(kept))


def respaced_betas(base_betas: np.ndarray, use_timesteps: list[int]) -> np.ndarray:
    """Betas of the shorter chain that visits only ``use_timesteps`` and keeps their alpha-bars exactly.

    beta'_k = 1 - abar[t_k] / abar[t_{k-1}], so the marginal q(x_t | x_0) at every kept step is unchanged and a
    model trained on the full chain is used as is (its timestep input is mapped back to t_k).
    """
    alphas_cumprod = np.cumprod(1.0 - base_betas)
    keep = set(use_timesteps)
    last, betas = 1.0, []
    for i, abar in enumerate(alphas_cumprod):
        if i in keep:
            betas.append(1.0 - abar / last)
            last = abar
    return np.asarray(betas, dtype=np.float64)


def _parse_positive(text: str, whole) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise FFNetError(f"sampling steps {whole!r}: expected a positive integer, 'ddimN' or a comma list") from None
    if value < 1:
        raise FFNetError(f"sampling steps {whole!r}: every count must be >= 1")
    return value
