"""The local teacher LLM: batched prefill + decode with a static KV cache, and scoring.

Shapes are static so XLA compiles each (batch, length) bucket once: batches are
padded to a power of two (<= max_batch) and lengths to `LENGTH_BUCKETS`. Decoding
runs `decode_chunk` steps per jitted call (a `lax.scan`), then Python checks stop
strings (in the new tokens only) and end-of-sequence between chunks; rows that
finished are dropped from the batch (it shrinks to the next power of two), and the
loop ends when every row is done. The leading block that every prompt of a batch
shares (FRet's few-shot prompt) is prefilled once and cached like scoring's, so the
rows of a batch, its retries and later batches only prefill their own tokens.

Scoring (`score`) returns log P(continuation | prefix). Pairs are sorted so that
shared leading tokens cluster; when every row of a batch shares at least
`min_shared` leading tokens (one passage against many queries, or one few-shot
block in every prompt), that shared block is prefilled once (and kept in a small
LRU) and only the remaining tokens run, attending to its KV cache. The LM head is
applied only at the positions that predict continuation tokens (for Gemma-3's
262k vocabulary the head costs more than the layers).
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gecko_jax.kernels.dense import cpu_bf16_mode
from gecko_jax.llm.base import LLM, Capabilities, Prompt, check_pairs, cut_at_stop
from gecko_jax.llm.sampling import next_tokens
from gecko_jax.lm_tokenizer import LMTokenizer
from gecko_jax.models import decoder as dec
from gecko_jax.sharding_rules import LOGICAL_AXIS_RULES, logical_to_spec
from gecko_jax.tokenization import batch_bucket, bucket_length

log = logging.getLogger(__name__)

LENGTH_BUCKETS = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
                  6144, 8192, 12288, 16384, 24576, 32768)


# Scoring rows are long and many (FRet stage 2: a passage per row), so padding costs
# real compute there: finer steps of 32 tokens up to 512.
SCORE_BUCKETS = tuple(range(32, 513, 32)) + tuple(b for b in LENGTH_BUCKETS if b > 512)


def _length_bucket(n: int) -> int:
    return bucket_length(n, buckets=LENGTH_BUCKETS)


def _score_bucket(n: int) -> int:
    return bucket_length(n, buckets=SCORE_BUCKETS)


def shard_params(cfg: dec.DecoderConfig, params: dict, mesh: jax.sharding.Mesh,
                 rules=LOGICAL_AXIS_RULES) -> dict:
    """Place params on `mesh` by their logical axis names (`decoder.logical_axes`) and the
    one rules table; a dimension that its mesh axis does not divide (e.g. 1 kv head over
    2 devices) stays replicated."""
    def place(x, names):
        spec = logical_to_spec(names, x.shape, mesh, rules)
        return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))

    return jax.tree.map(place, params, dec.logical_axes(cfg),
                        is_leaf=lambda x: isinstance(x, tuple))


def _pad_rows(rows: list[list[int]], length: int, pad: int) -> np.ndarray:
    out = np.full((len(rows), length), pad, np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


# ------------------------------------------------------------------ pure jitted math

def _empty_cache(cfg: dec.DecoderConfig, b: int, s: int, dtype) -> dict:
    shape = (cfg.num_layers, b, s, cfg.num_kv_heads, cfg.head_dim)
    pos = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
    # Slot s holds position s; causal masking (key pos <= query pos) hides slots not
    # yet written, so every slot can be marked valid.
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype), "pos": pos,
            "valid": jnp.ones((b, s), bool)}


def _sample(logits_bv, keys, temperature, top_p, greedy: bool, nucleus: bool):
    """Next token per row (llm/sampling.py)."""
    return next_tokens(logits_bv, keys, temperature, top_p, greedy, nucleus)


def _row_keys(base_key, row_ids, step):
    return jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(base_key, r), step))(row_ids)


def _prefill(cfg, params, ids_bt, lengths_b, row_ids, base_key, temperature, top_p, *,
             cache_size, greedy, nucleus, dtype):
    """Fill a cache with the prompts; sample each row's first new token."""
    b, t = ids_bt.shape
    cache = _empty_cache(cfg, b, cache_size, dtype)
    pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    h, cache = dec.forward(cfg, params, ids_bt, pos, cache=cache,
                           write_at=jnp.zeros((b,), jnp.int32))
    last = jnp.take_along_axis(h, (lengths_b - 1)[:, None, None], axis=1)  # [B, 1, D]
    logits = dec.lm_head(cfg, params, last)[:, 0]
    keys = _row_keys(base_key, row_ids, 0)
    return cache, _sample(logits, keys, temperature, top_p, greedy, nucleus)


def _prefix_form(k, v, n_shared):
    """A cached block [L, 1, S0, K, hd] as `decoder.forward`'s shared prefix: heads-major
    keys/values [L, K, S0, hd] stored once for every row; slots >= n_shared are hidden."""
    s0 = k.shape[2]
    return {"k": jnp.swapaxes(k[:, 0], 1, 2), "v": jnp.swapaxes(v[:, 0], 1, 2),
            "pos": jnp.arange(s0, dtype=jnp.int32),
            "valid": jnp.arange(s0, dtype=jnp.int32) < n_shared}


def _prefill_after(cfg, params, prefix, n_shared, ids_bt, lengths_b, row_ids, base_key,
                   temperature, top_p, *, cache_size, greedy, nucleus, dtype):
    """Like `_prefill`, for rows that continue a shared block held once (`prefix`, see
    `_prefix_form`) for all of them. ids_bt: the tokens after the block; lengths_b: whole
    prompt lengths (block included). Each row's own cache holds only the tokens after
    the block: slot j is position n_shared + j."""
    b, t = ids_bt.shape
    cache = _empty_cache(cfg, b, cache_size, dtype)
    cache["pos"] = cache["pos"] + n_shared
    cache["base"] = jnp.asarray(n_shared, jnp.int32)
    pos = n_shared + jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    h, cache = dec.forward(cfg, params, ids_bt, pos, cache=cache,
                           write_at=jnp.zeros((b,), jnp.int32), prefix=prefix)
    last = jnp.take_along_axis(h, (lengths_b - n_shared - 1)[:, None, None], axis=1)
    logits = dec.lm_head(cfg, params, last)[:, 0]
    keys = _row_keys(base_key, row_ids, 0)
    return cache, _sample(logits, keys, temperature, top_p, greedy, nucleus)


def _take_rows(cache, tok_b, pos_b, row_ids, keep):
    """The decode state of rows `keep` only (a smaller batch once rows have finished).
    The cache's "k"/"v" are stacked [L, B, ...] or per-layer lists of [B, ...]."""
    def rows(kv):
        return [a[keep] for a in kv] if isinstance(kv, list) else kv[:, keep]

    cache = dict(cache, k=rows(cache["k"]), v=rows(cache["v"]), pos=cache["pos"][keep],
                 valid=cache["valid"][keep])
    return cache, tok_b[keep], pos_b[keep], row_ids[keep]


def _split_kv(state: dict) -> dict:
    """A cache or shared prefix with its stacked "k"/"v" [L, ...] as per-layer lists."""
    return dict(state, k=dec.split_cache(state["k"]), v=dec.split_cache(state["v"]))


def _decode_chunk(cfg, params, cache, tok_b, pos_b, row_ids, base_key, step0, temperature,
                  top_p, prefix=None, *, n_steps, greedy, nucleus):
    """`n_steps` decode steps: feed tok_b at pos_b, emit the tokens fed, sample the next.
    With `prefix` (see `_prefill_after`) the cache's slot 0 is position cache["base"]."""

    def step(carry, i):
        cache, tok, pos = carry
        write_at = pos - cache["base"] if "base" in cache else pos
        h, cache = dec.forward(cfg, params, tok[:, None], pos[:, None], cache=cache,
                               write_at=write_at, prefix=prefix)
        logits = dec.lm_head(cfg, params, h)[:, 0]
        nxt = _sample(logits, _row_keys(base_key, row_ids, step0 + i + 1), temperature, top_p,
                      greedy, nucleus)
        return (cache, nxt, pos + 1), tok

    (cache, tok, pos), emitted = jax.lax.scan(step, (cache, tok_b, pos_b), jnp.arange(n_steps))
    return cache, tok, pos, emitted.T  # [B, n_steps]


# Rows of LM-head logits computed at once when scoring: [rows, vocab] float32 stays
# under glibc's largest mmap threshold (32 MB), so the block is reused from the heap
# instead of being page-faulted afresh every call (a 4 x 65 x 49k block took a sixth
# of a bf16 scoring call zero-filling pages); >= the oneDNN kernel's 64-row floor.
_HEAD_ROWS = 64


def _target_logprobs(cfg, params, h_btd, pred_pos_bc, targets_bc):
    """log p(target) at the given predictor positions: LM head only where needed, in
    blocks of _HEAD_ROWS rows (the [rows, vocab] logits never whole)."""
    h = jnp.take_along_axis(h_btd, pred_pos_bc[..., None], axis=1)  # [B, C, D]
    b, c, d = h.shape
    n = b * c
    if n <= _HEAD_ROWS:
        blocks_h, blocks_t = h.reshape(1, n, d), targets_bc.reshape(1, n)
    else:
        pad = -n % _HEAD_ROWS
        blocks_h = jnp.pad(h.reshape(n, d), ((0, pad), (0, 0))).reshape(-1, _HEAD_ROWS, d)
        blocks_t = jnp.pad(targets_bc.reshape(n), (0, pad)).reshape(-1, _HEAD_ROWS)

    def block(args):
        h_rd, t_r = args
        logits = dec.lm_head(cfg, params, h_rd[None])[0]  # [R, V]
        tgt = jnp.take_along_axis(logits, t_r[:, None], axis=-1)[:, 0]
        return tgt - jax.nn.logsumexp(logits, axis=-1)

    return jax.lax.map(block, (blocks_h, blocks_t)).reshape(-1)[:n].reshape(b, c)


def _score_full(cfg, params, ids_bt, lengths_b, pred_pos_bc, targets_bc):
    """Plain forward over whole (prefix + continuation) rows."""
    b, t = ids_bt.shape
    pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    valid = pos < lengths_b[:, None]
    h, _ = dec.forward(cfg, params, ids_bt, pos, valid_bt=valid)
    return _target_logprobs(cfg, params, h, pred_pos_bc, targets_bc)


def _prefill_shared(cfg, params, ids_1t, *, dtype):
    """KV cache [L, 1, T, K, hd] of one shared block of leading tokens."""
    t = ids_1t.shape[1]
    cache = _empty_cache(cfg, 1, t, dtype)
    pos = jnp.arange(t, dtype=jnp.int32)[None]
    _, cache = dec.forward(cfg, params, ids_1t, pos, cache=cache,
                           write_at=jnp.zeros((1,), jnp.int32))
    return cache["k"], cache["v"]


def _score_after(cfg, params, prefix, n_shared, ids_bt, pred_pos_bc, targets_bc):
    """Rows continue a shared block held once (`prefix`, see `_prefix_form`)."""
    b, t = ids_bt.shape
    cache = _empty_cache(cfg, b, t, prefix["k"].dtype)
    cache["pos"] = cache["pos"] + n_shared
    pos = n_shared + jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    h, _ = dec.forward(cfg, params, ids_bt, pos, cache=cache,
                       write_at=jnp.zeros((b,), jnp.int32), prefix=prefix)
    return _target_logprobs(cfg, params, h, pred_pos_bc, targets_bc)


def _row_by_row(fn, n_rows: int, mesh: jax.sharding.Mesh | None):
    """`fn(params, *shared, *rows)` (its last n_rows arguments batch-leading, its result
    too) computed one row at a time: a loop whose step is the same one-row program
    whatever the number of rows, so a row's result does not depend on how many rows a
    device holds. On a mesh each device loops over its own rows (shard_map over "data";
    parameters and shared arguments replicated, so a "model" axis is gathered), so the
    result does not depend on the mesh either: XLA:CPU's float32 dots pick other
    algorithms for other row counts (a row alone vs 8 in one product), which moved
    summed log-probs by ~2e-5 between 1 and 8 devices."""
    def per_row(params, *args):
        shared, rows = args[:len(args) - n_rows], args[len(args) - n_rows:]
        return jax.lax.map(lambda r: fn(params, *shared, *(a[None] for a in r))[0], rows)

    if mesh is None or "data" not in mesh.shape:
        return per_row
    P = jax.sharding.PartitionSpec

    def sharded(params, *args):
        specs = (P(),) * (1 + len(args) - n_rows) + (P("data"),) * n_rows
        return jax.shard_map(per_row, mesh=mesh, in_specs=specs, out_specs=P("data"),
                             check_vma=False)(params, *args)
    return sharded


# ------------------------------------------------------------------------- engine

class JaxEngine(LLM):
    """A decoder LM run locally with JAX (CPU, GPU or TPU).

    How it batches. Generation prefills a batch's shared leading block (the few-shot
    prompt) once, cached across calls (LRU of 8), so retries and later shards reuse it;
    while decoding, rows that finished are dropped from the batch (it shrinks to the
    next power of two) and stop costing compute. Scoring batches rows of similar length
    (sorted by length within a shared-prefix group), pads to steps of 32 tokens
    (`SCORE_BUCKETS`), and caches a group's shared block once. A cached block is
    attended to as one copy for all rows (`decoder.forward`'s `prefix`); each row's
    cache holds only its own tokens.

    Args:
      config, params: the model (`decoder.hf_to_params` output or `Decoder.params()`).
      tokenizer: its `LMTokenizer`.
      max_batch: rows per jitted call (batches are padded to powers of two up to it).
      decode_chunk: decode steps per jitted call between stop checks.
      min_shared: shortest shared leading block worth caching once (scoring and
        generation).
      dtype: compute dtype. bfloat16 on a CPU with the oneDNN kernel (kernels/dense.py's
        CPU bf16 mode): bf16 matmul operands in prefill and scoring, float32
        activations and KV caches, and decode steps on a float32 copy of the weights
        (their few-row matmuls are memory-bound; XLA:CPU runs them slower in bf16).
        Elsewhere bfloat16 weights, activations and caches.
      mesh: data-parallel (and tensor-parallel) teacher over a device mesh: parameters
        are placed by the logical-axis rules (sharding_rules; replicated over "data"), batches split over "data"
        (rows padded to a multiple of its size). None: one device.
      batch_invariant: scoring computes each row by itself (`_row_by_row`: a loop over
        rows, per device on a mesh), so scores are the same bits on any number of
        devices (otherwise within ~2e-5 of one device's: float32 products of other
        row counts). In the default FRet run on a 2-core CPU it cost 0-6% of the
        passages/min (bench/fret.py --batch-invariant, two runs); generation is
        unchanged (its greedy tokens already agree).
      decode_layer_buffers: decode steps read each layer's weights, KV cache and shared
        prefix from its own buffer (an unrolled layer loop; `decoder.split_layers`)
        instead of slicing stacked arrays, which XLA:CPU copies at every step: 15-26%
        faster decode steps for SmolLM2-135M at 1-8 rows, ~2 s more compile, and a
        second copy of the layer weights in memory (in the CPU bf16 mode it is the
        float32 decode copy, so nothing more). None: on CPU devices only.
    """

    def __init__(self, config: dec.DecoderConfig, params: dict, tokenizer: LMTokenizer, *,
                 max_batch: int = 16, decode_chunk: int = 8, min_shared: int = 16,
                 mesh: jax.sharding.Mesh | None = None, dtype=jnp.float32, name: str = "jax",
                 decode_layer_buffers: bool | None = None, batch_invariant: bool = False):
        self.config, self.tokenizer = config, tokenizer
        self.dtype = dtype
        self._params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
        self.max_batch, self.decode_chunk, self.min_shared = max_batch, decode_chunk, min_shared
        self.mesh = mesh
        self._min_rows = int(mesh.shape.get("data", 1)) if mesh is not None else 1
        if self._min_rows & (self._min_rows - 1) or max_batch % self._min_rows:
            raise ValueError(f"the mesh's data axis ({self._min_rows} devices) must be a power "
                             f"of two dividing max_batch ({max_batch})")
        # Decode steps run a few rows each: memory-bound matmuls that oneDNN's bf16 kernel
        # does not speed up and XLA:CPU runs slower in bf16 (kernels/dense.py MIN_ROWS).
        # In the CPU bf16 mode they use a float32 copy of the parameters instead.
        cpu_bf16 = cpu_bf16_mode(dtype)
        self.decode_params = self._params
        if cpu_bf16:
            self.decode_params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
        if mesh is not None:
            self._params = shard_params(config, self._params, mesh)
            self.decode_params = (self._params if self.decode_params is self._params
                                  else shard_params(config, self.decode_params, mesh))
        if cpu_bf16:  # bf16 weights kept as bits: XLA:CPU's loop would convert them
            self._params = dec.layers_as_bits(self._params)
        if decode_layer_buffers is None:
            devices = mesh.devices.flat if mesh is not None else jax.devices()[:1]
            decode_layer_buffers = all(d.platform == "cpu" for d in devices)
        self.decode_layer_buffers = decode_layer_buffers
        if decode_layer_buffers:  # one buffer per layer (decoder.split_layers)
            self.decode_params = dec.split_layers(self.decode_params)
        self.name = name
        self.capabilities = Capabilities(generate=True, score=True,
                                         chat=bool(tokenizer.chat_template), seeded=True)
        cfg = config
        jit = jax.jit
        # KV caches hold the attention's operands: float32 in the CPU bf16 mode, whose
        # activations and attention are float32 (a bf16 cache would be converted back
        # on every decode step, which XLA:CPU does slowly).
        cache_dtype = jnp.float32 if cpu_bf16 else dtype
        self._prefill = jit(functools.partial(_prefill, cfg, dtype=cache_dtype),
                            static_argnames=("cache_size", "greedy", "nucleus"))
        self._decode = jit(functools.partial(_decode_chunk, cfg),
                           static_argnames=("n_steps", "greedy", "nucleus"),
                           donate_argnums=(1,))
        self.batch_invariant = batch_invariant

        def scorer(fn, n_rows):
            fn = functools.partial(fn, cfg)
            return jit(_row_by_row(fn, n_rows, mesh) if batch_invariant else fn)

        self._score_full = scorer(_score_full, 4)
        self._prefill_shared = jit(functools.partial(_prefill_shared, cfg, dtype=cache_dtype))
        self._take_rows = jit(_take_rows)
        self._split_kv = jit(_split_kv)
        self._prefill_after = jit(functools.partial(_prefill_after, cfg, dtype=cache_dtype),
                                  static_argnames=("cache_size", "greedy", "nucleus"))
        self._score_after = scorer(_score_after, 3)
        self._prefix_form = jit(_prefix_form)
        self._logits = jit(functools.partial(dec.logits, cfg))
        self._shared_lru: collections.OrderedDict = collections.OrderedDict()
        self.stats = collections.Counter()

    @property
    def params(self) -> dict:
        """The parameters in the compute dtype (bf16 weights as bf16, not as the bits
        the engine runs on in the CPU bf16 mode)."""
        layers = {k: jax.lax.bitcast_convert_type(v, jnp.bfloat16) if v.dtype == jnp.uint16
                  else v for k, v in self._params["layers"].items()}
        return dict(self._params, layers=layers)

    @classmethod
    def load(cls, spec, **kwargs) -> "JaxEngine":
        """From a shipped name ('smollm2', 'gemma3'), a .gguf file or an HF folder."""
        from gecko_jax.llm.loading import load_decoder

        t0 = time.time()
        cfg, state, tok = load_decoder(spec)
        engine = cls(cfg, dec.hf_to_params(cfg, state), tok, name=str(spec), **kwargs)
        log.info("loaded %s (%s, %d layers) in %.1fs", spec, cfg.architecture, cfg.num_layers,
                 time.time() - t0)
        return engine

    # ----------------------------------------------------------------- helpers

    def prompt_text(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True)

    @property
    def has_chat_template(self) -> bool:
        return bool(self.tokenizer.chat_template)

    def render_chat(self, messages: list) -> str:
        return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)

    def full_logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits [T, V] of one sequence (plain forward; for tests and checks)."""
        t = _length_bucket(len(ids))
        x = _pad_rows([list(ids)], t, self.tokenizer.pad_id)
        return np.asarray(self._logits(self._params, jnp.asarray(x)))[0, :len(ids)]

    def _bucket_rows(self, n: int) -> int:
        """Rows of a batch of n: a power of two <= max_batch, >= the data-axis size."""
        return max(self._min_rows, batch_bucket(n, self.max_batch))

    def _rows_in(self, x) -> jax.Array:
        """A batch-leading array, split over the mesh's data axis (if any)."""
        if self.mesh is None or "data" not in self.mesh.shape:
            return jnp.asarray(x)
        P = jax.sharding.PartitionSpec
        return jax.device_put(np.asarray(x), jax.sharding.NamedSharding(self.mesh, P("data")))

    # ---------------------------------------------------------------- generate

    def generate(self, prompts, max_new_tokens=64, temperature=0.0, top_p=1.0, stop=None,
                 seed=0) -> list[str]:
        texts = [self.prompt_text(p) for p in prompts]
        ids = self.tokenizer.encode_batch(texts)
        out = self.generate_ids(ids, max_new_tokens, temperature, top_p, stop, seed)
        # Cut the text too: a token may straddle the start of a stop string.
        return [cut_at_stop(self.tokenizer.decode(o), stop)[0] for o in out]

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens=64,
                     temperature=0.0, top_p=1.0, stop=None, seed=0) -> list[list[int]]:
        """New token ids per prompt (before EOS; cut before the first stop string)."""
        if max_new_tokens <= 0:
            return [[] for _ in prompt_ids]
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("empty prompt: nothing to condition on")
        greedy = temperature <= 0
        nucleus = not greedy and top_p < 1.0
        key = jax.random.key(seed)
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        results: list[list[int]] = [[] for _ in prompt_ids]
        for start in range(0, len(order), self.max_batch):
            idx = order[start:start + self.max_batch]
            outs = self._generate_batch([list(prompt_ids[i]) for i in idx], idx, max_new_tokens,
                                        temperature, top_p, stop, key, greedy, nucleus)
            for i, o in zip(idx, outs):
                results[i] = o
        return results

    def _generate_batch(self, rows, row_ids, max_new, temperature, top_p, stop, key, greedy,
                        nucleus):
        n = len(rows)
        b = self._bucket_rows(n)
        rows = rows + [rows[0]] * (b - n)  # padding rows: discarded
        lengths = np.array([len(r) for r in rows], np.int32)
        chunk = self.decode_chunk
        steps = int(math.ceil(max_new / chunk)) * chunk
        rid = self._rows_in(np.array(list(row_ids) + [0] * (b - n), np.int32))
        temp = jnp.float32(max(temperature, 1e-6))
        tp = jnp.float32(top_p)
        pad = self.tokenizer.pad_id
        # The shared leading block (the few-shot prompt) must end before every row's last
        # token, whose hidden state gives the first new token.
        shared = min(_common_prefix_len(rows), int(lengths.min()) - 1)
        kv = None
        if shared >= self.min_shared:
            # One prompt alone has nothing to share: only a block cached earlier is used.
            # A retry's common prefix may run a few tokens past the cached few-shot block
            # a cached block covering half of it is used.
            kv = self._shared_kv(rows[0][:shared], create=n > 1, slack=shared // 2)
        prefix = None
        if kv is not None:
            n_shared, sk, sv = kv
            prefix = self._shared_prefix(n_shared, sk, sv)
            rest = [r[n_shared:] for r in rows]
            t = _length_bucket(max(len(r) for r in rest))
            # Each row's own cache: its tokens after the block, then the new ones.
            cache_size = _length_bucket(max(t, max(len(r) for r in rest) + steps))
            cache, tok = self._prefill_after(
                self._params, prefix, jnp.int32(n_shared),
                self._rows_in(_pad_rows(rest, t, pad)), self._rows_in(lengths), rid, key, temp,
                tp, cache_size=cache_size, greedy=greedy, nucleus=nucleus)
            self.stats["prefill_tokens"] += sum(len(r) for r in rest[:n])
        else:
            t = _length_bucket(int(lengths.max()))
            cache_size = _length_bucket(int(lengths.max()) + steps)
            cache, tok = self._prefill(self._params, self._rows_in(_pad_rows(rows, t, pad)),
                                       self._rows_in(lengths), rid, key, temp, tp,
                                       cache_size=cache_size, greedy=greedy, nucleus=nucleus)
            self.stats["prefill_tokens"] += sum(len(r) for r in rows[:n])
        if self.decode_layer_buffers:
            cache = self._split_kv(cache)
            prefix = None if prefix is None else self._split_kv(prefix)
        pos = self._rows_in(lengths)
        stop_ids = set(self.tokenizer.stop_ids)
        # A stop string is looked for in the tokens of this chunk plus enough earlier ones
        # to hold a stop string that straddles chunks (a token is >= 1 byte of text).
        window = 4 * max((len(x) for x in stop), default=0) + 4 if stop else 0
        gen = [[] for _ in range(n)]
        done = [False] * n
        live = list(range(b))  # batch slot -> row (>= n: padding)
        for c in range(steps // chunk):
            cache, tok, pos, emitted = self._decode(self.decode_params, cache, tok, pos, rid, key,
                                                    jnp.int32(c * chunk), temp, tp, prefix,
                                                    n_steps=chunk, greedy=greedy, nucleus=nucleus)
            self.stats["decode_steps"] += chunk
            self.stats["decode_row_steps"] += chunk * len(live)
            em = np.asarray(emitted)
            for slot, i in enumerate(live):
                if i >= n or done[i]:
                    continue
                start = len(gen[i])
                for tkn in em[slot]:
                    if tkn in stop_ids or len(gen[i]) >= max_new:
                        done[i] = True
                        break
                    gen[i].append(int(tkn))
                if len(gen[i]) >= max_new:
                    done[i] = True
                if stop and not done[i]:
                    tail = gen[i][max(0, start - window):]
                    done[i] = cut_at_stop(self.tokenizer.decode(tail), stop)[1]
            if all(done):
                break
            alive = [slot for slot, i in enumerate(live) if i < n and not done[i]]
            nb = self._bucket_rows(len(alive))
            if nb < len(live):  # drop finished rows: a smaller batch
                keep = alive + [alive[0]] * (nb - len(alive))
                cache, tok, pos, rid = self._take_rows(cache, tok, pos, rid,
                                                       jnp.asarray(keep, jnp.int32))
                live = [live[s_] for s_ in alive] + [n] * (nb - len(alive))
        if stop:
            gen = [self._cut_ids(g, stop) for g in gen]
        return gen

    def _cut_ids(self, ids, stop):
        """The longest prefix of ids whose text lies before the first stop string
        (bisection over prefix lengths: O(log n) decodes)."""
        text, found = cut_at_stop(self.tokenizer.decode(ids), stop)
        if not found:
            return ids
        lo, hi = 0, len(ids)  # decode(ids[:lo]) is a prefix of text; decode(ids[:hi]) is not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if text.startswith(self.tokenizer.decode(ids[:mid])):
                lo = mid
            else:
                hi = mid
        return ids[:lo]

    def _shared_kv(self, ids, create: bool = True, slack: int = 0):
        """(n, k, v): the KV cache [L, 1, S, K, hd] of the first n tokens of `ids`.

        The longest cached block that is a prefix of `ids` and leaves at most `slack` of
        its tokens uncovered is reused; otherwise all of `ids` is prefilled now and
        cached (LRU of 8), or None is returned when `create` is False.
        """
        ids = tuple(ids)
        best = None
        for key in self._shared_lru:
            if (len(key) <= len(ids) and len(key) + slack >= len(ids)
                    and (best is None or len(key) > len(best)) and ids[:len(key)] == key):
                best = key
        if best is None and not create:
            return None
        if best is None:
            x = _pad_rows([list(ids)], _length_bucket(len(ids)), self.tokenizer.pad_id)
            self._shared_lru[ids] = self._prefill_shared(self._params, jnp.asarray(x))
            if len(self._shared_lru) > 8:
                self._shared_lru.popitem(last=False)
            self.stats["shared_prefills"] += 1
            best = ids
        else:
            self._shared_lru.move_to_end(best)
            self.stats["shared_hits"] += 1
        k, v = self._shared_lru[best][:2]
        return len(best), k, v

    def _shared_prefix(self, n: int, k, v) -> dict:
        """The cached block (n, k, v) in `_prefix_form` (made once per cached block)."""
        for key, entry in self._shared_lru.items():
            if entry[0] is k:
                if len(entry) == 2:
                    self._shared_lru[key] = entry = (k, v, self._prefix_form(k, v, jnp.int32(n)))
                return entry[2]
        return self._prefix_form(k, v, jnp.int32(n))

    # ------------------------------------------------------------------- score

    def score(self, prefixes, continuations, per_token=False, reuse_prefix=True):
        check_pairs(prefixes, continuations)
        if not len(prefixes):
            return []
        p_ids = self.tokenizer.encode_batch(list(prefixes))
        c_ids = self.tokenizer.encode_batch(list(continuations), add_bos=False)
        return self.score_ids(p_ids, c_ids, per_token=per_token, reuse_prefix=reuse_prefix)

    def score_ids(self, prefix_ids, cont_ids, per_token=False, reuse_prefix=True):
        """Like `score`, on token ids (each prefix must hold at least one token).

        Pairs with the same prefix and one-token continuations (relevance
        classification's " yes" / " no") run as one row that reads every label's
        log-prob at the same position.
        """
        if any(len(p) == 0 for p in prefix_ids):
            raise ValueError("empty prefix: the first token has no context to be scored in")
        # Units of work: (row tokens, prediction positions, targets, pair indices).
        units, merged = [], {}
        for i, (p, c) in enumerate(zip(prefix_ids, cont_ids)):
            p, c = list(p), list(c)
            if len(c) == 1 and reuse_prefix:
                key = tuple(p)
                if key in merged:
                    u = units[merged[key]]
                    u[1].append(len(p) - 1)
                    u[2].append(c[0])
                    u[3].append(i)
                    continue
                merged[key] = len(units)
            units.append((p + c, [len(p) - 1 + j for j in range(len(c))], c, [i]))
        full = [u[0] for u in units]
        order = sorted(range(len(full)), key=lambda i: full[i])
        # Sorted rows that share >= min_shared leading tokens form a group; groups of one
        # are pooled into plain batches.
        groups, singles = [], []  # groups: (members, shared leading tokens of all)
        if reuse_prefix:
            group, common = [order[0]], len(full[order[0]])
            for i in order[1:]:
                k = min(common, _common_prefix_len([full[group[0]], full[i]]))
                if k >= self.min_shared:
                    group.append(i)
                    common = k
                else:
                    if len(group) > 1:
                        groups.append((group, common))
                    else:
                        singles += group
                    group, common = [i], len(full[i])
            if len(group) > 1:
                groups.append((group, common))
            else:
                singles += group
        else:
            singles = order
        # Similar lengths share a batch (less padding); a group's batches share one
        # cached block (its common leading tokens, not each batch's longer prefix).
        groups = [(sorted(g, key=lambda u: len(full[u])), c) for g, c in groups]
        singles = sorted(singles, key=lambda u: len(full[u]))
        batches = [(g[k:k + self.max_batch], c) for g, c in groups
                   for k in range(0, len(g), self.max_batch)]
        batches += [(singles[k:k + self.max_batch], None)
                    for k in range(0, len(singles), self.max_batch)]
        out: list = [None] * len(prefix_ids)
        for idx, group_shared in batches:
            res = self._score_batch([units[u][0] for u in idx], [units[u][1] for u in idx],
                                    [units[u][2] for u in idx], reuse_prefix, group_shared)
            for u, r in zip(idx, res):
                pairs = units[u][3]
                parts = [r] if len(pairs) == 1 else [r[k:k + 1] for k in range(len(pairs))]
                for i, part in zip(pairs, parts):
                    out[i] = part if per_token else float(np.sum(part, dtype=np.float64))
        return out

    def _score_batch(self, rows, preds, targets, reuse_prefix, group_shared=None):
        """log p(target) [per row: len(preds[i])] at the given positions of each row.

        group_shared: leading tokens shared by the whole group the batch came from; the
        cached block stops there (one block for all of the group's batches and calls).
        """
        n = len(rows)
        b = self._bucket_rows(n)
        rows = rows + [rows[0]] * (b - n)
        preds = list(preds) + [preds[0]] * (b - n)
        targets = list(targets) + [targets[0]] * (b - n)
        shared = _common_prefix_len(rows) if reuse_prefix else 0
        if group_shared is not None:
            shared = min(shared, group_shared)
        # The shared block must end before every row's first prediction position (its
        # hidden state must be computed here).
        shared = min(shared, min(p[0] for p in preds))
        c = _length_bucket(max(len(p) for p in preds))
        pad = self.tokenizer.pad_id
        pred = _pad_rows(preds, c, 0)
        tgt = _pad_rows(targets, c, 0)
        if shared >= self.min_shared:
            shared, k_shared, v_shared = self._shared_kv(rows[0][:shared])
            rest = [r[shared:] for r in rows]
            t = _score_bucket(max(len(r) for r in rest))
            pred = np.clip(pred - shared, 0, t - 1)
            lp = self._score_after(self._params, self._shared_prefix(shared, k_shared, v_shared),
                                   jnp.int32(shared), self._rows_in(_pad_rows(rest, t, pad)),
                                   self._rows_in(pred.astype(np.int32)), self._rows_in(tgt))
            self.stats["extend_tokens"] += sum(len(r) for r in rest[:n])
        else:
            t = _score_bucket(max(len(r) for r in rows))
            lens = np.array([len(r) for r in rows], np.int32)
            lp = self._score_full(self._params, self._rows_in(_pad_rows(rows, t, pad)),
                                  self._rows_in(lens),
                                  self._rows_in(np.minimum(pred, t - 1).astype(np.int32)),
                                  self._rows_in(tgt))
            self.stats["full_tokens"] += sum(len(r) for r in rows[:n])
        self.stats["score_rows"] += n
        self.stats["score_padded_tokens"] += b * t
        lp = np.asarray(lp)
        return [lp[i, :len(preds[i])].astype(np.float64) for i in range(n)]


def _common_prefix_len(rows: list[list[int]]) -> int:
    first = rows[0]
    n = min(len(r) for r in rows)
    for r in rows[1:]:
        k = 0
        while k < n and r[k] == first[k]:
            k += 1
        n = k
    return n
