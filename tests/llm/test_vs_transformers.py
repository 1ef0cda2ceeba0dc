"""The engine's numerics: our GGUF-loaded decoders against transformers loading the same GGUF.

For SmolLM2-135M (Llama) and Gemma-3-270M: tokenization, next-token logits (max abs
difference printed; top-1 identical at every position) and 20 greedy tokens for 3
prompts. Run with -s to see the figures.
"""

import numpy as np
import pytest
import torch

from tests.llm.conftest import PROMPTS

MODELS = ["smollm2", "gemma3"]
LOGIT_ATOL = 2e-3  # float32 on both sides; measured ~1.6e-4 (SmolLM2), ~6e-5 (Gemma-3)


# Gemma-3's 262k-piece tokenizer takes ~40 s to compare: slow (suite budget); SmolLM2's
# stays in the default suite.
@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m == "gemma3"
                                  else m for m in MODELS])
def test_tokenizer_matches_transformers(get_model, name):
    engine = get_model("engine", name)
    _, hf_tok = get_model("torch", name)
    texts = PROMPTS[name] + ["  two  spaces, tabs\tand\nnew lines", "Ünïcödé — 東京 🚀 ok",
                             "In 1997, 3 cats ate 12345 fish."]
    for text in texts:
        assert engine.tokenizer.encode(text) == hf_tok(text)["input_ids"], text
        assert engine.tokenizer.decode(engine.tokenizer.encode(text)) == text


# Gemma-3's real weights in the slow tier: its architecture's numerics stay in the default
# suite through the tiny Gemma export test (tests/models/test_llm_export.py).
@pytest.mark.parametrize("name", ["smollm2", pytest.param("gemma3", marks=pytest.mark.slow)])
def test_logits_match_transformers(get_model, name):
    engine = get_model("engine", name)
    model, _ = get_model("torch", name)
    worst = 0.0
    for prompt in PROMPTS[name]:
        ids = engine.tokenizer.encode(prompt)
        ours = engine.full_logits(ids)
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].numpy()
        diff = float(np.abs(ours - ref).max())
        worst = max(worst, diff)
        assert diff < LOGIT_ATOL, (prompt, diff)
        np.testing.assert_array_equal(ours.argmax(-1), ref.argmax(-1))
    print(f"\n{name}: max abs logit diff vs transformers = {worst:.3g}")


@pytest.mark.parametrize("name", ["smollm2", pytest.param("gemma3", marks=pytest.mark.slow)])
def test_greedy_20_tokens_match_transformers(get_model, name):
    engine = get_model("engine", name)
    model, _ = get_model("torch", name)
    ids = engine.tokenizer.encode_batch(PROMPTS[name])
    ours = engine.generate_ids(ids, max_new_tokens=20)  # one batch of 3 (padded to 4)
    for prompt, p_ids, got in zip(PROMPTS[name], ids, ours):
        with torch.no_grad():
            ref = model.generate(torch.tensor([p_ids]), max_new_tokens=20, do_sample=False,
                                 attention_mask=torch.ones(1, len(p_ids), dtype=torch.long))
        ref = ref[0, len(p_ids):].tolist()
        assert len(got) == 20, (prompt, got)
        assert got == ref, (prompt, engine.tokenizer.decode(got), engine.tokenizer.decode(ref))
    print(f"\n{name}: 3/3 prompts, 20 greedy tokens identical to transformers")
