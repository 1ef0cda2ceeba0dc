"""Convert the shipped corpora to the FRet corpus format: JSONL {"id", "title", "text"}.

    wikipedia: gensim's English Wikipedia sample, cut into ~`words`-word passages
               (id "wiki:<article>:<n>", title = article title)
    bbc:       BBC News, deduplicated (id "bbc:<category>/<NNN>", title = headline,
               text = body, cut to `words` words when words > 0)

Both leave out the articles data/splits.py keeps for evaluation and validation unless
told otherwise: FRet output is training data.
"""

from __future__ import annotations

import json
import os
import pathlib

from gecko_jax.textio import atomic_write_text


def document_id(passage_id: str) -> str:
    """The document a passage belongs to: an id ending ":<n>" is chunk n of the
    document named by the rest ("wiki:<article>:<n>" -> "wiki:<article>"); any other
    id is a whole document (a BBC article, a corpus without chunk numbers)."""
    head, sep, tail = passage_id.rpartition(":")
    return head if sep and head and tail.isdigit() else passage_id


def wikipedia_passages(path=None, words: int = 100, exclude_validation: bool = True
                       ) -> list[dict]:
    """Passages of a Wikipedia dump; FRet output is training data, so the validation
    articles of data/splits.py are left out unless exclude_validation is False."""
    from gecko_jax.data import splits
    from gecko_jax.data.sources import passages, read_wikipedia

    articles = read_wikipedia(path)
    if exclude_validation:
        articles = splits.wikipedia_training_articles(articles)
    out = []
    for art in articles:
        for k, text in enumerate(passages(art, words=words)):
            out.append({"id": f"wiki:{art.title}:{k}", "title": art.title, "text": text})
    return out


def bbc_passages(folder=None, words: int = 0, exclude_evaluation: bool = True
                 ) -> list[dict]:
    """Articles of a BBC News folder; with exclude_evaluation only the training pool
    (no held-out or validation article of data/splits.py)."""
    from gecko_jax.data import splits
    from gecko_jax.data.sources import read_bbc_news

    articles = read_bbc_news(folder, dedup=True)
    if exclude_evaluation:
        articles = splits.bbc_training_articles(articles)
    out = []
    for a in articles:
        body = a.body if words <= 0 else " ".join(a.body.split()[:words])
        out.append({"id": f"bbc:{a.id}", "title": a.headline, "text": body})
    return out


def write_corpus(rows: list[dict], path: str | os.PathLike) -> int:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write_text(pathlib.Path(path), text)
    return len(rows)
