"""Every training source on real local files: the Wikipedia sample, BBC News,
JSONL, a BEIR folder and tensorflow-datasets sets that the tests build in the
real raw formats with tfds's own builders (offline)."""

import json

import gin
import pytest

from gecko_jax.data import formatting, mixtures, sources
from gecko_jax.data import splits
from gecko_jax.errors import InputError


@pytest.fixture(autouse=True)
def _fresh_gin():
    """Sources read their defaults from gin: start from an empty config."""
    gin.clear_config()


@pytest.fixture(scope="module")
def wiki():
    return sources.read_wikipedia()


def test_wikipedia_passages_and_section_pairs(wiki):
    assert len(wiki) > 50
    passages = [p for art in wiki for p in sources.passages(art)]
    lengths = [len(p.split()) for p in passages]
    assert max(lengths) == 100 and sum(lengths) / len(lengths) > 70
    pairs = sources.section_pairs(wiki)
    titled = [(q, t) for q, t in pairs if ": " in q]
    assert len(pairs) > 1000 and len(titled) > len(pairs) / 2
    art = next(a for a in wiki if len(a.sections) > 2)
    sec = art.sections[1]
    assert (f"{art.title}: {sec.title}", " ".join(sec.text.split()[:120])) in pairs
    ex = mixtures.wikipedia_title_body(limit=50)
    assert len(ex) == 50 and all(e.negative is None and not e.symmetric for e in ex)
    hard = mixtures.wikipedia_sections(limit=50)
    assert sum(e.negative is not None for e in hard) > 40


def test_bbc_classification_source():
    articles = sources.read_bbc_news()
    assert {a.category for a in articles} == set(sources.BBC_CATEGORIES)
    ex = mixtures.bbc_classification()
    # The held-out pool of data/splits.py (about half) and the validation pool carved
    # from the rest (about half of that) are left out.
    held_out = splits.bbc_held_out_ids(articles)
    held = held_out | splits.bbc_validation_ids(articles)
    assert 0.45 < len(held_out) / len(articles) < 0.55
    assert len(ex) == len(articles) - len(held)
    texts = {True: set(), False: set()}
    for a in articles:
        texts[a.id in held].add(f"{a.headline}. {' '.join(a.body.split()[:48])}")
    queries = {e.query.rsplit(" (id: ", 1)[0] for e in ex}
    assert queries <= texts[False] and not queries & texts[True]
    # Interleaved labels: a small limit still holds every category.
    first = mixtures.bbc_classification(limit=10)
    assert all(e.symmetric and e.negative is not None for e in first)
    assert len({e.id for e in first}) == 10


def test_bbc_title_body_source():
    articles = sources.read_bbc_news()
    train = {a.id: a for a in splits.bbc_training_articles(articles)}
    ex = mixtures.bbc_title_body(max_words=40)
    # One pair per training-pool article: its headline -> its first 40 words.
    assert sorted(e.id for e in ex) == sorted(f"bbc:{i}" for i in train)
    for e in ex:
        art = train[e.id[len("bbc:"):]]
        assert e.query == art.headline and e.positive.text == " ".join(art.body.split()[:40])
        assert e.negative is None and not e.symmetric and not e.group
    assert len(mixtures.bbc_title_body(limit=7)) == 7


def test_jsonl_source(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [{"task": "qa", "query": "q1", "positive": {"title": "T", "text": "p1"}},
            {"task": "sts", "query": "a b", "positive": "a c", "negative": "x y",
             "symmetric": True}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ex = mixtures.jsonl_examples([str(path)])
    assert [e.symmetric for e in ex] == [False, True]
    assert ex[1].negative.text == "x y" and ex[0].positive.title == "T"
    assert formatting.format_texts(ex[1]) == ("task: sts | query: a b", "task: sts | query: a c",
                                              "task: sts | query: x y")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(InputError) as err:
        mixtures.jsonl_examples([str(bad)])
    assert err.value.line == 2 and "bad.jsonl" in str(err.value)


def _beir(folder, qrels):
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": "d1", "title": "Paris", "text": "Paris is the capital of France."},
            {"_id": "d2", "title": "", "text": "Berlin is the capital of Germany."},
            {"_id": "d3", "title": "Rome", "text": "Rome is in Italy."}]
    queries = [{"_id": "q1", "text": "capital of france"},
               {"_id": "q2", "text": "capital of germany"},
               {"_id": "q3", "text": "unjudged query"}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return folder


def test_beir_source(tmp_path):
    folder = _beir(tmp_path / "beir", [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d3", 0)])
    pairs = sources.beir_pairs(folder)
    assert pairs == [("q1", "capital of france", ("Paris", "Paris is the capital of France.")),
                     ("q2", "capital of germany", ("", "Berlin is the capital of Germany."))]
    ex = mixtures.beir_examples(str(folder))
    assert formatting.format_texts(ex[0]) == (
        "task: search result | query: capital of france",
        "title: Paris | text: Paris is the capital of France.", None)
    assert formatting.format_texts(ex[1])[1] == \
        "title: none | text: Berlin is the capital of Germany."


def test_beir_qrel_missing_document_is_clear_error(tmp_path):
    folder = _beir(tmp_path / "beir", [("q1", "d1", 1), ("q2", "d9", 1)])
    with pytest.raises(InputError) as err:
        mixtures.beir_examples(str(folder))
    msg = str(err.value)
    assert "train.tsv" in msg and "not in corpus.jsonl" in msg and "d9" in msg


# ----------------------------------------------------------------------------- tfds
SNLI_HEADER = ("gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
               "sentence2_parse\tsentence1\tsentence2\tcaptionID\tpairID\tlabel1\n")
SNLI_ROWS = [  # (gold label, premise, hypothesis) in SNLI's own TSV layout
    ("entailment", "A man plays a guitar on stage.", "A man performs music."),
    ("contradiction", "A man plays a guitar on stage.", "The man is asleep at home."),
    ("neutral", "A man plays a guitar on stage.", "The man is famous."),
    ("entailment", "Two dogs run through snow.", "Animals are outside."),
    ("-", "Two dogs run through snow.", "The dogs are cold."),
    ("contradiction", "A child reads a book.", "The child is swimming."),
]
AG_ROWS = [(1, "Markets fall", "Stocks slid on Monday."), (2, "Cup final", "The team won 2-1."),
           (1, "Peace talks", "Leaders met in Geneva."),
           (2, "Open tennis", "She won in straight sets."),
           (3, "Oil prices", "Crude rose 3 percent."), (4, "New chip", "A faster processor ships.")]


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """snli and ag_news_subset prepared by tfds's real builders from local raw files."""
    import csv

    import tensorflow_datasets as tfds

    raw = tmp_path_factory.mktemp("raw")
    (raw / "snli_1.0_train.txt").write_text(
        SNLI_HEADER + "".join(f"{g}\t-\t-\t-\t-\t{p}\t{h}\tc\tp\t{g}\n" for g, p, h in SNLI_ROWS))
    with open(raw / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows(AG_ROWS)

    class SnliLocal(tfds.builder_cls("snli")):
        """The real SNLI builder (features, TSV parsing), reading a local file."""
        name = "gecko_test_snli"

        def _split_generators(self, dl_manager):
            return [tfds.core.SplitGenerator(
                name="train", gen_kwargs={"filepath": str(raw / "snli_1.0_train.txt")})]

    class AgNewsLocal(tfds.builder_cls("ag_news_subset")):
        name = "gecko_test_ag_news"

        def _split_generators(self, dl_manager):
            return [tfds.core.SplitGenerator(name="train",
                                             gen_kwargs={"path": str(raw / "train.csv")})]

    data_dir = tmp_path_factory.mktemp("tfds")
    for cls in (SnliLocal, AgNewsLocal):
        cls(data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


def test_tfds_nli_source(tfds_dir):
    rows = sources.read_tfds_nli("gecko_test_snli", data_dir=tfds_dir,
                                 spec=sources.TFDS_NLI["snli"])
    assert sorted(rows) == sorted((p, h, "" if g == "-" else g) for g, p, h in SNLI_ROWS)
    ex = mixtures.tfds_nli_examples("gecko_test_snli", data_dir=tfds_dir,
                                    spec=sources.TFDS_NLI["snli"])
    got = sorted((e.query, e.positive.text, e.negative.text if e.negative else None) for e in ex)
    assert got == [("A man plays a guitar on stage.", "A man performs music.",
                    "The man is asleep at home."),
                   ("Two dogs run through snow.", "Animals are outside.", None)]
    assert all(e.symmetric for e in ex)


def test_tfds_classification_source(tfds_dir):
    rows = sources.read_tfds_classification("gecko_test_ag_news", data_dir=tfds_dir,
                                            spec=sources.TFDS_CLASSIFICATION["ag_news_subset"])
    assert sorted(rows) == sorted((f"{t}. {d}", ["World", "Sports", "Business", "Sci/Tech"][c - 1])
                                  for c, t, d in AG_ROWS)
    ex = mixtures.tfds_classification_examples(
        "gecko_test_ag_news", data_dir=tfds_dir, task="classify news topics",
        spec=sources.TFDS_CLASSIFICATION["ag_news_subset"])
    assert len(ex) == 4                       # Business and Sci/Tech have one item each
    labels = dict(rows)
    for e in ex:
        strip = lambda t: t.rsplit(" (id: ", 1)[0]  # noqa: E731
        assert labels[strip(e.positive.text)] == labels[strip(e.query)]
        assert labels[strip(e.negative.text)] != labels[strip(e.query)]


def test_tfds_missing_set_is_clear_error(tmp_path):
    with pytest.raises(InputError, match="gecko_no_such_set"):
        sources.read_tfds_nli("gecko_no_such_set", data_dir=str(tmp_path), spec=sources.TfdsNLI())
    with pytest.raises(InputError, match="no NLI field table"):
        sources.read_tfds_nli("some_set", data_dir=str(tmp_path))
