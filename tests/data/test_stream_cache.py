"""`gecko cache`: FRet shards tokenised once into a seqio cache by a Beam pipeline (in
process, or by 2 worker processes that register the Task themselves); training then
reads the cache alone (per host, through host_dataset and streaming_mixture_data)."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import seqio

from gecko_jax import assets, cli
from gecko_jax.data import (sources, stream_batches, stream_cache, stream_mixtures, streaming,
                            training_records)
from gecko_jax.data.feature_converters import DualEncoderFeatureConverter, task_feature_lengths
from gecko_jax.tokenization import Tokenizer

LENGTHS = {"query": 16, "positive": 32, "negative": 32}


def _row(x) -> tuple:
    return tuple(int(v) for k in sorted(x) for v in np.asarray(x[k]).reshape(-1))


def _batch_rows(batches) -> list[tuple]:
    return [_row({k: v[i] for k, v in b.items()})
            for b in batches for i in range(len(b["query_ids"]))]


def _rows(name, use_cached):
    ds = seqio.get_mixture_or_task(name).get_dataset(
        sequence_length=LENGTHS, split="train", shuffle=False, num_epochs=1,
        use_cached=use_cached, try_in_mem_cache=False)
    ds = DualEncoderFeatureConverter()(ds, task_feature_lengths(LENGTHS))
    return sorted(_row(x) for x in ds.as_numpy_iterator())


@pytest.mark.slow    # in process ~25 s, 2 workers ~45-70 s (default suite budget)
@pytest.mark.parametrize("workers", [0, 2], ids=["in_process", "two_worker_processes"])
def test_gecko_cache_writes_what_training_reads(tmp_path, workers):
    recs = training_records.wikipedia_section_records(sources.read_wikipedia())[:60]
    for i in range(3):
        training_records.write_records(tmp_path / f"records-{i:05d}-of-00003.jsonl", recs[i::3])
    name = f"t_cli_cache_{workers}"
    argv = ["cache", "--task", name, "--files", str(tmp_path / "records-*.jsonl"),
            "--tokenizer", str(assets.minilm_dir()), "--cache_dir", str(tmp_path / "cache")]
    if workers:
        argv += [f"--beam-arg=--direct_num_workers={workers}",
                 "--beam-arg=--direct_running_mode=multi_processing"]
        done = subprocess.run([sys.executable, "-m", "gecko_jax.cli", *argv],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"cached {name} (3 file(s))" in done.stdout
    else:
        assert cli.main(argv) == 0
    files = sorted(str(p) for p in tmp_path.glob("records-*.jsonl"))
    streaming.register_streaming_task(name, files, assets.minilm_dir())
    want = _rows(name, use_cached=False)
    seqio.add_global_cache_dirs([str(tmp_path / "cache")])
    assert len(stream_cache.cached_files(name)) == 3
    assert _rows(name, use_cached=True) == want and len(want) == 60
    # A second run refuses to overwrite silently.
    assert cli.main(argv[:9]) == 2
    if workers:
        return
    # Training reads the cache alone: the source files are gone. Per host by file.
    for f in files:
        pathlib.Path(f).unlink()
    halves = [_batch_rows(stream_batches.host_dataset(
        name, feature_lengths=LENGTHS, batch_size=8, seed=0, process_index=i,
        process_count=2, use_cached=True).take(3).as_numpy_iterator()) for i in range(2)]
    assert set(halves[0]) <= set(want) and set(halves[1]) <= set(want)
    assert not set(halves[0]) & set(halves[1])
    # The gin data_fn reads the cache when given its folder.
    batches = stream_mixtures.streaming_mixture_data(
        tokenizer=Tokenizer.from_folder(assets.minilm_dir()), feature_lengths=LENGTHS,
        batch_size=8, seed=0, mixture="t_cache_mix", file_sets={name: files},
        rates={name: 1.0}, cache_dir=str(tmp_path / "cache"))
    assert batches.files == tuple(stream_cache.cached_files(name))
    assert set(_batch_rows(batches.batch(s) for s in range(3))) <= set(want)
