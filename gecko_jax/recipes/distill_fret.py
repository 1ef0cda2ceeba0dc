"""`gecko distill`'s FRet data: the FRet stage (the teacher run on a Wikipedia / BBC
training-pool corpus, or a finished run's records taken as they are or re-selected
from their stored teacher scores) and the record variants the ablation and the
data-scaling curve fine-tune on.

    fret_corpus            the FRet corpus of a run (JSONL)
    released_fret_digest   what identifies a finished run's records
    take_fret_records      the FRet stage on a finished run's records
    run_fret               the FRet stage
    seed_positive_files    (b): the seed passage as positive, no hard negative
    no_negative_files      (c): the re-labelled positive, no hard negative
    first_records_files    the first N records (the scaling curve)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Sequence

from gecko_jax.errors import GeckoError
from gecko_jax.textio import atomic_write_text, read_bytes

FRET_CORPORA = ("wikipedia", "bbc")
FRET_PASSAGE_WORDS = 100


def fret_corpus(out: pathlib.Path, size: int, sources: Sequence[str] = ("wikipedia",)
                ) -> pathlib.Path:
    """A `size`-passage FRet corpus (JSONL): an evenly spaced equal share of each source's
    training passages (size 0: all of them)."""
    import numpy as np

    from gecko_jax.fret import corpus

    unknown = sorted(set(sources) - set(FRET_CORPORA))
    if unknown or not sources:
        raise GeckoError(f"FRet corpus {list(sources)}: expected some of {list(FRET_CORPORA)}")
    rows = []
    for k, name in enumerate(sources):
        part = (corpus.wikipedia_passages(words=FRET_PASSAGE_WORDS) if name == "wikipedia"
                else corpus.bbc_passages(words=FRET_PASSAGE_WORDS))
        share = size // len(sources) + (k < size % len(sources)) if size else 0
        if share and share < len(part):
            keep = np.unique(np.linspace(0, len(part) - 1, share).round().astype(int))
            part = [part[i] for i in keep]
        rows += part
    path = out / "corpus.jsonl"
    corpus.write_corpus(rows, path)
    return path


def released_fret_digest(folder: str | os.PathLike) -> str:
    """sha256 (16 hex digits) of a finished FRet run's record files, in manifest order:
    what identifies the records a `fret_records` run trains on (not the folder's path)."""
    from gecko_jax.fret import record_shards

    h = hashlib.sha256()
    for path in record_shards.record_paths(folder):
        h.update(read_bytes(path))   # the records' text, however the files are stored
    return h.hexdigest()[:16]


def take_fret_records(folder: str | os.PathLike, limit: int | None,
                      stage_dir: pathlib.Path, scorers: Sequence[str] | None = None,
                      negative: str | None = None) -> dict:
    """The fret stage on finished records: the first `limit` of them (all: None) into
    stage_dir/records.jsonl, re-selected under `scorers` / `negative` when given
    (fret/refuse.py), and the Wikipedia corpus they were drawn from (for re-selection
    and the ablation's seed positives) into stage_dir/corpus.jsonl when it is the
    shipped one."""
    from gecko_jax.fret import record_shards, refuse
    from gecko_jax.fret.relabel import RelabelConfig

    manifest = record_shards.read_manifest(folder)
    if "release" in manifest:   # a released set (`gecko fret release`): check it first
        from gecko_jax.fret import release

        release.verify(folder)
    lines = [line for path in record_shards.record_paths(folder)
             for line in read_bytes(path).decode("utf-8").splitlines() if line.strip()]
    if limit is not None:
        if not 0 <= limit <= len(lines):
            raise GeckoError(f"{folder}: {len(lines)} FRet records; cannot take {limit}")
        lines = lines[:limit]
    corpus_path = fret_corpus(stage_dir, 0, ("wikipedia",))
    want = manifest["config"].get("corpus", {}).get("sha256")
    if hashlib.sha256(corpus_path.read_bytes()).hexdigest() != want:
        corpus_path.unlink()   # not the shipped Wikipedia corpus: no seed-positive arm
    if scorers or negative:
        if not corpus_path.is_file():
            raise GeckoError(f"{folder}: its corpus is not the shipped Wikipedia corpus, so "
                             "its records cannot be re-selected here")
        run_cfg = manifest["config"]["relabel"]
        cfg = RelabelConfig(**{**run_cfg, **({"scorers": tuple(scorers)} if scorers else {}),
                               **({"negative": negative} if negative else {})})
        rows = [json.loads(line) for line in corpus_path.read_text(encoding="utf-8").splitlines()]
        lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in refuse.refuse_records(
            (json.loads(line) for line in lines), rows, cfg, manifest["config"].get("seed", 0))]
    path = stage_dir / "records.jsonl"
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    c = manifest["counts"]
    relabelled = sum(not json.loads(line).get("positive_is_seed", True) for line in lines)
    return {"records": len(lines), "passages": c["passages"], "generated": c["generated"],
            "relabelled": relabelled,
            "relabel_rate": round(relabelled / len(lines), 4) if lines else 0.0,
            "dropped": c["dropped"], "files": [str(path)],
            "released": {"folder": str(folder), "records_in_set": c["records"],
                         "teacher": manifest["models"]["teacher"]}}


def run_fret(cfg, conf: dict, stage_dir: pathlib.Path, progress: bool) -> dict:
    """The FRet stage of a DistillConfig `cfg` (conf: its stage config): its summary."""
    from gecko_jax.fret.pipeline import config_from_gin, run_local

    if cfg.fret_records:
        return take_fret_records(cfg.fret_records, cfg.fret_records_limit, stage_dir,
                                 cfg.fret_scorers, cfg.fret_negative)
    fret_cfg = config_from_gin([], conf["gin_bindings"])
    fret_cfg = dataclasses.replace(
        fret_cfg, teacher=cfg.teacher, limit=cfg.fret_limit,
        embed_max_length=cfg.fret_embed_max_length, tfrecord=False, progress=progress,
        relabel=dataclasses.replace(fret_cfg.relabel, num_neighbors=cfg.fret_neighbors))
    corpus_path = fret_corpus(stage_dir, cfg.fret_corpus_size, cfg.fret_corpus)
    manifest = run_local(fret_cfg, corpus_path, stage_dir / "run")
    c = manifest["counts"]
    return {"records": c["records"], "passages": c["passages"], "generated": c["generated"],
            "relabelled": c["relabelled"], "relabel_rate": c["relabel_rate"],
            "dropped": c["dropped"], "files": [str(stage_dir / "run" / f)
                                               for f in manifest["files"]["jsonl"]]}



def seed_positive_files(fret_files: Sequence[str], corpus_path: pathlib.Path,
                        stage_dir: pathlib.Path) -> list[str]:
    """FRet records with the seed passage as positive and no hard negative (ablation b),
    written to stage_dir/seed_positive.jsonl."""
    from gecko_jax import textio
    from gecko_jax.data import fret_records

    if not corpus_path.is_file():
        raise GeckoError(f"{corpus_path.parent}: the FRet records were not drawn from the "
                         "shipped Wikipedia corpus, so their seed passages are unknown "
                         "(no seed-positive arm)")
    corpus = {str(obj["id"]): fret_records.passage_json(
        str(obj["id"]), str(obj.get("title") or ""), str(obj["text"]))
        for _, obj in textio.read_jsonl(corpus_path, ("id", "text"))}
    return _write_variant(fret_files, stage_dir / "seed_positive.jsonl",
                          lambda rec: fret_records.with_seed_positive(
                              rec, corpus[rec["seed_passage_id"]]))


def no_negative_files(fret_files: Sequence[str], stage_dir: pathlib.Path) -> list[str]:
    """FRet records with the re-labelled positive and no hard negative (Table 3's p_1 /
    none), written to stage_dir/no_negative.jsonl."""
    return _write_variant(fret_files, stage_dir / "no_negative.jsonl", lambda rec: dict(
        rec, negative=None, provenance=dict(rec.get("provenance", {}), variant="no_negative")))


def _write_variant(fret_files: Sequence[str], path: pathlib.Path, change) -> list[str]:
    """Every record of fret_files through `change`, written as JSONL to path: [path]."""
    from gecko_jax.data import fret_records

    records = [change(rec) for rec in fret_records.read_jsonl_records(
        f for f in fret_files if pathlib.Path(f).stat().st_size > 0)]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                    for r in records))
    return [str(path)]


def first_records_files(fret_files: Sequence[str], n: int, stage_dir: pathlib.Path
                        ) -> list[str]:
    """The first n records of fret_files, as they are, written to stage_dir/first_<n>.jsonl
    (a point of the data-scaling curve: the same records for every seed)."""
    from gecko_jax.data import fret_records

    records = list(fret_records.read_jsonl_records(
        f for f in fret_files if pathlib.Path(f).stat().st_size > 0))
    if not 0 <= n <= len(records):
        raise GeckoError(f"the FRet stage has {len(records)} records; the scaling curve "
                         f"cannot take the first {n} (fret_scaling)")
    path = stage_dir / f"first_{n}.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                    for r in records[:n]))
    return [str(path)]
