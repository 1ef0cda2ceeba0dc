"""JaxEngine behaviour on the real teachers: scoring (with and without prefix reuse),
sampling, stop strings, chat template, and the GGUF / safetensors routes."""

import jax
import numpy as np
import pytest

PASSAGE = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
           "France. It is named after the engineer Gustave Eiffel, whose company designed and "
           "built the tower from 1887 to 1889.")
FEW_SHOT = ("Write a search query that the passage answers.\n\nPassage: Tea is an aromatic "
            "beverage prepared by pouring hot water over cured leaves.\nQuery: how is tea made\n\n")


def _plain_forward_logprobs(engine, prefix, cont):
    """Per-token log-probs of cont from one plain full forward pass (the reference)."""
    p = engine.tokenizer.encode(prefix)
    c = engine.tokenizer.encode(cont, add_bos=False)
    lp = np.asarray(jax.nn.log_softmax(engine.full_logits(p + c), axis=-1))
    return np.array([lp[len(p) - 1 + j, c[j]] for j in range(len(c))])


# Gemma-3's twin runs the same scoring path over its 262k-piece vocabulary: slow tier
# (its sliding-window scoring has its own tests in test_gemma_sliding_window.py).
@pytest.mark.parametrize("name", ["smollm2", pytest.param("gemma3", marks=pytest.mark.slow)])
def test_score_equals_plain_forward_with_and_without_prefix_reuse(get_model, name):
    engine = get_model("engine", name)
    # One passage against several queries (shared prefix), plus a few-shot block shared
    # by prompts with different passages, plus an unrelated pair.
    prefixes = [PASSAGE + "\nQuery:"] * 3 + [FEW_SHOT + "Passage: " + t + "\nQuery:"
                                              for t in ("Cats purr.", "Rain is water.")]
    prefixes.append("Hello")
    conts = [" who built the eiffel tower", " eiffel tower height", " paris landmarks",
             " why do cats purr", " what is rain", " world"]
    before = engine.stats["shared_prefills"]
    reused = engine.score(prefixes, conts, per_token=True)
    assert engine.stats["shared_prefills"] > before  # the shared blocks were cached once
    plain = engine.score(prefixes, conts, per_token=True, reuse_prefix=False)
    summed = engine.score(prefixes, conts)
    for p, c, r, q, s in zip(prefixes, conts, reused, plain, summed):
        ref = _plain_forward_logprobs(engine, p, c)
        np.testing.assert_allclose(r, ref, atol=1e-4, rtol=0)
        np.testing.assert_allclose(q, ref, atol=1e-4, rtol=0)
        assert abs(s - ref.sum()) < 1e-4 * max(1, len(ref))
    # A plausible query scores higher than an unrelated one (sanity of direction).
    a, b = engine.score([PASSAGE + "\nQuery:"] * 2, [" who built the eiffel tower",
                                                    " best pizza in naples"])
    assert a > b


def test_generate_stop_strings_and_max_tokens(smollm2_engine):
    eng = smollm2_engine
    prompt = "Question: What is the boiling point of water?\nAnswer:"
    full = eng.generate([prompt], max_new_tokens=20)[0]
    assert "\n" in full  # greedy text: " 100°C (212°F)\n\nThe answer is: "
    cut = eng.generate([prompt], max_new_tokens=20, stop=["\n"])[0]
    assert cut == full[:full.index("\n")]
    ids = eng.tokenizer.encode(prompt)
    assert len(eng.generate_ids([ids], max_new_tokens=5)[0]) == 5
    assert eng.generate([prompt], max_new_tokens=0) == [""]


@pytest.mark.slow
def test_sampling_is_seeded_and_independent_of_batch(smollm2_engine):
    eng = smollm2_engine
    prompts = ["Once upon a time", "The best way to learn is", "My favourite food is"]
    a = eng.generate(prompts, max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    b = eng.generate(prompts, max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    c = eng.generate(prompts, max_new_tokens=12, temperature=1.0, top_p=0.9, seed=8)
    assert a == b and a != c
    # A row's sample depends on its seed and index, not on which rows share its batch.
    alone = eng.generate(prompts[:1], max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    assert alone[0] == a[0]
    # A tiny nucleus keeps only the top token: sampling becomes greedy.
    greedy = eng.generate(prompts, max_new_tokens=12)
    assert eng.generate(prompts, max_new_tokens=12, temperature=1.0, top_p=1e-6, seed=3) == greedy


@pytest.mark.slow  # ~35 s loaded (suite budget)
def test_chat_template_matches_transformers(smollm2_engine, get_model):
    _, hf_tok = get_model("torch", "smollm2")
    messages = [{"role": "user", "content": "Write a question about tea."}]
    ours = smollm2_engine.tokenizer.apply_chat_template(messages)
    ref = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == ref
    assert ours.endswith("<|im_start|>assistant\n")
    out = smollm2_engine.generate([messages], max_new_tokens=24)[0]
    assert out.strip() and "<|im_end|>" not in out


def test_safetensors_folder_route(smollm2_engine, tmp_path):
    """GGUF -> HF safetensors folder: our reader and transformers both load it."""
    import torch
    from transformers import AutoModelForCausalLM

    from gecko_jax.llm.jax_engine import JaxEngine
    from gecko_jax.llm.loading import read_hf_folder, save_hf_folder
    from gecko_jax.models.decoder import params_to_hf

    eng = smollm2_engine
    state = params_to_hf(eng.config, jax.tree.map(np.asarray, eng.params))
    folder = save_hf_folder(tmp_path / "smollm2", eng.config, state, eng.tokenizer)
    del state
    cfg, _, tok = read_hf_folder(folder)
    assert cfg == eng.config
    text = "The Eiffel Tower is in"
    assert tok.encode(text) == eng.tokenizer.encode(text)
    assert tok.chat_template == eng.tokenizer.chat_template
    ids = eng.tokenizer.encode(text)
    logits = eng.full_logits(ids)
    # One model at a time beside the engine: each copy of SmolLM2 is 0.5 GB in float32.
    again = JaxEngine.load(folder)
    np.testing.assert_array_equal(again.full_logits(ids), logits)
    del again
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(logits, ref, atol=2e-3, rtol=0)


def test_gguf_reader_agrees_with_cached_folder(smollm2_engine):
    """The uncached GGUF route gives the same weights the engine runs on."""
    from gecko_jax import assets
    from gecko_jax.models.decoder import hf_to_params
    from gecko_jax.models.gguf import load_gguf

    cfg, state, tok = load_gguf(assets.smollm2_gguf())
    assert cfg == smollm2_engine.config
    params = hf_to_params(cfg, state)
    for k in ("wq", "wk", "w_down"):
        np.testing.assert_array_equal(params["layers"][k], np.asarray(smollm2_engine.params["layers"][k]))
    assert tok.encode("a test") == smollm2_engine.tokenizer.encode("a test")


def test_errors_are_clear(tmp_path):
    from gecko_jax.errors import GeckoError
    from gecko_jax.llm.loading import load_decoder

    with pytest.raises(GeckoError, match="no such model"):
        load_decoder(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(GeckoError, match="not a readable GGUF"):
        load_decoder(bad)
