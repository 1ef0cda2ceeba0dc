"""Exact top-k retrieval by dot product, chunked and sharded over devices.

Shared by FRet stage 2 (the initial embedder's top-N neighbours of each query)
and by evaluation (ranking a corpus for every query).

Scores are inner products `q . c`; with unit-norm embeddings that is cosine
similarity. The corpus is scanned in chunks of `chunk_size` rows, keeping a
running top-k per query, so memory is O(Q * (chunk_size + k * group_size))
whatever N is.
Over a device mesh the corpus rows are split across devices along one axis;
each device keeps the top-k of its own rows and a final merge of the
per-device lists gives the global top-k. One device is the same code with a
mesh of size one.

Ties: equal scores may come back in any order (as with any top-k).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

CORPUS_AXIS = "corpus"


class TopK(NamedTuple):
    """scores [Q, k] float32, best first; indices [Q, k] int32 rows of the corpus."""
    scores: np.ndarray
    indices: np.ndarray


# ----------------------------------------------------------------------------
# Pure, jittable pieces.

def chunked_top_k(queries_qd, corpus_nd, num_valid, k: int, chunk_size: int,
                  index_offset=0, group_size: int = 16):
    """Running top-k of `queries_qd @ corpus_nd.T` over corpus chunks.

    Why groups: a full top-k over every [Q, chunk] score block is the costly
    part after the matmul. The rows are cut into groups of `group_size`; the
    k best rows all lie in the k groups with the highest group maximum (a row
    outside them is beaten by k group maxima, each a distinct row). So the
    scan keeps the k best *groups* with all their scores, and per chunk only
    the group maxima [Q, chunk / group_size] enter a top-k. One exact top-k
    over the kept [Q, k * group_size] scores finishes.

    Args:
      queries_qd: [Q, d].
      corpus_nd: [N, d] with N a multiple of chunk_size (rows >= num_valid are
        padding and never returned).
      num_valid: number of real rows in corpus_nd (scalar, may be traced).
      k: results per query (static); k <= N.
      chunk_size: rows scored per step (static); a multiple of group_size.
      index_offset: added to row numbers (global ids of a shard's rows).
      group_size: rows per group (static).
    Returns:
      (scores [Q, k] float32, indices [Q, k] int32). Slots beyond the real rows
      hold -inf and index -1.
    """
    n, d = corpus_nd.shape
    q = queries_qd.shape[0]
    g = group_size
    num_chunks = n // chunk_size
    groups_per_chunk = chunk_size // g
    chunks_cnd = corpus_nd.reshape(num_chunks, chunk_size, d)

    def step(carry, inputs):
        keep_s_qkg, keep_gid_qk = carry
        chunk_cd, c = inputs
        s_qc = jnp.dot(queries_qd, chunk_cd.T, preferred_element_type=jnp.float32)
        rows = c * chunk_size + jnp.arange(chunk_size, dtype=jnp.int32)
        s_qc = jnp.where(rows[None, :] < num_valid, s_qc, -jnp.inf)
        s_qhg = s_qc.reshape(q, groups_per_chunk, g)
        gid = c * groups_per_chunk + jnp.arange(groups_per_chunk, dtype=jnp.int32)
        # Candidates: the kept groups and this chunk's groups, ranked by their maxima.
        all_s = jnp.concatenate([keep_s_qkg, s_qhg], axis=1)
        all_gid = jnp.concatenate(
            [keep_gid_qk, jnp.broadcast_to(gid[None], (q, groups_per_chunk))], axis=1)
        _, pos = jax.lax.top_k(all_s.max(axis=2), k)
        keep_s = jnp.take_along_axis(all_s, pos[:, :, None], axis=1)
        return (keep_s, jnp.take_along_axis(all_gid, pos, axis=1)), None

    init = (jnp.full((q, k, g), -jnp.inf, jnp.float32), jnp.full((q, k), -1, jnp.int32))
    (keep_s, keep_gid), _ = jax.lax.scan(
        step, init, (chunks_cnd, jnp.arange(num_chunks, dtype=jnp.int32)))
    rows_qm = (keep_gid[:, :, None] * g + jnp.arange(g, dtype=jnp.int32)).reshape(q, k * g)
    scores, pos = jax.lax.top_k(keep_s.reshape(q, k * g), k)
    idx = jnp.take_along_axis(rows_qm, pos, axis=1) + index_offset
    idx = jnp.where(jnp.isfinite(scores), idx, -1).astype(jnp.int32)
    return scores, idx


# ----------------------------------------------------------------------------
# Sharded search.

def corpus_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh whose single axis splits the corpus rows (all devices by default)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.sharding.Mesh(np.array(devices), (CORPUS_AXIS,),
                             axis_types=(jax.sharding.AxisType.Auto,))


@functools.lru_cache(maxsize=None)
def _search_fn(mesh: jax.sharding.Mesh, k: int, chunk_size: int, rows_per_shard: int,
               group_size: int):
    """Jitted search: per-device chunked top-k, then a global merge."""
    num_shards = mesh.shape[CORPUS_AXIS]
    k_local = min(k, rows_per_shard)

    def per_shard(queries_qd, corpus_nd, num_valid):
        shard = jax.lax.axis_index(CORPUS_AXIS)
        offset = shard * rows_per_shard
        # Rows of this shard that are real (the padding sits at the end of the corpus).
        local_valid = jnp.clip(num_valid - offset, 0, rows_per_shard)
        s, i = chunked_top_k(queries_qd, corpus_nd, local_valid, k_local, chunk_size,
                             index_offset=offset, group_size=group_size)
        return s[None], i[None]  # [1, Q, k_local] per shard

    sharded = jax.shard_map(
        per_shard, mesh=mesh,
        in_specs=(P(), P(CORPUS_AXIS, None), P()),
        out_specs=(P(CORPUS_AXIS), P(CORPUS_AXIS)),
        # The running top-k starts replicated and becomes per-shard inside the
        # scan; no collectives are used, so the varying-axis check adds nothing.
        check_vma=False)

    def search(queries_qd, corpus_nd, num_valid):
        s_sqk, i_sqk = sharded(queries_qd, corpus_nd, num_valid)
        if num_shards == 1:
            return s_sqk[0], i_sqk[0]
        q = queries_qd.shape[0]
        # Global merge of the per-device lists: [Q, shards * k_local] -> top k.
        s_qm = jnp.transpose(s_sqk, (1, 0, 2)).reshape(q, num_shards * k_local)
        i_qm = jnp.transpose(i_sqk, (1, 0, 2)).reshape(q, num_shards * k_local)
        top_s, pos = jax.lax.top_k(s_qm, k)
        return top_s, jnp.take_along_axis(i_qm, pos, axis=1)

    return jax.jit(search)


class ExactIndex:
    """A corpus of embeddings placed on a device mesh, searched by exact top-k.

    Args:
      corpus: [N, d] embeddings (float32; unit-norm for cosine similarity).
      mesh: a 1-D mesh with axis "corpus" (see `corpus_mesh`); None uses all
        local devices. `corpus_mesh(jax.devices()[:1])` is the unsharded twin.
      chunk_size: corpus rows scored per step on each device.
      group_size: rows per group in the running top-k (see `chunked_top_k`).
      query_block: queries per call of the jitted search (bounds the [Q, chunk]
        score block; the last block is padded so shapes, and compiles, repeat).
    """

    def __init__(self, corpus, mesh: jax.sharding.Mesh | None = None,
                 chunk_size: int = 16384, query_block: int = 1024,
                 group_size: int = 16, dtype=jnp.float32):
        corpus = np.asarray(corpus, dtype=np.float32)
        if corpus.ndim != 2 or corpus.shape[0] == 0:
            raise ValueError(f"corpus must be a non-empty [N, d] array, got {corpus.shape}")
        self.mesh = mesh if mesh is not None else corpus_mesh()
        self.num_rows, self.dim = corpus.shape
        self.dtype = dtype
        self.query_block = query_block
        shards = self.mesh.shape[CORPUS_AXIS]
        per_shard = -(-self.num_rows // shards)
        self.group_size = group_size
        self.chunk_size = _round_up(min(chunk_size, per_shard), group_size)
        self.rows_per_shard = _round_up(per_shard, self.chunk_size)
        padded = np.zeros((self.rows_per_shard * shards, self.dim), np.float32)
        padded[: self.num_rows] = corpus
        self._corpus = jax.device_put(
            jnp.asarray(padded, dtype), NamedSharding(self.mesh, P(CORPUS_AXIS, None)))
        self._replicated = NamedSharding(self.mesh, P())

    def search(self, queries, k: int) -> TopK:
        """Top-k corpus rows for each query.

        Args:
          queries: [Q, d].
          k: results per query; capped at the corpus size.
        Returns:
          TopK(scores [Q, k'], indices [Q, k']) with k' = min(k, N), best first.
        """
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got {queries.shape}")
        k = int(min(k, self.num_rows))
        if k < 1:
            raise ValueError("k must be >= 1")
        fn = _search_fn(self.mesh, k, self.chunk_size, self.rows_per_shard, self.group_size)
        num_valid = jax.device_put(jnp.int32(self.num_rows), self._replicated)
        nq = queries.shape[0]
        block = min(self.query_block, _round_up(max(nq, 1), 8))
        scores = np.empty((nq, k), np.float32)
        indices = np.empty((nq, k), np.int32)
        for start in range(0, nq, block):
            part = queries[start:start + block]
            padded = np.zeros((block, self.dim), np.float32)
            padded[: len(part)] = part
            q = jax.device_put(jnp.asarray(padded, self.dtype), self._replicated)
            s, i = fn(q, self._corpus, num_valid)
            scores[start:start + len(part)] = np.asarray(s)[: len(part)]
            indices[start:start + len(part)] = np.asarray(i)[: len(part)]
        return TopK(scores, indices)


def exact_top_k(queries, corpus, k: int, mesh: jax.sharding.Mesh | None = None,
                chunk_size: int = 16384) -> TopK:
    """One-shot exact top-k: `ExactIndex(corpus, mesh).search(queries, k)`.

    Args:
      queries: [Q, d]; corpus: [N, d]; k: results per query (capped at N).
    Returns:
      TopK(scores [Q, min(k, N)], indices [Q, min(k, N)]).
    """
    return ExactIndex(corpus, mesh=mesh, chunk_size=chunk_size).search(queries, k)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m
