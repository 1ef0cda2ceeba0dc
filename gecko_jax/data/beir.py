"""BEIR-format folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv): one reader for
training (data.sources.beir_pairs) and evaluation (evaluation.local_tasks beir tasks)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from gecko_jax import paths
from gecko_jax.errors import GeckoError, InputError
from gecko_jax.textio import read_jsonl


@dataclasses.dataclass
class RetrievalData:
    queries: dict[str, str]                 # query id -> text
    corpus: dict[str, tuple[str, str]]      # doc id -> (title, text); title may be ""
    qrels: dict[str, dict[str, int]]        # query id -> doc id -> grade



def _read_jsonl(path, required: Sequence[str]) -> list[dict]:
    if not path.is_file():
        raise InputError(path, "file not found (a BEIR folder holds corpus.jsonl, "
                               "queries.jsonl and qrels/<split>.tsv)")
    return [row for _, row in read_jsonl(path, tuple(required))]


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV: optional header `query-id corpus-id score`, then rows."""
    path = paths.as_path(path)
    if not path.is_file():
        raise InputError(path, "qrels file not found")
    qrels: dict[str, dict[str, int]] = {}
    with path.open("r") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            parts = line.split("\t")
            if lineno == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(parts) != 3:
                raise InputError(path, f"expected 3 tab-separated fields (query-id, corpus-id, "
                                       f"score), found {len(parts)}: {line[:80]!r}", line=lineno)
            try:
                grade = int(float(parts[2]))
            except ValueError:
                raise InputError(path, f"score {parts[2]!r} is not a number", line=lineno) from None
            qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = grade
    return qrels


def load_beir(folder: str | os.PathLike, split: str = "test",
              limit: int | None = None) -> RetrievalData:
    """A BEIR-format folder; queries without judgements are dropped.

    With `limit`, keeps that many judged queries and the documents they judge
    plus the first `limit * 10` other documents as distractors.
    """
    folder = paths.as_path(folder)
    if not folder.is_dir():
        raise GeckoError(f"{folder}: BEIR folder does not exist")
    corpus_rows = _read_jsonl(folder / "corpus.jsonl", ("_id", "text"))
    query_rows = _read_jsonl(folder / "queries.jsonl", ("_id", "text"))
    qrels_path = folder / "qrels" / f"{split}.tsv"
    qrels = read_qrels(qrels_path)
    corpus = {str(r["_id"]): (str(r.get("title") or ""), str(r["text"])) for r in corpus_rows}
    queries = {str(r["_id"]): str(r["text"]) for r in query_rows
               if str(r["_id"]) in qrels and any(g > 0 for g in qrels[str(r["_id"])].values())}
    unknown = sorted({d for q in queries for d in qrels[q] if d not in corpus})
    if unknown:
        raise InputError(qrels_path, f"{len(unknown)} judged documents are not in corpus.jsonl, "
                                     f"e.g. {unknown[:3]}")
    if not queries:
        raise InputError(qrels_path, "no query in queries.jsonl has a relevant document here")
    data = RetrievalData(queries, corpus, {q: qrels[q] for q in queries})
    return subset_retrieval(data, limit)


def subset_retrieval(data: RetrievalData, limit: int | None) -> RetrievalData:
    """The first `limit` queries, the documents they judge, and `limit * 10` others."""
    if limit is None or limit >= len(data.queries):
        return data
    keep_q = list(data.queries)[:limit]
    judged = {d for q in keep_q for d in data.qrels[q]}
    extra = set([d for d in data.corpus if d not in judged][: limit * 10])
    return RetrievalData({q: data.queries[q] for q in keep_q},
                         {d: t for d, t in data.corpus.items() if d in judged or d in extra},
                         {q: data.qrels[q] for q in keep_q})
