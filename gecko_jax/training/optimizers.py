"""Optimizers for fine-tuning: AdamW / Adafactor, warmup + linear/cosine decay, clipping.

Gradient accumulation lives in the train step (trainer.py) rather than in
optax.MultiSteps, so that one trainer step is one optimizer update and one
step of the data position (exact resume stays a matter of counting steps).
"""

from __future__ import annotations

from typing import NamedTuple

import gin
import jax
import jax.numpy as jnp
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


class StartState(NamedTuple):
    start: optax.Params


def decay_toward_start(rate: float) -> optax.GradientTransformation:
    """Adds rate * (params - start) to the updates, `start` being the parameters the
    optimizer was initialised with: L2-SP, weight decay toward the pretrained weights
    instead of toward zero. Placed before the learning-rate scaling, each step pulls
    every parameter back by lr * rate of its distance from where the stage started, so
    a fine-tuning stage changes the weights only where the loss keeps asking it to.
    The start is part of the optimizer state (one copy of the parameters, sharded like
    them) and is checkpointed with it, so a resumed stage keeps its own start."""

    def init(params):
        # A copy, not the parameter buffers themselves: the train step donates both.
        return StartState(jax.tree.map(lambda p: jnp.array(p, copy=True), params))

    def update(updates, state, params=None):
        if params is None:
            raise GeckoError("decay_toward_start needs the parameters in update()")
        updates = jax.tree.map(lambda u, p, a: u + rate * (p - a).astype(u.dtype),
                               updates, params, state.start)
        return updates, state

    return optax.GradientTransformation(init, update)


@gin.configurable
def make_optimizer(
    name: str = "adamw",
    schedule: optax.Schedule | None = None,
    weight_decay: float = 0.01,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    clip_norm: float | None = 1.0,
    start_decay: float = 0.0,
) -> optax.GradientTransformation:
    """AdamW or Adafactor with global-norm gradient clipping.

    Args:
      name: "adamw" or "adafactor".
      schedule: learning-rate schedule (default: `learning_rate_schedule()`).
      weight_decay: decoupled weight decay (matrices only).
      clip_norm: clip the global gradient norm to this (None: no clipping).
      start_decay: decoupled decay toward the stage's initial weights (L2-SP,
        decay_toward_start), every parameter; 0: off (AdamW's state as it was).
    """
    schedule = schedule or learning_rate_schedule()
    if name == "adamw" and start_decay:
        # optax.adamw's chain with the pull toward the start beside its weight decay.
        opt = optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                          optax.add_decayed_weights(weight_decay, _decay_mask),
                          decay_toward_start(start_decay),
                          optax.scale_by_learning_rate(schedule))
    elif start_decay:
        raise GeckoError(f"start_decay is implemented for adamw, not {name!r}")
    elif name == "adamw":
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
