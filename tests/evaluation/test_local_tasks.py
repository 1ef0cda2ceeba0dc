"""Local tasks on real BBC News data and BEIR folders, encoded with the real MiniLM."""

import collections
import json

import numpy as np
import pytest

from gecko_jax.errors import GeckoError, InputError
from gecko_jax.evaluation import local_tasks as lt


def test_unknown_task_lists_known_ones():
    with pytest.raises(GeckoError) as err:
        lt.get_task("bbc_retrival")
    msg = str(err.value)
    assert "bbc_retrival" in msg
    for name in ("bbc_retrieval", "bbc_classification", "bbc_clustering", "beir:<folder>"):
        assert name in msg


def test_bbc_task_data_full_size():
    """Full data (no encoding): deduplicated, 5 categories; scored articles held out."""
    ret = lt.load_bbc_retrieval()
    assert len(ret.queries) == len(ret.corpus) == len(ret.qrels) > 1000
    assert all(len(v) == 1 for v in ret.qrels.values())
    cls = lt.load_bbc_classification()
    train, test = collections.Counter(cls.train_labels), collections.Counter(cls.test_labels)
    assert set(train) == set(test) == {"business", "entertainment", "politics", "sport", "tech"}
    for c in train:
        assert 0.4 < test[c] / (train[c] + test[c]) < 0.6
    # Test items are the retrieval articles; the classifier fits on the others.
    assert sorted(cls.test_texts) == sorted(t for _, t in ret.corpus.values())
    assert not set(cls.train_texts) & set(cls.test_texts)
    clu = lt.load_bbc_clustering(limit=50)
    assert len(clu.texts) == 50 and len(set(clu.labels)) == 5
    assert set(clu.texts) <= set(cls.test_texts)


def _write_beir(folder, qrels_lines):
    (folder / "qrels").mkdir(parents=True)
    from gecko_jax.data.sources import read_bbc_news

    arts = read_bbc_news()[::300][:8]
    with open(folder / "corpus.jsonl", "w") as f:
        for i, a in enumerate(arts):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": a.body}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for i, a in enumerate(arts):
            f.write(json.dumps({"_id": f"q{i}", "text": a.headline}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels_lines) + "\n")
    return arts


def test_beir_broken_qrels_line_names_file_and_line(tmp_path):
    _write_beir(tmp_path, ["query-id\tcorpus-id\tscore", "q0\td0\t1", "q1 d1 1", "q2\td2\t1"])
    with pytest.raises(InputError) as err:
        lt.get_task(f"beir:{tmp_path}")
    assert err.value.line == 3
    assert str(tmp_path / "qrels" / "test.tsv") in str(err.value)
    assert ":3:" in str(err.value)


def test_beir_bad_score_and_bad_json(tmp_path):
    _write_beir(tmp_path, ["q0\td0\tyes"])
    with pytest.raises(InputError, match=r"test.tsv:1: score 'yes'"):
        lt.load_beir(tmp_path)
    with open(tmp_path / "corpus.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(InputError, match=r"corpus.jsonl:9: not valid JSON"):
        lt.load_beir(tmp_path)


def test_beir_retrieval_with_minilm(tmp_path, minilm_encoder):
    _write_beir(tmp_path, ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(8)])
    task = lt.get_task(f"beir:{tmp_path}")
    scores = task.evaluate(lt.CachedEncoder(minilm_encoder, format="raw"), dims=[384, 64])
    assert set(scores) == {384, 64}
    assert scores[384]["num_queries"] == 8
    # Real headlines find their own articles among 8 distinct topics.
    assert scores[384]["ndcg_at_10"] > 0.8 and scores[384]["recall_at_10"] == 1.0


def test_cached_encoder_formats_and_reuses(minilm_encoder):
    from gecko_jax.unified_format import format_document, format_query

    enc = lt.CachedEncoder(minilm_encoder, format="gecko")
    q = enc.encode_queries(["who won the match"], task="search result")
    d = enc.encode_documents(["The home side won 2-0."], titles=["Football"])
    assert set(enc._cache) == {format_query("who won the match", "search result"),
                               format_document("The home side won 2-0.", "Football")}
    np.testing.assert_allclose(q[0], minilm_encoder.encode(
        ["task: search result | query: who won the match"])[0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    raw = lt.CachedEncoder(minilm_encoder, format="raw")
    raw.encode_queries(["who won the match"], task="search result")
    assert set(raw._cache) == {"who won the match"}
