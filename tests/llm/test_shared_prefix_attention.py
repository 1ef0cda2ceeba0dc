"""A shared block (the few-shot prompt) held once for every row (`attention_with_prefix`):
the attention equals attention over the concatenated keys, and the engine's
generations (greedy) and scores equal those computed without the block (whole prompts
prefilled; whole rows scored by a plain forward pass), for SmolLM2 and for Gemma-3 past
its sliding window."""

import numpy as np
import pytest

from gecko_jax.llm.jax_engine import JaxEngine
from gecko_jax.models.attention import attention, attention_with_prefix

# The same few-shot block and passages as the prefix-reuse tests.
from tests.llm.test_generate_reuse import FEW_SHOT, PASSAGES  # noqa: E402
from tests.llm.test_jax_engine import _plain_forward_logprobs  # noqa: E402



def test_attention_with_prefix_equals_attention_over_concatenated_keys():
    """Random GQA operands (9 query heads over 3 kv heads), causal-like masks with hidden
    prefix slots (padding) and hidden own slots: numpy-free reference is `attention` on
    the concatenation (itself checked against numpy in tests/models)."""
    rng = np.random.default_rng(0)
    b, h, kv, t, s0, s, d = 3, 9, 3, 5, 11, 7, 16
    q = rng.normal(size=(b, h, t, d)).astype(np.float32)
    pk, pv = (rng.normal(size=(kv, s0, d)).astype(np.float32) for _ in range(2))
    k, v = (rng.normal(size=(b, kv, s, d)).astype(np.float32) for _ in range(2))
    pmask = np.broadcast_to(np.arange(s0) < 8, (b, t, s0))  # slots 8.. are padding
    mask = np.arange(s)[None, None, :] <= np.arange(t)[None, :, None] + np.arange(b)[:, None,
                                                                                     None]
    got = attention_with_prefix(q, pk, pv, pmask, k, v, mask, 0.3)
    cat = lambda a, x: np.concatenate([np.broadcast_to(a[None], (b,) + a.shape), x], 2)  # noqa
    want = attention(q, cat(pk, k), cat(pv, v), np.concatenate([pmask, mask], -1), 0.3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=2e-6)


def _plain(engine):
    """The same model with no shared block ever (min_shared above any prompt's length)."""
    return JaxEngine(engine.config, engine.params, engine.tokenizer,
                     max_batch=engine.max_batch, min_shared=1 << 30)


# Slow tier: the default suite makes the same comparisons in test_generate_reuse.py
# (generation over the shared block vs each prompt alone) and test_jax_engine.py (scores
# with prefix reuse vs a plain forward pass).
@pytest.mark.slow
def test_generation_and_scores_equal_the_path_without_a_shared_block(smollm2_engine):
    eng = smollm2_engine
    plain = _plain(eng)
    ids = eng.tokenizer.encode_batch([FEW_SHOT + "Passage: " + p + "\nQuery:" for p in PASSAGES])
    before = eng.stats["shared_prefills"] + eng.stats["shared_hits"]
    got = eng.generate_ids(ids, max_new_tokens=20, stop=["\n"])
    assert eng.stats["shared_prefills"] + eng.stats["shared_hits"] > before  # block used
    assert got == plain.generate_ids(ids, max_new_tokens=20, stop=["\n"])
    assert plain.stats["shared_prefills"] + plain.stats["shared_hits"] == 0
    assert all(got)
    # Scoring: QL-like rows over the shared block (per-token log-probs) against one
    # plain forward pass over each whole row.
    pre = [FEW_SHOT + "Passage: " + p + "\nQuery:" for p in PASSAGES]
    con = [" where is the eiffel tower", " how do bees communicate", " who was ada lovelace"]
    extend = eng.stats["extend_tokens"]
    a = eng.score(pre, con, per_token=True)
    assert eng.stats["extend_tokens"] > extend  # the rows continued the cached block
    b = [_plain_forward_logprobs(eng, p, c) for p, c in zip(pre, con)]
    tok = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
    print(f"\nprefix attention vs plain forward: max per-token diff {tok:.2e}")
    assert tok < 3e-5


@pytest.mark.slow  # Gemma-3 over a 600-token block: ~1 min
def test_gemma3_block_longer_than_the_sliding_window(get_model):
    """Rows continue a 600-token block (> Gemma-3's 512-token window): local layers must
    hide the block's early keys from late tokens in the shared-prefix attention too."""
    from gecko_jax.fret.corpus import wikipedia_passages

    eng = get_model("engine", "gemma3")
    text = ""
    for row in wikipedia_passages(words=100):
        text += row["text"] + "\n\n"
        if len(eng.tokenizer.encode(text)) > 620:
            break
    block = eng.tokenizer.encode(text)[:600]
    assert len(block) > eng.config.sliding_window
    tails = [eng.tokenizer.encode(p, add_bos=False) for p in PASSAGES]
    ids = [block + t for t in tails]
    plain = _plain(eng)
    got = eng.generate_ids(ids, max_new_tokens=8)
    assert got == plain.generate_ids(ids, max_new_tokens=8)
    a = eng.score_ids([block] * 3, tails, per_token=True)
    c = plain.score_ids([block] * 3, tails, per_token=True, reuse_prefix=False)  # whole rows
    tok = max(float(np.max(np.abs(x - y))) for x, y in zip(a, c))
    print(f"\nGemma-3 prefix attention: max per-token diff {tok:.2e}")
    assert tok < 1e-4
