"""Distillation from the tower a stage starts from, reading queries without prompts.

A pretrained sentence encoder (all-MiniLM-L6-v2) ranks documents well for raw
queries; the Gecko format puts a task prompt before each query, which the start
model has never seen, and a small, narrow training pool then pulls the tower away
from what made it good. This term keeps the trained tower's ranking of the batch's
documents near the start model's ranking for the raw query, at every Matryoshka
size (the start model's full size as target), beside the contrastive loss:

    KD = 1/B sum_i KL( softmax(t_i / tau) || softmax(s_i / tau) )
    t_ij = <e0(raw q_i), e0(d_j)>,   s_ij = <e(q_i)[:m], e(d_j)[:m]> (renormalised)

over the batch's documents d_j (every positive, then every hard negative): e0 the
frozen start tower on the query with its prompt removed (strip_prompt) and on the
document as trained, e the trained tower on both as trained. Pure functions.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from gecko_jax.models.dual_encoder import matryoshka, text_pool_mask


def strip_prompt(ids_bl, mask_bl, markers):
    """Token rows without their prompt: [CLS] prompt marker text [SEP] -> [CLS] text [SEP].

    The first token and the tokens text_pool_mask keeps (the text after the prompt
    marker, and the closing special token) move to the front in order; the rest become
    padding. A row without a marker is unchanged; with WordPiece, the text's tokens
    are the ones the raw text alone tokenises to (up to the prompt's truncation).
    Returns (ids [b, l], mask [b, l]).
    """
    b, l = ids_bl.shape
    keep_bl = (text_pool_mask(ids_bl, mask_bl, markers) > 0) | (
        (jnp.arange(l)[None, :] == 0) & (mask_bl > 0))
    order_bl = jnp.argsort(~keep_bl, axis=1, stable=True)
    ids = jnp.take_along_axis(ids_bl, order_bl, axis=1)
    mask = jnp.take_along_axis(keep_bl, order_bl, axis=1).astype(mask_bl.dtype)
    return jnp.where(mask > 0, ids, 0), mask


def start_kl(q_bd, docs_nd, q_start_bd, docs_start_nd, *, tau: float,
             dims: Sequence[int] | None = None, weights: Sequence[float] | None = None):
    """Sum over Matryoshka sizes m of w_m * KL(start || trained) over the batch's documents.

    Args:
      q_bd [B, d], docs_nd [N, d]: the trained tower's unit embeddings.
      q_start_bd [B, d0], docs_start_nd [N, d0]: the start tower's (the target, at
        its full size; no gradient flows into it).
      dims, weights: Matryoshka sizes of the trained embeddings and their weights.
    Returns (scalar, {"distill/dim_m": KL at size m}).
    """
    target = jax.lax.stop_gradient(
        (q_start_bd @ docs_start_nd.T).astype(jnp.float32) / tau)
    log_p = jax.nn.log_softmax(target, axis=1)
    dims = tuple(dims) if dims else (q_bd.shape[-1],)
    weights = tuple(weights) if weights is not None else (1.0,) * len(dims)
    total, metrics = jnp.zeros((), jnp.float32), {}
    for m, w in zip(dims, weights):
        logits = (matryoshka(q_bd, m) @ matryoshka(docs_nd, m).T).astype(jnp.float32) / tau
        kl = jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(logits, axis=1)),
                              axis=1))
        metrics[f"distill/dim_{m}"] = kl
        total = total + w * kl
    return total, metrics
