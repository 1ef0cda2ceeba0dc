"""The encode API: Gecko formatting, input order, batching, and the sharded path."""

import jax
import numpy as np
import pytest

from gecko_jax.encode import Encoder, data_mesh, truncate_dim
from gecko_jax.unified_format import format_document, format_query
from gecko_jax.errors import GeckoError
from gecko_jax.models.weights import load_dual_encoder


def test_gecko_formats():
    assert format_query("who won?", "question answering") == \
        "task: question answering | query: who won?"
    assert format_document("Body.", "Title") == "title: Title | text: Body."
    assert format_document("Body.") == "title: none | text: Body."


def test_query_and_document_prompts_reach_the_model(minilm_encoder):
    q = minilm_encoder.encode_queries(["rates rise"], task="fact checking", format="gecko")
    want = minilm_encoder.encode(["task: fact checking | query: rates rise"])
    np.testing.assert_allclose(q, want, atol=1e-6)
    d = minilm_encoder.encode_documents(["rates rise"], titles=["Economy"], format="gecko")
    np.testing.assert_allclose(d, minilm_encoder.encode(["title: Economy | text: rates rise"]),
                               atol=1e-6)
    raw = minilm_encoder.encode_queries(["rates rise"], task="fact checking", format="raw")
    np.testing.assert_allclose(raw, minilm_encoder.encode(["rates rise"]), atol=1e-6)


def test_rows_in_input_order_across_batches(minilm_dir, bbc_articles):
    texts = [a.headline if i % 3 else a.body[:400] for i, a in enumerate(bbc_articles[:21])]
    small = Encoder.from_pretrained(minilm_dir, max_length=128, batch_size=4)
    batched = small.encode(texts)
    one_by_one = np.concatenate([small.encode([t]) for t in texts[:5]])
    np.testing.assert_allclose(batched[:5], one_by_one, atol=2e-5)
    assert np.all(np.argmax(batched @ batched.T, axis=1) == np.arange(len(texts)))


def test_sharded_encode_equals_single_device(minilm_dir, bbc_articles):
    assert len(jax.devices()) == 8, "tests/conftest.py emulates 8 CPU devices"
    texts = [a.headline for a in bbc_articles[:13]] + [a.body[:300] for a in bbc_articles[13:20]]
    model, tokenizer, meta = load_dual_encoder(minilm_dir)
    single = Encoder(model, tokenizer, meta, max_length=96, batch_size=8,
                     mesh=data_mesh(jax.devices()[:1])).encode(texts)
    sharded_encoder = Encoder(model, tokenizer, meta, max_length=96, batch_size=8,
                              mesh=data_mesh())
    sharded = sharded_encoder.encode(texts)
    np.testing.assert_allclose(sharded, single, atol=1e-5)
    assert sharded_encoder._batch_sharding.mesh.shape["data"] == 8


def test_micro_batches_equal_the_whole_batch(minilm_dir, bbc_articles):
    texts = [a.headline for a in bbc_articles[:9]] + [a.body[:300] for a in bbc_articles[9:19]]
    model, tokenizer, meta = load_dual_encoder(minilm_dir)
    whole = Encoder(model, tokenizer, meta, max_length=96, batch_size=8, micro_batch=0)
    micro = Encoder(model, tokenizer, meta, max_length=96, batch_size=8, micro_batch=2)
    np.testing.assert_allclose(micro.encode(texts), whole.encode(texts), atol=1e-5)


def test_sharded_micro_batches_equal_single_device(minilm_dir, bbc_articles):
    """Micro-batches of 1 row per device, 2 steps per 16-row batch on 8 devices."""
    texts = [a.headline for a in bbc_articles[:20]] + [a.body[:300] for a in bbc_articles[20:33]]
    model, tokenizer, meta = load_dual_encoder(minilm_dir)
    single = Encoder(model, tokenizer, meta, max_length=96, batch_size=16, micro_batch=0,
                     mesh=data_mesh(jax.devices()[:1])).encode(texts)
    sharded = Encoder(model, tokenizer, meta, max_length=96, batch_size=16, micro_batch=1,
                      mesh=data_mesh()).encode(texts)
    np.testing.assert_allclose(sharded, single, atol=1e-5)


def test_truncate_dim_renormalises():
    x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    y = truncate_dim(x, 4)
    assert y.shape == (5, 4)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y, x[:, :4] / np.linalg.norm(x[:, :4], axis=1, keepdims=True),
                               rtol=1e-6)
    with pytest.raises(GeckoError):
        truncate_dim(x, 17)
