"""Truncation of LLM-tower inputs matches transformers' tokenizers of the shipped teachers.

A text cut to max_length keeps the tokenizer's closing special tokens exactly as
transformers truncates (text first, then BOS/EOS added): Gemma's BOS-only rule
ends a cut text with its last text token; a tokenizer that appends EOS (for
last-token pooling) ends it with EOS, cut or not. Inference (Tokenizer.encode)
and the training data path (seqio task -> feature converter) give the same ids.
"""

import functools

import numpy as np
import pytest

from gecko_jax.tokenization import Tokenizer, truncate_keep_closing

TEXTS = ["Short one.", "The quick brown fox jumps over the lazy dog " * 6,
         "Liverpool beat Chelsea 2-1 at Anfield on Sunday; the manager praised his defence "
         "and said the title race was far from over.", "<eos> a literal special token"]
LENGTHS = (6, 12, 40)


@functools.lru_cache(maxsize=None)
def _hf_gguf(name: str):
    """transformers' own tokenizer read from the shipped GGUF (its GGUF converter)."""
    from transformers import AutoTokenizer

    from gecko_jax.llm.loading import resolve

    path = resolve(name)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _hf(name: str, append_eos: bool):
    import copy

    tok = copy.deepcopy(_hf_gguf(name))
    if append_eos:
        # transformers rebuilds its post-processor from both flags: keep the BOS rule
        # the GGUF tokenizer has (Gemma: BOS; SmolLM2: none), add EOS.
        tok.add_bos_token = tok("a")["input_ids"][0] == tok.bos_token_id
        tok.add_eos_token = True
    return tok


@functools.lru_cache(maxsize=None)
def _lm_tokenizer(name: str):
    """The shipped teacher's LM tokenizer (its weights are read once and dropped)."""
    from gecko_jax.llm.loading import load_decoder

    return load_decoder(name)[2]


@functools.lru_cache(maxsize=None)
def _ours(name: str, append_eos: bool) -> Tokenizer:
    from gecko_jax.models.llm_export import embedder_tokenizer

    return embedder_tokenizer(_lm_tokenizer(name), append_eos=append_eos)


def test_truncate_keep_closing():
    assert truncate_keep_closing([1, 5, 6, 7, 2], 4, 1) == [1, 5, 6, 2]
    assert truncate_keep_closing([1, 5, 6, 7], 3, 0) == [1, 5, 6]
    assert truncate_keep_closing([1, 5], 3, 1) == [1, 5]


def test_minilm_closing_is_sep(minilm_dir):
    tok = Tokenizer.from_folder(minilm_dir)
    assert tok.closing_count == 1
    ids = tok.encode(["word " * 50], 10)[0]
    assert len(ids) == 10 and ids[-1] == tok.backend.token_to_id("[SEP]")


# Gemma-3's 262k-token GGUF vocabulary takes transformers minutes to read on a loaded CPU.
@pytest.mark.parametrize("name", ["smollm2", pytest.param("gemma3", marks=pytest.mark.slow)])
@pytest.mark.parametrize("append_eos", [False, True])
def test_truncation_matches_transformers(name, append_eos):
    hf, ours = _hf(name, append_eos), _ours(name, append_eos)
    assert ours.closing_count == int(append_eos)
    for n in LENGTHS:
        want = hf(TEXTS, truncation=True, max_length=n)["input_ids"]
        got = ours.encode(TEXTS, n)
        assert got == want, (name, append_eos, n)
        if append_eos:  # last-token pooling reads EOS, cut or not
            assert all(ids[-1] == hf.eos_token_id for ids in got)
    assert ours.encode(TEXTS[1:2], 12)[0][-1] != hf.eos_token_id or append_eos


@pytest.mark.parametrize("append_eos", [False, True])
def test_training_path_trims_like_inference(append_eos, tmp_path):
    """seqio task + feature converter ids == Tokenizer.encode ids, at a length that cuts."""
    import json

    from gecko_jax.data import tasks

    tok = _ours("gemma3", append_eos)
    rows = [{"query": TEXTS[i], "task": "t", "positive": {"text": TEXTS[(i + 1) % 4]}}
            for i in range(len(TEXTS))]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    name = f"test_llm_trim_{int(append_eos)}"
    tasks.register_jsonl_task(name, {"train": [str(path)]}, tok.folder)
    lengths = {"query": 12, "positive": 12, "negative": 12}
    ex = tasks.load_examples(name, "train", lengths, tok.pad_id)
    from gecko_jax.unified_format import format_documents, format_queries

    queries = tok.encode(format_queries([r["query"] for r in rows], "t", "gecko"), 12)
    docs = tok.encode(format_documents([r["positive"]["text"] for r in rows], None, "gecko"), 12)
    for side, want in (("query", queries), ("positive", docs)):
        got = [list(ids[mask == 1]) for ids, mask in zip(ex[f"{side}_ids"], ex[f"{side}_mask"])]
        assert got == want, side
    assert any(len(q) == 12 for q in queries)
    if append_eos:
        eos = _lm_tokenizer("gemma3").eos_id
        assert np.all(ex["query_ids"][np.arange(len(rows)), ex["query_mask"].sum(1) - 1] == eos)
