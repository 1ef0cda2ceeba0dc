"""The public inference API: Gecko-formatted queries and documents -> unit vectors.

    enc = Encoder.from_pretrained("runs/x/export")
    q = enc.encode_queries(["who won?"], task="question answering")
    d = enc.encode_documents(["..."], titles=["..."])

Texts are tokenised once, sorted by length, batched, padded to a length bucket
and run through one jitted function per bucket shape; rows come back in input
order as float32 numpy. Given a mesh, each batch is split over its `data` axis.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gecko_jax import hardware, unified_format
from gecko_jax.errors import GeckoError
from gecko_jax.kernels.dense import cpu_bf16_mode
from gecko_jax.models.layer_stack import LayerOptions, set_options
from gecko_jax.tokenization import batch_bucket, bucket_length, pad_batch

log = logging.getLogger(__name__)

PROGRESS_MIN_TEXTS = 512  # shorter inputs encode without a progress bar


def truncate_dim(x_nd: np.ndarray, dim: int) -> np.ndarray:
    """Matryoshka on encoded vectors: first `dim` coordinates, renormalised.
    [N, d] -> float32 [N, dim]."""
    if dim > x_nd.shape[1]:
        raise GeckoError(f"Matryoshka dim {dim} exceeds the embedding size {x_nd.shape[1]}")
    x = x_nd[:, :dim].astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def enable_compile_cache(path: str | os.PathLike | None = None) -> None:
    """Persists XLA executables across processes, so a second run skips compilation."""
    path = pathlib.Path(path or os.environ.get("GECKO_XLA_CACHE", "~/.cache/gecko_jax/xla"))
    jax.config.update("jax_compilation_cache_dir", str(path.expanduser()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def data_mesh(devices=None) -> jax.sharding.Mesh:
    """A one-axis ("data") mesh over the given (default: all) devices, for encoding."""
    devices = list(devices if devices is not None else jax.devices())
    return jax.sharding.Mesh(np.array(devices), ("data",),
                             axis_types=(jax.sharding.AxisType.Auto,))


# XLA:CPU routes dots through YNNPACK fusions by default. On whole 32 x 256
# batches that path ran the attention logits Q K^T (head dim 32) 1.6x slower than
# XLA's own, so whole batches compile without it; on 4-row micro-batches (the CPU
# default) YNNPACK is 8% faster for the whole forward and stays on. Other
# backends ignore the option.
WHOLE_BATCH_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


# On CPU a batch runs through the model a few rows at a time (a lax.map inside
# the one jitted call): the attention logits of 4 rows x 256 tokens stay in
# cache, and a MiniLM forward of 32 x 256 took 15% less time than in one piece
# (1.07 vs 1.27 s). Accelerators keep the whole batch (they want the parallelism).
CPU_MICRO_BATCH = 4
# In the CPU bf16 mode (kernels/dense.py: oneDNN bf16 matmuls, float32 activations)
# longer micro-batches feed oneDNN bigger matmuls: on 128 BBC articles (max 256,
# batch 32, Zen 4) 16 rows gave 39.9 docs/s vs 26.8 for 4 and 39.0 for the whole batch.
CPU_MICRO_BATCH_BF16 = 16


def micro_batched(fn, rows: int | None):
    """fn(state, ids_bl, mask_bl) -> [b, ...] computed `rows` rows at a time.

    Step s takes rows s, s + steps, s + 2 steps, ...: one row from each contiguous
    block of the batch, so a batch split over devices along b stays where it is
    when `rows` is a multiple of the device count. Batches that `rows` does not
    divide run whole.
    """
    def run(state, ids_bl, mask_bl):
        b = ids_bl.shape[0]
        if not rows or b <= rows or b % rows:
            return fn(state, ids_bl, mask_bl)
        steps = b // rows
        split = lambda x: jnp.swapaxes(x.reshape((rows, steps) + x.shape[1:]), 0, 1)
        out_srd = jax.lax.map(lambda a: fn(state, *a), (split(ids_bl), split(mask_bl)))
        return jnp.swapaxes(out_srd, 0, 1).reshape((b,) + out_srd.shape[2:])
    return run


def _embed_fn(graphdef, micro_rows: int | None):
    def embed(state, ids_bl, mask_bl):
        return nnx.merge(graphdef, state)(ids_bl, mask_bl)
    options = None if micro_rows else WHOLE_BATCH_COMPILER_OPTIONS
    return jax.jit(micro_batched(embed, micro_rows), compiler_options=options)


def layer_kernels_as(state, dtype):
    """`state` with the 2-D dense kernels of the tower's layers stored in `dtype`.

    In the CPU bf16 mode every layer casts its kernels to bf16 before its matmuls
    (kernels/dense.py); an encoder that only runs inference does it once here instead
    of in every call (on MiniLM, 32 x 256 tokens, the casts took ~10% of a forward).
    The results are the same: the layers' own casts become no-ops."""
    def cast(path, x):
        names = [getattr(k, "key", None) for k in path]
        if "layers" in names and "kernel" in names and getattr(x, "ndim", 0) == 2:
            return x.astype(dtype)
        return x
    return jax.tree_util.tree_map_with_path(cast, state)


def resolve_compute_dtype(name: str | None) -> str | None:
    """'auto' -> 'bfloat16' on an accelerator, or on a CPU with bf16 dot instructions
    (AVX512-BF16 or AMX) where the oneDNN kernel runs (kernels/dense.py: bf16 matmuls,
    float32 activations; min cosine to float32 >= 0.9999 on MiniLM). Otherwise None
    (float32): XLA:CPU's own bf16 matmuls are no faster than float32, and a CPU
    without bf16 instructions would only emulate them (bench/matmul.py)."""
    if name != "auto":
        return None if name in (None, "float32") else name
    if jax.default_backend() != "cpu":
        return "bfloat16"
    if hardware.has_bf16_dot() and cpu_bf16_mode(jnp.bfloat16):
        return "bfloat16"
    return None


class Encoder:
    """Encodes texts with a DualEncoder and its tokenizer.

    Args:
      model: a gecko_jax DualEncoder.
      tokenizer: its gecko_jax Tokenizer.
      meta: ModelMeta from the model folder (prompt format, max length).
      max_length: token cap per text (defaults to the folder's max length).
      batch_size: texts per jitted call (rounded up to a multiple of the data axis).
      mesh: optional jax Mesh with a `data` axis; batches are split over it.
      micro_batch: rows per device computed at once inside a batch (default: 4 on
        CPU, the whole batch elsewhere); results do not depend on it.
      compute_dtype: None/'float32' (exact), 'bfloat16' (matmuls in bf16, norms,
        softmax and pooling float32; min cosine to float32 >= 0.998 on MiniLM), or
        'auto' (resolve_compute_dtype: bf16 on an accelerator or a CPU with bf16
        dot instructions and the oneDNN kernel).
    """

    def __init__(self, model, tokenizer, meta, max_length: int | None = None,
                 batch_size: int = 32, mesh: jax.sharding.Mesh | None = None,
                 show_progress: bool | None = None, micro_batch: int | None = None,
                 compute_dtype: str | None = None):
        self.tokenizer = tokenizer
        self.compute_dtype = resolve_compute_dtype(compute_dtype)
        if self.compute_dtype is not None:
            set_options(model, dataclasses.replace(
                getattr(getattr(model, "backbone", model), "options", None) or LayerOptions(),
                compute_dtype=self.compute_dtype))
        self.meta = meta
        self.max_length = int(max_length or meta.max_length)
        self.embedding_dim = model.embedding_dim
        self.mesh = mesh
        shards = mesh.shape["data"] if mesh is not None else 1
        self.batch_size = -(-batch_size // shards) * shards
        self._shards = shards
        self.show_progress = show_progress
        graphdef, state = nnx.split(model)
        if cpu_bf16_mode(self.compute_dtype):
            state = layer_kernels_as(state, jnp.bfloat16)
        if mesh is not None:
            from jax.sharding import NamedSharding, PartitionSpec

            self._batch_sharding = NamedSharding(mesh, PartitionSpec("data", None))
            state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
        else:
            self._batch_sharding = None
        self._state = state
        if micro_batch is None and jax.default_backend() == "cpu":
            micro_batch = (CPU_MICRO_BATCH_BF16 if cpu_bf16_mode(self.compute_dtype)
                           else CPU_MICRO_BATCH)
        self._embed = _embed_fn(graphdef, micro_batch * shards if micro_batch else None)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype=jnp.float32, **kwargs) -> "Encoder":
        from gecko_jax.models.llm_export import is_llm_folder, load_llm_encoder
        from gecko_jax.models.weights import load_dual_encoder, read_meta

        if is_llm_folder(folder):  # a decoder-LLM tower (models/llm_export.py)
            model, tokenizer, _ = load_llm_encoder(folder, dtype=dtype)
            return cls(model, tokenizer, read_meta(pathlib.Path(folder)), **kwargs)
        model, tokenizer, meta = load_dual_encoder(folder, dtype=dtype)
        return cls(model, tokenizer, meta, **kwargs)

    # -- formatting ---------------------------------------------------------
    def _format(self, fmt: str | None) -> str:
        return unified_format.check_prompt_format(fmt or self.meta.prompt_format)

    def encode_queries(self, texts, task: str | None = None, format: str | None = None):
        """Queries as `task: {task} | query: {text}` (raw format: the text alone)."""
        return self.encode(unified_format.format_queries(
            texts, task or self.meta.default_task, self._format(format)))

    def encode_documents(self, texts, titles=None, format: str | None = None):
        """Documents as `title: {title} | text: {text}` (raw format: the text alone)."""
        return self.encode(unified_format.format_documents(texts, titles, self._format(format)))

    # -- the core -----------------------------------------------------------
    def encode(self, texts) -> np.ndarray:
        """Already formatted texts -> float32 [N, embedding_dim], rows in input order."""
        texts = list(texts)
        out = np.zeros((len(texts), self.embedding_dim), np.float32)
        if not texts:
            return out
        ids = self.tokenizer.encode(texts, self.max_length)
        order = np.argsort([-len(x) for x in ids], kind="stable")
        starts = range(0, len(texts), self.batch_size)
        progress = self.show_progress if self.show_progress is not None else (
            len(texts) >= PROGRESS_MIN_TEXTS)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="encode", unit="text")
        pending = []  # (rows, device array): dispatch runs ahead of the host copies
        for start in starts:
            rows = order[start:start + self.batch_size]
            batch = [ids[i] for i in rows]
            length = bucket_length(max(len(x) for x in batch), self.max_length)
            # The last, short batch is padded with empty rows up to a batch bucket
            # (a power of two), so one query costs one row, not a full batch.
            batch += [[]] * (batch_bucket(len(batch), self.batch_size, self._shards) - len(batch))
            ids_bl, mask_bl = pad_batch(batch, length, self.tokenizer.pad_id)
            if self._batch_sharding is not None:
                ids_bl = jax.device_put(ids_bl, self._batch_sharding)
                mask_bl = jax.device_put(mask_bl, self._batch_sharding)
            pending.append((rows, self._embed(self._state, ids_bl, mask_bl)))
            if len(pending) > 2:
                done_rows, emb = pending.pop(0)
                out[done_rows] = np.asarray(emb)[:len(done_rows)]
                if progress:
                    bar.update(len(done_rows))
        for done_rows, emb in pending:
            out[done_rows] = np.asarray(emb)[:len(done_rows)]
            if progress:
                bar.update(len(done_rows))
        if progress:
            bar.close()
        return out
