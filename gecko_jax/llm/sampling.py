"""Next-token choice for the local teacher: greedy, or temperature sampling within the
top-p mass (nucleus sampling). Pure functions of logits [B, V].

The nucleus is found from the top `NUCLEUS_TOP_K` logits when their mass reaches top_p
(the usual case: XLA's top-k is ~50x cheaper than sorting a 49k vocabulary, which took
~9 ms a row on a 2-core CPU, more than a decode step of SmolLM2-135M), and from a full
sort otherwise. Rows never depend on their batch mates: a row whose nucleus lies in its
top k gets the same cutoff whichever path the batch takes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

NUCLEUS_TOP_K = 256


def _cutoff_from_sorted(srt_bk: Array, m_b1: Array, z_b1: Array, top_p: Array
                        ) -> tuple[Array, Array]:
    """From the largest logits in descending order: the smallest kept logit per row
    [B, 1], and whether these logits hold the whole nucleus [B].

    A token is kept when the mass of the tokens before it is below top_p, so the kept
    set is the fewest top tokens whose mass reaches top_p. Probabilities are normalised
    over the whole vocabulary (m: max logit, z: sum of exp(x - m))."""
    p = jnp.exp(srt_bk - m_b1) / z_b1
    cum = jnp.cumsum(p, axis=-1)
    n_keep = jnp.sum(cum - p < top_p, axis=-1)
    cut = jnp.take_along_axis(srt_bk, jnp.maximum(n_keep - 1, 0)[:, None], axis=-1)
    return cut, cum[:, -1] >= top_p


def _sortable(x: Array) -> Array:
    """uint32 keys in the order of the float32 values (for bisection over values)."""
    b = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.where(b >> 31 == 1, ~b, b | jnp.uint32(0x80000000))


def _cutoff_by_bisection(x_bv: Array, m_b1: Array, z_b1: Array, top_p: Array) -> Array:
    """The smallest logit c per row [B, 1] with mass(x > c) < top_p, by bisection over
    the values' bit patterns (32 masked sums over the vocabulary instead of a sort)."""
    p = jnp.exp(x_bv - m_b1) / z_b1
    key = _sortable(x_bv)
    lo, hi = jnp.min(key, axis=-1) - 1, jnp.max(key, axis=-1)  # mass(> lo) = 1, mass(> hi) = 0

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        small = jnp.sum(jnp.where(key > mid[:, None], p, 0.0), axis=-1) < top_p
        return jnp.where(small, lo, mid), jnp.where(small, mid, hi)

    _, hi = jax.lax.fori_loop(0, 32, halve, (lo, hi))
    return jnp.min(jnp.where(key >= hi[:, None], x_bv, jnp.inf), axis=-1, keepdims=True)


def nucleus_cutoff(x_bv: Array, top_p: Array, top_k: int = NUCLEUS_TOP_K) -> Array:
    """[B, 1]: per row the smallest logit inside the top-p nucleus of softmax(x_bv);
    sampling keeps the tokens with x >= cutoff."""
    m = jnp.max(x_bv, axis=-1, keepdims=True)
    z = jnp.sum(jnp.exp(x_bv - m), axis=-1, keepdims=True)
    k = min(top_k, x_bv.shape[-1])
    top, _ = jax.lax.top_k(x_bv, k)
    cut_k, covered = _cutoff_from_sorted(top, m, z, top_p)

    def whole_vocabulary():
        return jnp.where(covered[:, None], cut_k, _cutoff_by_bisection(x_bv, m, z, top_p))

    return jax.lax.cond(jnp.all(covered), lambda: cut_k, whole_vocabulary)


def next_tokens(logits_bv: Array, keys: Array, temperature: Array, top_p: Array,
                greedy: bool, nucleus: bool) -> Array:
    """Next token per row [B]: argmax, or sampling at `temperature` (one key per row)
    within the top-p mass when `nucleus`."""
    if greedy:
        return jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
    x = logits_bv / temperature
    if nucleus:
        x = jnp.where(x < nucleus_cutoff(x, top_p), -jnp.inf, x)
    return jax.vmap(jax.random.categorical)(keys, x).astype(jnp.int32)
