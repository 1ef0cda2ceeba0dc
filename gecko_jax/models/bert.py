"""A BERT-family encoder in Flax NNX (post-LN blocks, GELU, token types).

Parameters carry logical axis names (vocab, embed, mlp, heads, kv) that
gecko_jax.partitioning maps onto a device mesh. Shapes in names:
b batch, l length, d model width, h heads, k head width, f FFN width.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from gecko_jax.kernels.dense import cpu_bf16_mode, dense
from gecko_jax.models.attention import float32_kernel, qkv_attention
from gecko_jax.models.layer_stack import LayerOptions, run_stack, to_compute


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0

    @classmethod
    def from_hf_dict(cls, d: dict) -> "BertConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_hf_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(architectures=["BertModel"], model_type="bert",
                 position_embedding_type="absolute", attention_probs_dropout_prob=0.0,
                 hidden_dropout_prob=0.0, initializer_range=0.02)
        return d

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# HF hidden_act -> kernels/dense.py's activation ("gelu" is the erf form in both).
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}


def _init(names, stddev=0.02):
    return nnx.with_partitioning(nnx.initializers.normal(stddev), names)


def _dense(din, dout, names, dtype, rngs):
    return nnx.Linear(din, dout, dtype=dtype, kernel_init=_init(names),
                      bias_init=nnx.with_partitioning(nnx.initializers.zeros, names[-1:]),
                      rngs=rngs)


def _layer_norm(d, eps, dtype, rngs):
    return nnx.LayerNorm(d, epsilon=eps, dtype=dtype,
                         scale_init=nnx.with_partitioning(nnx.initializers.ones, ("embed",)),
                         bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("embed",)),
                         rngs=rngs)


class BertLayer(nnx.Module):
    def __init__(self, cfg: BertConfig, dtype, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.cfg = cfg
        self.query = _dense(d, d, ("embed", "heads"), dtype, rngs)
        self.key = _dense(d, d, ("embed", "heads"), dtype, rngs)
        self.value = _dense(d, d, ("embed", "heads"), dtype, rngs)
        self.attention_out = _dense(d, d, ("heads", "embed"), dtype, rngs)
        self.attention_norm = _layer_norm(d, cfg.layer_norm_eps, dtype, rngs)
        self.intermediate = _dense(d, f, ("embed", "mlp"), dtype, rngs)
        self.output = _dense(f, d, ("mlp", "embed"), dtype, rngs)
        self.output_norm = _layer_norm(d, cfg.layer_norm_eps, dtype, rngs)

    def __call__(self, x_bld, mask_bl, matmul_dtype=None):
        """`matmul_dtype`: the dense layers' operand dtype (default x's; bf16 with
        float32 x is the CPU bf16 mode of kernels/dense.py)."""
        b, l, d = x_bld.shape
        h, k = self.cfg.num_attention_heads, self.cfg.head_dim
        mm = matmul_dtype or x_bld.dtype
        # One fused QKV matmul (the three kernels stay separate parameters so that
        # HF names and sharding rules map one to one).
        w_dn = jnp.concatenate([self.query.kernel[...], self.key.kernel[...],
                                self.value.kernel[...]], axis=1).astype(mm)
        b_n = jnp.concatenate([self.query.bias[...], self.key.bias[...],
                               self.value.bias[...]]).astype(x_bld.dtype)
        # In the CPU bf16 mode attention is one fused kernel that takes bf16 q, k, v
        # and returns a bf16 context (models/attention.qkv_attention); float32 runs
        # as the float32 kernel where attention.float32_kernel says so.
        fused = cpu_bf16_mode(mm) and x_bld.dtype == jnp.float32
        qkv_bl3hk = dense(x_bld, w_dn, bias=b_n,
                          out_dtype=jnp.bfloat16 if fused else None).reshape(b, l, 3, h, k)
        ctx_bld = qkv_attention(qkv_bl3hk, mask_bl, 1.0 / math.sqrt(k),
                                fused=fused or float32_kernel(qkv_bl3hk.dtype))
        x_bld = _norm(self.attention_norm,
                      x_bld + _linear(self.attention_out, ctx_bld, mm, out_dtype=x_bld.dtype))
        # The FFN's hidden activations only feed the next matmul, which rounds them to
        # bf16 anyway: in the CPU bf16 mode they are written in bf16 (half the memory).
        h_blf = _linear(self.intermediate, x_bld, mm, _ACTIVATIONS[self.cfg.hidden_act],
                        out_dtype=jnp.bfloat16 if fused else None)
        return _norm(self.output_norm,
                     x_bld + _linear(self.output, h_blf, mm, out_dtype=x_bld.dtype))


def _linear(lin: nnx.Linear, x, matmul_dtype, activation=None, out_dtype=None):
    """activation(x @ W + b) in `out_dtype` (default x's), W cast to `matmul_dtype`
    (kernels/dense.py)."""
    return dense(x, lin.kernel[...].astype(matmul_dtype), bias=lin.bias[...],
                 activation=activation, out_dtype=out_dtype)


def _norm(ln: nnx.LayerNorm, x):
    """Layer norm computed in the module's dtype (float32 unless built otherwise),
    returned in x's dtype."""
    return ln(x).astype(x.dtype)


class BertEncoder(nnx.Module):
    """BertModel without the pooler: token ids -> final hidden states [b, l, d].

    `options` (layer_stack.LayerOptions: remat, scan, compute dtype) changes how the
    layers run, never the parameters; default: unrolled, no remat, `dtype`.
    """

    def __init__(self, cfg: BertConfig, dtype=jnp.float32, rngs: nnx.Rngs | None = None,
                 options: LayerOptions = LayerOptions()):
        rngs = rngs or nnx.Rngs(0)
        d = cfg.hidden_size
        self.cfg = cfg
        self.options = options
        emb = lambda n: nnx.Embed(n, d, dtype=dtype, rngs=rngs,
                                  embedding_init=_init(("vocab", "embed")))
        self.word_embeddings = emb(cfg.vocab_size)
        self.position_embeddings = emb(cfg.max_position_embeddings)
        self.token_type_embeddings = emb(cfg.type_vocab_size)
        self.embedding_norm = _layer_norm(d, cfg.layer_norm_eps, dtype, rngs)
        self.layers = nnx.List([BertLayer(cfg, dtype, rngs) for _ in range(cfg.num_hidden_layers)])

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    def __call__(self, input_ids_bl, attention_mask_bl, token_type_ids_bl=None):
        positions_l = jnp.arange(input_ids_bl.shape[1])
        if token_type_ids_bl is None:
            token_type_ids_bl = jnp.zeros_like(input_ids_bl)
        x_bld = (self.word_embeddings(input_ids_bl) + self.position_embeddings(positions_l)[None]
                 + self.token_type_embeddings(token_type_ids_bl))
        opts = self.options
        # On a CPU with the oneDNN kernel, bf16 means bf16 matmul operands and float32
        # activations (kernels/dense.py); elsewhere activations are bf16 too.
        mm = opts.dtype
        act_dtype = None if cpu_bf16_mode(mm) else mm
        x_bld = to_compute(self.embedding_norm(x_bld), act_dtype)
        if opts.remat == "none" and not opts.scan:
            for layer in self.layers:       # the plain path
                x_bld = layer(x_bld, attention_mask_bl, mm)
            return x_bld if opts.dtype is None else x_bld.astype(jnp.float32)
        # Layers as pure functions of their parameters, for jax.checkpoint / lax.scan.
        graphdef = nnx.graphdef(self.layers[0])
        states = [nnx.state(layer) for layer in self.layers]

        def layer_fn(x, state):
            return nnx.merge(graphdef, state)(x, attention_mask_bl, mm)

        x_bld = run_stack(layer_fn, x_bld, states, scan=bool(opts.scan), remat=opts.remat,
                          stacked=False)
        return x_bld if opts.dtype is None else x_bld.astype(jnp.float32)
