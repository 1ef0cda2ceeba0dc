"""`gecko cache`: FRet shards tokenised once into a seqio cache by a Beam pipeline (in
process, or by 2 worker processes that register the Task themselves), then read back."""

import subprocess
import sys

import pytest
import seqio

from gecko_jax import assets, cli
from gecko_jax.data import sources, stream_cache, streaming, training_records
from gecko_jax.data.feature_converters import DualEncoderFeatureConverter, task_feature_lengths

LENGTHS = {"query": 16, "positive": 32, "negative": 32}


def _rows(name, use_cached):
    ds = seqio.get_mixture_or_task(name).get_dataset(
        sequence_length=LENGTHS, split="train", shuffle=False, num_epochs=1,
        use_cached=use_cached, try_in_mem_cache=False)
    ds = DualEncoderFeatureConverter()(ds, task_feature_lengths(LENGTHS))
    return sorted(tuple(int(v) for k in sorted(x) for v in x[k].reshape(-1))
                  for x in ds.as_numpy_iterator())


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)],
                         ids=["in_process", "two_worker_processes"])   # 2 workers: ~45 s
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
