"""FRet stage 1: seed passage -> (task, query) written by the teacher LLM.

One fixed few-shot prompt P_QG serves every passage. The reply is parsed as
JSON first, then with lenient patterns (weak teachers drop quotes, braces or
keys); an invalid reply is retried with a new sampling seed up to
`max_attempts`, then the passage is dropped with a counted reason. Accepted
pairs pass filters: non-empty, not too long, not copied from the passage, not
a copy of a few-shot example.

Determinism (what resume and the Beam runner rely on): a call's samples depend
only on (seed, shard, attempt) and the list of prompts in the call; shards have
a fixed composition, so the same shard gives the same queries in any process.

Teacher faults: a backend call that raises is retried (`call_with_retries`)
with backoff; every fault is counted and logged. A reply that is garbage is an
ordinary parse failure.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import re
import time
import zlib
from typing import Callable, Sequence

from gecko_jax.fret import prompts as prompts_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    max_attempts: int = 3          # sampling attempts per passage before dropping it
    max_query_words: int = 48      # longer queries are dropped ("too_long")
    max_task_words: int = 32
    min_query_chars: int = 3
    copy_ngram: int = 8            # a query whose first n words appear verbatim is "copied"
    call_retries: int = 3          # retries of a backend call that raises
    retry_backoff_s: float = 0.5


@dataclasses.dataclass(frozen=True)
class Generated:
    passage_id: str
    task: str
    query: str
    attempts: int
    raw: str  # the reply the pair was parsed from (for audits)


class ParseFailure(ValueError):
    """A reply that is not a (task, query) pair; `reason` is a short counter key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TeacherError(RuntimeError):
    """The teacher kept failing after all retries."""


# -- parsing (pure) ----------------------------------------------------------------------

_FIELD = r'["\']?{key}["\']?\s*[:=]\s*'
_QUOTED = r'"((?:[^"\\]|\\.)*)"'


def _clean(text: str, quotes: bool = False) -> str:
    """Collapses whitespace; with quotes, strips stray quotes around a lenient value."""
    text = text.strip()
    if quotes:
        text = text.strip('"\'').strip()
    return re.sub(r"\s+", " ", text)


def _lenient_field(text: str, key: str, last: bool) -> str | None:
    """Value of `key` in JSON-ish or 'Key: value' text; None when absent."""
    m = re.search(_FIELD.format(key=key) + _QUOTED, text, re.I)
    if m:
        return m.group(1)
    # Unterminated string: the value runs to the next key, brace or line end.
    m = re.search(_FIELD.format(key=key) + r'"?([^"\n{}]*)', text, re.I)
    if m:
        value = m.group(1)
        if not last:
            value = re.split(r',\s*["\']?\w+["\']?\s*:', value)[0]
        return value
    return None


def parse_task_query(text: str) -> tuple[str, str]:
    """(task, query) from a teacher reply (including the prompt's response prefix).

    JSON first ({"task": ..., "query": ...} anywhere in the text), then lenient
    key patterns. Raises ParseFailure('no_json' | 'no_task' | 'no_query').
    """
    start = text.find("{")
    if start >= 0:
        end = text.find("}", start)
        candidate = text[start:end + 1] if end > 0 else None
        if candidate:
            try:
                obj = json.loads(candidate)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("task"), str) \
                    and isinstance(obj.get("query"), str):
                return _clean(obj["task"]), _clean(obj["query"])
    task = _lenient_field(text, "task", last=False)
    query = _lenient_field(text, "query", last=True)
    if task is None and query is None:
        raise ParseFailure("no_json")
    if not task or not _clean(task, True):
        raise ParseFailure("no_task")
    if not query or not _clean(query, True):
        raise ParseFailure("no_query")
    return _clean(_unescape(task), True), _clean(_unescape(query), True)


def _unescape(s: str) -> str:
    try:
        return json.loads(f'"{s}"')
    except json.JSONDecodeError:
        return s


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def check_pair(task: str, query: str, passage: str, cfg: GenerateConfig,
               examples: set[str] = frozenset()) -> str | None:
    """The filter that rejects (task, query) for this passage, or None if it passes."""
    if len(query) < cfg.min_query_chars or not _words(query):
        return "empty_query"
    if not _words(task):
        return "empty_task"
    if len(_words(query)) > cfg.max_query_words:
        return "too_long"
    if len(_words(task)) > cfg.max_task_words:
        return "task_too_long"
    if query.strip().lower() in examples:
        return "copied_example"
    q, p = _words(query), " ".join(_words(passage))
    n = min(cfg.copy_ngram, len(q))
    # Copied: the whole query (if short) or its first n words appear verbatim in the passage.
    if len(q) >= 4 and " ".join(q[:n]) in p:
        return "copied_from_passage"
    return None


# -- calls with retries ------------------------------------------------------------------

def call_with_retries(fn: Callable, what: str, counts: collections.Counter, retries: int,
                      backoff_s: float):
    """fn() retried `retries` times when it raises; each fault counted as teacher_errors."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - any backend fault is retried, then raised
            counts["teacher_errors"] += 1
            log.warning("teacher %s failed (try %d of %d): %s: %s", what, attempt + 1,
                        retries + 1, type(err).__name__, err)
            if attempt == retries:
                raise TeacherError(f"teacher {what} failed {retries + 1} times: {err}") from err
            time.sleep(backoff_s * (2 ** attempt))


def attempt_seed(seed: int, shard: int, attempt: int) -> int:
    """Sampling seed of one (shard, attempt): stable across processes and runners."""
    return zlib.crc32(f"{seed}/{shard}/{attempt}".encode()) & 0x7FFFFFFF


# -- stage 1 -----------------------------------------------------------------------------

def generate_queries(llm, passages: Sequence[tuple[str, str]], prompt: prompts_lib.Prompt,
                     cfg: GenerateConfig = GenerateConfig(), *, seed: int = 0, shard: int = 0,
                     counts: collections.Counter | None = None,
                     renderer: prompts_lib.Renderer = prompts_lib.COMPLETION) -> list[Generated]:
    """Stage 1 over a shard of seed passages.

    Args:
      llm: a gecko_jax.llm.base.LLM.
      passages: [(passage id, text)] in shard order.
      prompt: P_QG.
      seed, shard: sampling seeds derive from these and the attempt number.
      counts: a Counter updated with generated / parse_failures / dropped:<reason> /
        teacher_errors / attempts.
      renderer: the prompt style (completion text, or chat turns for a chat teacher).
    Returns:
      Generated pairs, in passage order, for passages that yielded a valid pair.
    """
    counts = counts if counts is not None else collections.Counter()
    examples = prompts_lib.example_queries(prompt)
    pending = list(range(len(passages)))
    results: dict[int, Generated] = {}
    last_reason: dict[int, str] = {}
    rendered = [renderer.qg(prompt, text) for _, text in passages]
    for attempt in range(cfg.max_attempts):
        if not pending:
            break
        prompts_ = [rendered[i][0] for i in pending]
        s = attempt_seed(seed, shard, attempt)
        replies = call_with_retries(
            lambda: prompt_generate(llm, prompts_, prompt, s), "generate", counts,
            cfg.call_retries, cfg.retry_backoff_s)
        if not isinstance(replies, list) or len(replies) != len(prompts_):
            counts["teacher_bad_replies"] += 1
            replies = [""] * len(prompts_)
        counts["attempts"] += len(prompts_)
        still = []
        for i, reply in zip(pending, replies):
            reply = reply if isinstance(reply, str) else ""
            try:
                task, query = parse_task_query(rendered[i][1] + reply)
            except ParseFailure as err:
                counts["parse_failures"] += 1
                counts[f"parse_failure:{err.reason}"] += 1
                last_reason[i] = "unparsable"
                still.append(i)
                continue
            reason = check_pair(task, query, passages[i][1], cfg, examples)
            if reason:
                counts[f"filtered:{reason}"] += 1
                last_reason[i] = reason
                still.append(i)
                continue
            results[i] = Generated(passages[i][0], task, query, attempt + 1, reply)
        pending = still
    for i in pending:
        counts[f"dropped:{last_reason[i]}"] += 1
        log.debug("dropped passage %s after %d attempts (%s)", passages[i][0],
                  cfg.max_attempts, last_reason[i])
    counts["generated"] += len(results)
    return [results[i] for i in sorted(results)]


def prompt_generate(llm, prompts_: list[str], prompt: prompts_lib.Prompt, seed: int) -> list[str]:
    return llm.generate(prompts_, max_new_tokens=int(prompt.option("max_new_tokens", 64)),
                        temperature=float(prompt.option("temperature", 0.8)),
                        top_p=float(prompt.option("top_p", 0.95)),
                        stop=list(prompt.option("stop", ["\n"])), seed=seed)
