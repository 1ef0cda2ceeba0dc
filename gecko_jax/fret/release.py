"""A finished FRet run packed for release: its records in one JSONL file beside a
manifest that says what they are, so a training run can use them without the teacher.

    OUT/records.jsonl.gz  every record of the run, in shard order (gzip; readers of
                        JSONL decompress .gz files)
    OUT/manifest.json   the run's manifest (config, models, prompts, counts), its
                        "files" pointing at the records, and "release": the record
                        count, the sha256 of their JSONL text, the command that made
                        the run
    OUT/stats.txt, OUT/stats.png   `gecko fret stats` of the run (counts, what each
                        filter removed, with examples; the teacher's seed check)

A released folder reads like any finished run (record_shards.record_paths,
`gecko distill --fret-records`); verify() checks it is what its manifest says.
"""

from __future__ import annotations

import gzip
import hashlib
import pathlib

from gecko_jax.errors import GeckoError
from gecko_jax.fret import record_shards, stats
from gecko_jax.textio import (atomic_write_bytes, atomic_write_json, atomic_write_text,
                              read_bytes)

RECORDS = "records.jsonl.gz"


def release(run_dir, out_dir, command: str = "") -> dict:
    """Packs the finished FRet run run_dir into out_dir (created; existing release files
    replaced); returns the release manifest. The corpus path in the run's config is kept
    by name only (the corpus is identified by its sha256)."""
    run_dir, out_dir = pathlib.Path(run_dir), pathlib.Path(out_dir)
    manifest = record_shards.read_manifest(run_dir)
    lines = [line for path in record_shards.record_paths(run_dir)
             for line in read_bytes(path).decode("utf-8").splitlines() if line.strip()]
    if len(lines) != manifest["counts"]["records"]:
        raise GeckoError(f"{run_dir}: its record files hold {len(lines)} records, its "
                         f"manifest says {manifest['counts']['records']}")
    text = "".join(line + "\n" for line in lines)
    out_dir.mkdir(parents=True, exist_ok=True)
    # mtime 0: the same records give the same file.
    atomic_write_bytes(out_dir / RECORDS, gzip.compress(text.encode("utf-8"), mtime=0))
    config = dict(manifest["config"])
    if "path" in config.get("corpus", {}):
        config["corpus"] = {**config["corpus"], "path": pathlib.Path(config["corpus"]["path"]).name}
    out = {**manifest, "config": config, "files": {"jsonl": [RECORDS]},
           "release": {"records": len(lines),
                       "records_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                       "command": command}}
    atomic_write_json(out_dir / "manifest.json", out)
    summary = stats.collect(run_dir)
    stats.plot(summary, out_dir / "stats.png")
    atomic_write_text(out_dir / "stats.txt", stats.format_stats(summary) + "\n")
    return out


def verify(folder) -> dict:
    """Checks a released folder against its manifest (the record count and the records'
    sha256, every line a well-formed record); returns the manifest. Raises GeckoError
    naming what differs."""
    from gecko_jax.data import fret_records

    folder = pathlib.Path(folder)
    manifest = record_shards.read_manifest(folder)
    rel = manifest.get("release")
    if rel is None:
        raise GeckoError(f"{folder}: its manifest has no release section (not packed by "
                         "`gecko fret release`)")
    path = folder / RECORDS
    sha = hashlib.sha256(read_bytes(path)).hexdigest()
    if sha != rel["records_sha256"]:
        raise GeckoError(f"{path}: sha256 {sha[:16]}..., its manifest says "
                         f"{rel['records_sha256'][:16]}... (changed since release)")
    n = sum(1 for _ in fret_records.read_jsonl_records([path]))
    if n != rel["records"] or n != manifest["counts"]["records"]:
        raise GeckoError(f"{path}: {n} records, its manifest says {rel['records']}")
    return manifest


def describe(manifest: dict) -> str:
    """One paragraph on a released set: what made it and what it holds."""
    c, cfg, rel = manifest["counts"], manifest["config"], manifest["release"]
    relabel = cfg.get("relabel", {})
    return (f"{rel['records']} records from {c['passages']} seed passages "
            f"({c['relabelled']} re-labelled, {c['relabel_rate']:.0%}); teacher "
            f"{manifest['models']['teacher']}, embedder {manifest['models']['embedder']}; "
            f"{relabel.get('num_neighbors')} neighbours, negative "
            f"{relabel.get('negative')}; records sha256 {rel['records_sha256'][:16]}")

