"""No evaluated text in any training example: the fine-tuning (and pre-finetuning)
sources against every local BBC evaluation and validation task, at several limits,
and against the Wikipedia validation task."""

import json

import pytest

from gecko_jax.data import mixtures, sources
from gecko_jax.evaluation import local_tasks as lt
from gecko_jax.data import splits
from gecko_jax.fret import corpus

LIMITS = (None, 600, 200)


@pytest.fixture(scope="module")
def articles():
    return sources.read_bbc_news(dedup=True)


@pytest.fixture(scope="module")
def fret_file(tmp_path_factory):
    """Everything FRet can put into training from the shipped corpora: every
    Wikipedia and every BBC passage as a record's positive (FRet on either corpus; the
    BBC one with its evaluation articles too: the FRet loader must drop them)."""
    path = tmp_path_factory.mktemp("fret") / "records.jsonl"
    rows = corpus.wikipedia_passages() + corpus.bbc_passages(exclude_evaluation=False)
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"id": f"r{i}", "task": "search result", "query": f"q {i}",
                                "positive": {"title": r["title"], "text": r["text"]}}) + "\n")
    return path


@pytest.fixture(scope="module")
def training(fret_file):
    """The sources of gin_configs/mixtures/finetune_default.gin and runs/prefinetune.gin
    (bbc_title_body: an optional pre-finetuning source)."""
    return (mixtures.wikipedia_sections() + mixtures.bbc_classification()
            + mixtures.jsonl_examples([str(fret_file)]) + mixtures.wikipedia_title_body()
            + mixtures.bbc_title_body())


def _haystack(examples) -> str:
    parts = []
    for ex in examples:
        parts.append(ex.query)
        for d in (ex.positive, ex.negative):
            if d is not None:
                parts += [d.title, d.text]
    return "\n".join(splits.normalise_text(p) for p in parts)


def _scored(task: str, limit, articles):
    """(ids, texts) a task scores, checked against what its loader really returns."""
    ids = splits.bbc_task_split(task, articles, limit).scored
    by_id = {a.id: a for a in articles}
    data = lt.get_task(task).load(limit)
    bodies = sorted(by_id[i].body for i in ids)
    if task in ("bbc_retrieval", "bbc_val_retrieval"):
        assert sorted(t for _, t in data.corpus.values()) == bodies
        assert sorted(data.queries.values()) == sorted(by_id[i].headline for i in ids)
        texts = list(data.queries.values()) + [t for _, t in data.corpus.values()]
    elif task == "bbc_classification":
        assert sorted(data.test_texts) == bodies
        texts = data.test_texts
    else:
        assert sorted(data.texts) == bodies
        texts = data.texts
    return ids, texts


def _overlap(training_examples, articles, limits=LIMITS) -> list[str]:
    train_ids = {ex.id.split(":", 1)[1] for ex in training_examples if ex.id.startswith("bbc:")}
    hay = _haystack(training_examples)
    found, scored_texts = [], {}
    for limit in limits:
        for task in splits.BBC_TASKS + splits.BBC_VALIDATION_TASKS:
            ids, texts = _scored(task, limit, articles)
            found += [f"{task}@{limit}: id {i}" for i in set(ids) & train_ids]
            for t in texts:
                scored_texts.setdefault(splits.text_key(t), f"{task}@{limit}: text {t[:60]!r}")
    # A headline of four words or fewer ("Prime minister's questions") turns up inside
    # unrelated text; an evaluated text counts as a leak from five (normalised) words on.
    return found + [where for key, where in scored_texts.items()
                    if len(key.split()) > 4 and key in hay]


def test_no_evaluated_text_in_training(training, articles):
    assert sum(ex.id.startswith("bbc:") for ex in training) > 450
    problems = _overlap(training, articles)
    assert not problems, problems[:10]


def test_no_wikipedia_validation_text_in_training(training):
    """The Wikipedia validation task's queries and sections reach no training source
    (pre-finetuning's title/body pairs, fine-tuning's sections, a FRet corpus)."""
    data = lt.get_task("wiki_val_retrieval").load(None)
    assert len(data.queries) > 200
    hay = _haystack(training)
    leaked = [t for _, t in data.corpus.values() if splits.text_key(t) in hay]
    assert not leaked, leaked[:3]
    titles = splits.wikipedia_validation_titles(sources.read_wikipedia())
    trained_titles = {ex.positive.title for ex in training if ex.positive is not None}
    assert len(trained_titles & {a.title for a in sources.read_wikipedia()}) > 50
    assert not titles & trained_titles, sorted(titles & trained_titles)[:5]


def test_validation_pool_is_carved_from_the_training_pool(articles):
    """Validation never touches the held-out pool, training never touches either, and
    the three pools cover every article; whole near-duplicate groups stay together."""
    held = splits.bbc_held_out_ids(articles)
    val = splits.bbc_validation_ids(articles)
    train = {a.id for a in splits.bbc_training_articles(articles)}
    assert not held & val and not train & (held | val)
    assert len(held | val | train) == len(articles)
    assert len(val) > 400 and len(train) > 400
    for limit in (None, 200):
        for task in splits.BBC_VALIDATION_TASKS:
            assert set(splits.bbc_task_split(task, articles, limit).scored) <= val
    pool_of = {}
    for a in articles:
        where = "held" if a.id in held else "val" if a.id in val else "train"
        for key in (("h", splits.normalise_text(a.headline)), ("b", splits.text_key(a.body))):
            pool_of.setdefault(key, set()).add(where)
    assert all(len(v) == 1 for v in pool_of.values())


def test_overlap_check_catches_the_old_split(articles):
    """Training on every BBC article (the leak the split prevents, in the extreme) is caught."""
    leaky = mixtures.bbc_classification(exclude_eval_test=False)
    assert _overlap(leaky, articles, limits=(200,))


def test_scored_articles_are_held_out_at_every_limit(articles):
    held = splits.bbc_held_out_ids(articles)
    train = {a.id for a in splits.bbc_training_articles(articles)}
    val = splits.bbc_validation_ids(articles)
    assert not held & train and len(held | val | train) == len(articles)
    for limit in (None, 1000, 600, 200, 37, 5):
        for task in splits.BBC_TASKS:
            s = splits.bbc_task_split(task, articles, limit)
            assert set(s.scored) <= held and not set(s.fit) & held
            assert len(s.scored) == (limit or len(s.scored))
            # Every category scored (evenly spaced over a category-grouped pool).
            if limit is None or limit >= 5:
                assert {i.split("/")[0] for i in s.scored} == set(sources.BBC_CATEGORIES)
    # Near-duplicates (same normalised headline or body) share a pool.
    norm = {}
    for a in articles:
        for key in (("h", splits.normalise_text(a.headline)), ("b", splits.text_key(a.body))):
            norm.setdefault(key, set()).add(a.id in held)
    assert all(len(v) == 1 for v in norm.values())


def _write_beir(folder):
    """A small real BEIR folder whose train qrels touch the test split in every way:
    a query id judged in both, a test query's text under another id, a test-judged
    document as a training positive, and a copy of one under another id."""
    (folder / "qrels").mkdir(parents=True)
    docs = {f"d{i}": (f"Title {i}", f"Passage number {i} talks about topic {i} and "
                                     f"nothing else at all, plain words here.") for i in range(12)}
    docs["d11"] = ("Copy", docs["d2"][1])            # same text as test-judged d2
    queries = {f"q{i}": f"what is topic {i}" for i in range(10)}
    queries["q9"] = "What is topic 1?"                # test query q1's text, another id
    test = [("q0", "d0", 1), ("q1", "d1", 1), ("q1", "d5", 0), ("q2", "d2", 2)]
    train = [("q2", "d3", 1),      # query id evaluated
             ("q9", "d4", 1),      # query text evaluated
             ("q6", "d5", 1),      # document judged by a test query (grade 0 still scored)
             ("q7", "d11", 1),     # document text of a judged one
             ("q3", "d6", 1), ("q4", "d7", 1), ("q8", "d8", 1)]   # clean
    with open(folder / "corpus.jsonl", "w") as f:
        for d, (t, x) in docs.items():
            f.write(json.dumps({"_id": d, "title": t, "text": x}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for q, x in queries.items():
            f.write(json.dumps({"_id": q, "text": x}) + "\n")
    for name, rows in (("test", test), ("train", train)):
        (folder / "qrels" / f"{name}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows))
    return folder


def test_beir_evaluated_split_is_never_trained_on(tmp_path):
    """A BEIR folder used for both training (beir_examples) and evaluation (beir:<folder>):
    no evaluated query or judged document, by id or normalised text, at any limit."""
    from gecko_jax.errors import GeckoError

    folder = _write_beir(tmp_path / "beir")
    train = mixtures.beir_examples(str(folder))
    assert [ex.id for ex in train] == ["beir:q3:1", "beir:q4:2", "beir:q8:5"]
    train_texts = {splits.normalise_text(t) for ex in train
                   for t in (ex.query, ex.positive.text, ex.positive.title)}
    task = lt.get_task(f"beir:{folder}")
    for limit in (None, 2, 1):
        data = task.loader(limit)
        judged = {d for q in data.queries for d in data.qrels[q]}
        evaluated = [data.queries[q] for q in data.queries] + [data.corpus[d][1] for d in judged]
        assert data.queries and not {splits.normalise_text(t) for t in evaluated} & train_texts
    # Without the guard the same folder leaks (the check above would fail).
    leaky = mixtures.beir_examples(str(folder), exclude_eval_test=False)
    assert {ex.query for ex in leaky} >= {"what is topic 2", "What is topic 1?"}
    with pytest.raises(GeckoError, match="split evaluation scores"):
        mixtures.beir_examples(str(folder), split=splits.BEIR_EVAL_SPLIT)
    # A folder without an evaluated split trains on all its pairs.
    (folder / "qrels" / "test.tsv").unlink()
    assert len(mixtures.beir_examples(str(folder))) == 7
