"""Pooling, normalisation and Matryoshka truncation against numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.models.dual_encoder import l2_normalize, matryoshka, mean_pool


def test_mean_pool_ignores_padding():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], np.int32)
    want = np.stack([hidden[i, :mask[i].sum()].mean(0) for i in range(3)])
    np.testing.assert_allclose(mean_pool(jnp.asarray(hidden), jnp.asarray(mask)), want, rtol=1e-6)


def test_matryoshka_is_renormalised_prefix():
    x = l2_normalize(jnp.asarray(np.random.default_rng(1).normal(size=(4, 16)), jnp.float32))
    m = np.asarray(matryoshka(x, 8))
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, rtol=1e-6)
    prefix = np.asarray(x)[:, :8]
    np.testing.assert_allclose(m, prefix / np.linalg.norm(prefix, axis=1, keepdims=True), rtol=1e-5)
    with pytest.raises(ValueError):
        matryoshka(x, 17)
