"""Shared fixtures for trainer tests: real Wikipedia pairs as JSONL, a tiny BERT config."""

import functools

import pytest

from gecko_jax import assets
from gecko_jax.data import sources, training_records

# Small enough for many compiled steps on 2 cores; real tokenizer, random weights.
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64)
LENGTHS = {"query": 16, "positive": 32, "negative": 32}


@pytest.fixture(scope="session")
def wiki_records():
    return training_records.wikipedia_section_records(sources.read_wikipedia())


@pytest.fixture(scope="session")
def wiki_jsonl(tmp_path_factory, wiki_records):
    path = tmp_path_factory.mktemp("wiki") / "pairs.jsonl"
    training_records.write_records(path, wiki_records[:256])
    return path


def tiny_gin_file(path, jsonl, steps: int, checkpoint_every: int, warmup: int,
                  log_every: int, export: bool = True, streaming: bool = True):
    """A `gecko train` gin file: the fine-tuning run config with a tiny random BERT on
    `jsonl` (batch 16, query/doc lengths 16/32); streaming=False reads it into memory."""
    path.write_text(f"""
include 'gin_configs/runs/finetune.gin'
train.model_fn = @random_model
random_model.config = {TINY_BERT!r}
random_model.tokenizer_folder = {str(assets.minilm_dir())!r}
TRAIN_FILES = [{str(jsonl)!r}]
BATCH_SIZE = 16
TRAIN_STEPS = {steps}
QUERY_LENGTH = 16
DOC_LENGTH = 32
LEARNING_RATE = 3e-4
WARMUP_STEPS = {warmup}
train.checkpoint_every = {checkpoint_every}
train.log_every = {log_every}
train.export = {export}
train.streaming = {streaming}
""")
    return path


def tiny_model_fn(seed=0):
    from gecko_jax.training import model_fns

    return functools.partial(model_fns.random_model, config=TINY_BERT,
                             tokenizer_folder=assets.minilm_dir(), seed=seed)


@pytest.fixture(scope="session")
def wiki_examples(wiki_jsonl):
    from gecko_jax.data import tasks

    tasks.register_jsonl_task("test_wiki_pairs", {"train": [wiki_jsonl]}, assets.minilm_dir())
    return tasks.load_examples("test_wiki_pairs", "train", LENGTHS)
