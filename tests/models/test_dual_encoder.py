"""Pooling, normalisation and Matryoshka truncation against numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.models.dual_encoder import l2_normalize, matryoshka, mean_pool, text_pool_mask


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


def _text_pool_mask_numpy(ids, mask, markers):
    """The rule written out row by row: after the first marker's end, else every token."""
    out = mask.copy()
    for r in range(ids.shape[0]):
        ends = [t + len(m) - 1 for t in range(ids.shape[1]) for m in markers
                if t + len(m) <= ids.shape[1] and tuple(ids[r, t:t + len(m)]) == m
                and mask[r, t + len(m) - 1]]
        if ends:
            out[r] = mask[r] * (np.arange(ids.shape[1]) > min(ends))
    return out


def test_text_pool_mask_against_numpy():
    markers = ((7, 8, 9), (7, 5, 9))
    ids = np.array([[1, 2, 7, 8, 9, 4, 4, 3, 0, 0],     # query marker, then text
                    [1, 7, 5, 9, 4, 7, 8, 9, 4, 3],     # document marker first, query marker in text
                    [1, 4, 4, 4, 3, 0, 0, 0, 0, 0],     # raw text: every token
                    [1, 2, 7, 8, 0, 0, 0, 0, 0, 0],     # marker cut by truncation
                    [1, 2, 2, 2, 7, 8, 9, 3, 0, 0]],    # marker, empty text
                   np.int32)
    mask = (ids > 0).astype(np.int32)
    got = np.asarray(text_pool_mask(jnp.asarray(ids), jnp.asarray(mask), markers))
    np.testing.assert_array_equal(got, _text_pool_mask_numpy(ids, mask, markers))
    np.testing.assert_array_equal(got[0], [0, 0, 0, 0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(got[2], mask[2])
    np.testing.assert_array_equal(got[4], [0, 0, 0, 0, 0, 0, 0, 1, 0, 0])
    rng = np.random.default_rng(2)
    ids = rng.integers(1, 10, size=(64, 12)).astype(np.int32)
    mask = (np.arange(12)[None] < rng.integers(1, 13, size=(64, 1))).astype(np.int32)
    got = np.asarray(text_pool_mask(jnp.asarray(ids), jnp.asarray(mask), ((3, 4), (5,))))
    np.testing.assert_array_equal(got, _text_pool_mask_numpy(ids, mask, ((3, 4), (5,))))
    np.testing.assert_array_equal(text_pool_mask(jnp.asarray(ids), jnp.asarray(mask), ()), mask)
