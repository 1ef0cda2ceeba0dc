"""The released reference FRet set (data/fret_reference): it is what its manifest says,
was made as its README says, and holds no evaluated text."""

import hashlib
import json
import pathlib

from gecko_jax.data import splits
from gecko_jax.data.sources import read_bbc_news, read_wikipedia
from gecko_jax.fret import release
from gecko_jax.textio import read_bytes

FOLDER = pathlib.Path(__file__).resolve().parents[2] / "data" / "fret_reference"


def _records():
    return [json.loads(line) for line in
            read_bytes(FOLDER / release.RECORDS).decode("utf-8").splitlines()]


def test_the_set_is_what_its_manifest_says():
    manifest = release.verify(FOLDER)
    cfg = manifest["config"]
    assert manifest["models"]["teacher"] == "smollm2"
    assert cfg["limit"] == 1000 and cfg["teacher_dtype"] == "bfloat16"
    assert cfg["relabel"]["num_neighbors"] == 20 and cfg["relabel"]["negative"] == "rank:20"
    assert manifest["counts"]["passages"] == 1000
    assert manifest["release"]["records"] == len(_records()) >= 800
    assert "gecko fret --corpus fret_reference_corpus.jsonl" in manifest["release"]["command"]


def test_it_was_drawn_from_the_training_corpus_and_holds_no_evaluated_text(tmp_path):
    from gecko_jax.recipes import distill_fret

    manifest = release.verify(FOLDER)
    # The corpus it retrieved from is the shipped Wikipedia training corpus, byte for
    # byte: every validation article is left out of it (data/splits.py).
    corpus = distill_fret.fret_corpus(tmp_path, 0, ("wikipedia",))
    assert hashlib.sha256(corpus.read_bytes()).hexdigest() == manifest["config"]["corpus"]["sha256"]
    wiki_val = splits.wikipedia_validation_titles(read_wikipedia())
    held = splits.bbc_held_out_texts(read_bbc_news(dedup=True))
    for rec in _records():
        ids = [rec["seed_passage_id"], rec["positive"]["id"]] + (
            [rec["negative"]["id"]] if rec.get("negative") else []) + [
            c["id"] for c in rec.get("candidates", [])]
        titles = {i.removeprefix("wiki:").rpartition(":")[0] for i in ids}
        assert all(i.startswith("wiki:") for i in ids) and not titles & wiki_val, ids
        docs = [(d["title"], d["text"]) for d in (rec["positive"], rec.get("negative")) if d]
        assert not held.record_overlaps(rec["query"], docs), rec["id"]
