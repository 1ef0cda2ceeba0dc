"""A BERT-family encoder in Flax NNX (post-LN blocks, GELU, token types).

Parameters carry logical axis names (vocab, embed, mlp, heads, kv) that
gecko_jax.training.partitioning maps onto a device mesh. Shapes in names:
b batch, l length, d model width, h heads, k head width, f FFN width.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx


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


_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # HF "gelu" is the erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


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


def attention(q_blhk, k_blhk, v_blhk, mask_bl):
    """Softmax attention over keys where mask_bl is 1; returns [b, l, h, k]."""
    scale = 1.0 / math.sqrt(q_blhk.shape[-1])
    logits_bhqk = jnp.einsum("bqhk,bshk->bhqs", q_blhk * scale, k_blhk)
    bias_b11s = jnp.where(mask_bl[:, None, None, :] > 0, 0.0, -1e9).astype(logits_bhqk.dtype)
    probs = jax.nn.softmax(logits_bhqk + bias_b11s, axis=-1)
    return jnp.einsum("bhqs,bshk->bqhk", probs, v_blhk)


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

    def __call__(self, x_bld, mask_bl):
        b, l, _ = x_bld.shape
        h, k = self.cfg.num_attention_heads, self.cfg.head_dim
        split = lambda t: t.reshape(b, l, h, k)
        ctx_blhk = attention(split(self.query(x_bld)), split(self.key(x_bld)),
                             split(self.value(x_bld)), mask_bl)
        x_bld = self.attention_norm(x_bld + self.attention_out(ctx_blhk.reshape(b, l, h * k)))
        act = _ACTIVATIONS[self.cfg.hidden_act]
        return self.output_norm(x_bld + self.output(act(self.intermediate(x_bld))))


class BertEncoder(nnx.Module):
    """BertModel without the pooler: token ids -> final hidden states [b, l, d]."""

    def __init__(self, cfg: BertConfig, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        d = cfg.hidden_size
        self.cfg = cfg
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
        x_bld = self.embedding_norm(x_bld)
        for layer in self.layers:
            x_bld = layer(x_bld, attention_mask_bl)
        return x_bld
