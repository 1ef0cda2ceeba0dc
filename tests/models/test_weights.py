"""Loading HF folders and the export round trip through transformers and sentence-transformers."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gecko_jax.encode import Encoder
from gecko_jax.errors import GeckoError
from gecko_jax.models.layer_stack import LayerOptions, set_options
from gecko_jax.models.weights import export_dual_encoder, load_dual_encoder

TEXTS = ["A central bank raised interest rates.", "The striker scored twice in the final.",
         "New phone has a folding screen and a faster chip."]


@pytest.mark.parametrize("options", [None, LayerOptions(scan=True, remat="dots_no_batch")],
                         ids=["unrolled", "scanned_remat"])
def test_export_round_trip_sentence_transformers(tmp_path, minilm_dir, options):
    from sentence_transformers import SentenceTransformer

    model, tokenizer, _ = load_dual_encoder(minilm_dir)
    if options is not None:   # the parameter layout is the same: export is unchanged
        set_options(model, options)
    folder = export_dual_encoder(model, tokenizer, tmp_path / "export", prompt_format="raw",
                                 max_length=256)
    ours = Encoder(model, tokenizer, load_dual_encoder(folder)[2]).encode(TEXTS)
    st = SentenceTransformer(str(folder), device="cpu")
    theirs = st.encode(TEXTS, normalize_embeddings=False)
    np.testing.assert_array_less(0.9999, np.sum(ours * theirs, axis=1))
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1.0, rtol=1e-5)  # Normalize module
    assert json.loads((folder / "gecko_config.json").read_text())["prompt_format"] == "raw"


def test_prompt_free_pooling_matches_sentence_transformers(tmp_path, minilm_dir):
    """A tower that leaves the prompt out of its mean (include_prompt=False) exports it
    so: sentence-transformers, given the exported prompt names, embeds every kind of
    text as gecko_jax does (1e-5), and the loaded folder keeps the setting."""
    from sentence_transformers import SentenceTransformer

    from gecko_jax.training.model_fns import pretrained_model

    model, tokenizer = pretrained_model(minilm_dir, include_prompt=False)
    assert not model.include_prompt
    folder = export_dual_encoder(model, tokenizer, tmp_path / "export")
    assert load_dual_encoder(folder)[0].prompt_markers == tokenizer.prompt_markers
    enc = Encoder.from_pretrained(folder)
    st = SentenceTransformer(str(folder), device="cpu")
    queries = TEXTS + ["a query whose text holds | text: a marker"]
    ours = {"query": enc.encode_queries(queries), "document": enc.encode_documents(TEXTS),
            "clustering": enc.encode_queries(TEXTS, task="clustering")}
    theirs = {"query": st.encode(queries, prompt_name="query"),
              "document": st.encode(TEXTS, prompt_name="document"),
              "clustering": st.encode(TEXTS, prompt_name="Clustering")}
    for kind in ours:
        np.testing.assert_allclose(ours[kind], theirs[kind], atol=1e-5, err_msg=kind)
    # The prompt-inclusive mean of the same weights is another embedding.
    full = SentenceTransformer(str(minilm_dir), device="cpu").encode(
        [f"task: search result | query: {t}" for t in TEXTS], normalize_embeddings=True)
    assert np.abs(full - ours["query"][:3]).max() > 0.02


def test_export_with_projection_loads_in_transformers_and_st(tmp_path, minilm_dir):
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from gecko_jax.models.dual_encoder import DualEncoder

    base, tokenizer, _ = load_dual_encoder(minilm_dir)
    with nnx.use_eager_sharding(False):
        model = DualEncoder(base.backbone, projection_dim=64, rngs=nnx.Rngs(3))
    folder = export_dual_encoder(model, tokenizer, tmp_path / "proj", prompt_format="gecko")
    reloaded = Encoder.from_pretrained(folder)
    assert reloaded.embedding_dim == 64 and reloaded.meta.prompt_format == "gecko"
    ours = reloaded.encode_queries(TEXTS, task="search result")
    st = SentenceTransformer(str(folder), device="cpu")
    theirs = st.encode(TEXTS, prompt_name="query")  # prompt = the Gecko template, default task
    assert theirs.shape == (3, 64)
    np.testing.assert_array_less(0.9999, np.sum(ours * theirs, axis=1))
    # Plain transformers sees the backbone: its hidden states match ours.
    hf = AutoModel.from_pretrained(str(folder)).eval()
    ids, mask = reloaded.tokenizer.encode(TEXTS[:1], 64)[0], None
    with torch.inference_mode():
        hf_hidden = hf(input_ids=torch.tensor([ids])).last_hidden_state.numpy()
    ours_hidden = model.backbone(jnp.asarray([ids]), jnp.ones((1, len(ids)), jnp.int32))
    np.testing.assert_allclose(np.asarray(ours_hidden), hf_hidden, atol=2e-4)


def test_load_with_bert_prefix(tmp_path, minilm_dir):
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "prefixed"
    shutil.copytree(minilm_dir, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({f"bert.{k}": v for k, v in tensors.items()}, str(folder / "model.safetensors"))
    a = Encoder.from_pretrained(minilm_dir).encode(TEXTS)
    b = Encoder.from_pretrained(folder).encode(TEXTS)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("breakage, message", [
    ("no_folder", "does not exist"),
    ("no_config", "no config.json"),
    ("bad_config", "not valid JSON"),
    ("no_weights", "no model.safetensors"),
    ("bad_weights", "cannot be read as safetensors"),
    ("wrong_shape", "has shape"),
])
def test_broken_model_folder_is_a_clear_error(tmp_path, minilm_dir, breakage, message):
    folder = tmp_path / "m"
    if breakage != "no_folder":
        shutil.copytree(minilm_dir, folder)
    if breakage == "no_config":
        (folder / "config.json").unlink()
    elif breakage == "bad_config":
        (folder / "config.json").write_text("{not json")
    elif breakage == "no_weights":
        (folder / "model.safetensors").unlink()
    elif breakage == "bad_weights":
        (folder / "model.safetensors").write_bytes(b"garbage" * 10)
    elif breakage == "wrong_shape":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["hidden_size"] = 256
        cfg["num_attention_heads"] = 8
        (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GeckoError, match=message):
        load_dual_encoder(folder)
