"""GradCache (Gao et al. 2021): the exact full-batch contrastive gradient, towers in chunks.

A contrastive loss couples every row of the batch (in-batch, hard and same-tower
negatives), so plain gradient accumulation changes the loss: each micro-batch
sees only its own negatives. GradCache keeps the loss of the WHOLE batch and
only splits the encoder work, in three passes:

  1. embed every chunk of rows with no gradient (activations freed chunk by chunk);
  2. loss and its gradient g_e = dL/de with respect to the embeddings e of the whole
     batch: cheap, [B, d] values;
  3. re-run each chunk's encoder under jax.vjp and pull g_e of its rows back to the
     parameters: dL/dtheta = sum_chunks J_chunk^T g_e[chunk].

Memory is that of one chunk's forward + backward plus the [B, d] embeddings;
compute is one extra forward. The result equals jax.grad of the full-batch loss
(up to float summation order) because the loss depends on theta only through e.

Randomness (dropout) is replayed exactly: chunk m always gets fold_in(key, m) in
both passes.

Chunks are strided (chunk m takes rows m, m+n, m+2n, ...) as in the trainer's
gradient accumulation, so that each chunk stays spread over all data shards.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gecko_jax.errors import GeckoError

PyTree = Any


@dataclasses.dataclass(frozen=True)
class GradCache:
    """chunk_size: rows of the global batch encoded at once (0 = off: plain full batch)."""

    chunk_size: int = 0

    def num_chunks(self, batch_size: int) -> int:
        if self.chunk_size <= 0:
            return 1
        if batch_size % self.chunk_size:
            raise GeckoError(f"GradCache.chunk_size {self.chunk_size} does not divide the "
                             f"batch size {batch_size}")
        return batch_size // self.chunk_size


def split_chunks(tree: PyTree, n: int) -> PyTree:
    """[B, ...] leaves -> [n, B/n, ...]; chunk m holds rows m, m+n, m+2n, ..."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1),
                        tree)


def merge_chunks(tree: PyTree) -> PyTree:
    """Inverse of split_chunks: [n, B/n, ...] -> [B, ...] in the original row order."""
    return jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(-1, *x.shape[2:]), tree)


def chunk_keys(key: jax.Array | None, n: int) -> jax.Array:
    """One key per chunk, the same in the embedding and the backward pass. [n, ...]."""
    key = jax.random.key(0) if key is None else key
    return jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(n))


def loss_and_grads(
    params: PyTree,
    batch: PyTree,
    *,
    embed_fn: Callable[[PyTree, PyTree, jax.Array], PyTree],
    loss_fn: Callable[[PyTree, PyTree], tuple[jax.Array, dict]],
    num_chunks: int,
    key: jax.Array | None = None,
) -> tuple[jax.Array, dict, PyTree]:
    """Exact gradient of loss_fn(embed_fn(params, batch)) with the encoder in chunks.

    Args:
      params: the differentiated pytree.
      batch: pytree of [B, ...] arrays (features and ids).
      embed_fn: (params, chunk of batch [c, ...], key) -> embeddings pytree of [c, ...]
        leaves; row-wise (row r's embedding depends only on row r and the key).
      loss_fn: (embeddings pytree of [B, ...] leaves, batch) -> (scalar loss, metrics).
      num_chunks: n; B must be divisible by n. 1 = one chunk (still three passes).
      key: randomness for embed_fn (chunk m gets fold_in(key, m)), or None.

    Returns:
      (loss, metrics, grads) with grads shaped like params.
    """
    chunks = split_chunks(batch, num_chunks)
    keys = chunk_keys(key, num_chunks)

    # 1. Embeddings of every chunk; no gradient, so no activations are kept.
    def embed(args):
        chunk, k = args
        return jax.lax.stop_gradient(embed_fn(params, chunk, k))

    emb = merge_chunks(jax.lax.map(embed, (chunks, keys)))

    # 2. Full-batch loss and its gradient with respect to the embeddings.
    (loss, metrics), g_emb = jax.value_and_grad(loss_fn, has_aux=True)(emb, batch)

    # 3. Per chunk: re-run the encoder and pull the cached gradient back to params.
    def backward(acc, args):
        chunk, k, g_chunk = args
        _, vjp = jax.vjp(lambda p: embed_fn(p, chunk, k), params)
        (g_params,) = vjp(g_chunk)
        return jax.tree.map(jnp.add, acc, g_params), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, _ = jax.lax.scan(backward, zeros, (chunks, keys, split_chunks(g_emb, num_chunks)))
    return loss, metrics, grads
