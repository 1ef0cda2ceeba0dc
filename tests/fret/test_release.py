"""`gecko fret release`: a finished run packed as one records file + manifest, checked
against it, and read back by training like the run itself."""

import gzip
import json

import pytest

from gecko_jax.errors import GeckoError
from gecko_jax.fret import record_shards, release


def test_release_round_trip_and_tampering(tmp_path, finished_run):
    from gecko_jax.cli import main
    from gecko_jax.recipes import distill_fret

    run_dir, manifest = finished_run
    out = tmp_path / "rel"
    assert main(["fret", "release", str(run_dir), "--output", str(out),
                 "--command", "gecko fret --corpus c.jsonl --output run"]) == 0
    rel = release.verify(out)
    lines = [line for p in record_shards.record_paths(run_dir)
             for line in p.read_text().splitlines() if line.strip()]
    assert gzip.decompress((out / release.RECORDS).read_bytes()).decode().splitlines() == lines
    assert rel["release"]["records"] == manifest["counts"]["records"] == len(lines)
    assert rel["release"]["command"] == "gecko fret --corpus c.jsonl --output run"
    assert rel["config_sha"] == manifest["config_sha"]
    assert rel["config"]["corpus"]["path"] == "wiki24.jsonl"   # its name, not where it was
    assert "records" in (out / "stats.txt").read_text()
    assert (out / "stats.png").read_bytes()[:4] == b"\x89PNG"
    # Training identifies the released set by its records, as it did the run.
    assert distill_fret.released_fret_digest(out) == distill_fret.released_fret_digest(run_dir)
    summary = distill_fret.take_fret_records(out, None, tmp_path / "stage")
    assert summary["records"] == len(lines)
    # A changed byte, or a manifest whose count is off, is caught and named.
    data = (out / release.RECORDS).read_bytes()
    text = gzip.decompress(data).decode()
    (out / release.RECORDS).write_bytes(gzip.compress(text.replace('"query": "', '"query": "x', 1).encode()))
    with pytest.raises(GeckoError, match="records.jsonl.gz: sha256 .*changed since release"):
        release.verify(out)
    with pytest.raises(GeckoError, match="changed since release"):
        distill_fret.take_fret_records(out, None, tmp_path / "stage2")
    (out / release.RECORDS).write_bytes(data)
    m = json.loads((out / "manifest.json").read_text())
    m["release"]["records"] += 1
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(GeckoError, match=f"{len(lines)} records, its manifest says"):
        release.verify(out)
    with pytest.raises(GeckoError, match="no release section"):
        release.verify(run_dir)
