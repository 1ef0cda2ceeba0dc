"""Decoder-only language models: the Llama family (SmolLM2) and Gemma-3, in Flax NNX.

The teacher LLM of FRet, and (with `causal=False` and mean pooling) an embedding
backbone: Gecko and Gemini Embedding both start from an LLM.

Layout. Per-layer weights are stacked on a leading `layers` axis and the blocks run
under `jax.lax.scan`, so a 30-layer model compiles as fast as a 1-layer one (XLA on
CPU compiles each prefill/decode shape once per length bucket; unrolled layers made
that the dominant cost). Gemma-3's two kinds of layer (sliding window with RoPE base
1e4, global with base 1e6) differ only in data (a per-layer flag), so one scan body
serves both.

Weights follow the Hugging Face conventions (`load_hf_state`): RoPE in the
"rotate half" layout, Gemma norms as `x * (1 + w)`. `models/gguf.py` converts a
GGUF into that form (un-permuting llama.cpp's Q/K rows and removing Gemma's +1).

All math is in pure functions over a params dict (`forward`), which the engine jits;
the NNX module owns the parameters, their logical axis names and initialisation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gecko_jax.kernels.dense import cpu_bf16_mode, dense, use_onednn
from gecko_jax.models.attention import attention as shared_attention
from gecko_jax.models.attention import attention_with_prefix
from gecko_jax.models.dual_encoder import mean_pool
from gecko_jax.models.layer_stack import LayerOptions, run_stack, to_compute

Array = jax.Array

LLAMA = "llama"
GEMMA3 = "gemma3"
ARCHITECTURES = (LLAMA, GEMMA3)


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Hyper-parameters of a Llama or Gemma-3 decoder (names follow HF configs)."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # Gemma-3 only: local (sliding-window) layers use their own RoPE base.
    rope_local_theta: float = 10000.0
    sliding_window: int | None = None
    sliding_window_pattern: int = 6  # every 6th layer is global
    query_pre_attn_scalar: float | None = None
    tie_embeddings: bool = True
    max_position_embeddings: int = 8192
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unsupported architecture {self.architecture!r}; "
                             f"supported: {ARCHITECTURES}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")

    @property
    def is_gemma(self) -> bool:
        return self.architecture == GEMMA3

    def global_layers(self) -> np.ndarray:
        """bool [num_layers]: True where a layer attends globally (all Llama layers)."""
        if not self.is_gemma or self.sliding_window is None:
            return np.ones(self.num_layers, bool)
        return (np.arange(self.num_layers) + 1) % self.sliding_window_pattern == 0

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "DecoderConfig":
        """From an HF `config.json` of a LlamaForCausalLM or Gemma3ForCausalLM."""
        model_type = d.get("model_type", "")
        rope = d.get("rope_parameters") or {}
        theta = d.get("rope_theta", rope.get("rope_theta", 10000.0))
        if model_type == "llama":
            if d.get("rope_scaling"):
                raise ValueError("Llama RoPE scaling is not supported")
            return cls(
                architecture=LLAMA, vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"],
                num_heads=d["num_attention_heads"],
                num_kv_heads=d.get("num_key_value_heads", d["num_attention_heads"]),
                head_dim=d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"],
                rms_norm_eps=d.get("rms_norm_eps", 1e-5), rope_theta=theta,
                tie_embeddings=d.get("tie_word_embeddings", False),
                max_position_embeddings=d.get("max_position_embeddings", 8192),
                bos_token_id=d.get("bos_token_id"), eos_token_id=_first(d.get("eos_token_id")),
                pad_token_id=d.get("pad_token_id"))
        if model_type in ("gemma3_text", "gemma3"):
            d = d.get("text_config", d)
            if "sliding_attention" in str(rope):  # per-layer-type rope parameters
                theta = rope["full_attention"]["rope_theta"]
                local = rope["sliding_attention"]["rope_theta"]
            else:
                local = d.get("rope_local_base_freq", 10000.0)
            pattern = d.get("sliding_window_pattern", 6)
            if d.get("layer_types"):
                types = d["layer_types"]
                pattern = types.index("full_attention") + 1 if "full_attention" in types else 10**9
            if d.get("final_logit_softcapping") or d.get("attn_logit_softcapping"):
                raise ValueError("logit soft-capping is not supported")
            return cls(
                architecture=GEMMA3, vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"],
                num_heads=d["num_attention_heads"], num_kv_heads=d["num_key_value_heads"],
                head_dim=d.get("head_dim", 256), rms_norm_eps=d.get("rms_norm_eps", 1e-6),
                rope_theta=theta, rope_local_theta=local,
                sliding_window=d.get("sliding_window", 512), sliding_window_pattern=pattern,
                query_pre_attn_scalar=d.get("query_pre_attn_scalar", 256),
                tie_embeddings=d.get("tie_word_embeddings", True),
                max_position_embeddings=d.get("max_position_embeddings", 32768),
                bos_token_id=d.get("bos_token_id"), eos_token_id=_first(d.get("eos_token_id")),
                pad_token_id=d.get("pad_token_id"))
        raise ValueError(f"unsupported model_type {model_type!r} (llama or gemma3_text)")

    def to_hf_dict(self) -> dict[str, Any]:
        """An HF `config.json` that transformers loads as the same model."""
        common = dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim, rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_embeddings,
            max_position_embeddings=self.max_position_embeddings,
            bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id, torch_dtype="float32")
        if not self.is_gemma:
            return dict(common, model_type="llama", architectures=["LlamaForCausalLM"],
                        hidden_act="silu", rope_theta=self.rope_theta)
        types = ["full_attention" if g else "sliding_attention" for g in self.global_layers()]
        return dict(common, model_type="gemma3_text", architectures=["Gemma3ForCausalLM"],
                    hidden_activation="gelu_pytorch_tanh", rope_theta=self.rope_theta,
                    rope_local_base_freq=self.rope_local_theta,
                    sliding_window=self.sliding_window, layer_types=types,
                    query_pre_attn_scalar=self.query_pre_attn_scalar,
                    final_logit_softcapping=None, attn_logit_softcapping=None)


def _first(x):
    return x[0] if isinstance(x, (list, tuple)) else x


# ----------------------------------------------------------------------------- math

def rms_norm(x: Array, w: Array, eps: float, unit_offset: bool) -> Array:
    """RMSNorm over the last axis, in float32. Gemma scales by (1 + w), Llama by w."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    scale = (1.0 + w.astype(jnp.float32)) if unit_offset else w.astype(jnp.float32)
    return (y * scale).astype(x.dtype)


def rope_cos_sin(pos_bt: Array, head_dim: int, theta: float | Array) -> tuple[Array, Array]:
    """cos, sin [B, T, head_dim] for integer positions (HF "rotate half" layout)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    ang = pos_bt.astype(jnp.float32)[..., None] * inv_freq
    ang = jnp.concatenate([ang, ang], axis=-1)
    return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x_bthd: Array, cos_btd: Array, sin_btd: Array) -> Array:
    half = x_bthd.shape[-1] // 2
    rot = jnp.concatenate([-x_bthd[..., half:], x_bthd[..., :half]], axis=-1)
    return (x_bthd * cos_btd[:, :, None] + rot * sin_btd[:, :, None]).astype(x_bthd.dtype)


def attention(q_bthd: Array, k_bskd: Array, v_bskd: Array, mask_bts: Array,
              scale: float) -> Array:
    """Grouped-query attention in the decoder's [B, T, heads, hd] layout (the shared
    heads-major kernel, models/attention.py). Returns [B, T, H, hd]."""
    heads_major = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731
    o_bhtd = shared_attention(heads_major(q_bthd), heads_major(k_bskd), heads_major(v_bskd),
                              mask_bts, scale)
    return heads_major(o_bhtd)


def attention_mask(q_pos_bt: Array, k_pos_bs: Array, k_valid_bs: Array, causal: bool,
                   window: Array | int | None) -> Array:
    """bool [B, T, S]: key s is visible from query t.

    `window` (a traced int, or None) keeps keys with q_pos - k_pos < window when
    causal (HF's sliding-window convention) and |q_pos - k_pos| < window when not
    (a symmetric window, see `bidirectional_window`); a very large value makes the
    layer global.
    """
    m = k_valid_bs[:, None, :]
    if causal:
        m = m & (k_pos_bs[:, None, :] <= q_pos_bt[:, :, None])
    if window is not None:
        dist = q_pos_bt[:, :, None] - k_pos_bs[:, None, :]
        m = m & ((dist if causal else jnp.abs(dist)) < window)
    return m


def bidirectional_window(sliding_window: int) -> int:
    """Half-width of a sliding-window layer without the causal mask.

    transformers' Gemma-3 `use_bidirectional_attention` (EmbeddingGemma) lets a
    local layer see keys with |i - j| < sliding_window // 2 + 1: the same number of
    keys as the causal window, centred on the query.
    """
    return sliding_window // 2 + 1


def _project_heads(h_btd: Array, w_dhk: Array) -> Array:
    """[B, T, D] x [D, H, hd] -> [B, T, H, hd] (kernels/dense: oneDNN where it pays)."""
    d, nh, hd = w_dhk.shape
    return dense(h_btd, w_dhk.reshape(d, nh * hd)).reshape(*h_btd.shape[:2], nh, hd)


def _merge_heads(o_bthk: Array, w_hkd: Array) -> Array:
    """[B, T, H, hd] x [H, hd, D] -> [B, T, D]."""
    nh, hd, d = w_hkd.shape
    return dense(o_bthk.reshape(*o_bthk.shape[:2], nh * hd), w_hkd.reshape(nh * hd, d))


def _mlp(x: Array, p: dict, gemma: bool) -> Array:
    """Gated MLP: down(act(x W_gate) * (x W_up)). On the oneDNN route (CPU bf16 mode)
    the activation runs inside the gate's kernel and both halves are written in bf16:
    their product only feeds the down projection, which rounds it to bf16 anyway."""
    kernel = use_onednn(x, p["w_gate"]) and p["w_gate"].dtype == jnp.bfloat16
    mid = jnp.bfloat16 if kernel else None
    act = "gelu_tanh" if gemma else "silu"
    g = dense(x, p["w_gate"], activation=act, out_dtype=mid)
    u = dense(x, p["w_up"], out_dtype=mid)
    gu = g.astype(jnp.float32) * u.astype(jnp.float32) if kernel else g * u
    return dense(gu.astype(x.dtype), p["w_down"])


def block(cfg: DecoderConfig, p: dict, x_btd: Array, is_global: Array, pos_bt: Array,
          k_cache: Array, v_cache: Array, k_pos_bs: Array, k_valid_bs: Array,
          write_at: Array | None, causal: bool, prefix: tuple | None = None
          ) -> tuple[Array, Array, Array]:
    """One transformer layer.

    Args:
      p: this layer's weights (see `Decoder`).
      x_btd: residual stream [B, T, D].
      is_global: bool scalar; Gemma-3 local layers use a sliding window and RoPE 1e4.
      pos_bt: positions of the T new tokens.
      k_cache, v_cache: [B, S, K, hd] keys/values (S may equal T when there is no cache).
      k_pos_bs, k_valid_bs: position and validity of each of the S key slots.
      write_at: None (k_cache is ignored: keys are the new tokens themselves), or
        int [B] slot where each row's T new keys/values are written.
      prefix: None, or (k [K, S0, hd], v [K, S0, hd], pos [S0], valid [S0]): keys and
        values of a block every row continues, stored once (see `forward`).
    Returns:
      (x_btd, k_cache, v_cache) after the layer.
    """
    b, t, _ = x_btd.shape
    eps, gemma = cfg.rms_norm_eps, cfg.is_gemma
    h = rms_norm(x_btd, p["attn_norm"], eps, gemma)
    q, k, v = (_project_heads(h, p[w]) for w in ("wq", "wk", "wv"))
    if gemma:
        q = rms_norm(q, p["q_norm"], eps, True)
        k = rms_norm(k, p["k_norm"], eps, True)
        theta = jnp.where(is_global, cfg.rope_theta, cfg.rope_local_theta)
        local = cfg.sliding_window if causal else bidirectional_window(cfg.sliding_window or 0)
        window = (jnp.where(is_global, jnp.iinfo(jnp.int32).max, local)
                  if cfg.sliding_window else None)
        scale = cfg.query_pre_attn_scalar ** -0.5
    else:
        theta, window, scale = cfg.rope_theta, None, cfg.head_dim ** -0.5
    cos, sin = rope_cos_sin(pos_bt, cfg.head_dim, theta)  # theta may be traced
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    if write_at is None:
        k_cache, v_cache = k, v
    else:
        upd = jax.vmap(lambda c, n, i: jax.lax.dynamic_update_slice(c, n, (i, 0, 0)))
        k_cache = upd(k_cache, k.astype(k_cache.dtype), write_at)
        v_cache = upd(v_cache, v.astype(v_cache.dtype), write_at)
    mask = attention_mask(pos_bt, k_pos_bs, k_valid_bs, causal, window)
    if prefix is None:
        o = attention(q, k_cache, v_cache, mask, scale)
    else:
        pk, pv, ppos, pvalid = prefix
        pmask = attention_mask(pos_bt, ppos[None], pvalid[None], causal, window)
        heads_major = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731
        o = heads_major(attention_with_prefix(heads_major(q), pk, pv, pmask,
                                              heads_major(k_cache), heads_major(v_cache),
                                              mask, scale))
    o = _merge_heads(o, p["wo"])
    if gemma:
        o = rms_norm(o, p["post_attn_norm"], eps, True)
    x_btd = x_btd + o
    h = rms_norm(x_btd, p["mlp_norm"], eps, gemma)
    h = _mlp(h, p, gemma)
    if gemma:
        h = rms_norm(h, p["post_mlp_norm"], eps, True)
    return x_btd + h, k_cache, v_cache


def embed_tokens(cfg: DecoderConfig, params: dict, ids_bt: Array) -> Array:
    x = jnp.take(params["embed"], ids_bt, axis=0)
    if cfg.is_gemma:  # Gemma scales embeddings by sqrt(d) (in the weights' dtype, as HF)
        x = x * jnp.asarray(math.sqrt(cfg.hidden_size), x.dtype)
    return x


def layers_as_bits(params: dict) -> dict:
    """`params` with the bf16 per-layer weights stored as their bits (uint16), for an
    inference engine that keeps bf16 weights: `forward` reads them back as bf16 inside
    its layer loop.

    XLA:CPU converts bf16 arrays that a loop slices to float32 before the loop and each
    slice back to bf16 inside it: for a bf16 teacher that was every weight of the model
    converted twice per call (~30% of a SmolLM2 scoring call). Integer arrays are
    sliced as they are, and the bitcast back costs nothing. Not for training: a bitcast
    to integers has no gradient."""
    layers = {k: jax.lax.bitcast_convert_type(v, jnp.uint16) if v.dtype == jnp.bfloat16
              else v for k, v in params["layers"].items()}
    return dict(params, layers=layers)


def split_layers(params: dict) -> dict:
    """`params` with the stacked layer weights [L, ...] as a list of L per-layer dicts,
    each leaf its own buffer (sharded as the stack was, less its layer axis).

    `forward` with a cache runs such a list as an unrolled loop. For decode steps on
    CPU: XLA:CPU copies each layer's slice out of a stacked weight (and KV cache) at
    every iteration of a layer loop, as much memory traffic as the few-row matmuls
    themselves; with one buffer per layer the matmuls read the weights in place."""
    stacked = params["layers"]
    n = jax.tree.leaves(stacked)[0].shape[0]

    def layer(a, i):
        out = a[i]
        s = getattr(a, "sharding", None)
        if isinstance(s, jax.sharding.NamedSharding):
            out = jax.device_put(out, jax.sharding.NamedSharding(
                s.mesh, jax.sharding.PartitionSpec(*s.spec[1:])))
        return out

    return dict(params, layers=[jax.tree.map(lambda a: layer(a, i), stacked)
                                for i in range(n)])


def split_cache(kv: Array) -> list:
    """A stacked [L, ...] KV cache (or shared prefix) as per-layer arrays (see
    `split_layers`)."""
    return [kv[i] for i in range(kv.shape[0])]


def _layer_weights(p: dict) -> dict:
    """One layer's weights with bits stored by `layers_as_bits` read back as bf16."""
    return {k: jax.lax.bitcast_convert_type(v, jnp.bfloat16) if v.dtype == jnp.uint16 else v
            for k, v in p.items()}


def forward(cfg: DecoderConfig, params: dict, ids_bt: Array, pos_bt: Array,
            cache: dict | None = None, write_at: Array | None = None,
            valid_bt: Array | None = None, causal: bool = True,
            options: LayerOptions | None = None, prefix: dict | None = None
            ) -> tuple[Array, dict | None]:
    """Final hidden states [B, T, D] (after the final norm), and the updated cache.

    Without a cache the T tokens attend to themselves (`valid_bt` marks real tokens;
    default all). With a cache {"k","v": [L, B, S, K, hd], "pos", "valid": [B, S]},
    the new keys are first written at slot `write_at` [B] and the tokens attend to
    every valid slot; the caller updates "pos"/"valid" for the new slots beforehand.
    `prefix` (with a cache only): {"k", "v": [L, K, S0, hd] (heads-major), "pos",
    "valid": [S0]}, a block of leading tokens every row continues, stored once for all
    rows; the tokens attend to it and to their own cache (which then holds only the
    tokens after it).

    With `params` from `split_layers` (a list of layers) the cache path runs the layers
    unrolled, and the cache's "k"/"v" (and the prefix's) are lists of per-layer arrays.

    `options` (layer_stack.LayerOptions; the cache-free path only): remat policy,
    scan (default) or unrolled layers, compute dtype (hidden states come back
    float32 when one is set).
    """
    options = options or LayerOptions()
    x = embed_tokens(cfg, params, ids_bt)
    flags = jnp.asarray(cfg.global_layers())
    if cache is None:
        valid = jnp.ones(ids_bt.shape, bool) if valid_bt is None else valid_bt
        k_pos, k_valid = pos_bt, valid
        # CPU bf16 mode (kernels/dense.py): bf16 matmul weights, float32 activations.
        x = to_compute(x, None if cpu_bf16_mode(options.dtype) else options.dtype)

        # Matmul weights in the compute dtype; norm weights stay float32 (rms_norm
        # computes in float32 and returns the activations' dtype).
        layers = {k: v if k.endswith("norm") else to_compute(v, options.dtype)
                  for k, v in params["layers"].items()}

        def layer_fn(x, xs):
            p, g = xs
            x, _, _ = block(cfg, _layer_weights(p), x, g, pos_bt, None, None, k_pos, k_valid,
                            None, causal)
            return x

        x = run_stack(layer_fn, x, (layers, flags), stacked=True, remat=options.remat,
                      scan=True if options.scan is None else options.scan)
        if options.dtype is not None:
            x = rms_norm(x.astype(jnp.float32), params["final_norm"], cfg.rms_norm_eps,
                         cfg.is_gemma)
            return x, None
        new_cache = None
    else:
        if cpu_bf16_mode(x.dtype):   # a bf16 teacher on CPU: float32 activations
            x = x.astype(jnp.float32)

        if isinstance(params["layers"], (list, tuple)):
            ks, vs = [], []
            for i, (p, g) in enumerate(zip(params["layers"], cfg.global_layers())):
                pre = (None if prefix is None else
                       (prefix["k"][i], prefix["v"][i], prefix["pos"], prefix["valid"]))
                x, kc, vc = block(cfg, _layer_weights(p), x, bool(g), pos_bt, cache["k"][i],
                                  cache["v"][i], cache["pos"], cache["valid"], write_at,
                                  causal, pre)
                ks.append(kc)
                vs.append(vc)
            new_cache = dict(cache, k=ks, v=vs)
        else:
            def body(x, xs):
                p, g, kc, vc = xs[:4]
                pre = None if prefix is None else (xs[4], xs[5], prefix["pos"], prefix["valid"])
                x, kc, vc = block(cfg, _layer_weights(p), x, g, pos_bt, kc, vc, cache["pos"],
                                  cache["valid"], write_at, causal, pre)
                return x, (kc, vc)

            xs = (params["layers"], flags, cache["k"], cache["v"])
            if prefix is not None:
                xs += (prefix["k"], prefix["v"])
            x, (kc, vc) = jax.lax.scan(body, x, xs)
            new_cache = dict(cache, k=kc, v=vc)
    x = rms_norm(x, params["final_norm"], cfg.rms_norm_eps, cfg.is_gemma)
    return x, new_cache


def lm_head(cfg: DecoderConfig, params: dict, h_btd: Array) -> Array:
    """Logits [B, T, V] (float32) from final hidden states."""
    w = params["embed"] if cfg.tie_embeddings else params["lm_head"]
    return dense(h_btd, w, w_is_nk=True, out_dtype=jnp.float32)


def logits(cfg: DecoderConfig, params: dict, ids_bt: Array, mask_bt: Array | None = None) -> Array:
    """Plain full forward pass: next-token logits [B, T, V] (right-padded batch)."""
    pos = jnp.broadcast_to(jnp.arange(ids_bt.shape[1]), ids_bt.shape)
    h, _ = forward(cfg, params, ids_bt, pos, valid_bt=None if mask_bt is None else mask_bt > 0)
    return lm_head(cfg, params, h)


# --------------------------------------------------------------------------- module

def _param(x, names):
    return nnx.Param(x, out_sharding=names)


class Decoder(nnx.Module):
    """Parameters of a decoder LM with logical axis names; call it for logits.

    Weight shapes (L layers, D model, H heads, K kv heads, hd head dim, F mlp):
      embed [V, D]; layers: attn_norm [L, D], wq [L, D, H, hd], wk/wv [L, D, K, hd],
      wo [L, H, hd, D], mlp_norm [L, D], w_gate/w_up [L, D, F], w_down [L, F, D];
      Gemma-3 also q_norm/k_norm [L, hd], post_attn_norm/post_mlp_norm [L, D].
    `causal=False` gives bidirectional attention (the embedding-backbone variant).
    """

    def __init__(self, config: DecoderConfig, *, causal: bool = True,
                 dtype=jnp.float32, rngs: nnx.Rngs | None = None,
                 options: LayerOptions = LayerOptions()):
        self.config = config
        self.causal = causal
        self.options = options  # remat / scan / compute dtype of forward's cache-free path
        c = config
        rngs = rngs or nnx.Rngs(0)
        init = jax.nn.initializers.normal(0.02)

        def w(shape, names):
            return _param(init(rngs.params(), shape, dtype), names)

        def ones(shape, names):
            # Gemma stores norm weights as offsets from 1.
            return _param(jnp.zeros(shape, dtype) if c.is_gemma else jnp.ones(shape, dtype), names)

        L, D, H, K, hd, F = (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads,
                             c.head_dim, c.intermediate_size)
        self.embed = w((c.vocab_size, D), ("vocab", "embed"))
        layers = dict(
            attn_norm=ones((L, D), ("layers", "embed")),
            wq=w((L, D, H, hd), ("layers", "embed", "heads", "kv")),
            wk=w((L, D, K, hd), ("layers", "embed", "heads", "kv")),
            wv=w((L, D, K, hd), ("layers", "embed", "heads", "kv")),
            wo=w((L, H, hd, D), ("layers", "heads", "kv", "embed")),
            mlp_norm=ones((L, D), ("layers", "embed")),
            w_gate=w((L, D, F), ("layers", "embed", "mlp")),
            w_up=w((L, D, F), ("layers", "embed", "mlp")),
            w_down=w((L, F, D), ("layers", "mlp", "embed")))
        if c.is_gemma:
            layers.update(
                q_norm=ones((L, hd), ("layers", "kv")), k_norm=ones((L, hd), ("layers", "kv")),
                post_attn_norm=ones((L, D), ("layers", "embed")),
                post_mlp_norm=ones((L, D), ("layers", "embed")))
        self.layers = nnx.Dict(layers)
        self.final_norm = ones((D,), ("embed",))
        if not c.tie_embeddings:
            self.lm_head = w((c.vocab_size, D), ("vocab", "embed"))

    def params(self) -> dict:
        """The weights as a plain dict of arrays (what `forward` takes)."""
        p = {"embed": self.embed[...], "final_norm": self.final_norm[...],
             "layers": {k: v[...] for k, v in self.layers.items()}}
        if not self.config.tie_embeddings:
            p["lm_head"] = self.lm_head[...]
        return p

    def __call__(self, ids_bt: Array, mask_bt: Array | None = None) -> Array:
        """Next-token logits [B, T, V] (causal), for a right-padded batch."""
        p = self.params()
        pos = jnp.broadcast_to(jnp.arange(ids_bt.shape[1]), ids_bt.shape)
        valid = None if mask_bt is None else mask_bt > 0
        h, _ = forward(self.config, p, ids_bt, pos, valid_bt=valid, causal=self.causal,
                       options=self.options)
        return lm_head(self.config, p, h)

    def hidden_states(self, ids_bt: Array, mask_bt: Array) -> Array:
        p = self.params()
        pos = jnp.broadcast_to(jnp.arange(ids_bt.shape[1]), ids_bt.shape)
        h, _ = forward(self.config, p, ids_bt, pos, valid_bt=mask_bt > 0, causal=self.causal,
                       options=self.options)
        return h

    def embed_text(self, ids_bt: Array, mask_bt: Array) -> Array:
        """Mean-pooled final hidden states [B, D] (embedding backbone; use causal=False)."""
        return mean_pool(self.hidden_states(ids_bt, mask_bt), mask_bt)


# ------------------------------------------------------------------- HF state dicts

def hf_to_params(cfg: DecoderConfig, state: dict[str, np.ndarray], dtype=np.float32) -> dict:
    """HF-named tensors (LlamaForCausalLM / Gemma3ForCausalLM layout) -> `forward` params."""
    L, D, H, K, hd = cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def get(name):
        for prefix in ("model.", "model.language_model.", ""):
            if prefix + name in state:
                return np.asarray(state[prefix + name], dtype)
        raise KeyError(f"missing tensor {name!r}")

    def stack(fmt, fn=lambda a: a):
        return np.stack([fn(get(fmt.format(i))) for i in range(L)])

    lp = "layers.{}."
    layers = dict(
        attn_norm=stack(lp + "input_layernorm.weight"),
        wq=stack(lp + "self_attn.q_proj.weight", lambda a: a.T.reshape(D, H, hd)),
        wk=stack(lp + "self_attn.k_proj.weight", lambda a: a.T.reshape(D, K, hd)),
        wv=stack(lp + "self_attn.v_proj.weight", lambda a: a.T.reshape(D, K, hd)),
        wo=stack(lp + "self_attn.o_proj.weight", lambda a: a.T.reshape(H, hd, D)),
        w_gate=stack(lp + "mlp.gate_proj.weight", lambda a: a.T),
        w_up=stack(lp + "mlp.up_proj.weight", lambda a: a.T),
        w_down=stack(lp + "mlp.down_proj.weight", lambda a: a.T))
    if cfg.is_gemma:
        layers.update(
            mlp_norm=stack(lp + "pre_feedforward_layernorm.weight"),
            post_attn_norm=stack(lp + "post_attention_layernorm.weight"),
            post_mlp_norm=stack(lp + "post_feedforward_layernorm.weight"),
            q_norm=stack(lp + "self_attn.q_norm.weight"),
            k_norm=stack(lp + "self_attn.k_norm.weight"))
    else:
        layers["mlp_norm"] = stack(lp + "post_attention_layernorm.weight")
    params = {"embed": get("embed_tokens.weight"), "final_norm": get("norm.weight"),
              "layers": layers}
    if not cfg.tie_embeddings:
        params["lm_head"] = np.asarray(state["lm_head.weight"], dtype)
    return params


def params_to_hf(cfg: DecoderConfig, params: dict) -> dict[str, np.ndarray]:
    """The inverse of `hf_to_params` (for writing a safetensors folder)."""
    L, D, H, K, hd = cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    lay = {k: np.asarray(v) for k, v in params["layers"].items()}
    out = {"model.embed_tokens.weight": np.asarray(params["embed"]),
           "model.norm.weight": np.asarray(params["final_norm"])}
    names = dict(attn_norm="input_layernorm.weight",
                 mlp_norm=("pre_feedforward_layernorm.weight" if cfg.is_gemma
                           else "post_attention_layernorm.weight"))
    if cfg.is_gemma:
        names.update(post_attn_norm="post_attention_layernorm.weight",
                     post_mlp_norm="post_feedforward_layernorm.weight",
                     q_norm="self_attn.q_norm.weight", k_norm="self_attn.k_norm.weight")
    for i in range(L):
        pre = f"model.layers.{i}."
        for ours, theirs in names.items():
            out[pre + theirs] = lay[ours][i]
        out[pre + "self_attn.q_proj.weight"] = lay["wq"][i].reshape(D, H * hd).T
        out[pre + "self_attn.k_proj.weight"] = lay["wk"][i].reshape(D, K * hd).T
        out[pre + "self_attn.v_proj.weight"] = lay["wv"][i].reshape(D, K * hd).T
        out[pre + "self_attn.o_proj.weight"] = lay["wo"][i].reshape(H * hd, D).T
        out[pre + "mlp.gate_proj.weight"] = lay["w_gate"][i].T
        out[pre + "mlp.up_proj.weight"] = lay["w_up"][i].T
        out[pre + "mlp.down_proj.weight"] = lay["w_down"][i].T
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = np.asarray(params["lm_head"])
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def decoder_from_params(cfg: DecoderConfig, params: dict, *, causal: bool = True,
                        dtype=jnp.float32) -> Decoder:
    """A `Decoder` whose weights are `params` (built abstractly: no random init)."""
    with nnx.use_eager_sharding(False):
        model = nnx.eval_shape(lambda: Decoder(cfg, causal=causal, dtype=dtype))
    model.embed.set_value(jnp.asarray(params["embed"], dtype))
    model.final_norm.set_value(jnp.asarray(params["final_norm"], dtype))
    for k, v in params["layers"].items():
        model.layers[k].set_value(jnp.asarray(v, dtype))
    if not cfg.tie_embeddings:
        model.lm_head.set_value(jnp.asarray(params["lm_head"], dtype))
    return model


def logical_axes(cfg: DecoderConfig) -> dict:
    """Logical axis names per weight, in the structure of `Decoder.params()`."""
    with nnx.use_eager_sharding(False):
        model = nnx.eval_shape(lambda: Decoder(cfg))

    def names(v):
        return tuple(v.get_metadata()["out_sharding"])

    out = {"embed": names(model.embed), "final_norm": names(model.final_norm),
           "layers": {k: names(v) for k, v in model.layers.items()}}
    if not cfg.tie_embeddings:
        out["lm_head"] = names(model.lm_head)
    return out
