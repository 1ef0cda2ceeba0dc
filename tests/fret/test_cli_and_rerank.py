"""`gecko fret corpus|stats` and the appendix-A re-ranking check on real BBC labels."""

import json
import math

from gecko_jax.cli import main
from gecko_jax.data import splits
from gecko_jax.data.sources import read_bbc_news


def test_corpus_converter_bbc(tmp_path, capsys):
    out = tmp_path / "bbc.jsonl"
    assert main(["fret", "corpus", "--source", "bbc", "--output", str(out), "--words", "30"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) > 450 and len({r["id"] for r in rows}) == len(rows)
    assert rows[0]["id"].startswith("bbc:business/") and rows[0]["title"]
    assert max(len(r["text"].split()) for r in rows) <= 30
    # The training pool only: no held-out or validation article becomes FRet data.
    articles = read_bbc_news(dedup=True)
    training = {a.id for a in splits.bbc_training_articles(articles)}
    assert {r["id"].removeprefix("bbc:") for r in rows} == training


def test_stats_command_prints_and_plots(finished_run, tmp_path, capsys):
    out, manifest = finished_run
    png = tmp_path / "s.png"
    assert main(["fret", "stats", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "relabel rate" in text and "tasks:" in text and "query length" in text
    assert png.stat().st_size > 1000


def test_stats_of_an_unfinished_run_counts_its_finished_shards(finished_run, tmp_path):
    """`gecko fret stats` on a run still going: the finished shards, said plainly; the
    queries a filter dropped (kept in the shard's stats file) are shown."""
    import shutil

    from gecko_jax.fret import stats

    out, manifest = finished_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / "manifest.json").unlink()
    (run / "shards" / "stats-00001.json").unlink()          # shard 1 still running
    st = json.loads((run / "shards" / "stats-00000.json").read_text())
    st["filtered"] = [{"filter": "ql_floor", "passage_id": "p", "task": "t",
                       "query": "capital of alaska", "value": -9.5}]
    (run / "shards" / "stats-00000.json").write_text(json.dumps(st))
    s = stats.collect(run)
    assert s["partial"] == "1 of 2 shards done"
    assert s["counts"]["passages"] == 1 and s["records"] == st["records"]
    assert s["dropped_examples"] == {"ql_floor": [{"query": "capital of alaska", "task": "t",
                                                   "value": -9.5}]}
    text = stats.format_stats(s)
    assert text.startswith("UNFINISHED RUN: 1 of 2 shards done")
    assert "dropped by ql_floor" in text and "'capital of alaska'  (-9.5)" in text


def test_fret_without_corpus_is_a_clear_error(capsys):
    assert main(["fret"]) == 2
    assert "needs --corpus" in capsys.readouterr().err


def test_appendix_a_four_numbers_are_computed(teacher, embedder, prompts):
    from gecko_jax.fret.rerank_eval import bbc_rerank_eval, format_result

    r = bbc_rerank_eval(num_queries=2, num_neighbors=3, passage_words=30, max_docs=60, llm=teacher,
                        encoder=embedder, prompts=prompts)
    assert r["queries"] == 2 and r["scored_pairs"] == 6
    for m in ("initial", "ql", "rc", "rrf"):
        assert 0.0 <= r["ndcg_at_10"][m] <= 1.0 and math.isfinite(r["ndcg_at_10"][m])
    assert "RRF(QL, RC)" in format_result(r)


def test_gin_bindings_then_flags_build_the_config(tmp_path):
    from gecko_jax.cli import build_parser
    from gecko_jax.commands.fret import build_config

    gin_file = tmp_path / "fret.gin"
    gin_file.write_text("FRetConfig.shard_size = 3\nRelabelConfig.negative = 'rank:4'\n"
                        "GenerateConfig.max_attempts = 5\n")
    args = build_parser().parse_args(
        ["fret", "--corpus", "c.jsonl", "--output", "o", "--gin_file", str(gin_file),
         "--gin_bindings", "RelabelConfig.rrf_k = 60.0", "--num-neighbors", "7", "--limit", "9"])
    cfg = build_config(args)
    assert (cfg.shard_size, cfg.limit, cfg.generate.max_attempts) == (3, 9, 5)
    assert (cfg.relabel.negative, cfg.relabel.rrf_k, cfg.relabel.num_neighbors) == ("rank:4", 60.0, 7)
    assert not cfg.teacher_batch_invariant
    args = build_parser().parse_args(["fret", "--corpus", "c.jsonl", "--output", "o",
                                      "--teacher-batch-invariant", "--teacher-mesh", "data=2"])
    cfg = build_config(args)
    assert cfg.teacher_batch_invariant and cfg.teacher_mesh == "data=2"
