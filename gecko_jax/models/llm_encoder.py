"""A decoder LLM turned into the dual encoder's tower (Gecko, EmbeddingGemma).

    tokens -> Decoder(causal=False) -> pool (mean | last) -> dense head -> L2 norm

The backbone is `models.decoder.Decoder` with its causal switch off: no causal
mask, and Gemma-3's sliding-window layers attend within the symmetric window
transformers uses for `use_bidirectional_attention` (decoder.bidirectional_window).
Mean pooling over real tokens is EmbeddingGemma's choice (it beat first-, last-
token and attention pooling in its ablation); last-token pooling is kept as an
option because some LLM embedders use it. The optional dense head is
EmbeddingGemma's: bias-free linear layers (768 -> 3072 -> 768 there), no
activation. Every parameter carries logical axis names, so the trainer's
sharding table splits it over the fsdp and model mesh axes.

Shapes: b batch, l length, d model width, e embedding width.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gecko_jax.models.decoder import Decoder, DecoderConfig
from gecko_jax.models.dual_encoder import l2_normalize, mean_pool, text_pool_mask

POOLINGS = ("mean", "last")


def last_token_pool(hidden_bld, mask_bl):
    """Hidden state of each row's last real token (right-padded rows): [b, d]."""
    last_b = jnp.maximum(jnp.sum(mask_bl > 0, axis=1) - 1, 0)
    return jnp.take_along_axis(hidden_bld, last_b[:, None, None], axis=1)[:, 0]


def pool(hidden_bld, mask_bl, pooling: str):
    """Sentence vectors [b, d] from hidden states [b, l, d] and mask [b, l]."""
    if pooling == "mean":
        return mean_pool(hidden_bld, mask_bl)
    if pooling == "last":
        return last_token_pool(hidden_bld, mask_bl)
    raise ValueError(f"pooling {pooling!r}: expected one of {POOLINGS}")


def dense_axis_names(n_layers: int) -> list[tuple[str, str]]:
    """Logical names of the dense head's kernels: embed -> mlp -> ... -> embed."""
    names = []
    for i in range(n_layers):
        names.append(("embed" if i == 0 else "mlp", "mlp" if i < n_layers - 1 else "embed"))
    return names


class LLMEncoder(nnx.Module):
    """Bidirectional decoder LLM -> pooling -> bias-free dense head -> L2 normalise.

    Args:
      backbone: a `Decoder` built with causal=False.
      pooling: "mean" (over non-padding tokens) or "last" (last real token).
      dense_dims: output sizes of the dense head's layers, e.g. (3072, 768) for
        EmbeddingGemma; () for none.
      prompt_markers: as DualEncoder's: mean pooling leaves the prompt out.
    """

    def __init__(self, backbone: Decoder, pooling: str = "mean",
                 dense_dims: Sequence[int] = (), rngs: nnx.Rngs | None = None,
                 prompt_markers: tuple[tuple[int, ...], ...] = ()):
        if backbone.causal:
            raise ValueError("LLMEncoder needs a bidirectional backbone (Decoder(causal=False))")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: expected one of {POOLINGS}")
        self.backbone = backbone
        self.pooling = pooling
        self.dense_dims = tuple(int(d) for d in dense_dims)
        self.prompt_markers = tuple(tuple(int(t) for t in m) for m in prompt_markers)
        rngs = rngs or nnx.Rngs(0)
        sizes = (backbone.config.hidden_size,) + self.dense_dims
        self.dense = nnx.List([
            nnx.Linear(din, dout, use_bias=False, rngs=rngs,
                       kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), names))
            for din, dout, names in zip(sizes[:-1], sizes[1:], dense_axis_names(len(self.dense_dims)))])

    @property
    def config(self) -> DecoderConfig:
        return self.backbone.config

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def embedding_dim(self) -> int:
        return self.dense_dims[-1] if self.dense_dims else self.hidden_size

    @property
    def include_prompt(self) -> bool:
        return not self.prompt_markers

    def pooled(self, input_ids_bl, attention_mask_bl):
        """Unnormalised sentence vectors [b, e] (dense head applied)."""
        hidden_bld = self.backbone.hidden_states(input_ids_bl, attention_mask_bl)
        mask_bl = attention_mask_bl
        if self.pooling == "mean":
            mask_bl = text_pool_mask(input_ids_bl, attention_mask_bl, self.prompt_markers)
        x_be = pool(hidden_bld, mask_bl, self.pooling)
        for layer in self.dense:
            x_be = layer(x_be)
        return x_be

    def __call__(self, input_ids_bl, attention_mask_bl):
        """Unit-length embeddings [b, e], float32."""
        return l2_normalize(self.pooled(input_ids_bl, attention_mask_bl).astype(jnp.float32))


def llm_encoder_from_params(cfg: DecoderConfig, params: dict, pooling: str = "mean",
                            dense_dims: Sequence[int] = (), dense_kernels: Sequence | None = None,
                            seed: int = 0, dtype=jnp.float32,
                            prompt_markers: tuple[tuple[int, ...], ...] = ()) -> LLMEncoder:
    """An LLMEncoder over `params` (decoder.hf_to_params layout).

    dense_kernels: the head's kernels [d_in, d_out] (e.g. read from an export);
    None initialises the head randomly from `seed`.
    """
    from gecko_jax.models.decoder import decoder_from_params

    backbone = decoder_from_params(cfg, params, causal=False, dtype=dtype)
    if dense_kernels is not None:
        dense_dims = tuple(int(k.shape[1]) for k in dense_kernels)
    with nnx.use_eager_sharding(False):
        model = LLMEncoder(backbone, pooling=pooling, dense_dims=dense_dims, rngs=nnx.Rngs(seed),
                           prompt_markers=prompt_markers)
    if dense_kernels is not None:
        for layer, kernel in zip(model.dense, dense_kernels):
            if tuple(kernel.shape) != tuple(layer.kernel.get_value().shape):
                raise ValueError(f"dense kernel of shape {tuple(kernel.shape)}, expected "
                                 f"{tuple(layer.kernel.get_value().shape)}")
            layer.kernel.set_value(jnp.asarray(kernel, dtype))
    return model


def embed_fn(model: LLMEncoder):
    """A jitted (ids [b, l], mask [b, l]) -> embeddings [b, e] of `model`'s current weights."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, mask)

    return lambda ids, mask: run(state, ids, mask)


def encode_texts(model: LLMEncoder, tokenizer, texts: Sequence[str], max_length: int,
                 batch_size: int = 8):
    """Unit embeddings [n, e] (numpy float32) of already-formatted texts, in order.

    Texts are sorted by length and padded to the tokenizer's length buckets, so a
    few shapes compile; rows are padded to `batch_size`.
    """
    import numpy as np

    from gecko_jax.tokenization import bucket_length, pad_batch

    run = embed_fn(model)
    ids = tokenizer.encode(list(texts), max_length)
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(ids), model.embedding_dim), np.float32)
    for start in range(0, len(ids), batch_size):
        rows = order[start:start + batch_size]
        length = bucket_length(max(len(ids[i]) for i in rows), max_length)
        batch = [ids[i] for i in rows] + [[tokenizer.pad_id]] * (batch_size - len(rows))
        b_ids, b_mask = pad_batch(batch, length, tokenizer.pad_id)
        out[rows] = np.asarray(run(jnp.asarray(b_ids), jnp.asarray(b_mask)))[:len(rows)]
    return out
