"""TF-IDF hard negatives for title -> body pairs: scores against scikit-learn's TF-IDF,
the near miss outside the query's near-duplicate group, and the real BBC source."""

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from gecko_jax.data import lexical_negatives as ln
from gecko_jax.data import mixtures, sources, splits

DOCS = ["The central bank raised interest rates by half a point today.",
        "The central bank raised interest rates by half a point, a copy of the first.",
        "The bank cut interest rates for the first time in a year.",
        "The football club won the cup final at Wembley.",
        "The club lost the cup final on penalties after extra time."]
QUERIES = ["Bank raises interest rates", "Bank raises interest rates again",
           "Rates cut by the bank", "Club wins cup final", "Cup final lost on penalties"]
GROUPS = [0, 0, 2, 3, 4]     # documents 0 and 1 are near-duplicates


def test_scores_equal_scikit_learns_sublinear_smoothed_tfidf():
    vocab, idf = ln.document_idf(DOCS)
    ours = ln.tfidf_matrix(QUERIES, vocab, idf) @ ln.tfidf_matrix(DOCS, vocab, idf).T
    ref = TfidfVectorizer(analyzer=lambda t: splits.normalise_text(t).split(),
                          sublinear_tf=True, smooth_idf=True, norm="l2").fit(DOCS)
    theirs = (ref.transform(QUERIES) @ ref.transform(DOCS).T).toarray()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_the_near_miss_outside_the_own_group():
    neg = ln.ranked_negatives(QUERIES, DOCS, GROUPS)
    # The rate rise's copy (same group) is skipped; the rate cut is the near miss.
    assert neg[0] == 2 and neg[1] == 2
    assert neg[2] in (0, 1)
    assert neg[3] == 4 and neg[4] == 3
    second = ln.ranked_negatives(QUERIES, DOCS, GROUPS, rank=2)
    assert all(s != f and GROUPS[s] != GROUPS[i] for i, (f, s) in enumerate(zip(neg, second)))
    # Only the own group left: no negative.
    assert ln.ranked_negatives(QUERIES[:2], DOCS[:2], GROUPS[:2]) == [None, None]
    with pytest.raises(ValueError, match="rank counts from 1"):
        ln.ranked_negatives(QUERIES, DOCS, GROUPS, rank=0)
    with pytest.raises(ValueError, match="differ in length"):
        ln.ranked_negatives(QUERIES, DOCS[:3], GROUPS)


def test_bbc_title_body_negatives_are_other_training_pool_leads():
    articles = sources.read_bbc_news(dedup=True)
    train = splits.bbc_training_articles(articles)
    group = dict(zip((a.id for a in train), splits.near_duplicate_groups(train)))
    lead_of = {" ".join(a.body.split()[:40]): a.id for a in train}
    ex = mixtures.bbc_title_body(max_words=40, negative_rank=1)
    assert len(ex) == len(train) and all(e.negative is not None for e in ex)
    for e in ex:
        own, other = e.id[len("bbc:"):], lead_of[e.negative.text]
        assert other != own and group[other] != group[own]
    # Near misses, not random articles: most share the positive's category.
    same = np.mean([e.id.split("/")[0] == "bbc:" + lead_of[e.negative.text].split("/")[0]
                    for e in ex])
    assert same > 0.8
