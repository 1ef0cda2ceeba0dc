"""Re-selecting positives and negatives of finished FRet records from their stored
teacher scores (fret/refuse.py), the seed check of `gecko fret stats`, and the
`scorers` option of stage 2."""

import json

import pytest

from gecko_jax.data.fret_records import read_jsonl_records
from gecko_jax.fret import record_shards, refuse, stats
from gecko_jax.fret.relabel import SCORERS, RelabelConfig


def _run(finished_run, tiny_corpus):
    out, manifest = finished_run
    recs = list(read_jsonl_records(record_shards.record_paths(out)))
    rows = [json.loads(line) for line in tiny_corpus.read_text().splitlines()]
    return recs, rows, manifest["config"]


def test_refusing_under_the_runs_own_config_reproduces_its_records(finished_run, tiny_corpus):
    recs, rows, config = _run(finished_run, tiny_corpus)
    assert recs
    again = refuse.refuse_records(recs, rows, RelabelConfig(**config["relabel"]), config["seed"])
    for rec, new in zip(recs, again):
        for key in ("positive", "negative", "positive_is_seed", "candidates", "query", "task"):
            assert new[key] == rec[key], key
        assert new["provenance"]["refused"]["scorers"] == list(SCORERS)


def test_ql_alone_picks_the_best_query_likelihood_and_none_drops_negatives(finished_run,
                                                                          tiny_corpus):
    recs, rows, config = _run(finished_run, tiny_corpus)
    texts = {r["id"]: r["text"] for r in rows}
    cfg = RelabelConfig(**{**config["relabel"], "scorers": ("ql",), "negative": "none"})
    for rec, new in zip(recs, refuse.refuse_records(recs, rows, cfg, config["seed"])):
        cands = sorted(rec["candidates"], key=lambda c: c["retrieval_rank"])
        best = max(cands, key=lambda c: c["ql"])   # first of equal maxima: retrieval order
        assert new["positive"]["id"] == best["id"]
        assert new["positive"]["text"] == texts[best["id"]]
        assert new["positive_is_seed"] == (best["id"] == rec["seed_passage_id"])
        assert new["negative"] is None
        assert [c["fused_rank"] for c in new["candidates"]] == [c["rank_ql"] for c in cands]


def test_refusing_needs_the_runs_corpus(finished_run, tiny_corpus):
    recs, rows, config = _run(finished_run, tiny_corpus)
    with pytest.raises(Exception, match="not in the corpus"):
        refuse.refuse_records(recs, rows[:1], RelabelConfig(**config["relabel"]))


def test_scorers_option_is_checked_and_leaves_default_identities_alone():
    default = RelabelConfig()
    assert "scorers" not in default.identity()   # runs made before the option still resume
    assert RelabelConfig(scorers=["ql"]).identity()["scorers"] == ["ql"]
    for bad in ((), ("ql", "ql"), ("bm25",)):
        with pytest.raises(ValueError, match="scorers"):
            RelabelConfig(scorers=bad)


def test_seed_first_rates_count_each_ranking():
    def cand(pid, retrieval, ql, rc, fused):
        return {"id": pid, "retrieval_rank": retrieval, "rank_ql": ql, "rank_rc": rc,
                "fused_rank": fused}

    recs = [  # the seed first by QL and the fusion; 4 candidates
        {"seed_passage_id": "a", "candidates": [cand("a", 2, 1, 3, 1), cand("b", 1, 2, 1, 2),
                                                cand("c", 3, 3, 2, 3), cand("d", 4, 4, 4, 4)]},
        # the seed first by the embedder and RC; 2 candidates
        {"seed_passage_id": "x", "candidates": [cand("x", 1, 2, 1, 2), cand("y", 2, 1, 2, 1)]},
        # no seed among the candidates: not counted
        {"seed_passage_id": "z", "candidates": [cand("q", 1, 1, 1, 1)]}]
    rates = stats.seed_first_rates(recs)
    assert rates == {"embedder": 0.5, "QL": 0.5, "RC": 0.5, "fused": 0.5,
                     "chance": pytest.approx((1 / 4 + 1 / 2) / 2)}
    assert "QL 50%" in stats.seed_first_line(rates)
    assert stats.seed_first_rates([]) == {}
