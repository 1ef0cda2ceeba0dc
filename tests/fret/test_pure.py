"""Pure FRet pieces: ranks, reciprocal rank fusion, selection, parsing, filters, prompts,
record schema, run identity and atomic shards (no models)."""

import collections
import json

import numpy as np
import pytest

from gecko_jax import textio
from gecko_jax.data import fret_records
from gecko_jax.errors import GeckoError, InputError
from gecko_jax.fret import generate as generate_lib
from gecko_jax.fret import prompts as prompts_lib
from gecko_jax.fret import record_shards
from gecko_jax.fret import relabel as relabel_lib


def test_ranks_best_first_and_stable_ties():
    assert relabel_lib.ranks([0.1, 0.9, 0.5]).tolist() == [3, 1, 2]
    # Ties keep candidate (retrieval) order.
    assert relabel_lib.ranks([-1.0, -1.0, -3.0, -1.0]).tolist() == [1, 2, 4, 3]


def test_rrf_k0_is_the_papers_formula_and_k60_differs():
    r_ql, r_rc = [1, 2, 3], [3, 1, 2]
    np.testing.assert_allclose(relabel_lib.reciprocal_rank_fusion([r_ql, r_rc]),
                               [1 + 1 / 3, 1 / 2 + 1, 1 / 3 + 1 / 2])
    np.testing.assert_allclose(relabel_lib.reciprocal_rank_fusion([r_ql, r_rc], k=60),
                               [1 / 61 + 1 / 63, 1 / 62 + 1 / 61, 1 / 63 + 1 / 62])
    with pytest.raises(ValueError):
        relabel_lib.reciprocal_rank_fusion([[1, 2]], k=-1)


def test_positive_is_top_fused_ties_go_to_better_retrieved():
    # (1,3) and (3,1) fuse equally with k=0: the earlier candidate wins.
    fused = relabel_lib.reciprocal_rank_fusion([[3, 1, 2], [1, 3, 2]])
    assert fused[0] == fused[1]
    assert relabel_lib.select_positive(fused) == 0


def test_negative_strategies():
    fused = np.array([0.5, 2.0, 1.0, 0.7, 0.2])  # fused ranks 4, 1, 2, 3, 5
    pos = relabel_lib.select_positive(fused)
    assert pos == 1
    assert relabel_lib.select_negative(fused, pos, "lowest") == 4
    assert relabel_lib.select_negative(fused, pos, "rank:3") == 3
    assert relabel_lib.select_negative(fused, pos, "rank:20") == 4  # fewer than K: the lowest
    assert relabel_lib.select_negative(fused, pos, "none") is None
    draws = {relabel_lib.select_negative(fused, pos, "random", np.random.default_rng(s)) for s in range(40)}
    assert draws == {0, 2, 3, 4}
    assert relabel_lib.select_negative([1.0], 0, "lowest") is None
    for bad in ("rank:1", "rank:x", "worst"):
        with pytest.raises(ValueError):
            relabel_lib.parse_negative(bad)


def test_negative_rules_remove_the_seed_and_same_document_passages():
    fused = np.array([0.5, 2.0, 1.0, 0.7, 0.2, 0.3])  # fused ranks 4, 1, 2, 3, 6, 5
    docs = ["a", "b", "c", "b", "a", "d"]
    why = relabel_lib.negative_exclusions(docs, positive=1, seed=0)
    assert why == ["seed", "positive", None, "positive_document", "seed_document", None]
    excluded = [i for i, w in enumerate(why) if w in relabel_lib.NEGATIVE_RULES]
    pick = lambda s, rng=None: relabel_lib.select_negative(  # noqa: E731
        fused, 1, s, rng, excluded=excluded)
    assert pick("lowest") == 5                  # 4 (rank 6) is the seed's document
    assert pick("rank:3") == 5                  # 3 (rank 3) ruled out: the next one below
    assert pick("rank:2") == 2
    assert pick("rank:20") == 5                 # fewer than K: the lowest eligible
    assert {pick("random", np.random.default_rng(s)) for s in range(40)} == {2, 5}
    assert relabel_lib.select_negative(fused, 1, "lowest", excluded=[0, 2, 3, 4, 5]) is None
    from gecko_jax.fret.corpus import document_id
    assert document_id("wiki:Paris:3") == "wiki:Paris"
    assert document_id("wiki:Ratio 3:2:0") == "wiki:Ratio 3:2"
    assert document_id("bbc:sport/012") == "bbc:sport/012"


def test_candidate_rows_always_hold_the_seed():
    assert relabel_lib.candidate_rows([5, 7, 9], 7, 3) == [5, 7, 9]
    assert relabel_lib.candidate_rows([5, 7, 9], 2, 3) == [5, 7, 2]
    assert relabel_lib.candidate_rows([5, -1, -1], 2, 3) == [5, 2]


def test_rc_normalisation():
    lp_yes, lp_no = np.log(0.2), np.log(0.6)
    assert relabel_lib.rc_score(lp_yes, lp_no, True) == pytest.approx(np.log(0.25))
    assert relabel_lib.rc_score(lp_yes, lp_no, False) == pytest.approx(lp_yes)


@pytest.mark.parametrize("reply,expected", [
    ('{"task": "Given a question, find the answer", "query": "who built it"}',
     ("Given a question, find the answer", "who built it")),
    # Weak-model output: extra keys, no closing brace.
    ('{"task": "Find a passage", "query": "when was it built", "response": "It was',
     ("Find a passage", "when was it built")),
    # Unterminated query string.
    ('{"task": "Find a passage", "query": "when was the bridge opened',
     ("Find a passage", "when was the bridge opened")),
    ("Task: fact checking\nQuery: The sun is cold", ("fact checking", "The sun is cold")),
    ('{"task": "Say \\"hi\\"", "query": "x y z"}', ('Say "hi"', "x y z")),
])
def test_parse_task_query(reply, expected):
    assert generate_lib.parse_task_query(reply) == expected


@pytest.mark.parametrize("reply,reason", [
    ("I cannot help with that.", "no_json"),
    ('{"task": "", "query": "abc"', "no_task"),
    ('{"task": "Find it", "answer": "x"}', "no_query"),
])
def test_parse_failures_have_reasons(reply, reason):
    with pytest.raises(generate_lib.ParseFailure) as err:
        generate_lib.parse_task_query(reply)
    assert err.value.reason == reason


def test_filters():
    cfg = generate_lib.GenerateConfig(max_query_words=6)
    passage = "The quick brown fox jumps over the lazy dog near the river bank today."
    ok = generate_lib.check_pair("Find a passage", "where does the fox jump", passage, cfg)
    assert ok is None
    assert generate_lib.check_pair("Find", "", passage, cfg) == "empty_query"
    assert generate_lib.check_pair("", "what fox", passage, cfg) == "empty_task"
    assert generate_lib.check_pair("Find", "a b c d e f g h", passage, cfg) == "too_long"
    assert generate_lib.check_pair("Find", "quick brown fox jumps", passage, cfg) == "copied_from_passage"
    assert generate_lib.check_pair("Find", "How tall is X", passage, cfg, {"how tall is x"}) == "copied_example"


def test_prompts_have_ids_versions_and_shared_few_shot_prefix(prompts):
    assert prompts.qg.tag == "fret-qg@1" and prompts.ql.version == 1
    a = prompts_lib.qg_prompt(prompts.qg, "First passage.")
    b = prompts_lib.qg_prompt(prompts.qg, "Second passage.")
    assert a.startswith(prompts.qg.few_shot) and b.startswith(prompts.qg.few_shot)
    assert a.endswith('{"task": "')
    # P_QL: the passage comes first, the query is the continuation.
    pre, cont = prompts_lib.ql_pair(prompts.ql, "Some passage.", "a query")
    assert pre.endswith("Passage: Some passage.\nQuery:") and cont == " a query"
    task_types = {ex["task"] for ex in prompts.qg.spec["examples"]}
    assert len(task_types) >= 4


def test_bad_prompt_files_are_named(tmp_path):
    path = tmp_path / "qg.json"
    path.write_text(json.dumps({"id": "x", "version": "one"}))
    with pytest.raises(InputError, match="qg.json"):
        prompts_lib.load_prompt(path, "qg")
    spec = json.loads((prompts_lib.PROMPTS_DIR / "qg.json").read_text())
    spec["example_template"] = "Passage: {passage} {missing}"
    path.write_text(json.dumps(spec))
    with pytest.raises(InputError, match="does not render"):
        prompts_lib.load_prompt(path, "qg")


def test_unknown_schema_version_is_rejected(tmp_path):
    rec = {"schema_version": 99, "id": "a", "task": "t", "query": "q",
           "positive": {"text": "p"}, "seed_passage_id": "s", "provenance": {}}
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    with pytest.raises(InputError, match="unknown FRet schema_version 99"):
        list(fret_records.read_jsonl_records([path]))


def test_changed_config_refuses_to_resume(tmp_path):
    ident = {"seed": 0, "limit": 4}
    assert record_shards.check_or_write_config(tmp_path / "run", ident) is False
    assert record_shards.check_or_write_config(tmp_path / "run", ident) is True
    with pytest.raises(GeckoError, match=r"different configuration \(limit: 4 -> 5\)"):
        record_shards.check_or_write_config(tmp_path / "run", {"seed": 0, "limit": 5})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(GeckoError, match="not empty"):
        record_shards.check_or_write_config(tmp_path / "other", ident)


def test_shard_store_atomic_and_partials_removed(tmp_path):
    store = record_shards.ShardStore(tmp_path, 3)
    assert store.pending() == [0, 1, 2]
    store.write(1, [{"a": 1}], collections.Counter(records=1))
    assert store.pending() == [0, 2]
    # A killed writer leaves only hidden temporary files, which resume removes.
    (store.dir / ".records-00000-of-00003.jsonl.tmp123").write_text("partial")
    assert textio.remove_partials(tmp_path) == 1
    assert store.pending() == [0, 2]


def test_seed_shards_fixed_composition():
    from gecko_jax.fret.pipeline import seed_shards

    a = seed_shards(50, 10, 3, seed=1)
    assert a == seed_shards(50, 10, 3, seed=1)
    assert [len(s) for s in a] == [3, 3, 3, 1]
    assert len({r for s in a for r in s}) == 10
    assert a != seed_shards(50, 10, 3, seed=2)
