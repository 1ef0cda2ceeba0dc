"""FRet quality filters: pure functions, config checks, and the gin route."""

import math

import pytest

from gecko_jax.fret import filters as filters_lib


def test_round_trip_keeps_seed_or_positive_in_top_k():
    top = [5, 9, 2, 7]
    assert filters_lib.round_trip_ok(top, seed_row=5, positive_row=7, k=1)       # seed first
    assert filters_lib.round_trip_ok(top, seed_row=3, positive_row=2, k=3)       # relabelled positive
    assert not filters_lib.round_trip_ok(top, seed_row=7, positive_row=7, k=3)   # both below k
    assert not filters_lib.round_trip_ok(top, seed_row=1, positive_row=8, k=4)   # neither retrieved


def test_ql_floor_is_per_query_word():
    assert filters_lib.ql_per_word(-12.0, "capital of alaska now") == -3.0
    assert filters_lib.ql_ok(-12.0, "capital of alaska now", floor=-3.0)
    assert not filters_lib.ql_ok(-12.0, "capital of alaska", floor=-3.5)
    assert filters_lib.ql_per_word(-2.0, "") == -2.0                               # no division by zero


def test_near_duplicate_queries_dropped_in_order():
    qs = ["What is the capital of Alaska?", "what is the capital of alaska",
          "Capital of Alaska: what is it?", "How many legs does a spider have"]
    assert filters_lib.jaccard(qs[0], qs[1]) == 1.0
    assert filters_lib.keep_distinct(qs, 1.0) == [True, False, True, True]
    assert filters_lib.keep_distinct(qs, 0.7) == [True, False, False, True]


def test_config_checks_and_defaults():
    """On by default (README "FRet filters"); None turns a filter off."""
    on = filters_lib.FilterConfig()
    assert on.enabled and on.dedup_jaccard == 0.8
    assert on.ql_floor == pytest.approx(math.log(1e-3), abs=1e-4)
    off = filters_lib.FilterConfig(round_trip_fraction=None, ql_floor=None, dedup_jaccard=None)
    assert not off.enabled
    with pytest.raises(ValueError, match="round_trip_k"):
        filters_lib.FilterConfig(round_trip_k=0)
    with pytest.raises(ValueError, match="round_trip_fraction"):
        filters_lib.FilterConfig(round_trip_fraction=0.0)
    with pytest.raises(ValueError, match="dedup_jaccard"):
        filters_lib.FilterConfig(dedup_jaccard=1.5)


def test_round_trip_k_is_a_fraction_of_the_corpus_unless_set():
    cfg = filters_lib.FilterConfig()
    assert [filters_lib.round_trip_top_k(cfg, n) for n in (24, 100, 101, 512, 10**6)] == \
        [1, 1, 2, 6, 10_000]
    assert filters_lib.round_trip_top_k(filters_lib.FilterConfig(round_trip_k=3), 10**6) == 3
    assert filters_lib.round_trip_top_k(
        filters_lib.FilterConfig(round_trip_fraction=None), 512) is None


def test_gin_bindings_reach_the_filters_and_the_identity(tmp_path):
    from gecko_jax.fret.pipeline import config_from_gin
    from gecko_jax.fret import prompts as prompts_lib

    cfg = config_from_gin([], ["FilterConfig.round_trip_k = 3", "FilterConfig.ql_floor = -4.0"])
    assert cfg.filters == filters_lib.FilterConfig(round_trip_k=3, ql_floor=-4.0)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "x"}\n')
    prompts = prompts_lib.load_prompts(None)
    assert cfg.identity(corpus, prompts)["filters"]["round_trip_k"] == 3
    off = config_from_gin([], ["FilterConfig.round_trip_fraction = None",
                               "FilterConfig.ql_floor = None", "FilterConfig.dedup_jaccard = None"])
    assert "filters" not in off.identity(corpus, prompts)   # all off: the old identity


@pytest.mark.slow
def test_round_trip_filter_in_a_real_run(tmp_path, finished_run, tiny_corpus, teacher, embedder):
    """The same tiny run with round_trip_k=1 keeps exactly the records whose top
    retrieved passage is the seed or the positive; drops are counted for stats."""
    from gecko_jax.data import fret_records
    from gecko_jax.fret import record_shards
    from gecko_jax.fret import stats
    from gecko_jax.fret.pipeline import run_local

    from .conftest import tiny_config

    base_dir, base_manifest = finished_run
    base = list(fret_records.read_jsonl_records(record_shards.record_paths(base_dir)))
    cfg = tiny_config(tfrecord=True, filters=filters_lib.FilterConfig(round_trip_k=1, dedup_jaccard=1.0,
                                                                    ql_floor=None))
    manifest = run_local(cfg, tiny_corpus, tmp_path / "run", llm=teacher, encoder=embedder)
    got = list(fret_records.read_jsonl_records(record_shards.record_paths(tmp_path / "run")))
    want = [r["id"] for r in base
            if r["candidates"][0]["id"] in (r["seed_passage_id"], r["positive"]["id"])]
    assert [r["id"] for r in got] == want
    dropped = manifest["counts"]["dropped"]
    assert dropped.get("round_trip", 0) == len(base) - len(want)
    s = stats.collect(tmp_path / "run")
    shown = s["dropped_examples"].get("round_trip", [])
    assert len(shown) == min(stats.EXAMPLES, dropped.get("round_trip", 0))
    dropped_queries = {r["query"] for r in base if r["id"] not in want}
    assert all(ex["query"] in dropped_queries and ex["value"]["k"] == 1 for ex in shown)
    assert [ex["query"] for ex in s["kept_examples"]] == [r["query"] for r in got][:3]
    assert "filters:" in stats.format_stats(s)
