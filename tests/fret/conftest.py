"""Shared FRet fixtures: the real SmolLM2 teacher and MiniLM embedder (loaded once per
test package through the pipeline's per-process cache), a tiny real Wikipedia corpus, and one
finished tiny run that several tests read."""

import json

import pytest


@pytest.fixture(scope="package")
def prompts():
    from gecko_jax.fret.prompts import load_prompts

    return load_prompts()


@pytest.fixture(scope="package")
def teacher():
    from gecko_jax.fret.pipeline import open_teacher

    return open_teacher("smollm2", max_batch=8)


@pytest.fixture(scope="package")
def embedder():
    from gecko_jax.fret.pipeline import open_embedder

    return open_embedder(None)


@pytest.fixture(scope="package")
def wiki_rows():
    from gecko_jax.fret.corpus import wikipedia_passages

    # Short passages keep the teacher's prompts (and the tests) small.
    return wikipedia_passages(words=40)


@pytest.fixture(scope="package")
def tiny_corpus(tmp_path_factory, wiki_rows):
    """24 real Wikipedia passages as FRet corpus JSONL."""
    path = tmp_path_factory.mktemp("fret_corpus") / "wiki24.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in wiki_rows[:24]))
    return path


# The stage tests count every passage as generated or dropped; filters (on by default)
# are tested on their own (test_filters.py).
FILTERS_OFF = dict(round_trip_k=None, round_trip_fraction=None, ql_floor=None,
                   dedup_jaccard=None)


def tiny_config(**kw):
    from gecko_jax.fret.filters import FilterConfig
    from gecko_jax.fret.generate import GenerateConfig
    from gecko_jax.fret.pipeline import FRetConfig
    from gecko_jax.fret.relabel import RelabelConfig

    rel = RelabelConfig(num_neighbors=kw.pop("num_neighbors", 3), max_passage_words=40,
                        negative=kw.pop("negative", "lowest"))
    base = dict(teacher="smollm2", limit=2, shard_size=1, max_batch=8, progress=False,
                tfrecord=False, generate=GenerateConfig(max_attempts=2), relabel=rel,
                filters=FilterConfig(**FILTERS_OFF))
    base.update(kw)
    return FRetConfig(**base)


@pytest.fixture(scope="package")
def finished_run(tmp_path_factory, tiny_corpus, teacher, embedder):
    """A finished local run (2 seed passages, N=3, TFRecords on): (dir, manifest)."""
    from gecko_jax.fret.pipeline import run_local

    out = tmp_path_factory.mktemp("fret_run") / "run"
    manifest = run_local(tiny_config(tfrecord=True), tiny_corpus, out, llm=teacher,
                         encoder=embedder)
    return out, manifest
