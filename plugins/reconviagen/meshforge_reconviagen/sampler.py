"""Flow-matching Euler sampling with classifier-free guidance inside a time interval.

The maths of TRELLIS's ``FlowEulerGuidanceIntervalSampler`` (guide §2.1; ReconViaGen
``pipelines/samplers/flow_euler.py``, ``guidance_interval_mixin.py``):

- times t_i = linspace(1, 0, steps + 1), rescaled t ← r·t / (1 + (r − 1)·t); the model sees 1000·t;
- the model predicts a velocity v, and x_{t_next} = x_t − (t − t_next)·v;
- inside the guidance interval (lo ≤ t ≤ hi) the velocity is guided:
  ``"rvg"`` (ReconViaGen @5c2338e): v = (1 + w)·v(cond) − w·v(neg);
  ``"gap"`` (the authors' repo, guide §2.3): v = w·v(cond) + (1 − w)·v(neg), optionally
  rescaled so that the predicted x0 keeps the conditional prediction's standard deviation;
  outside it, one conditional evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class SamplerSettings:
    """One stage's sampler parameters (pipeline.json ``params`` overridden by the request)."""

    steps: int
    cfg_strength: float
    cfg_interval: tuple[float, float] = (0.5, 1.0)
    rescale_t: float = 3.0
    guidance: str = "rvg"  # rvg | gap
    guidance_rescale: float = 0.0  # gap only
    sigma_min: float = 1e-5


def time_grid(steps: int, rescale_t: float) -> list[float]:
    """steps + 1 times from 1 down to 0, rescaled."""
    t = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    t = rescale_t * t / (1 + (rescale_t - 1) * t)
    return t.tolist()


def _x0(x: Any, t: float, v: Any, sigma_min: float) -> Any:
    return (1 - sigma_min) * x - (sigma_min + (1 - sigma_min) * t) * v


def _v_from_x0(x: Any, t: float, x0: Any, sigma_min: float) -> Any:
    return ((1 - sigma_min) * x - x0) / (sigma_min + (1 - sigma_min) * t)


def guided_velocity(model: Callable, x: Any, t: float, cond: Any, neg_cond: Any, s: SamplerSettings,
                    std: Callable[[Any], Any]) -> Any:
    """The velocity at (x, t) with the guidance rule of ``s``; ``model(x, t, cond)`` returns v
    and ``std(value)`` a value's standard deviation (dense and sparse tensors differ)."""
    lo, hi = s.cfg_interval
    if not lo <= t <= hi:
        return model(x, t, cond)
    w = s.cfg_strength
    if s.guidance == "rvg":
        return (1 + w) * model(x, t, cond) - w * model(x, t, neg_cond)
    if w == 1:
        return model(x, t, cond)
    if w == 0:
        return model(x, t, neg_cond)
    pos, neg = model(x, t, cond), model(x, t, neg_cond)
    v = w * pos + (1 - w) * neg
    if s.guidance_rescale > 0:
        x0_pos, x0_cfg = _x0(x, t, pos, s.sigma_min), _x0(x, t, v, s.sigma_min)
        x0 = x0_cfg * (std(x0_pos) / std(x0_cfg))
        x0 = s.guidance_rescale * x0 + (1 - s.guidance_rescale) * x0_cfg
        v = _v_from_x0(x, t, x0, s.sigma_min)
    return v


def sample(model: Callable, noise: Any, cond: Any, neg_cond: Any, s: SamplerSettings,
           std: Callable[[Any], Any] = torch.std, on_step: Callable[[int, int], None] | None = None) -> Any:
    """Integrate from ``noise`` at t = 1 to t = 0; ``on_step(i, steps)`` runs after each step
    (progress, cancellation)."""
    if s.guidance not in ("rvg", "gap"):
        raise ValueError(f"unknown guidance {s.guidance!r}; use 'rvg' or 'gap'")
    grid = time_grid(s.steps, s.rescale_t)
    x = noise
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        v = guided_velocity(model, x, t, cond, neg_cond, s, std)
        x = x - (t - t_next) * v
        if on_step is not None:
            on_step(i + 1, s.steps)
    return x
