"""The FRet record schema, and reading records back: what training and the recipes read.

A record (one JSON object per line of a shard) is a superset of what `gecko train`
reads (data/training_records.py: id, task, query, positive {title, text}, negative):

    {"schema_version": 1, "id": "fret:<seed id>", "task": ..., "query": ...,
     "positive": {"id", "title", "text"}, "negative": {"id", "title", "text"} | null,
     "seed_passage_id": ..., "positive_is_seed": bool,
     "candidates": [{"id", "retrieval_rank", "retrieval_score", "ql", "rc", "rc_yes",
                     "rc_no", "rank_ql", "rank_rc", "fused", "fused_rank"}, ...],
     "generation": {"attempts", "raw"},
     "provenance": {"prompts": {...}, "teacher", "embedder", "schema_version",
                    "config_sha"}}

fret/record_shards.py writes them (JSONL shards, TFRecord copies, the manifest). The
schema lives here, below both fret/ and training/, so the streaming input pipeline
(data/streaming.py) reads FRet's TFRecords without importing fret/.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

from gecko_jax.errors import InputError
from gecko_jax.textio import read_jsonl

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)


def passage_json(pid: str, title: str, text: str) -> dict:
    return {"id": pid, "title": title, "text": text}


def with_seed_positive(record: dict, seed: dict) -> dict:
    """The record as FRet without re-labelling (Table 3's p_seed / none): the seed
    passage (`passage_json` form) as positive, no hard negative."""
    out = dict(record, positive=dict(seed), negative=None, positive_is_seed=True)
    out["provenance"] = dict(record.get("provenance", {}), variant="seed_positive")
    return out


def check_record(obj, path, line) -> dict:
    """Validates schema version and required fields of one decoded record."""
    if not isinstance(obj, dict):
        raise InputError(path, "a FRet record must be a JSON object", line)
    version = obj.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise InputError(path, f"unknown FRet schema_version {version!r} (this gecko_jax "
                               f"reads {list(SUPPORTED_SCHEMA_VERSIONS)}); regenerate the "
                               f"records or upgrade gecko_jax", line)
    for key in ("id", "task", "query", "positive", "seed_passage_id", "provenance"):
        if key not in obj:
            raise InputError(path, f"FRet record has no {key!r}", line)
    if not isinstance(obj["positive"], dict) or not obj["positive"].get("text"):
        raise InputError(path, "FRet record has an empty positive", line)
    return obj


def read_jsonl_records(paths: Iterable[str | os.PathLike]) -> Iterator[dict]:
    for path in paths:
        for line_no, obj in read_jsonl(path):
            yield check_record(obj, path, line_no)


# -- TFRecord (seqio) ----------------------------------------------------

TF_FEATURES = ("id", "task", "query", "positive_title", "positive_text", "negative_title",
               "negative_text", "seed_passage_id")


def tf_example_fields(rec: dict) -> dict[str, str]:
    """Flat string features of one record (what a seqio TFExampleDataSource parses)."""
    neg = rec.get("negative") or {}
    return {"id": rec["id"], "task": rec["task"], "query": rec["query"],
            "positive_title": rec["positive"].get("title", ""),
            "positive_text": rec["positive"]["text"],
            "negative_title": neg.get("title", ""), "negative_text": neg.get("text", ""),
            "seed_passage_id": rec["seed_passage_id"]}
