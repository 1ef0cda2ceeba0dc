"""The model folder of a trained tower, which `gecko embed --model` reads."""

from __future__ import annotations

import os


def export_model(model, tokenizer, folder: str | os.PathLike, max_length: int | None = None,
                 prompt_format: str = "gecko"):
    """Writes the model folder of a trained tower, recording the prompt format it was
    trained with (gecko: the unified format's prompts; raw: none).

    BERT towers: weights.export_dual_encoder. LLM towers: EmbeddingGemma's
    sentence-transformers layout (models/llm_export.py). max_length: the input length
    the folder declares; the trainer passes the document length it trained at. Without
    it, the tower's own position limit.
    """
    from gecko_jax.models.llm_encoder import LLMEncoder
    from gecko_jax.models.weights import export_dual_encoder

    if isinstance(model, LLMEncoder):
        from gecko_jax.models.llm_export import export_llm_encoder

        max_len = max_length or min(2048, model.config.max_position_embeddings)
        return export_llm_encoder(model, tokenizer, folder, prompt_format=prompt_format,
                                  max_length=max_len)
    max_len = max_length or min(512, model.backbone.cfg.max_position_embeddings)
    return export_dual_encoder(model, tokenizer, folder, prompt_format=prompt_format,
                               max_length=max_len)
