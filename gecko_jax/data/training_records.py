"""Reader (and writer) of FRet training records in JSONL.

One record per line (DESIGN.md's FRet record; extra keys are kept out of the way):

    {"id": "...", "task": "...", "query": "...",
     "positive": {"title": "...", "text": "..."},
     "negative": {"title": "...", "text": "..."}}      # negative optional

Every problem names the file and the 1-based line: a record with no `query`,
an empty positive, a line that is not JSON. A `negative` that is null, {} or
has empty text counts as absent (in-batch negatives still apply).
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from typing import Iterable, Iterator, Sequence

from gecko_jax.errors import InputError
from gecko_jax.textio import read_jsonl
from gecko_jax.unified_format import DEFAULT_TASK


@dataclasses.dataclass(frozen=True)
class Document:
    text: str
    title: str = ""


@dataclasses.dataclass(frozen=True)
class FRetRecord:
    id: str
    task: str
    query: str
    positive: Document
    negative: Document | None = None

    def to_json(self) -> dict:
        out = {"id": self.id, "task": self.task, "query": self.query,
               "positive": dataclasses.asdict(self.positive)}
        if self.negative is not None:
            out["negative"] = dataclasses.asdict(self.negative)
        return out


def _string(value, path, line, what) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(path, f"{what} must be a string, got {type(value).__name__}", line)
    return value


def _document(obj, path, line, what) -> Document | None:
    if obj is None:
        return None
    if isinstance(obj, str):            # a bare string is the text
        obj = {"text": obj}
    if not isinstance(obj, dict):
        raise InputError(path, f"{what} must be an object with title/text", line)
    text = _string(obj.get("text"), path, line, f"{what}.text")
    if not text.strip():
        return None
    return Document(text=text, title=_string(obj.get("title"), path, line, f"{what}.title"))


def parse_record(obj, path: str | os.PathLike, line: int) -> FRetRecord:
    """Validates one decoded JSON object. Raises InputError(path, ..., line)."""
    if not isinstance(obj, dict):
        raise InputError(path, "record must be a JSON object", line)
    if "query" not in obj:
        raise InputError(path, "record has no 'query'", line)
    query = _string(obj["query"], path, line, "query")
    if not query.strip():
        raise InputError(path, "record has an empty 'query'", line)
    positive = _document(obj.get("positive"), path, line, "positive")
    if positive is None:
        raise InputError(path, "record has no positive text ('positive.text' empty or missing)",
                         line)
    negative = _document(obj.get("negative"), path, line, "negative")
    task = _string(obj.get("task"), path, line, "task").strip() or DEFAULT_TASK
    rid = obj.get("id")
    rid = f"{posixpath.basename(os.fspath(path))}:{line}" if rid is None else str(rid)
    return FRetRecord(id=rid, task=task, query=query, positive=positive, negative=negative)


def read_records(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[FRetRecord]:
    """Records of one or more JSONL files, in file then line order. Blank lines skipped."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in paths:
        for line_no, obj in read_jsonl(path):
            yield parse_record(obj, path, line_no)


def write_records(path: str | os.PathLike, records: Iterable[FRetRecord]) -> int:
    """Writes JSONL (local or a URI, through etils.epath); returns the number of records."""
    from gecko_jax import paths as paths_lib

    path = paths_lib.as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for rec in records:
            f.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def wikipedia_section_records(articles, max_words: int = 120, hard_negatives: bool = True,
                              task: str = DEFAULT_TASK
                              ) -> list[FRetRecord]:
    """(article: section title -> section text) pairs, the paper's title/body pre-finetuning kind.

    Args:
      articles: gecko_jax.data.sources.WikiArticle list.
      max_words: section text is cut to its first `max_words` words.
      hard_negatives: the next section of the same article is the negative (a near
        miss: same topic, wrong heading); articles with one section get none.
    Lead sections (no heading) use the article title alone as the query. The task
    text is short on purpose: with a 32-token query budget a long task description
    would crowd the query itself out.
    """
    out = []
    for art in articles:
        for i, sec in enumerate(art.sections):
            query = f"{art.title}: {sec.title}" if sec.title else art.title
            text = " ".join(sec.text.split()[:max_words])
            neg = None
            if hard_negatives and len(art.sections) > 1:
                other = art.sections[(i + 1) % len(art.sections)]
                neg = Document(text=" ".join(other.text.split()[:max_words]))
            out.append(FRetRecord(id=f"{art.title}#{i}", task=task, query=query,
                                  positive=Document(text=text), negative=neg))
    return out
