"""Shared, package-scoped real models for the evaluation tests."""

import pytest


@pytest.fixture(scope="package")
def minilm_encoder():
    """The shipped all-MiniLM-L6-v2 as a gecko_jax Encoder (raw prompts: a base model)."""
    from gecko_jax import assets
    from gecko_jax.encode import Encoder

    # 128 tokens (the model allows 256) keeps the default suite fast; the CLI
    # and the slow full-size tests use the full 256.
    return Encoder.from_pretrained(assets.minilm_dir(), batch_size=16, max_length=128)
