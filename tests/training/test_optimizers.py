"""make_optimizer's decay toward the stage's initial weights (L2-SP) against a numpy
AdamW written out step by step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gecko_jax.errors import GeckoError
from gecko_jax.training import optimizers

LR, WD, START, CLIP = 1e-2, 0.01, 5.0, 1.0


def _numpy_adamw(params, grads, steps, start_decay, b1=0.9, b2=0.999, eps=1e-8):
    """AdamW (decay on matrices only) plus start_decay * (p - p0), global-norm clipping."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    p0 = {k: v.copy() for k, v in p.items()}
    mu = {k: np.zeros_like(v) for k, v in p.items()}
    nu = {k: np.zeros_like(v) for k, v in p.items()}
    for t in range(1, steps + 1):
        g = {k: grads(t)[k].astype(np.float64) for k in p}
        norm = np.sqrt(sum(np.sum(v ** 2) for v in g.values()))
        g = {k: v * min(1.0, CLIP / norm) for k, v in g.items()}
        for k in p:
            mu[k] = b1 * mu[k] + (1 - b1) * g[k]
            nu[k] = b2 * nu[k] + (1 - b2) * g[k] ** 2
            u = (mu[k] / (1 - b1 ** t)) / (np.sqrt(nu[k] / (1 - b2 ** t)) + eps)
            if p[k].ndim >= 2:
                u = u + WD * p[k]
            u = u + start_decay * (p[k] - p0[k])
            p[k] = p[k] - LR * u
    return p


@pytest.mark.parametrize("start_decay", [0.0, START])
def test_matches_numpy_adamw_with_start_decay(start_decay):
    rng = np.random.default_rng(0)
    params = {"kernel": rng.normal(size=(4, 3)).astype(np.float32),
              "bias": rng.normal(size=(3,)).astype(np.float32)}
    grad_draws = {t: {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
                  for t in range(1, 7)}
    opt = optimizers.make_optimizer(schedule=optax.constant_schedule(LR), weight_decay=WD,
                                    clip_norm=CLIP, start_decay=start_decay)
    p = jax.tree.map(jnp.asarray, params)
    state = opt.init(p)
    for t in range(1, 7):
        updates, state = opt.update(jax.tree.map(jnp.asarray, grad_draws[t]), state, p)
        p = optax.apply_updates(p, updates)
    want = _numpy_adamw(params, lambda t: grad_draws[t], 6, start_decay)
    for k in params:
        np.testing.assert_allclose(np.asarray(p[k]), want[k], rtol=0, atol=2e-6)
    # The pull is real: with it, the weights end nearer where they started.
    if start_decay:
        free = _numpy_adamw(params, lambda t: grad_draws[t], 6, 0.0)
        dist = lambda q: sum(np.sum((q[k] - params[k]) ** 2) for k in params)  # noqa: E731
        assert dist(want) < 0.9 * dist(free)


def test_off_keeps_adamw_state_layout():
    """start_decay = 0 builds plain optax.adamw state: checkpoints written without the option load."""
    params = {"kernel": jnp.ones((2, 2))}
    plain = optax.chain(optax.clip_by_global_norm(1.0),
                        optax.adamw(optax.constant_schedule(1e-3), weight_decay=0.01,
                                    mask=optimizers._decay_mask))
    ours = optimizers.make_optimizer(schedule=optax.constant_schedule(1e-3))
    assert (jax.tree.structure(ours.init(params)) == jax.tree.structure(plain.init(params)))
    with_start = optimizers.make_optimizer(schedule=optax.constant_schedule(1e-3),
                                           start_decay=1.0)
    leaves = jax.tree.leaves(with_start.init(params))
    assert any(leaf.shape == (2, 2) and np.all(np.asarray(leaf) == 1.0) for leaf in leaves)


def test_start_decay_needs_adamw():
    with pytest.raises(GeckoError, match="adamw"):
        optimizers.make_optimizer(name="adafactor", start_decay=1.0)
