"""Hard negatives for title -> body pairs by lexical retrieval (TF-IDF cosine).

A title -> body pair has no negative of its own. Retrieving each title against
every body of the same corpus and taking a high-ranked body that is not the
title's own gives a near miss: a document that shares the title's words but
answers another headline (the BM25-mined negative of dense-retrieval training).
News retrieval asks exactly this: one article among many of its topic.

Bodies in the title's own near-duplicate group (data/splits.py groups re-headlined
copies and quotes) are never chosen: they are positives, not negatives.

Pure numpy and the standard library, no model: the same corpus gives the same
negatives in every process.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import numpy as np

from gecko_jax.data.splits import normalise_text


def tfidf_matrix(texts: Sequence[str], vocab: dict[str, int], idf: np.ndarray) -> np.ndarray:
    """Rows of L2-normalised (1 + log tf) * idf weights over `vocab`; unknown words dropped."""
    out = np.zeros((len(texts), len(vocab)), np.float32)
    for i, text in enumerate(texts):
        for word, n in collections.Counter(normalise_text(text).split()).items():
            j = vocab.get(word)
            if j is not None:
                out[i, j] = (1.0 + math.log(n)) * idf[j]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def document_idf(docs: Sequence[str]) -> tuple[dict[str, int], np.ndarray]:
    """Vocabulary of the documents and its smoothed idf, log((1 + N) / (1 + df)) + 1."""
    df: collections.Counter = collections.Counter()
    for doc in docs:
        df.update(set(normalise_text(doc).split()))
    words = sorted(df)
    vocab = {w: j for j, w in enumerate(words)}
    counts = np.array([df[w] for w in words], np.float64)
    idf = np.log((1.0 + len(docs)) / (1.0 + counts)) + 1.0
    return vocab, idf.astype(np.float32)


def ranked_negatives(queries: Sequence[str], docs: Sequence[str], groups: Sequence[int],
                     rank: int = 1) -> list[int | None]:
    """For query i (whose positive is docs[i]), the index of its `rank`-th best other document.

    Documents are ranked by TF-IDF cosine to the query; those with the query's
    own group (groups[j] == groups[i], docs[i] included) are skipped. None where
    fewer than `rank` documents remain. Ties go to the lower index.
    """
    if not len(queries) == len(docs) == len(groups):
        raise ValueError(f"queries, docs and groups differ in length: "
                         f"{len(queries)}, {len(docs)}, {len(groups)}")
    if rank < 1:
        raise ValueError(f"rank counts from 1, got {rank}")
    vocab, idf = document_idf(docs)
    scores = tfidf_matrix(queries, vocab, idf) @ tfidf_matrix(docs, vocab, idf).T
    group = np.asarray(groups)
    scores[group[:, None] == group[None, :]] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")
    out: list[int | None] = []
    for i in range(len(queries)):
        j = int(order[i, rank - 1])
        out.append(j if np.isfinite(scores[i, j]) else None)
    return out
