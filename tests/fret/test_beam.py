"""The Beam runner (DirectRunner) writes the same records as the local runner."""

import pytest

from .conftest import tiny_config

beam = pytest.importorskip("apache_beam", reason="the beam extra is not installed")


def test_beam_direct_runner_equals_local_runner(tmp_path, finished_run, tiny_corpus):
    from gecko_jax.fret.beam import run_beam

    local_dir, local_manifest = finished_run
    manifest = run_beam(tiny_config(tfrecord=True), tiny_corpus, tmp_path / "beam",
                        ["--runner=DirectRunner"])
    assert manifest["timing"]["runner"] == "beam"
    assert manifest["counts"] == local_manifest["counts"]
    assert manifest["files"] == local_manifest["files"]
    for rel in manifest["files"]["jsonl"]:
        assert (tmp_path / "beam" / rel).read_text() == (local_dir / rel).read_text()
