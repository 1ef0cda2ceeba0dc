"""A Gemma-3 embedder exported in EmbeddingGemma's layout loads in sentence-transformers
with no custom code and embeds real texts as our JAX tower does.

The shipped Gemma-3-270M (GGUF, dequantised, float32) with a seeded random dense
head 640 -> 2560 -> 640; BBC articles with the Gecko document prompt, some longer
than the model's 512-token sliding window, so the symmetric window is exercised
(slow: ~3 min on 2 loaded cores). The default suite checks the same export on a
random tiny Gemma-3 with the real tokenizer and a 16-token window.
"""

import json

import numpy as np
import pytest

from gecko_jax.unified_format import format_document
from gecko_jax.models import llm_encoder, llm_export
from gecko_jax.training import llm_tower

MAX_LENGTH = 1024
WINDOW = 512


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, tokenizer = llm_tower.llm_model(source="gemma3", dense_dims=(2560, 640), seed=0)
    folder = llm_export.export_llm_encoder(model, tokenizer, tmp_path_factory.mktemp("eg") / "emb",
                                           max_length=MAX_LENGTH)
    return model, tokenizer, folder


@pytest.fixture(scope="module")
def st_model(exported):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    return SentenceTransformer(str(exported[2]), device="cpu", model_kwargs={"dtype": torch.float32})


def _texts(articles, n):
    """n article bodies of varied length spread over the corpus; every third one is
    560-660 words of a long article (~700+ tokens, past the 512-token window)."""
    long_pool = [a for a in articles if len(a.body.split()) >= 660]
    step = max(len(articles) // n, 1)
    out = []
    for i in range(n):
        if i % 3 == 0:
            words = long_pool[(i * 7) % len(long_pool)].body.split()[:560 + (i * 13) % 100]
        else:
            words = articles[(i * step) % len(articles)].body.split()[:60 + (i * 151) % 640]
        out.append(" ".join(words))
    return out


def _check_agreement(exported, st_model, texts):
    model, tokenizer, _ = exported
    ours_ids = tokenizer.encode([format_document(t) for t in texts], 10 ** 6)
    lengths = [len(x) for x in ours_ids]
    assert max(lengths) <= MAX_LENGTH, "no truncation: both sides must see the same tokens"
    assert sum(n > WINDOW for n in lengths) >= 2, "some texts must exceed the sliding window"
    st_ids = st_model.tokenize([format_document(t) for t in texts[:3]])["input_ids"]
    for row, ids in zip(st_ids.tolist(), ours_ids[:3]):
        assert row[:len(ids)] == ids                                # same tokens, BOS included
    ours = llm_encoder.encode_texts(model, tokenizer, [format_document(t) for t in texts],
                                    MAX_LENGTH, batch_size=4)
    theirs = st_model.encode(texts, prompt_name="document", batch_size=4,
                             convert_to_numpy=True, normalize_embeddings=False)
    assert theirs.shape == ours.shape == (len(texts), 640)
    cos = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    print(f"{len(texts)} texts, {lengths and max(lengths)} max tokens, "
          f"{sum(n > WINDOW for n in lengths)} over the window: min cosine {cos.min():.7f}")
    assert cos.min() >= 0.9999


TINY_GEMMA = dict(architecture="gemma3", hidden_size=32, intermediate_size=64, num_layers=4,
                  num_heads=2, num_kv_heads=1, head_dim=16, sliding_window=16,
                  sliding_window_pattern=2, query_pre_attn_scalar=16, rope_theta=1e6,
                  bos_token_id=2, eos_token_id=1, pad_token_id=0)


@pytest.fixture(scope="module")
def tiny_exported(tmp_path_factory):
    """A random tiny Gemma-3 (window 16) with the real Gemma tokenizer: fast default check."""
    model, tokenizer = llm_tower.random_llm_model(config=TINY_GEMMA, source="gemma3",
                                                  dense_dims=(64, 32), seed=0)
    folder = llm_export.export_llm_encoder(model, tokenizer,
                                           tmp_path_factory.mktemp("tiny") / "emb", max_length=256)
    return model, tokenizer, folder


@pytest.mark.parametrize("scan", [None, False], ids=["scanned", "unrolled_remat"])
def test_tiny_gemma_export_agrees_with_sentence_transformers(tiny_exported, bbc_articles, scan,
                                                             monkeypatch):
    import torch
    from sentence_transformers import SentenceTransformer

    from gecko_jax.models.layer_stack import LayerOptions

    model, tokenizer, folder = tiny_exported
    if scan is not None:   # layers unrolled with remat: same export, same embeddings
        monkeypatch.setattr(model.backbone, "options", LayerOptions(scan=scan, remat="full"))
    st = SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch.float32})
    texts = [" ".join(a.body.split()[:5 + 9 * i]) for i, a in enumerate(bbc_articles[::90][:12])]
    texts.append(max((a.body for a in bbc_articles), key=len))  # truncated to 256 on both sides
    lengths = [len(x) for x in tokenizer.encode([format_document(t) for t in texts], 10 ** 6)]
    assert lengths[-1] > 256 and sum(n > 16 for n in lengths) >= 6
    ours = llm_encoder.encode_texts(model, tokenizer, [format_document(t) for t in texts], 256)
    theirs = st.encode(texts, prompt_name="document", batch_size=4, convert_to_numpy=True)
    cos = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.9999, cos
    query = st.encode(["who won?"], prompt_name="query", convert_to_numpy=True)
    np.testing.assert_allclose(query, llm_encoder.encode_texts(
        model, tokenizer, ["task: search result | query: who won?"], 256), atol=1e-5)


@pytest.mark.slow
def test_export_layout(exported):
    _, _, folder = exported
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architectures"] == ["Gemma3TextModel"] and cfg["use_bidirectional_attention"]
    assert cfg["sliding_window"] == WINDOW
    modules = [m["type"].rsplit(".", 1)[-1] for m in
               json.loads((folder / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Dense", "Dense", "Normalize"]
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts == {"query": "task: search result | query: ", "document": "title: none | text: ",
                       "Classification": "task: classification | query: ",
                       "MultilabelClassification": "task: classification | query: ",
                       "Clustering": "task: clustering | query: ",
                       "STS": "task: sentence similarity | query: ",
                       "PairClassification": "task: sentence similarity | query: ",
                       "Summarization": "task: sentence similarity | query: ",
                       "BitextMining": "task: sentence similarity | query: "}


@pytest.mark.slow
def test_sentence_transformers_agrees_few_texts(exported, st_model, bbc_articles):
    """The default-suite variant: 6 texts, 2+ longer than the window."""
    _check_agreement(exported, st_model, _texts(bbc_articles, 6))


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~10 CPU minutes (two 270M models over ~40k tokens)
def test_sentence_transformers_agrees_100_texts(exported, st_model, bbc_articles):
    _check_agreement(exported, st_model, _texts(bbc_articles, 100))


@pytest.mark.slow
def test_export_loads_back(exported, bbc_articles):
    model, tokenizer, folder = exported
    back, tok2, meta = llm_export.load_llm_encoder(folder)
    assert meta["bidirectional"] and meta["pooling"] == "mean" and back.dense_dims == (2560, 640)
    texts = [format_document(t) for t in _texts(bbc_articles, 2)]
    np.testing.assert_array_equal(llm_encoder.encode_texts(back, tok2, texts, 256),
                                  llm_encoder.encode_texts(model, tokenizer, texts, 256))


def test_encoder_loads_llm_export(tiny_exported, bbc_articles):
    """gecko_jax.encode.Encoder (gecko embed / eval / demo) reads the exported LLM folder."""
    from gecko_jax.encode import Encoder

    model, tokenizer, folder = tiny_exported
    enc = Encoder.from_pretrained(folder, batch_size=4)
    assert enc.meta.prompt_format == "gecko" and enc.embedding_dim == 32
    texts = [a.body[:300] for a in bbc_articles[:5]]
    want = llm_encoder.encode_texts(model, tokenizer, [format_document(t) for t in texts], 256)
    np.testing.assert_allclose(enc.encode_documents(texts), want, atol=1e-5, rtol=0)
