"""Exact top-k retrieval: against numpy, and sharded (8 devices) against 1 device."""

import jax
import numpy as np
import pytest

from gecko_jax.retrieval import ExactIndex, chunked_top_k, corpus_mesh, exact_top_k


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_top_k(q, c, k):
    s = q @ c.T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # N not a multiple of any chunk or of the device count: exercises padding.
    return _unit(rng, 1237, 24), _unit(rng, 53, 24)


@pytest.mark.parametrize("chunk_size,group_size", [(64, 16), (256, 8), (16384, 16), (96, 32)])
def test_matches_numpy_one_device(data, chunk_size, group_size):
    corpus, queries = data
    ref_s, ref_i = _numpy_top_k(queries, corpus, 25)
    index = ExactIndex(corpus, mesh=corpus_mesh(jax.devices()[:1]),
                       chunk_size=chunk_size, group_size=group_size, query_block=16)
    got = index.search(queries, 25)
    assert got.indices.shape == (53, 25) and got.indices.dtype == np.int32
    # Random float data: no ties, so indices must match exactly.
    np.testing.assert_array_equal(got.indices, ref_i)
    np.testing.assert_allclose(got.scores, ref_s, atol=1e-5)


def test_sharded_equals_single_device(data):
    corpus, queries = data
    assert len(jax.devices()) == 8, "conftest sets 8 emulated CPU devices"
    one = ExactIndex(corpus, mesh=corpus_mesh(jax.devices()[:1]), chunk_size=64).search(queries, 30)
    eight = ExactIndex(corpus, mesh=corpus_mesh(), chunk_size=64).search(queries, 30)
    assert eight.indices.shape == (53, 30)
    np.testing.assert_array_equal(eight.indices, one.indices)
    np.testing.assert_allclose(eight.scores, one.scores, atol=1e-6)
    # The corpus really is spread over the 8 devices.
    index = ExactIndex(corpus, mesh=corpus_mesh(), chunk_size=64)
    assert len(index._corpus.sharding.device_set) == 8


def test_k_larger_than_shard_and_corpus(data):
    corpus, queries = data
    small = corpus[:13]  # fewer rows than 8 devices * k
    ref_s, ref_i = _numpy_top_k(queries, small, 13)
    got = exact_top_k(queries, small, k=50, mesh=corpus_mesh())
    assert got.indices.shape == (53, 13)  # capped at N
    np.testing.assert_array_equal(got.indices, ref_i)
    np.testing.assert_allclose(got.scores, ref_s, atol=1e-5)


def test_ties_return_valid_rows():
    corpus = np.ones((40, 4), np.float32)  # every score ties
    got = exact_top_k(np.ones((3, 4), np.float32), corpus, k=10, mesh=corpus_mesh())
    for row in got.indices:
        assert len(set(row.tolist())) == 10 and row.min() >= 0 and row.max() < 40
    np.testing.assert_allclose(got.scores, 4.0)


def test_chunked_top_k_pure_function_masks_padding():
    rng = np.random.default_rng(1)
    corpus = np.zeros((64, 8), np.float32)
    corpus[:50] = _unit(rng, 50, 8)
    q = -_unit(rng, 5, 8)  # padding rows score 0, above many real negatives
    s, i = chunked_top_k(q, corpus, 50, k=50, chunk_size=32, group_size=8)
    i = np.asarray(i)
    assert i.max() < 50 and len(set(i[0].tolist())) == 50
    ref_s, _ = _numpy_top_k(q, corpus[:50], 50)
    np.testing.assert_allclose(np.asarray(s), ref_s, atol=1e-5)


def test_bad_shapes():
    with pytest.raises(ValueError):
        ExactIndex(np.zeros((0, 4), np.float32))
    index = ExactIndex(np.ones((5, 4), np.float32), mesh=corpus_mesh(jax.devices()[:1]))
    with pytest.raises(ValueError):
        index.search(np.ones((2, 3), np.float32), 2)
