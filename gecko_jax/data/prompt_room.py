"""Room left for the query after the Gecko prompt, per task, at a query length.

    room = query_room(tokenizer, ["find the article section under this heading"], 16)
    check_query_room(tokenizer, tasks, query_length)   # raises if a prompt leaves none
    kept = with_query_room(tokenizer, examples, query_length, where="gecko_fret")

`task: {task} | query: ` is part of every query sequence. A long task
description with a short query length cuts the query text away entirely: every
query of that task becomes the same token sequence, and training on it teaches
nothing but damage. This module counts the tokens the prompt leaves.
"""

from __future__ import annotations

import logging
from typing import Iterable

from gecko_jax import unified_format
from gecko_jax.errors import GeckoError

log = logging.getLogger(__name__)

WARN_BELOW = 8      # tokens of query text; fewer is logged as a warning


def query_room(tokenizer, tasks: Iterable[str], query_length: int) -> dict[str, int]:
    """{task: tokens of query text that fit after the prompt} (negative: the prompt alone
    is longer than query_length).

    Args:
      tokenizer: gecko_jax.tokenization.Tokenizer (counts its special tokens too).
      tasks: task descriptions.
    """
    tasks = sorted(set(tasks))
    prompts = [unified_format.query_prefix(t).rstrip() for t in tasks]
    encodings = tokenizer.backend.encode_batch(prompts)
    return {t: query_length - len(e.ids) for t, e in zip(tasks, encodings)}


def check_query_room(tokenizer, tasks: Iterable[str], query_length: int,
                     where: str = "training") -> dict[str, int]:
    """query_room, raising GeckoError when a task's prompt leaves no query text and
    logging a warning when it leaves fewer than WARN_BELOW tokens."""
    room = query_room(tokenizer, tasks, query_length)
    empty = {t: r for t, r in room.items() if r <= 0}
    if empty:
        task, r = min(empty.items(), key=lambda kv: kv[1])
        raise GeckoError(
            f"{where}: query length {query_length} leaves no room for the query text: the "
            f"prompt 'task: {task} | query:' alone takes {query_length - r} tokens "
            f"({len(empty)} of {len(room)} tasks cut to their prompt). Raise the query "
            f"length to at least {query_length - r + WARN_BELOW} (feature_lengths['query']; "
            "gecko distill --query-length)")
    _warn_short(room, query_length, where)
    return room


def _warn_short(room: dict[str, int], query_length: int, where: str) -> None:
    for task, r in sorted(room.items(), key=lambda kv: kv[1]):
        if 0 < r < WARN_BELOW:
            log.warning("%s: query length %d leaves %d tokens of query text after the "
                        "prompt of task %r", where, query_length, r, task)


def with_query_room(tokenizer, examples: list, query_length: int, where: str = "training"
                    ) -> list:
    """The examples whose task prompt leaves room for query text.

    Examples of tasks without room are dropped with a warning (an LLM-written FRet
    task can be a long sentence); if no example is left, check_query_room's error is
    raised. Tasks with little room are warned about as in check_query_room.
    """
    room = query_room(tokenizer, {ex.task for ex in examples}, query_length)
    kept = [ex for ex in examples if room[ex.task] > 0]
    if not kept:
        check_query_room(tokenizer, room, query_length, where)
    dropped = len(examples) - len(kept)
    if dropped:
        worst = min(room, key=room.get)
        log.warning("%s: dropped %d of %d examples whose task prompt fills the query length "
                    "%d (e.g. 'task: %s | query:' takes %d tokens)", where, dropped,
                    len(examples), query_length, worst, query_length - room[worst])
    _warn_short(room, query_length, where)
    return kept
