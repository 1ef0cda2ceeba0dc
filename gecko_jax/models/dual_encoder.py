"""The Gecko dual encoder: one shared tower, mean pooling, projection, L2 norm, MRL.

Queries and documents go through the same weights (Gecko and t5x_retrieval share
the tower); they differ only in their text prompts (gecko_jax.encode).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx


def mean_pool(hidden_bld, mask_bl):
    """Mean of hidden states over non-padding tokens: [b, l, d], [b, l] -> [b, d]."""
    mask_bl1 = mask_bl[..., None].astype(hidden_bld.dtype)
    total_bd = jnp.sum(hidden_bld * mask_bl1, axis=1)
    return total_bd / jnp.maximum(jnp.sum(mask_bl1, axis=1), 1e-9)


def text_pool_mask(ids_bl, mask_bl, markers):
    """The tokens a prompt-excluding pooling averages: [b, l] ids, mask -> [b, l] mask.

    In a row holding a prompt marker (token sequences, e.g. those of `| query:` and
    `| text:`), the real tokens after the first marker's end; in a row with none (a raw
    text, or a prompt cut by truncation), every real token. The same rule as
    sentence-transformers' Pooling(include_prompt=False) given the prompt: the
    leading special token and the prompt are left out, the text and the closing
    special token kept. No markers: the mask unchanged.
    """
    if not markers:
        return mask_bl
    b, l = ids_bl.shape
    end_bl = jnp.zeros((b, l), bool)
    for marker in markers:
        k = len(marker)
        if not k or k > l:
            continue
        start_bs = jnp.ones((b, l - k + 1), bool)
        for j, token in enumerate(marker):
            start_bs = start_bs & (ids_bl[:, j:l - k + 1 + j] == token)
        end_bl = end_bl | jnp.pad(start_bs, ((0, 0), (k - 1, 0)))
    real_bl = mask_bl > 0
    end_bl = end_bl & real_bl
    after_bl = (jnp.cumsum(end_bl, axis=1) - end_bl) > 0
    found_b1 = jnp.any(end_bl, axis=1, keepdims=True)
    return jnp.where(found_b1, after_bl & real_bl, real_bl).astype(mask_bl.dtype)


def l2_normalize(x_bd, eps=1e-12):
    """Unit rows (sentence-transformers' Normalize uses the same eps clamp)."""
    norm_b1 = jnp.sqrt(jnp.sum(jnp.square(x_bd), axis=-1, keepdims=True))
    return x_bd / jnp.maximum(norm_b1, eps)


def matryoshka(x_bd, k: int):
    """Matryoshka truncation: the first k dims, renormalised to unit length."""
    if k > x_bd.shape[-1]:
        raise ValueError(f"Matryoshka dim {k} exceeds embedding size {x_bd.shape[-1]}")
    return l2_normalize(x_bd[..., :k])


class DualEncoder(nnx.Module):
    """backbone -> mean pool -> optional linear projection -> L2 normalise.

    prompt_markers: token sequences after which the text starts (text_pool_mask);
    given, the mean leaves the prompt out (the prompt still shapes every token
    through attention, as in INSTRUCTOR and GritLM). Empty: every real token.
    """

    def __init__(self, backbone: nnx.Module, projection_dim: int | None = None,
                 rngs: nnx.Rngs | None = None,
                 prompt_markers: tuple[tuple[int, ...], ...] = ()):
        self.backbone = backbone
        self.projection_dim = projection_dim
        self.prompt_markers = tuple(tuple(int(t) for t in m) for m in prompt_markers)
        if projection_dim:
            d = backbone.hidden_size
            self.projection = nnx.Linear(
                d, projection_dim, use_bias=True, rngs=rngs or nnx.Rngs(0),
                kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(),
                                                  ("embed", "mlp")),
                bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("mlp",)))
        else:
            self.projection = None

    @property
    def embedding_dim(self) -> int:
        return self.projection_dim or self.backbone.hidden_size

    @property
    def include_prompt(self) -> bool:
        return not self.prompt_markers

    def pooled(self, input_ids_bl, attention_mask_bl):
        """Unnormalised sentence vectors [b, d] (projection applied)."""
        hidden_bld = self.backbone(input_ids_bl, attention_mask_bl)
        pooled_bd = mean_pool(hidden_bld, text_pool_mask(input_ids_bl, attention_mask_bl,
                                                         self.prompt_markers))
        if self.projection is not None:
            pooled_bd = self.projection(pooled_bd)
        return pooled_bd

    def __call__(self, input_ids_bl, attention_mask_bl):
        return l2_normalize(self.pooled(input_ids_bl, attention_mask_bl).astype(jnp.float32))
