"""Generation with the shared few-shot block prefilled once (and reused across calls), with
finished rows dropped from the batch, gives the tokens of each prompt generated alone
with no shared block (greedy, 3 prompts, both shipped teachers): the whole-prompt path
that tests/llm/test_vs_transformers.py checks against transformers. Sampling stays
seeded and batch-independent."""

import pytest

FEW_SHOT = ("Write a search query that the passage answers.\n\n"
            "Passage: Tea is an aromatic beverage prepared by pouring hot water over cured "
            "leaves.\nQuery: how is tea made\n\n"
            "Passage: The Moon is Earth's only natural satellite.\nQuery: how many moons does "
            "earth have\n\n")
PASSAGES = ["The Eiffel Tower is a wrought-iron lattice tower in Paris.",
            "Honey bees tell each other where flowers are by dancing.",
            "Ada Lovelace wrote the first algorithm for Charles Babbage's Analytical Engine."]
PROMPTS = [FEW_SHOT + "Passage: " + p + "\nQuery:" for p in PASSAGES]


def _generate(engine, **kw):
    """The three prompts in one batch (shared block, finished rows dropped)."""
    return engine.generate_ids(engine.tokenizer.encode_batch(PROMPTS), **kw)


def _alone(engine, **kw):
    """The reference: each prompt by itself (one row: nothing to drop) with no shared
    block (min_shared above any prompt's length: the whole prompt is prefilled)."""
    old = engine.min_shared
    engine.min_shared = 1 << 30
    try:
        return [engine.generate_ids([ids], **kw)[0]
                for ids in engine.tokenizer.encode_batch(PROMPTS)]
    finally:
        engine.min_shared = old


# Slow tier (both teachers; Gemma-3's sliding window has its own tests in
# test_gemma_sliding_window.py): the default suite compares the shared-block path with each prompt alone in
# test_stop_strings_and_finished_rows; this adds the block cache's counters and a retry.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_prefix_reuse_gives_the_same_greedy_tokens(get_model, name):
    engine = get_model("engine", name)
    plain = _alone(engine, max_new_tokens=24)
    before = dict(engine.stats)
    reused = _generate(engine, max_new_tokens=24)
    assert reused == plain
    assert all(len(g) > 0 for g in plain)
    # The few-shot block was prefilled once (or found cached), not once per row.
    assert (engine.stats["shared_prefills"] + engine.stats["shared_hits"]
            > before.get("shared_prefills", 0) + before.get("shared_hits", 0))
    assert engine.stats["prefill_tokens"] - before.get("prefill_tokens", 0) < \
        sum(len(engine.tokenizer.encode(p)) for p in PROMPTS) - 2 * len(FEW_SHOT) // 8
    # A second call (a retry) hits the cache instead of prefilling the block again.
    hits = engine.stats["shared_hits"]
    assert _generate(engine, max_new_tokens=24) == plain
    assert engine.stats["shared_hits"] == hits + 1


def test_stop_strings_and_finished_rows(smollm2_engine):
    """With a stop string rows finish at different steps; compaction drops them, and the
    texts are the cut of each prompt's whole generation alone at the stop string."""
    eng = smollm2_engine
    full = _alone(eng, max_new_tokens=40)
    before = dict(eng.stats)
    fast = _generate(eng, max_new_tokens=40, stop=["\n"])
    assert fast == _alone(eng, max_new_tokens=40, stop=["\n"])
    for f, p in zip(full, fast):
        text = eng.tokenizer.decode(f)
        assert eng.tokenizer.decode(p) == text.split("\n")[0]
    assert len({len(g) for g in fast}) > 1  # rows stopped at different steps
    # Row-steps decoded: fewer than the batch (3 rows padded to 4) for every step.
    steps = eng.stats["decode_steps"] - before["decode_steps"]
    row_steps = eng.stats["decode_row_steps"] - before["decode_row_steps"]
    assert row_steps < 4 * steps


@pytest.mark.slow
def test_sampling_with_reuse_is_seeded_and_batch_independent(smollm2_engine):
    eng = smollm2_engine
    kw = dict(max_new_tokens=16, temperature=0.8, top_p=0.95, seed=5)
    a = eng.generate(PROMPTS, **kw)
    assert eng.generate(PROMPTS, **kw) == a
    assert eng.generate(PROMPTS[:1], **kw)[0] == a[0]


def test_one_token_labels_of_one_prefix_share_a_row(smollm2_engine):
    """Relevance classification scores " yes" and " no" after the same prompt: the pairs
    run as one row (fewer tokens computed) with the log-probs of separate rows."""
    import numpy as np

    eng = smollm2_engine
    prefixes = [FEW_SHOT + "Query: " + q + "\nPassage: " + p + "\nRelevant:"
                for q, p in (("eiffel tower", PASSAGES[0]), ("bee dance", PASSAGES[1]))]
    pre, conts = prefixes + prefixes, [" yes", " yes", " no", " no"]
    t0 = eng.stats["extend_tokens"] + eng.stats["full_tokens"]
    merged = eng.score(pre, conts)
    t1 = eng.stats["extend_tokens"] + eng.stats["full_tokens"]
    plain = eng.score(pre, conts, reuse_prefix=False)
    t2 = eng.stats["extend_tokens"] + eng.stats["full_tokens"]
    np.testing.assert_allclose(merged, plain, atol=1e-4, rtol=0)
    assert t1 - t0 < (t2 - t1) / 2  # 2 rows after the cached block vs 4 whole rows
    assert merged[0] != merged[2]


# Slow tier: the scanned decode stack is the accelerator route (the CPU default, per-layer
# buffers, is what every default-suite generation test runs).
@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_decode_layer_buffers_give_the_same_tokens(get_model, name):
    """Decode steps over one buffer per layer (an unrolled loop, the CPU default) give
    the tokens of the scanned stack: greedy with the shared block and a stop string
    (rows finish at different steps and are compacted), and seeded nucleus sampling."""
    from gecko_jax.llm.jax_engine import JaxEngine

    engine = get_model("engine", name)
    assert engine.decode_layer_buffers  # CPU default
    assert isinstance(engine.decode_params["layers"], list)
    stacked = JaxEngine(engine.config, engine.params, engine.tokenizer, max_batch=8,
                        decode_layer_buffers=False)
    kw = dict(max_new_tokens=24, stop=["\n"])
    greedy = _generate(engine, **kw)
    assert greedy == _generate(stacked, **kw)
    assert len({len(g) for g in greedy}) > 1  # rows stopped at different steps
    if name == "smollm2":
        kw = dict(max_new_tokens=16, temperature=0.8, top_p=0.95, seed=5)
        assert engine.generate(PROMPTS, **kw) == stacked.generate(PROMPTS, **kw)
