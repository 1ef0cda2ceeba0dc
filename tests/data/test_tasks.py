"""FRet JSONL -> seqio task -> dual-encoder features; bad input names file and line."""

import json

import numpy as np
import pytest

from gecko_jax import assets
from gecko_jax.data import tasks, training_records
from gecko_jax.data.batching import StepIndexedBatches
from gecko_jax.unified_format import format_document, format_query
from gecko_jax.errors import InputError
from gecko_jax.losses import NO_ID
from gecko_jax.tokenization import Tokenizer

LENGTHS = {"query": 12, "positive": 20, "negative": 20}
GOOD = [
    {"id": "a", "task": "question answering", "query": "who wrote hamlet?",
     "positive": {"title": "Hamlet", "text": "Hamlet is a tragedy written by William "
                  "Shakespeare sometime between 1599 and 1601, his longest play."},
     "negative": {"title": "Macbeth", "text": "Macbeth is a tragedy."}},
    {"query": "capital of france", "positive": {"text": "Paris is the capital of France."}},
]


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_features_match_inference_tokenizer(tmp_path):
    path = _write(tmp_path / "good.jsonl", GOOD)
    tasks.register_jsonl_task("test_good", {"train": [path]}, assets.minilm_dir())
    ex = tasks.load_examples("test_good", "train", LENGTHS)
    tok = Tokenizer.from_folder(assets.minilm_dir())
    want_q = tok.encode([format_query(r["query"], r.get("task", "search result")) for r in GOOD],
                        LENGTHS["query"])
    want_p = tok.encode([format_document(r["positive"]["text"], r["positive"].get("title"))
                         for r in GOOD], LENGTHS["positive"])
    for i in range(2):
        n = int(ex["query_mask"][i].sum())
        assert ex["query_ids"][i, :n].tolist() == want_q[i]
        n = int(ex["positive_mask"][i].sum())
        assert ex["positive_ids"][i, :n].tolist() == want_p[i]
    assert ex["positive_ids"][0, -1] == 102            # trimmed, [SEP] kept
    assert ex["negative_text_id"][1] == NO_ID and ex["negative_text_id"][0] >= 0
    assert ex["negative_mask"][1].sum() > 0            # a finite (masked) placeholder
    assert ex["query_ids"].shape == (2, 12) and ex["positive_ids"].shape == (2, 20)


def test_duplicate_texts_share_ids(tmp_path):
    rows = [dict(GOOD[1], query=q) for q in ("a", "b")]
    path = _write(tmp_path / "dup.jsonl", rows)
    tasks.register_jsonl_task("test_dup", {"train": [path]}, assets.minilm_dir())
    ex = tasks.load_examples("test_dup", "train", LENGTHS)
    assert ex["positive_text_id"][0] == ex["positive_text_id"][1]
    assert ex["query_text_id"][0] != ex["query_text_id"][1]


@pytest.mark.parametrize("bad,message", [
    ({"positive": {"text": "x"}}, "no 'query'"),
    ({"query": "q", "positive": {"title": "t", "text": "  "}}, "positive"),
    ({"query": "q"}, "positive"),
    ("{not json", "not valid JSON"),
])
def test_bad_record_names_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path / "bad.jsonl", [GOOD[0], GOOD[1], bad])
    with pytest.raises(InputError, match=message) as err:
        list(training_records.read_records(path))
    assert f"{path}:3:" in str(err.value)
    name = f"test_bad_{tmp_path.name}"      # a task name names one file list
    tasks.register_jsonl_task(name, {"train": [path]}, assets.minilm_dir())
    with pytest.raises(InputError, match=f"bad.jsonl:3"):
        tasks.load_examples(name, "train", LENGTHS)


def test_step_indexed_batches_are_deterministic():
    ex = {"x": np.arange(50)}
    a, b = StepIndexedBatches(ex, 8, seed=1), StepIndexedBatches(ex, 8, seed=1)
    assert a.steps_per_epoch == 6
    seen = [a.batch(s)["x"] for s in range(6)]
    assert len(set(np.concatenate(seen).tolist())) == 48   # one epoch, no repeats
    np.testing.assert_array_equal(b.batch(13)["x"], a.batch(13)["x"])  # random access
    assert not np.array_equal(a.batch(0)["x"], StepIndexedBatches(ex, 8, seed=2).batch(0)["x"])
    halves = [StepIndexedBatches(ex, 8, seed=1, process_index=i, process_count=2).batch(3)["x"]
              for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), a.batch(3)["x"])


def _real_rows():
    """(rows, symmetric flags, tf dataset): Wikipedia sections (titled), BBC articles with
    and without title, non-ASCII text and a symmetric row."""
    import tensorflow as tf

    from gecko_jax.data import sources

    wiki = training_records.wikipedia_section_records(sources.read_wikipedia()[:6], max_words=40)
    bbc = sources.read_bbc_news()[:4]
    rows = [(r.task, r.query, r.positive.title, r.positive.text,
             r.negative.title if r.negative else "", r.negative.text if r.negative else "")
            for r in wiki]
    rows += [("search result", a.headline, "" if i % 2 else a.category, a.body[:300], "", "")
             for i, a in enumerate(bbc)]
    rows.append(("clustering", "Café naïve – “quoted” ünïcode", "", "Ωmega text", "T", "n"))
    cols = list(zip(*rows))
    symmetric = [False] * (len(rows) - 1) + [True]
    ds = tf.data.Dataset.from_tensor_slices({
        "task": list(cols[0]), "query": list(cols[1]), "positive_title": list(cols[2]),
        "positive_text": list(cols[3]), "negative_title": list(cols[4]),
        "negative_text": list(cols[5]), "has_negative": [bool(t) for t in cols[5]],
        "symmetric": symmetric})
    return rows, symmetric, ds


def test_tf_and_python_unified_format_give_identical_strings():
    """The seqio preprocessor's TF string ops and unified_format's Python templates agree
    on real records: Wikipedia sections (titled), BBC articles with and without title,
    non-ASCII text and a symmetric row formatted like a query."""
    rows, symmetric, ds = _real_rows()
    got = list(tasks.gecko_format(ds).as_numpy_iterator())
    assert len(got) == len(rows) >= 11
    for ex, (task, query, ptitle, ptext, ntitle, ntext), sym in zip(got, rows, symmetric):
        assert ex["query"].decode() == format_query(query, task)
        want_pos = format_query(ptext, task) if sym else format_document(ptext, ptitle or None)
        assert ex["positive"].decode() == want_pos
        want_neg = format_query(ntext, task) if sym else format_document(ntext, ntitle or None)
        assert ex["negative"].decode() == want_neg
    titled = [(ex, r) for ex, r in zip(got, rows) if r[2]]
    assert titled and all(ex["positive"].decode().startswith(f"title: {r[2]} | text: ")
                          for ex, r in titled)
    assert any(ex["positive"].decode().startswith("title: none | text: ") for ex in got)


def test_raw_format_gives_each_text_alone_with_the_gecko_ids():
    """prompt_format raw: every query, positive and negative is its text alone (what
    `gecko embed` gives a raw-format model), and the duplicate-mask ids are the Gecko
    format's (they hash the texts, not the prompts)."""
    rows, _, ds = _real_rows()
    raw = list(tasks.gecko_format(ds, prompt_format="raw").as_numpy_iterator())
    gecko = list(tasks.gecko_format(ds).as_numpy_iterator())
    for r, g, (task, query, ptitle, ptext, ntitle, ntext) in zip(raw, gecko, rows):
        assert (r["query"].decode(), r["positive"].decode(), r["negative"].decode()) \
            == (query, ptext, ntext)
        for key in ("query_text_id", "positive_text_id", "negative_text_id"):
            assert r[key] == g[key]
    assert any(r["query"] != g["query"] for r, g in zip(raw, gecko))
    with pytest.raises(ValueError, match="prompt format"):
        tasks.gecko_format(ds, prompt_format="instructor")
