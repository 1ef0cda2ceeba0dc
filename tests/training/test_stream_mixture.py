"""`gecko train` on a streamed seqio Mixture of two file sets (train.data_fn =
@streaming_mixture_data through the shipped gin_configs/mixtures/finetune_stream.gin),
resumed from a checkpoint to the parameters of the uninterrupted run."""

import shutil

import gin
import jax
import numpy as np
import pytest

from gecko_jax import assets
from gecko_jax.data import training_records
from gecko_jax.training import trainer
from tests.training.conftest import TINY_BERT

STEPS = 6
EVERY = 3


def _file_sets(tmp_path, wiki_records):
    """'alpha': 3 JSONL shards; 'beta': 1 JSONL shard (another task word)."""
    import dataclasses

    sets = {}
    for name, recs, n in (("t_smix_alpha", wiki_records[:120], 3),
                          ("t_smix_beta", wiki_records[120:200], 1)):
        recs = [dataclasses.replace(r, task=name.split("_")[-1]) for r in recs]
        folder = tmp_path / name
        folder.mkdir()
        paths = [folder / f"records-{i:05d}-of-{n:05d}.jsonl" for i in range(n)]
        for i, p in enumerate(paths):
            training_records.write_records(p, recs[i::n])
        sets[name] = [str(p) for p in paths]
    return sets


def _gin(tmp_path, sets, single_task: bool):
    path = tmp_path / "stream_mixture.gin"
    path.write_text(f"""
include 'gin_configs/runs/finetune.gin'
include 'gin_configs/mixtures/finetune_stream.gin'
FRET_FILES = "unused: file_sets is replaced below"
train.model_fn = @random_model
random_model.config = {TINY_BERT!r}
random_model.tokenizer_folder = {str(assets.minilm_dir())!r}
BATCH_SIZE = 16
TRAIN_STEPS = {STEPS}
QUERY_LENGTH = 16
DOC_LENGTH = 32
LEARNING_RATE = 3e-4
WARMUP_STEPS = 2
train.checkpoint_every = {EVERY}
train.log_every = {EVERY}
train.export = False
train.progress = False
train.data_fn = @streaming_mixture_data
streaming_mixture_data.mixture = "t_smix"
streaming_mixture_data.file_sets = {{
    "t_smix_alpha_{single_task}": {str(sets["t_smix_alpha"][0]).replace("00000-of", "*-of")!r},
    "t_smix_beta_{single_task}": {sets["t_smix_beta"]!r}}}
streaming_mixture_data.rates = {{"t_smix_alpha_{single_task}": 2.0,
                                "t_smix_beta_{single_task}": 1.0}}
SINGLE_TASK_BATCHES = {single_task}
""")
    return path


@pytest.mark.slow   # ~45-80 s each on 2 cores; the default suite keeps the gin-config test
@pytest.mark.parametrize("single_task", [False, True], ids=["mixed", "single_task"])
def test_streamed_mixture_trains_and_resumes_exactly(tmp_path, wiki_records, single_task):
    sets = _file_sets(tmp_path, wiki_records)
    try:
        trainer.parse_gin([str(_gin(tmp_path, sets, single_task))], [])
        run = tmp_path / "run"
        first = trainer.train(run)
        assert first["step"] == STEPS and len(first["losses"]) == STEPS
        want = jax.device_get(first["trainer"].state["params"])
        assert sorted(p.name for p in (run / "data_position").iterdir()) == [
            f"step_{s:010d}" for s in (EVERY, STEPS)]
        # As if killed after checkpoint 3: the last checkpoint and its position are gone.
        shutil.rmtree(run / "checkpoints" / str(STEPS))
        shutil.rmtree(run / "data_position" / f"step_{STEPS:010d}")
        again = trainer.train(run)
    finally:
        gin.clear_config()
    assert again["start_step"] == EVERY
    np.testing.assert_array_equal(again["losses"], first["losses"][EVERY:])
    got = jax.device_get(again["trainer"].state["params"])
    worst = max(float(np.max(np.abs(np.asarray(want[k]) - np.asarray(got[k])))) for k in want)
    print(f"resumed at {EVERY}: max |param diff| vs uninterrupted {worst:.2e}")
    assert worst <= 1e-7


def test_shipped_stream_mixture_config_streams_fret_with_the_memory_sources(
        tmp_path, wiki_records):
    """gin_configs/mixtures/finetune_stream.gin as shipped: FRET_FILES streamed, the
    Wikipedia and BBC sources in memory, every batch from one of the three tasks."""
    from gecko_jax.data import mixtures, stream_mixtures, tasks
    from gecko_jax.tokenization import Tokenizer

    import dataclasses

    fret = tmp_path / "fret-00000-of-00001.jsonl"
    training_records.write_records(
        fret, [dataclasses.replace(r, task="fret") for r in wiki_records[:64]])
    try:
        trainer.parse_gin(["gin_configs/runs/finetune.gin",
                           "gin_configs/mixtures/finetune_stream.gin"],
                          [f"FRET_FILES = '{tmp_path}/fret-*.jsonl'", "BATCH_SIZE = 8",
                           "TRAIN_STEPS = 10", "wikipedia_sections.limit = 64",
                           "bbc_classification.limit = 64"])
        batches = stream_mixtures.streaming_mixture_data(
            tokenizer=Tokenizer.from_folder(assets.minilm_dir()),
            feature_lengths={"query": 16, "positive": 32, "negative": 32}, batch_size=8,
            seed=0)
    finally:
        gin.clear_config()
    assert batches.files == (str(fret),)
    vocab = tasks.vocabulary(str(assets.minilm_dir()))
    word = {vocab.encode(f"task: {t}")[3]: t for t in (
        "fret", wiki_records[0].task, mixtures.BBC_TASK)}
    assert len(word) == 3
    seen = [{word.get(w, "other") for w in batches.batch(s)["query_ids"][:, 3]}
            for s in range(40)]
    assert all(len(s) == 1 for s in seen)                   # single-task batches
    assert {t for s in seen for t in s} == set(word.values())
