"""FRet records on disk: sharded JSONL (+ TFRecord for seqio), manifest, resume.

The record schema, and reading records back, live in data/fret_records.py (training
reads FRet's shards without importing fret/); this module writes them.

Run directory:
    config.json                    identity of the run (resume refuses a different one)
    corpus_embeddings/, corpus_embeddings.npy   the initial embedder's corpus vectors, in
                                   chunks (fret/corpus_embeddings.py; reused on resume)
    shards/records-SSSSS-of-NNNNN.jsonl, shards/stats-SSSSS.json   (stats written last:
                                   a shard is done when its stats file exists)
    tfrecord/records-SSSSS-of-NNNNN.tfrecord   (tf.train.Example, for seqio)
    manifest.json                  schema version, prompts, models, config, counts

Every file is written to a temporary name and renamed, so a killed run leaves
whole shards or nothing.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
from typing import Iterator

from gecko_jax.errors import GeckoError, InputError
from gecko_jax.data import fret_records
from gecko_jax.textio import atomic_write_json, atomic_write_text


# -- config identity ---------------------------------------------------------------------

def config_sha(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def check_or_write_config(out_dir: pathlib.Path, identity: dict) -> bool:
    """Writes config.json in a new run dir; in an existing one the identity must match.

    Returns True when resuming. Raises GeckoError naming the differing keys otherwise.
    """
    path = out_dir / "config.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != identity:
            keys = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            diff = "; ".join(f"{k}: {old.get(k)!r} -> {identity.get(k)!r}" for k in keys)
            raise GeckoError(
                f"{out_dir} holds a FRet run with a different configuration ({diff}). "
                f"Resume needs the same configuration; use a new --output folder "
                f"(or delete this one) to start over.")
        return True
    if out_dir.exists() and any(p.name != ".gecko" for p in out_dir.iterdir()):
        raise GeckoError(f"{out_dir} is not empty and holds no FRet config.json: "
                         f"choose a new or empty --output folder")
    atomic_write_json(path, identity)
    return False


# -- records -----------------------------------------------------------------------------

def build_record(gen, rel, corpus, provenance: dict) -> dict:
    """A FRet record from stage 1 (`generate.Generated`) and stage 2 (`relabel.Relabelled`).

    Args:
      corpus: the `Corpus` (ids, titles, texts) the candidate rows index.
    """
    def doc(row):
        return fret_records.passage_json(corpus.ids[row], corpus.titles[row], corpus.texts[row])

    sc = rel.scored
    cands = []
    for j, row in enumerate(rel.rows):
        cands.append({
            "id": corpus.ids[row], "retrieval_rank": j + 1,
            "retrieval_score": round(rel.retrieval_scores[j], 6),
            "ql": sc.ql[j], "rc": sc.rc[j], "rc_yes": sc.rc_yes[j],
            "rc_no": sc.rc_no[j] if sc.rc_no is not None else None,
            "rank_ql": rel.rank_ql[j], "rank_rc": rel.rank_rc[j],
            "fused": rel.fused[j], "fused_rank": rel.fused_rank[j]})
    pos_row = rel.rows[rel.positive]
    return {
        "schema_version": fret_records.SCHEMA_VERSION,
        "id": f"fret:{gen.passage_id}",
        "task": gen.task,
        "query": gen.query,
        "positive": doc(pos_row),
        "negative": doc(rel.rows[rel.negative]) if rel.negative is not None else None,
        "seed_passage_id": gen.passage_id,
        "positive_is_seed": corpus.ids[pos_row] == gen.passage_id,
        "candidates": cands,
        "generation": {"attempts": gen.attempts, "raw": gen.raw},
        "provenance": provenance,
    }


# -- shards ------------------------------------------------------------------------------

def shard_name(index: int, total: int, kind: str = "records", ext: str = "jsonl") -> str:
    return f"{kind}-{index:05d}-of-{total:05d}.{ext}"


class ShardStore:
    """The shards/ folder of a run: atomic shard writes, done-checks, reading back."""

    def __init__(self, out_dir: str | os.PathLike, num_shards: int):
        self.out_dir = pathlib.Path(out_dir)
        self.dir = self.out_dir / "shards"
        self.num_shards = num_shards

    def records_path(self, i: int) -> pathlib.Path:
        return self.dir / shard_name(i, self.num_shards)

    def stats_path(self, i: int) -> pathlib.Path:
        return self.dir / f"stats-{i:05d}.json"

    def is_done(self, i: int) -> bool:
        return self.stats_path(i).exists() and self.records_path(i).exists()

    def pending(self) -> list[int]:
        return [i for i in range(self.num_shards) if not self.is_done(i)]

    def write(self, i: int, records: list[dict], counts: dict,
              filtered: list[dict] = ()) -> None:
        """Records first, stats last: the stats file marks the shard done. `filtered`:
        the queries the quality filters dropped (fret/filters.py), kept for stats."""
        text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
        atomic_write_text(self.records_path(i), text)
        atomic_write_json(self.stats_path(i), {"shard": i, "records": len(records),
                                               "counts": dict(sorted(counts.items())),
                                               "filtered": list(filtered)})

    def read_filtered(self) -> list[dict]:
        """The dropped queries of every finished shard, in shard order."""
        out = []
        for i in range(self.num_shards):
            if self.stats_path(i).exists():
                out += json.loads(self.stats_path(i).read_text()).get("filtered", [])
        return out

    def read_records(self) -> Iterator[dict]:
        yield from fret_records.read_jsonl_records(
            self.records_path(i) for i in range(self.num_shards))

    def total_counts(self) -> collections.Counter:
        total = collections.Counter()
        for i in range(self.num_shards):
            total.update(json.loads(self.stats_path(i).read_text())["counts"])
        return total


def record_paths(out_dir: str | os.PathLike) -> list[pathlib.Path]:
    """JSONL shard files of a finished run (from its manifest)."""
    out_dir = pathlib.Path(out_dir)
    manifest = read_manifest(out_dir)
    return [out_dir / p for p in manifest["files"]["jsonl"]]


# -- manifest ----------------------------------------------------------------------------

def write_manifest(out_dir: pathlib.Path, identity: dict, counts: dict, files: dict,
                   extra: dict | None = None) -> dict:
    c = collections.Counter(counts)
    manifest = {
        "schema_version": fret_records.SCHEMA_VERSION,
        "prompts": identity["prompts"],
        "models": {"teacher": identity["teacher"], "embedder": identity["embedder"]},
        "config": identity,
        "config_sha": config_sha(identity),
        "counts": summarise_counts(c),
        "files": files,
        **(extra or {}),
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest


def summarise_counts(c: collections.Counter) -> dict:
    """The manifest's counts block from the summed shard counters."""
    c = collections.Counter(c)
    return {
        "passages": c["passages"],
        "generated": c["generated"],
        "parse_failures": c["parse_failures"],
        "records": c["records"],
        "relabelled": c["relabelled"],
        "relabel_rate": round(c["relabelled"] / c["records"], 4) if c["records"] else 0.0,
        "teacher_errors": c["teacher_errors"],
        "invalid_scores": c["invalid_scores"],
        "dropped": {k.split(":", 1)[1]: v for k, v in sorted(c.items())
                    if k.startswith("dropped:")},
        # What the hard-negative rules removed (pipeline.count_negative_rules).
        "negatives": {"excluded": {k.split(":", 1)[1]: v for k, v in sorted(c.items())
                                   if k.startswith("negative_excluded:")},
                      "moved": {k.split(":", 1)[1]: v for k, v in sorted(c.items())
                                if k.startswith("negative_moved:")},
                      "none": c["negative_none"]},
        "detail": dict(sorted(c.items())),
    }


def partial_manifest(out_dir: str | os.PathLike) -> dict:
    """A manifest-like view of an unfinished run: its config and the finished shards
    (a shard is finished when its stats file exists; `partial` says how many)."""
    out_dir = pathlib.Path(out_dir)
    cfg_path = out_dir / "config.json"
    if not cfg_path.exists():
        raise GeckoError(f"{out_dir}: not a FRet run folder (no config.json)")
    total, done = collections.Counter(), []
    num = None
    for path in sorted((out_dir / "shards").glob("records-*-of-*.jsonl")):
        i, num = (int(x) for x in path.stem.split("-")[1::2])
        st = out_dir / "shards" / f"stats-{i:05d}.json"
        if st.exists():
            total.update(json.loads(st.read_text())["counts"])
            done.append(str(path.relative_to(out_dir)))
    return {"config": json.loads(cfg_path.read_text()), "counts": summarise_counts(total),
            "files": {"jsonl": done}, "partial": f"{len(done)} of {num or '?'} shards done"}


def read_manifest(out_dir: str | os.PathLike) -> dict:
    path = pathlib.Path(out_dir) / "manifest.json"
    if not path.exists():
        raise GeckoError(f"{out_dir}: no manifest.json (not a finished FRet run; "
                         f"rerun `gecko fret` with the same options to finish it)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("schema_version") not in fret_records.SUPPORTED_SCHEMA_VERSIONS:
        raise InputError(path, f"unknown FRet schema_version {manifest.get('schema_version')!r} "
                               f"(this gecko_jax reads "
                               f"{list(fret_records.SUPPORTED_SCHEMA_VERSIONS)})")
    return manifest


# -- TFRecord (seqio) --------------------------------------------------------------------

def write_tfrecords(store: ShardStore) -> list[str]:
    """One TFRecord file of tf.train.Example per JSONL shard (atomic); relative paths."""
    import tensorflow as tf

    out = store.out_dir / "tfrecord"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(store.num_shards):
        path = out / shard_name(i, store.num_shards, ext="tfrecord")
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with tf.io.TFRecordWriter(str(tmp)) as w:
            for rec in fret_records.read_jsonl_records([store.records_path(i)]):
                feats = {k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                         for k, v in fret_records.tf_example_fields(rec).items()}
                w.write(tf.train.Example(features=tf.train.Features(feature=feats))
                        .SerializeToString())
        os.replace(tmp, path)
        paths.append(str(path.relative_to(store.out_dir)))
    return paths
