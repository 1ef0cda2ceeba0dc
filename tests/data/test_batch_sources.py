"""Every batch source implements data/batches.BatchSource; seqio names are registered once."""

import importlib
import inspect
import pkgutil

import numpy as np
import pytest
import seqio

import gecko_jax.data
from gecko_jax import assets
from gecko_jax.data import mixtures, streaming, tasks, training_records
from gecko_jax.data.batches import BatchSource
from gecko_jax.errors import GeckoError
from gecko_jax.tokenization import Tokenizer

LENGTHS = {"query": 12, "positive": 20, "negative": 20}


def _batch_source_classes():
    """Classes of gecko_jax.data that serve batches: a `batch(step)` method."""
    found = {}
    for info in pkgutil.iter_modules(gecko_jax.data.__path__):
        module = importlib.import_module(f"gecko_jax.data.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and callable(getattr(cls, "batch", None)):
                found[f"{module.__name__}.{name}"] = cls
    return found


def test_every_batch_source_class_implements_the_interface():
    found = _batch_source_classes()
    # The three sources the trainer reads (the interface itself is abstract).
    assert {"gecko_jax.data.batching.StepIndexedBatches", "gecko_jax.data.mixtures.MixtureBatches",
            "gecko_jax.data.stream_batches.StreamingBatches"} <= set(found)
    for name, cls in found.items():
        assert issubclass(cls, BatchSource), name
        if cls is not BatchSource:
            assert not inspect.isabstract(cls), name
    streamed = {n for n, c in found.items() if c is not BatchSource and not c.step_indexed}
    assert streamed == {"gecko_jax.data.stream_batches.StreamingBatches"}


def test_step_indexed_sources_position_methods_do_nothing(tmp_path):
    from gecko_jax.data.batching import StepIndexedBatches

    ex = {"x": np.arange(40)}
    b = StepIndexedBatches(ex, 8, seed=1)
    first = b.batch(3)["x"]
    b.save_position(tmp_path, 3)
    b.restore_position(tmp_path, 3)
    b.prune_positions(tmp_path, {3})
    b.start_at(7)
    assert list(tmp_path.iterdir()) == [] and b.epochs(10) == {}
    np.testing.assert_array_equal(b.batch(3)["x"], first)   # still a pure function of the step
    m = mixtures.MixtureBatches({"a": ex, "b": {"x": np.arange(100, 120)}},
                                {"a": 1.0, "b": 1.0}, 8)
    assert set(m.epochs(10)) == {"a", "b"} and m.step_indexed


def _records(path, n, start=0):
    recs = [training_records.FRetRecord(id=f"r{i}", task="qa", query=f"question {i}",
                                        positive=training_records.Document(text=f"answer {i}"))
            for i in range(start, start + n)]
    training_records.write_records(path, recs)
    return str(path)


def test_registering_a_task_twice(tmp_path):
    one, two = _records(tmp_path / "one.jsonl", 4), _records(tmp_path / "two.jsonl", 4, 10)
    task = tasks.register_jsonl_task("t_once", {"train": [one]}, assets.minilm_dir())
    # The same definition again: the registered Task, not a new one.
    assert tasks.register_jsonl_task("t_once", {"train": [one]}, assets.minilm_dir()) is task
    # Another definition under the same name: an error naming both.
    with pytest.raises(GeckoError, match=r"'t_once' is already registered as .*one\.jsonl.*"
                                         r"now asked for .*two\.jsonl"):
        tasks.register_jsonl_task("t_once", {"train": [two]}, assets.minilm_dir())
    assert seqio.get_mixture_or_task("t_once") is task
    # The same for streaming Tasks and Mixtures.
    s = streaming.register_streaming_task("t_once_stream", [one], assets.minilm_dir())
    assert streaming.register_streaming_task("t_once_stream", [one], assets.minilm_dir()) is s
    with pytest.raises(GeckoError, match=r"'t_once_stream' is already registered .*two\.jsonl"):
        streaming.register_streaming_task("t_once_stream", [two], assets.minilm_dir())
    mix = mixtures.register_mixture("t_once_mix", {"t_once": 1.0, "t_once_stream": 2.0})
    assert mixtures.register_mixture("t_once_mix", {"t_once": 1.0, "t_once_stream": 2.0}) is mix
    with pytest.raises(GeckoError, match=r"mixture 't_once_mix' is already registered"):
        mixtures.register_mixture("t_once_mix", {"t_once": 1.0, "t_once_stream": 1.0})


def test_tokenizer_copies_are_one_definition(tmp_path):
    """A tokenizer is identified by its tokenizer.json, not its folder: an exported
    model's copy (a later stage's tokenizer) is the same definition."""
    import shutil

    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(assets.minilm_dir() / "tokenizer.json", copy / "tokenizer.json")
    path = _records(tmp_path / "r.jsonl", 4)
    task = tasks.register_jsonl_task("t_once_tok", {"train": [path]}, assets.minilm_dir())
    assert tasks.register_jsonl_task("t_once_tok", {"train": [path]}, copy) is task


def test_mixture_data_derives_names_from_the_examples(tmp_path):
    """mixture_data may be called again with other examples under the same table names
    (another limit, another run): its Tasks and Mixture take names derived from them."""
    tok = Tokenizer.from_folder(assets.minilm_dir())
    path = _records(tmp_path / "r.jsonl", 12)

    def call(limit):
        return mixtures.mixture_data(
            tokenizer=tok, feature_lengths=LENGTHS, batch_size=4, seed=0, mixture="t_derive",
            rates={"t_derive_fret": 1.0},
            task_sources={"t_derive_fret": lambda: mixtures.jsonl_examples([path], limit=limit)})

    a, a_again, b = call(8), call(8), call(12)
    assert a.task_names == b.task_names == ["t_derive_fret"]
    assert (a.num_examples, b.num_examples) == (8, 12)
    assert a.seqio_mixture == a_again.seqio_mixture != b.seqio_mixture
    np.testing.assert_array_equal(a.batch(5)["query_ids"], a_again.batch(5)["query_ids"])
    names = [t.name for t in seqio.get_mixture_or_task(a.seqio_mixture).tasks]
    assert len(names) == 1 and names[0].startswith("t_derive_fret_")
