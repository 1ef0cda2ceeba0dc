"""Gin constructors for an LLM-initialised tower (models/gemma3_270m.gin, smollm2_135m.gin).

    train.model_fn = @llm_model
    llm_model.source = "gemma3"          # shipped name, .gguf file or HF folder
    llm_model.dense_dims = (2560, 640)   # EmbeddingGemma-style head; () for none
    llm_model.append_eos = False         # tokenizer appends EOS (for last-token pooling)

Returns (LLMEncoder, Tokenizer) like model_fns.pretrained_model, so the trainer,
loss and data pipeline run unchanged. GGUF weights are dequantised to float32
(llm/loading.py caches the converted folder).
"""

from __future__ import annotations

import os
from typing import Sequence

import gin

from gecko_jax.errors import GeckoError


@gin.configurable
def llm_model(source: str | os.PathLike = gin.REQUIRED, pooling: str = "mean",
              dense_dims: Sequence[int] = (), seed: int = 0, append_eos: bool = False,
              include_prompt: bool | None = None):
    """A bidirectional decoder LLM as the dual encoder tower.

    `source` may also be a folder that `export_llm_encoder` wrote (a fine-tuned
    embedder): then its pooling and dense head are kept, and `pooling` /
    `dense_dims` must agree with it. include_prompt as model_fns.pretrained_model's
    (None: the folder's own setting; a raw LLM pools every token).
    """
    import pathlib

    from gecko_jax.llm.loading import load_decoder
    from gecko_jax.models.decoder import hf_to_params
    from gecko_jax.models.llm_encoder import llm_encoder_from_params

    path = pathlib.Path(str(source)).expanduser()
    if (path / "modules.json").is_file():
        from gecko_jax.models.llm_export import load_llm_encoder

        model, tokenizer, _ = load_llm_encoder(path)
        if model.pooling != pooling or tuple(model.dense_dims) != tuple(dense_dims):
            raise GeckoError(f"{path}: holds pooling={model.pooling} dense_dims={model.dense_dims}, "
                             f"the config asks for pooling={pooling} dense_dims={tuple(dense_dims)}")
        if include_prompt is not None:
            model.prompt_markers = () if include_prompt else tokenizer.prompt_markers
        return model, tokenizer
    from gecko_jax.models.llm_export import embedder_tokenizer

    cfg, state, lm_tok = load_decoder(source)
    tokenizer = embedder_tokenizer(lm_tok, append_eos=append_eos)
    model = llm_encoder_from_params(
        cfg, hf_to_params(cfg, state), pooling=pooling, dense_dims=dense_dims, seed=seed,
        prompt_markers=tokenizer.prompt_markers if include_prompt is False else ())
    return model, tokenizer


@gin.configurable
def random_llm_model(config: dict = gin.REQUIRED, source: str | os.PathLike = gin.REQUIRED,
                     pooling: str = "mean", dense_dims: Sequence[int] = (), seed: int = 0):
    """A randomly initialised decoder of `config` (DecoderConfig fields) with the
    tokenizer of `source` (tests, and sharding checks on small shapes)."""
    from flax import nnx

    from gecko_jax.llm.loading import load_decoder
    from gecko_jax.models.decoder import Decoder, DecoderConfig
    from gecko_jax.models.llm_encoder import LLMEncoder
    from gecko_jax.models.llm_export import embedder_tokenizer

    lm_tok = _tokenizer_only(source) or load_decoder(source)[2]
    cfg = DecoderConfig(**{"vocab_size": lm_tok.vocab_size, **dict(config)})
    with nnx.use_eager_sharding(False):
        backbone = Decoder(cfg, causal=False, rngs=nnx.Rngs(seed))
        model = LLMEncoder(backbone, pooling=pooling, dense_dims=dense_dims,
                           rngs=nnx.Rngs(seed + 1))
    return model, embedder_tokenizer(lm_tok)


def _tokenizer_only(source):
    """The LM tokenizer of an HF folder or an already-converted GGUF, without its weights."""
    import json

    from gecko_jax.llm.loading import gguf_cache_folder, resolve
    from gecko_jax.lm_tokenizer import LMTokenizer

    path = resolve(source)
    folder = path if path.is_dir() else gguf_cache_folder(path)
    if not (folder / "tokenizer.json").is_file() or not (folder / "config.json").is_file():
        return None
    return LMTokenizer.from_folder(folder, json.loads((folder / "config.json").read_text()))
