"""Classification as retrieval at the default lengths of every `gecko distill` student:
every BBC training example's same-label in-batch items are masked by the loss,
whatever the texts are cut to (data/formatting.py: label groups)."""

import numpy as np
import pytest

from gecko_jax import assets, losses
from gecko_jax.data import mixtures, prompt_room, tasks
from gecko_jax.recipes.distill import DistillConfig
from gecko_jax.recipes.distill_student import STUDENTS, get_student, student_defaults
from gecko_jax.tokenization import Tokenizer


def student_tokenizer(name):
    student = get_student(name)
    if not student.is_llm:
        return Tokenizer.from_folder(assets.minilm_dir())
    from gecko_jax.llm.loading import load_decoder
    from gecko_jax.models.llm_export import embedder_tokenizer
    from gecko_jax.training.llm_tower import _tokenizer_only

    lm_tok = _tokenizer_only(student.llm_source) or load_decoder(student.llm_source)[2]
    return embedder_tokenizer(lm_tok)


@pytest.fixture(scope="module")
def bbc_examples():
    return mixtures.bbc_classification()


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_every_bbc_training_example_is_masked_at_default_lengths(name, bbc_examples):
    cfg = DistillConfig(student=name, **student_defaults(name))
    lengths = {"query": cfg.query_length, "positive": cfg.doc_length,
               "negative": cfg.doc_length}
    tok = student_tokenizer(name)
    examples = prompt_room.with_query_room(tok, bbc_examples, lengths["query"], where=name)
    mixtures.register_examples_task(f"test_label_groups_{name}", examples, tok.folder)
    ex = tasks.load_examples(f"test_label_groups_{name}", "train", lengths, tok.pad_id)
    b = len(ex["query_text_id"])
    assert b == len(examples) > 450
    # The queries are longer than their length: the paper's appended id would be cut
    # away from them (documents may fit at 128 tokens; the masks hold either way).
    assert ex["query_mask"][:, -1].mean() > 0.9
    groups = np.array([e.group for e in examples])
    assert len(set(groups)) == 5 and all(g.startswith("bbc/") for g in groups)
    same = groups[:, None] == groups[None, :]
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    rng = np.random.default_rng(0)
    q, p, n = (unit(rng.normal(size=s)).astype(np.float32) for s in ((b, 4), (b, 4), (b, 1, 4)))
    _, valid, _ = losses.gecko_logits(q, p, n, tau=0.05, query_ids=ex["query_text_id"],
                                      positive_ids=ex["positive_text_id"],
                                      negative_ids=ex["negative_text_id"][:, None])
    valid = np.asarray(valid)
    eye = np.eye(b, dtype=bool)
    positives, own_negative, queries = valid[:, :b], valid[:, b], valid[:, b + 1:]
    # Same label: only the row's own positive is valid; other labels are negatives.
    np.testing.assert_array_equal(positives, ~same | eye)
    np.testing.assert_array_equal(queries, ~same)
    assert own_negative.all()
