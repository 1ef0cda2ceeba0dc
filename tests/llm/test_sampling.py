"""Nucleus (top-p) sampling's cutoff against a float64 numpy reference that sorts the
whole vocabulary: the top-k path (peaked rows), the bisection path (flat rows), mixed
batches (a row's cutoff does not depend on its batch mates), and sampled tokens stay
inside the nucleus."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.llm.sampling import next_tokens, nucleus_cutoff

V = 49152  # SmolLM2's vocabulary


def reference_cutoff(x_bv: np.ndarray, top_p: float) -> np.ndarray:
    """Smallest kept logit per row: sort descending, keep a token while the mass before
    it is below top_p (float64)."""
    out = []
    for row in np.asarray(x_bv, np.float64):
        srt = np.sort(row)[::-1]
        p = np.exp(srt - srt[0])
        p /= p.sum()
        n_keep = int(np.sum(np.cumsum(p) - p < top_p))
        out.append(srt[max(n_keep - 1, 0)])
    return np.array(out)


def logits(seed: int, rows: int, scale: float) -> np.ndarray:
    """Zipf-like rows (a few likely tokens, a long tail) times `scale`: small scales
    give nuclei of thousands of tokens (beyond the top-k path)."""
    rng = np.random.default_rng(seed)
    ranks = np.stack([rng.permutation(V) + 1 for _ in range(rows)])
    return (-scale * np.log(ranks) + rng.normal(0, 0.3, (rows, V))).astype(np.float32)


def mass_bounds(x_v: np.ndarray, n_kept: int) -> tuple[float, float]:
    """float64 mass of the top n_kept - 1 and of the top n_kept tokens."""
    srt = np.sort(np.asarray(x_v, np.float64))[::-1]
    p = np.exp(srt - srt[0])
    p /= p.sum()
    return float(p[:n_kept - 1].sum()), float(p[:n_kept].sum())


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.95])
def test_cutoff_equals_the_sorted_reference(scale, top_p):
    """Equal to the float64 sort, or (nuclei of thousands of near-equal tokens) a set
    whose mass meets the rule within float32 summation error (1e-5)."""
    x = logits(int(10 * scale), 4, scale)
    got = np.asarray(jax.jit(nucleus_cutoff)(jnp.asarray(x), jnp.float32(top_p)))[:, 0]
    ref = reference_cutoff(x, top_p).astype(np.float32)
    for row, c, r in zip(x, got, ref):
        n_kept = int(np.sum(row >= c))
        before, upto = mass_bounds(row, n_kept)
        assert before < top_p + 1e-5 and upto >= top_p - 1e-5, (n_kept, before, upto)
        if n_kept <= 1000:
            assert c == r


def test_rows_do_not_depend_on_their_batch_mates():
    peaked, flat = logits(1, 3, 3.0), logits(2, 1, 0.3)
    f = jax.jit(nucleus_cutoff)
    n_kept = lambda x, c: int(np.sum(x >= c))  # noqa: E731
    alone = np.asarray(f(jnp.asarray(peaked), jnp.float32(0.95)))
    mixed = np.asarray(f(jnp.asarray(np.concatenate([peaked, flat])), jnp.float32(0.95)))
    # The flat row's nucleus is beyond the top-k path: the batch takes the bisection.
    assert n_kept(flat[0], mixed[3, 0]) > 256
    assert all(n_kept(peaked[i], alone[i, 0]) <= 256 for i in range(3))
    np.testing.assert_array_equal(mixed[:3], alone)


def test_sampled_tokens_stay_in_the_nucleus():
    x = logits(3, 8, 1.0)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(8))
    cut = reference_cutoff(x / 0.8, 0.9)
    draws = []
    for step in range(20):
        k = jax.vmap(lambda key: jax.random.fold_in(key, step))(keys)
        draws.append(np.asarray(next_tokens(jnp.asarray(x), k, jnp.float32(0.8),
                                            jnp.float32(0.9), greedy=False, nucleus=True)))
    draws = np.stack(draws, 1)  # [8, 20]
    for row, toks in enumerate(draws):
        assert np.all(x[row, toks] / 0.8 >= cut[row] * (1 - 1e-6))
        assert len(set(toks.tolist())) > 1  # sampling, not argmax
    greedy = next_tokens(jnp.asarray(x), keys, jnp.float32(0.8), jnp.float32(1e-6),
                         greedy=False, nucleus=True)
    np.testing.assert_array_equal(np.asarray(greedy), x.argmax(-1))
