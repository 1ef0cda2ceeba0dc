"""Optimizers for fine-tuning: AdamW / Adafactor, warmup + linear/cosine decay, clipping.

Gradient accumulation lives in the train step (trainer.py) rather than in
optax.MultiSteps, so that one trainer step is one optimizer update and one
step of the data position (exact resume stays a matter of counting steps).
"""

from __future__ import annotations

import gin
import jax
import optax

from gecko_jax.errors import GeckoError


@gin.configurable
def learning_rate_schedule(
    peak_value: float = 2e-5,
    total_steps: int = 1000,
    warmup_steps: int = 0,
    decay: str = "linear",
    end_value_ratio: float = 0.0,
) -> optax.Schedule:
    """Linear warmup from 0 to `peak_value`, then linear / cosine / constant decay.

    Args:
      decay: "linear", "cosine" or "constant".
      end_value_ratio: final LR as a fraction of the peak.
    """
    end = peak_value * end_value_ratio
    decay_steps = max(total_steps - warmup_steps, 1)
    if decay == "linear":
        after = optax.linear_schedule(peak_value, end, decay_steps)
    elif decay == "cosine":
        after = optax.cosine_decay_schedule(peak_value, decay_steps, alpha=end_value_ratio)
    elif decay == "constant":
        after = optax.constant_schedule(peak_value)
    else:
        raise GeckoError(f"unknown decay {decay!r} (linear, cosine, constant)")
    if warmup_steps <= 0:
        return after
    warm = optax.linear_schedule(0.0, peak_value, warmup_steps)
    return optax.join_schedules([warm, after], [warmup_steps])


def _decay_mask(params):
    """Weight decay on matrices only: no decay for biases and LayerNorm (BERT habit)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


@gin.configurable
def make_optimizer(
    name: str = "adamw",
    schedule: optax.Schedule | None = None,
    weight_decay: float = 0.01,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """AdamW or Adafactor with global-norm gradient clipping.

    Args:
      name: "adamw" or "adafactor".
      schedule: learning-rate schedule (default: `learning_rate_schedule()`).
      weight_decay: decoupled weight decay (matrices only).
      clip_norm: clip the global gradient norm to this (None: no clipping).
    """
    schedule = schedule or learning_rate_schedule()
    if name == "adamw":
        opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                          mask=_decay_mask)
    elif name == "adafactor":
        # Adafactor's own update clipping stays on; decay as in t5x fine-tuning.
        opt = optax.adafactor(schedule, weight_decay_rate=weight_decay or None,
                              weight_decay_mask=_decay_mask)
    else:
        raise GeckoError(f"unknown optimizer {name!r} (adamw, adafactor)")
    if clip_norm:
        opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    return opt
