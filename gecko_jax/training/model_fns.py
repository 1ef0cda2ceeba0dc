"""The trainer's model constructors (gin: `train.model_fn = @pretrained_model`).

Each returns (DualEncoder, Tokenizer); the LLM towers' constructors are in llm_tower.py.
"""

from __future__ import annotations

import os

import gin
from flax import nnx


@gin.configurable
def pretrained_model(folder: str | os.PathLike = gin.REQUIRED, projection_dim: int | None = None,
                     seed: int = 0, include_prompt: bool | None = None):
    """An HF BERT folder (e.g. MiniLM) as DualEncoder; returns (model, tokenizer).

    projection_dim adds a fresh linear projection (Gecko / t5x_retrieval style).
    include_prompt: whether mean pooling averages the prompt's tokens too (False:
    the text's tokens only, models/dual_encoder.text_pool_mask); None keeps the
    folder's own setting (a plain HF folder pools every token).
    """
    from gecko_jax.models.dual_encoder import DualEncoder
    from gecko_jax.models.weights import load_dual_encoder

    model, tokenizer, _ = load_dual_encoder(folder)
    if include_prompt is not None:
        model.prompt_markers = () if include_prompt else tokenizer.prompt_markers
    if projection_dim and model.projection is None:
        with nnx.use_eager_sharding(False):
            model = DualEncoder(model.backbone, projection_dim=projection_dim,
                                rngs=nnx.Rngs(seed), prompt_markers=model.prompt_markers)
    return model, tokenizer


@gin.configurable
def random_model(config: dict = gin.REQUIRED, tokenizer_folder: str | os.PathLike = gin.REQUIRED,
                 projection_dim: int | None = None, seed: int = 0):
    """A randomly initialised BertEncoder of `config` (BertConfig fields) + a tokenizer."""
    from gecko_jax.models.bert import BertConfig, BertEncoder
    from gecko_jax.models.dual_encoder import DualEncoder
    from gecko_jax.tokenization import Tokenizer

    tokenizer = Tokenizer.from_folder(tokenizer_folder)
    cfg = BertConfig(**{"vocab_size": tokenizer.vocab_size, **dict(config)})
    with nnx.use_eager_sharding(False):
        model = DualEncoder(BertEncoder(cfg, rngs=nnx.Rngs(seed)), projection_dim=projection_dim,
                            rngs=nnx.Rngs(seed + 1))
    return model, tokenizer
