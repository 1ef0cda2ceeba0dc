"""The unified format (GECKO.md appendix B): symmetric / asymmetric targets,
NLI and classification-as-retrieval, and its label groups seen by the loss."""

import numpy as np
import pytest

from gecko_jax import assets, losses
from gecko_jax.data import formatting, mixtures, tasks
from gecko_jax.data.formatting import Example
from gecko_jax.data.training_records import Document
from gecko_jax.errors import GeckoError
from gecko_jax.tokenization import Tokenizer

LENGTHS = {"query": 24, "positive": 24, "negative": 24}


def _features(name, examples):
    mixtures.register_examples_task(name, examples, assets.minilm_dir())
    return tasks.load_examples(name, "train", LENGTHS)


def _ids(ex, side, i):
    return ex[f"{side}_ids"][i, :int(ex[f"{side}_mask"][i].sum())].tolist()


def test_symmetric_and_asymmetric_targets_through_seqio():
    examples = [
        Example("a", "question answering", "who wrote hamlet",
                Document("Hamlet is a play by Shakespeare.", "Hamlet"),
                Document("Macbeth is a tragedy.")),
        Example("b", "title", "Paris: History", Document("Paris was founded long ago.")),
        Example("c", "retrieve semantically similar text", "A man plays guitar.",
                Document("A man makes music."), Document("The man sleeps."), symmetric=True),
    ]
    want = [formatting.format_texts(e) for e in examples]
    assert want[0] == ("task: question answering | query: who wrote hamlet",
                       "title: Hamlet | text: Hamlet is a play by Shakespeare.",
                       "title: none | text: Macbeth is a tragedy.")
    assert want[1][1] == "title: none | text: Paris was founded long ago." and want[1][2] is None
    assert want[2][1:] == ("task: retrieve semantically similar text | query: A man makes music.",
                           "task: retrieve semantically similar text | query: The man sleeps.")
    ex = _features("test_fmt_unified", examples)
    tok = Tokenizer.from_folder(assets.minilm_dir())
    for i, (q, p, n) in enumerate(want):
        assert _ids(ex, "query", i) == tok.encode([q], 24)[0]
        assert _ids(ex, "positive", i) == tok.encode([p], 24)[0]
        if n is not None:
            assert _ids(ex, "negative", i) == tok.encode([n], 24)[0]
    assert ex["negative_text_id"][1] == losses.NO_ID and ex["negative_text_id"][2] >= 0


def test_nli_to_triples():
    rows = [("p1", "h-ent", "entailment"), ("p1", "h-con", "contradiction"),
            ("p1", "h-neu", "neutral"), ("p2", "h2-con", "contradiction"),
            ("p3", "h3-ent", "entailment"), ("p3", "h3-ent-b", "entailment"), ("p4", "x", "")]
    out = formatting.nli_examples(rows)
    assert [(e.query, e.positive.text, e.negative and e.negative.text) for e in out] == [
        ("p1", "h-ent", "h-con"), ("p3", "h3-ent", None), ("p3", "h3-ent-b", None)]
    assert all(e.symmetric and e.task == formatting.NLI_TASK for e in out)


ITEMS = [("cheap flights to rome", "travel"), ("hotel near the beach", "travel"),
         ("stock market falls", "finance"), ("bank raises rates", "finance")]


def test_classification_as_retrieval_triples():
    out = formatting.classification_examples(ITEMS * 3, "classify the topic", seed=1,
                                             unique_ids=True)
    labels = dict(ITEMS)
    assert len(out) == 12
    for uid, e in enumerate(out):
        texts = (e.query, e.positive.text, e.negative.text)
        suffix = f" (id: {uid})"
        assert all(t.endswith(suffix) for t in texts)       # one id per triple
        q, p, n = (t[:-len(suffix)] for t in texts)
        assert labels[p] == labels[q] and labels[n] != labels[q]
        assert e.symmetric and e.group == f"classification/{labels[q]}"
    # Every text in the set is distinct, although each raw text occurs many times.
    all_texts = [t for e in out for t in (e.query, e.positive.text)]
    assert len(set(all_texts)) == len(all_texts)


def _valid_block(ex):
    """The loss's validity mask over in-batch positives (block 1) and own negatives."""
    b = len(ex["query_text_id"])
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    q, p, n = (unit(rng.normal(size=s)).astype(np.float32) for s in ((b, 8), (b, 8), (b, 1, 8)))
    _, valid, _ = losses.gecko_logits(q, p, n, tau=0.05, query_ids=ex["query_text_id"],
                                      positive_ids=ex["positive_text_id"],
                                      negative_ids=ex["negative_text_id"][:, None])
    return np.asarray(valid)[:, :b], np.asarray(valid)[:, b]


def test_label_groups_mask_same_label_items_for_the_loss():
    # Two items per label: a1's positive is a2 and a2's is a1. The label group gives
    # both rows' query and positive one id, so the loss drops the other row's
    # positive and query as negatives; rows of the other label stay negatives, and
    # so does every row's own hard negative (another label). Appending the paper's
    # unique ids changes the texts, not the masks.
    for unique_ids in (False, True):
        out = formatting.classification_examples(ITEMS, "topic", unique_ids=unique_ids)
        assert [e.group for e in out] == ["classification/travel"] * 2 + [
            "classification/finance"] * 2
        ex = _features(f"test_fmt_cls_groups_{unique_ids}", out)
        qid, pid = ex["query_text_id"], ex["positive_text_id"]
        assert (qid == pid).all() and qid[0] == qid[1] != qid[2] == qid[3]
        assert not set(ex["negative_text_id"]) & set(qid)
        block, neg = _valid_block(ex)
        same = np.array([[e.group == f.group for f in out] for e in out])
        np.testing.assert_array_equal(block, ~same | np.eye(4, dtype=bool))
        assert neg.all()


def test_classification_needs_two_labels():
    with pytest.raises(GeckoError, match="at least two labels.*'only'"):
        formatting.classification_examples([("a", "only"), ("b", "only"), ("c", "only")], "t",
                                           name="one-label set")
    with pytest.raises(GeckoError, match="no label has two items"):
        formatting.classification_examples([("a", "x"), ("b", "y")], "t")


def test_text_ids_share_a_query_and_include_the_title():
    """Through seqio: two positives of one NLI premise share the query id, so the
    loss masks each as the other's negative; a document's id includes its title."""
    rows = [("p1", "h-a", "entailment"), ("p1", "h-b", "entailment"),
            ("p2", "h-c", "entailment")]
    nli = formatting.nli_examples(rows)
    docs = [Example("d0", "qa", "q0", Document("same text", "Title A")),
            Example("d1", "qa", "q1", Document("same text", "Title B")),
            Example("d2", "qa", "q2", Document("same text", "Title A")),
            Example("d3", "qa", "q3", Document("same text"))]
    ex = _features("test_fmt_qid", nli + docs)
    qid, pid = ex["query_text_id"], ex["positive_text_id"]
    assert qid[0] == qid[1] != qid[2]
    assert pid[3] != pid[4] and pid[3] == pid[5] and pid[6] not in (pid[3], pid[4])
    block, _ = _valid_block(ex)
    assert block[0, 0] and block[1, 1] and not block[0, 1] and not block[1, 0]
    assert block[0, 2] and block[3, 4] and not block[3, 5]
