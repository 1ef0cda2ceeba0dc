"""Test set-up: 8 emulated CPU devices so sharded paths run against unsharded twins."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def minilm_dir():
    from gecko_jax import assets

    return assets.minilm_dir()


@pytest.fixture(scope="session")
def minilm_encoder(minilm_dir):
    """The shipped MiniLM as a gecko_jax Encoder on one device (max length 256)."""
    from gecko_jax.encode import Encoder

    return Encoder.from_pretrained(minilm_dir, max_length=256)


@pytest.fixture(scope="session")
def bbc_articles():
    from gecko_jax.data.sources import read_bbc_news

    return read_bbc_news(dedup=True)


@pytest.fixture(scope="session")
def st_minilm(minilm_dir):
    """sentence-transformers' MiniLM: the torch reference for numerics tests."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    model.max_seq_length = 256
    return model
