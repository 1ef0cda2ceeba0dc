"""The Beam runner writes the same records as the local runner: in-process, with two
worker processes, and after a SIGKILL of the job followed by a rerun."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from .conftest import tiny_config

beam = pytest.importorskip("apache_beam", reason="the beam extra is not installed")

MULTI_PROCESS = ["--runner=DirectRunner", "--direct_num_workers=2",
                 "--direct_running_mode=multi_processing"]


def _assert_same_records(run_dir, manifest, local_dir, local_manifest):
    assert manifest["counts"] == local_manifest["counts"]
    assert manifest["files"] == local_manifest["files"]
    for rel in manifest["files"]["jsonl"]:
        assert (run_dir / rel).read_bytes() == (local_dir / rel).read_bytes(), rel


@pytest.mark.slow   # the in-process runner; the two-worker test below runs the same job
def test_beam_direct_runner_equals_local_runner(tmp_path, finished_run, tiny_corpus):
    from gecko_jax.fret.beam import run_beam

    local_dir, local_manifest = finished_run
    manifest = run_beam(tiny_config(tfrecord=True), tiny_corpus, tmp_path / "beam",
                        ["--runner=DirectRunner"])
    assert manifest["timing"]["runner"] == "beam"
    _assert_same_records(tmp_path / "beam", manifest, local_dir, local_manifest)


def test_beam_two_worker_processes_equal_local_runner(tmp_path, finished_run, tiny_corpus):
    """direct_num_workers=2 in multi_processing mode: each worker process loads its own
    teacher and embedder; the records are byte-identical to the local runner's."""
    from gecko_jax.fret.beam import run_beam

    local_dir, local_manifest = finished_run
    manifest = run_beam(tiny_config(tfrecord=True), tiny_corpus, tmp_path / "beam2",
                        MULTI_PROCESS)
    _assert_same_records(tmp_path / "beam2", manifest, local_dir, local_manifest)
    assert not list((tmp_path / "beam2").rglob(".*.tmp*"))


def test_workers_do_not_remove_partial_files(tmp_path, finished_run, tiny_corpus):
    """Only the driver cleans up: a worker's set-up leaves other writers' files alone."""
    from gecko_jax.fret import pipeline as pipeline_lib

    cfg = tiny_config()
    pipeline_lib.prepare_run(cfg, tiny_corpus, tmp_path / "run")
    in_flight = tmp_path / "run" / "shards" / ".records-00000-of-00002.jsonl.tmp999"
    in_flight.parent.mkdir(parents=True)
    in_flight.write_text("another worker is writing this")
    pipeline_lib.prepare_run(cfg, tiny_corpus, tmp_path / "run", clean_partials=False)  # a worker
    assert in_flight.exists()
    pipeline_lib.prepare_run(cfg, tiny_corpus, tmp_path / "run")  # the driver, before the pipeline
    assert not in_flight.exists()


def test_corpus_embedding_chunks_equal_one_pass(tmp_path, monkeypatch, tiny_corpus, embedder):
    """Chunked corpus vectors (the Beam stage's unit) match one pass over the corpus."""
    from gecko_jax.fret import corpus_embeddings as embeddings_lib
    from gecko_jax.fret import pipeline as pipeline_lib

    corpus = pipeline_lib.read_corpus(tiny_corpus)
    monkeypatch.setattr(embeddings_lib, "CHUNK_ROWS", 10)
    assert embeddings_lib.chunk_ranges(len(corpus)) == [(0, 10), (10, 20), (20, 24)]
    chunked = embeddings_lib.corpus_embeddings(tmp_path, embedder, corpus, None)
    assert len(list((tmp_path / embeddings_lib.FOLDER).glob("chunk-*-of-00003.npy"))) == 3
    whole = pipeline_lib.embed_documents(embedder, corpus, None)
    np.testing.assert_allclose(chunked, whole, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(np.load(tmp_path / embeddings_lib.FILE), chunked)


@pytest.mark.slow
def test_sigkill_of_beam_job_then_rerun_gives_same_records(tmp_path, finished_run, tiny_corpus):
    """SIGKILL the whole Beam job (driver and worker processes) once a shard is written;
    a rerun with the same options finishes with the records of an undisturbed run."""
    from gecko_jax.fret.beam import run_beam
    from gecko_jax.fret.record_shards import ShardStore

    local_dir, local_manifest = finished_run
    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.getcwd()!r})
        from tests.fret.conftest import tiny_config
        from gecko_jax.fret.beam import run_beam
        run_beam(tiny_config(tfrecord=True), {str(tiny_corpus)!r}, {str(out)!r},
                 {MULTI_PROCESS!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = ShardStore(out, 2)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None and not store.stats_path(0).exists() \
                and not store.stats_path(1).exists():
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the job ended before it was killed"
    assert len(store.pending()) == 1  # killed between the two shards
    manifest = run_beam(tiny_config(tfrecord=True), tiny_corpus, out, MULTI_PROCESS)
    _assert_same_records(out, manifest, local_dir, local_manifest)


def test_driver_counts_the_corpus_and_stages_read_their_rows(tmp_path, tiny_corpus,
                                                            monkeypatch):
    """The Beam driver prepares a run without the corpus texts (streaming row count:
    same shards and chunks); the reading stage's rows equal `read_corpus`'s; bad lines
    are still refused with file and line."""
    from gecko_jax.errors import InputError
    from gecko_jax.fret import beam as beam_lib
    from gecko_jax.fret import pipeline as pipeline_lib

    cfg = tiny_config()
    full = pipeline_lib.prepare_run(cfg, tiny_corpus, tmp_path / "a")
    lean = pipeline_lib.prepare_run(cfg, tiny_corpus, tmp_path / "b", read_texts=False)
    assert lean.corpus is None and lean.num_rows == full.num_rows == len(full.corpus) == 24
    assert lean.shards == full.shards and lean.identity == full.identity
    for lo, hi in ((0, 10), (10, 20), (20, 24)):
        titles, texts = pipeline_lib.read_corpus_rows(tiny_corpus, lo, hi)
        assert titles == full.corpus.titles[lo:hi] and texts == full.corpus.texts[lo:hi]
    assert list(beam_lib.make_read_fn(str(tiny_corpus)).process((1, 10, 20, 3))) == [
        (1, 3, full.corpus.titles[10:20], full.corpus.texts[10:20])]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(tiny_corpus.read_text() + '{"id": "x", "text": ""}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:25: each line needs"):
        pipeline_lib.count_corpus(bad)
    # The driver of run_beam never calls read_corpus.
    monkeypatch.setattr(pipeline_lib, "read_corpus", None)
    setup = pipeline_lib.prepare_run(cfg, tiny_corpus, tmp_path / "c", read_texts=False)
    assert setup.num_rows == 24
