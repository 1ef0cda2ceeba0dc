"""The Gecko prompt's share of the query length: counted with the real tokenizer."""

import logging

import pytest

from gecko_jax import assets, unified_format
from gecko_jax.data import prompt_room
from gecko_jax.errors import GeckoError
from gecko_jax.tokenization import Tokenizer

FRET_TASK = "Given a sentence, find a passage that answers it"
SHORT_TASK = "title"


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_folder(assets.minilm_dir())


def test_room_is_what_the_tokenizer_leaves_for_the_query(tokenizer):
    room = prompt_room.query_room(tokenizer, [FRET_TASK, SHORT_TASK], 32)
    for task in (FRET_TASK, SHORT_TASK):
        # A query of `room` one-token words fills the length exactly; one more overflows.
        fits = unified_format.format_query(" ".join(["the"] * room[task]), task)
        assert len(tokenizer.encode([fits], 10_000)[0]) == 32
        over = unified_format.format_query(" ".join(["the"] * (room[task] + 1)), task)
        assert len(tokenizer.encode([over], 10_000)[0]) == 33
    assert room[SHORT_TASK] > room[FRET_TASK] > 0


def test_a_prompt_that_fills_the_query_length_is_refused(tokenizer, caplog):
    room16 = prompt_room.query_room(tokenizer, [FRET_TASK], 16)[FRET_TASK]
    assert room16 <= 0
    with pytest.raises(GeckoError, match=r"fret: query length 16 leaves no room for the query "
                                         rf"text: the prompt 'task: {FRET_TASK} \| query:' "
                                         rf"alone takes {16 - room16} tokens"):
        prompt_room.check_query_room(tokenizer, [FRET_TASK, SHORT_TASK], 16, where="fret")
    with caplog.at_level(logging.WARNING):
        room = prompt_room.check_query_room(tokenizer, [FRET_TASK], 16 - room16 + 3)
    assert room == {FRET_TASK: 3}
    assert "leaves 3 tokens of query text" in caplog.text


def test_examples_of_a_task_without_room_are_dropped_unless_none_is_left(tokenizer, caplog):
    from gecko_jax.data.formatting import Document, Example

    def ex(i, task):
        return Example(f"e{i}", task, f"query {i}", Document(f"passage {i}"))

    room16 = prompt_room.query_room(tokenizer, [FRET_TASK], 16)[FRET_TASK]
    assert room16 <= 0
    mixed = [ex(0, FRET_TASK), ex(1, SHORT_TASK), ex(2, FRET_TASK), ex(3, SHORT_TASK)]
    with caplog.at_level(logging.WARNING):
        kept = prompt_room.with_query_room(tokenizer, mixed, 16, where="fret")
    assert [e.id for e in kept] == ["e1", "e3"]
    assert "fret: dropped 2 of 4 examples whose task prompt fills the query length 16" \
        in caplog.text
    with pytest.raises(GeckoError, match="fret: query length 16 leaves no room"):
        prompt_room.with_query_room(tokenizer, [ex(0, FRET_TASK)], 16, where="fret")
