"""Scoring's batching (rows of similar length together, 32-token padding steps, one
cached block per shared-prefix group) returns the scores of a plain forward pass over
each whole row, on FRet-shaped QL and RC rows of the real SmolLM2 teacher."""

import numpy as np
import pytest

from gecko_jax.fret.corpus import wikipedia_passages
from gecko_jax.llm.jax_engine import JaxEngine, _score_bucket
from tests.llm.test_jax_engine import _plain_forward_logprobs


def _fret_rows(n):
    """QL and RC-like (prefix, continuation) pairs over passages of varied length."""
    rows = wikipedia_passages()
    few_shot = ("Write a query the passage answers.\n\nPassage: Tea is a drink made from "
                "leaves.\nQuery: what is tea\n\n")
    texts = [" ".join(r["text"].split()[:20 + 13 * (i % 7)]) for i, r in enumerate(rows[:n])]
    queries = [f" query number {i} about {t.split()[0]}" for i, t in enumerate(texts)]
    ql = [(few_shot + "Passage: " + t + "\nQuery:", q) for t, q in zip(texts, queries)]
    rc = [(few_shot + "Query:" + q + "\nPassage: " + t + "\nRelevant:", lab)
          for t, q in zip(texts, queries) for lab in (" yes", " no")]
    return ql, rc


def test_score_buckets_step_by_32_tokens_up_to_512():
    assert [_score_bucket(n) for n in (1, 32, 33, 65, 500, 512, 513)] == \
        [32, 32, 64, 96, 512, 512, 768]


@pytest.mark.slow    # ~1 min (default suite budget: 20 minutes)
def test_batched_scores_equal_a_plain_forward_per_row(smollm2_engine):
    eng = smollm2_engine
    ql, rc = _fret_rows(20)
    for pairs in (ql, rc):
        pre, con = [p for p, _ in pairs], [c for _, c in pairs]
        before = dict(eng.stats)
        a = eng.score(pre, con, per_token=True)
        assert eng.stats["extend_tokens"] > before.get("extend_tokens", 0)  # cached blocks
        b = [_plain_forward_logprobs(eng, p, c) for p, c in pairs]
        tok = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
        tot = max(abs(float(np.sum(x) - np.sum(y))) for x, y in zip(a, b))
        print(f"batched vs plain forward: max per-token diff {tok:.2e}, summed {tot:.2e}")
        assert all(len(x) == len(y) for x, y in zip(a, b))
        # Other padded shapes and cache split points reorder float32 sums: ~1.5e-5 per
        # token, float32's resolution for these log-probs.
        assert tok < 3e-5 and tot < 5e-5


@pytest.mark.slow    # an opt-in scoring path (FRetConfig.teacher_batch_invariant)
def test_batch_invariant_scoring_equals_batched(smollm2_engine):
    # The row-by-row path (both scoring paths: a cached block attended to once, and
    # whole rows) gives the batched path's scores within float32 reordering; its mesh
    # invariance is tests/llm/test_teacher_mesh.py's.
    eng = smollm2_engine
    ql, rc = _fret_rows(5)
    pairs = ql + rc[:4] + [("Passage: " + p.split("Passage: ")[-1], c) for p, c in ql[:3]]
    prefixes, conts = [p for p, _ in pairs], [c for _, c in pairs]
    base = JaxEngine(eng.config, eng.params, eng.tokenizer, max_batch=8)
    inv = JaxEngine(eng.config, eng.params, eng.tokenizer, batch_invariant=True, max_batch=8)
    want = base.score(prefixes, conts, per_token=True)
    got = inv.score(prefixes, conts, per_token=True)
    assert base.stats["extend_tokens"] > 0 and base.stats["full_tokens"] > 0
    assert inv.stats == base.stats
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=5e-5, rtol=0)
