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
    """backbone -> mean pool -> optional linear projection -> L2 normalise."""

    def __init__(self, backbone: nnx.Module, projection_dim: int | None = None,
                 rngs: nnx.Rngs | None = None):
        self.backbone = backbone
        self.projection_dim = projection_dim
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

    def pooled(self, input_ids_bl, attention_mask_bl):
        """Unnormalised sentence vectors [b, d] (projection applied)."""
        hidden_bld = self.backbone(input_ids_bl, attention_mask_bl)
        pooled_bd = mean_pool(hidden_bld, attention_mask_bl)
        if self.projection is not None:
            pooled_bd = self.projection(pooled_bd)
        return pooled_bd

    def __call__(self, input_ids_bl, attention_mask_bl):
        return l2_normalize(self.pooled(input_ids_bl, attention_mask_bl).astype(jnp.float32))
