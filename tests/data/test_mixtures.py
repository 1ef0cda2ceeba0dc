"""Mixtures: rates honoured over many batches, single-task batches, exact
step-indexed batches, seqio registration, and clear errors for unknown tasks."""

import json

import gin
import numpy as np
import pytest
import seqio

from gecko_jax import assets
from gecko_jax.data import mixtures
from gecko_jax.data.mixtures import MixtureBatches
from gecko_jax.errors import GeckoError
from gecko_jax.tokenization import Tokenizer


@pytest.fixture(autouse=True)
def _fresh_gin():
    """Sources read their defaults from gin: start from an empty config."""
    gin.clear_config()


RATES = {"a": 3.0, "b": 1.0, "c": 0.5}
SIZES = {"a": 50, "b": 200, "c": 30}


def _examples():
    """Feature arrays whose `query_text_id` encodes (task, row) as task*1000 + row."""
    out = {}
    for t, (name, n) in enumerate(SIZES.items()):
        rows = np.arange(n)
        out[name] = {"query_text_id": (t * 1000 + rows).astype(np.int32),
                     "query_ids": np.tile(rows[:, None], (1, 4)).astype(np.int32)}
    return out


def _within(counts, probs, total, sigmas=4.0):
    for c, p in zip(counts, probs):
        sd = np.sqrt(total * p * (1 - p))
        assert abs(c - total * p) < sigmas * sd, (counts, probs, total)


def test_mixed_batches_honour_rates():
    batches = MixtureBatches(_examples(), RATES, global_batch_size=16, seed=3)
    steps = 1500
    counts = np.zeros(3)
    for s in range(steps):
        b = batches.batch(s)
        task, row = np.divmod(b["query_text_id"], 1000)
        np.testing.assert_array_equal(b["query_ids"][:, 0], row)   # rows match their task
        assert (row < np.array(list(SIZES.values()))[task]).all()
        counts += np.bincount(task, minlength=3)
        for t in range(3):          # no row repeats inside a batch while a task has enough
            r = row[task == t]
            assert len(set(r)) == len(r)
    probs = np.array(list(RATES.values())) / sum(RATES.values())
    _within(counts, probs, steps * 16)
    # Mixed batches really mix: most batches hold more than one task.
    assert np.mean([len(set(batches.tasks(s))) > 1 for s in range(200)]) > 0.9


def test_single_task_batches_are_single_task_and_honour_rates():
    batches = MixtureBatches(_examples(), RATES, global_batch_size=16, seed=0, single_task=True)
    steps = 3000
    chosen = np.zeros(3)
    for s in range(steps):
        task = np.unique(batches.batch(s)["query_text_id"] // 1000)
        assert len(task) == 1
        chosen[task[0]] += 1
        assert len(set(batches.tasks(s))) == 1
    _within(chosen, np.array(list(RATES.values())) / sum(RATES.values()), steps)


def test_batches_are_pure_functions_of_step_and_split_over_processes():
    one = MixtureBatches(_examples(), RATES, 16, seed=5)
    again = MixtureBatches(_examples(), RATES, 16, seed=5)
    other = MixtureBatches(_examples(), RATES, 16, seed=6)
    for s in (0, 7, 1000):
        np.testing.assert_array_equal(one.batch(s)["query_text_id"],
                                      again.batch(s)["query_text_id"])
    assert not np.array_equal(one.batch(0)["query_text_id"], other.batch(0)["query_text_id"])
    parts = [MixtureBatches(_examples(), RATES, 16, seed=5, process_index=p, process_count=4)
             .batch(9)["query_text_id"] for p in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), one.batch(9)["query_text_id"])


def test_single_task_needs_a_full_batch_per_task():
    with pytest.raises(GeckoError, match="too few.*'c': 30"):
        MixtureBatches(_examples(), RATES, global_batch_size=40, single_task=True)


def test_unknown_task_is_a_clear_error():
    with pytest.raises(GeckoError, match=r"gecko_mix: unknown task\(s\) \['nope'\]; known tasks"):
        mixtures.register_mixture("gecko_mix", {"nope": 1.0})
    with pytest.raises(GeckoError, match=r"unknown task\(s\) \['d'\]"):
        MixtureBatches(_examples(), {"a": 1.0, "d": 1.0}, 16)
    with pytest.raises(GeckoError, match="positive numbers"):
        MixtureBatches(_examples(), {"a": 1.0, "b": 0.0}, 16)
    tok = Tokenizer.from_folder(assets.minilm_dir())
    with pytest.raises(GeckoError, match=r"unknown task\(s\) \['gecko_typo'\]"):
        mixtures.mixture_data(tokenizer=tok, feature_lengths={"query": 8, "positive": 8,
                                                               "negative": 8},
                              batch_size=4, seed=0, mixture="m",
                              rates={"gecko_typo": 1.0},
                              task_sources={"gecko_wiki": mixtures.wikipedia_title_body})


def test_mixture_data_on_real_sources(tmp_path):
    """The trainer's data_fn: seqio tasks + mixture registered; FRet JSONL optional."""
    import functools

    tok = Tokenizer.from_folder(assets.minilm_dir())
    lengths = {"query": 16, "positive": 24, "negative": 24}
    fret = tmp_path / "fret.jsonl"
    fret.write_text("".join(json.dumps({"task": "qa", "query": f"q{i}",
                                        "positive": {"text": f"passage {i}"}}) + "\n"
                            for i in range(12)))
    table = {"gecko_t_wiki": functools.partial(mixtures.wikipedia_sections, limit=24),
             "gecko_t_bbc": functools.partial(mixtures.bbc_classification, limit=24),
             "gecko_t_fret": functools.partial(mixtures.jsonl_examples, files=[]),
             "gecko_t_fret2": functools.partial(mixtures.jsonl_examples, files=[str(fret)])}
    rates = {"gecko_t_wiki": 1.0, "gecko_t_bbc": 1.0, "gecko_t_fret": 1.0, "gecko_t_fret2": 0.5}
    batches = mixtures.mixture_data(
        tokenizer=tok, feature_lengths=lengths, batch_size=8, seed=0, mixture="gecko_t_mix",
        rates=rates, task_sources=table, optional_tasks=["gecko_t_fret"],
        single_task_batches=True)
    assert batches.task_names == ["gecko_t_wiki", "gecko_t_bbc", "gecko_t_fret2"]
    assert batches.sizes == [24, 24, 12] and batches.num_examples == 60
    # The seqio Tasks and Mixture carry names derived from their examples and rates.
    mix = seqio.get_mixture_or_task(batches.seqio_mixture)
    assert batches.seqio_mixture.startswith("gecko_t_mix_")
    by_table_name = {t.name.rsplit("_", 1)[0]: t for t in mix.tasks}
    assert sorted(by_table_name) == sorted(batches.task_names)
    assert mix.get_rate(by_table_name["gecko_t_fret2"]) == 0.5
    b = batches.batch(0)
    assert b["query_ids"].shape == (8, 16) and b["negative_ids"].shape == (8, 24)
    bbc_step = next(s for s in range(50) if batches.tasks(s)[0] == "gecko_t_bbc")
    row = batches.batch(bbc_step)
    query = tok.backend.decode(row["query_ids"][0].tolist(), skip_special_tokens=True)
    positive = tok.backend.decode(row["positive_ids"][0].tolist(), skip_special_tokens=True)
    # Classification is symmetric: both sides carry the task prefix.
    assert query.startswith("task : classification | query :")
    assert positive.startswith("task : classification | query :")
    # An empty, non-optional source is an error.
    with pytest.raises(GeckoError, match="'gecko_t_fret' has no examples"):
        mixtures.mixture_data(tokenizer=tok, feature_lengths=lengths, batch_size=8, seed=0,
                              mixture="gecko_t_mix2", rates={"gecko_t_fret": 1.0},
                              task_sources=table)


def test_mixture_data_in_raw_format(tmp_path):
    """prompt_format raw: the same sources tokenised without prompts, registered as other
    seqio Tasks than the Gecko-format ones, and the batches say which format they hold."""
    import functools

    tok = Tokenizer.from_folder(assets.minilm_dir())
    lengths = {"query": 16, "positive": 24, "negative": 24}
    table = {"gecko_r_bbc": functools.partial(mixtures.bbc_classification, limit=16)}
    made = {fmt: mixtures.mixture_data(
        tokenizer=tok, feature_lengths=lengths, batch_size=8, seed=0, mixture="gecko_r_mix",
        rates={"gecko_r_bbc": 1.0}, task_sources=table, prompt_format=fmt)
        for fmt in ("gecko", "raw")}
    assert {f: b.prompt_format for f, b in made.items()} == {"gecko": "gecko", "raw": "raw"}
    assert made["raw"].seqio_mixture != made["gecko"].seqio_mixture
    examples = {ex.query: ex for ex in table["gecko_r_bbc"]()}
    row = made["raw"].batch(0)
    for side in ("query", "positive"):
        text = tok.backend.decode(row[f"{side}_ids"][0].tolist(), skip_special_tokens=True)
        assert "task :" not in text and "title :" not in text
    query = tok.backend.decode(row["query_ids"][0].tolist(), skip_special_tokens=True)
    gecko_query = tok.backend.decode(made["gecko"].batch(0)["query_ids"][0].tolist(),
                                     skip_special_tokens=True)
    assert gecko_query.startswith("task : classification | query :")
    # The raw query is the start of one of the source's own query texts.
    assert any(tok.backend.decode(tok.backend.encode(q).ids, skip_special_tokens=True)
               .startswith(query[:40]) for q in examples)
    with pytest.raises(GeckoError, match="prompt_format 'none'"):
        mixtures.mixture_data(tokenizer=tok, feature_lengths=lengths, batch_size=8, seed=0,
                              mixture="gecko_r_mix", rates={"gecko_r_bbc": 1.0},
                              task_sources=table, prompt_format="none")


def test_cap_rates_limits_replay_and_keeps_proportions():
    rates = {"wiki": 1.0, "bbc": 0.5, "fret": 2.0}
    sizes = {"wiki": 2000, "bbc": 1000, "fret": 16}
    p = mixtures.cap_rates(rates, sizes, batch_size=16, num_steps=30, max_epochs=4.0)
    assert sum(p.values()) == pytest.approx(1.0)
    assert 30 * 16 * p["fret"] / 16 == pytest.approx(4.0)          # capped exactly
    assert p["wiki"] / p["bbc"] == pytest.approx(2.0)              # others keep their ratio
    # Uncapped tables are just normalised.
    assert mixtures.cap_rates(rates, sizes, 16, 1, 100.0) == pytest.approx(
        {t: r / 3.5 for t, r in rates.items()})
    with pytest.raises(GeckoError, match="max_epochs"):
        mixtures.cap_rates(rates, sizes, 16, 30, 0)


def test_epochs_per_task():
    ex = {"a": {"query_text_id": np.zeros(100, np.int32)},
          "b": {"query_text_id": np.zeros(10, np.int32)}}
    batches = MixtureBatches(ex, {"a": 3.0, "b": 1.0}, global_batch_size=8)
    assert batches.epochs(50) == {"a": 3.0, "b": 10.0}
