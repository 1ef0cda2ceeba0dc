"""File helpers at the bottom of the package: reading text inputs (JSONL or one-text-per-line
.txt) with errors that name file and line, and atomic writes (a killed process leaves
the old file or the new one, never half of one). Paths may be local or URIs (gs://,
memory://): they go through etils.epath (gecko_jax/paths.py, which also says how a
write is atomic on an object store)."""

from __future__ import annotations

import json
import os
import pathlib

from gecko_jax import paths
from gecko_jax.errors import InputError


def read_bytes(path) -> bytes:
    """A file's bytes (a local path or a URI), decompressed when its name ends in .gz."""
    import gzip

    path = paths.as_path(path)
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.name.endswith(".gz") else data
    except (OSError, EOFError) as err:
        raise InputError(path, f"cannot be read ({getattr(err, 'strerror', None) or err})"
                         ) from None


def _lines(path):
    """(line number, decoded line without newline); invalid UTF-8 names its line."""
    data = read_bytes(path)
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InputError(path, f"invalid UTF-8 at byte {err.start} of the line", number) from None


def read_jsonl(path: str | os.PathLike, required: tuple[str, ...] = ()):
    """Yields (line number, object) for each non-blank line of a JSONL file.

    Every object must be a JSON object holding the `required` keys; any failure
    (missing file, invalid UTF-8, bad JSON, missing key) names the file and line.
    """
    path = paths.as_path(path)
    if not path.is_file():
        raise InputError(path, "no such JSONL file")
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(path, f"not valid JSON ({err.msg} at column {err.colno})", number) from None
        if not isinstance(obj, dict):
            raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", number)
        missing = [k for k in required if k not in obj]
        if missing:
            raise InputError(path, f"object lacks {missing}", number)
        yield number, obj


def read_texts(path: str | os.PathLike) -> tuple[list[str], list[str | None]]:
    """Texts and titles from JSONL (`{"text": ..., "title": optional}`) or .txt lines.

    A .txt file gives one text per line (titles all None); blank JSONL lines are skipped.
    """
    path = paths.as_path(path)
    if not path.is_file():
        raise InputError(path, "input file does not exist")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        texts, titles = [], []
        for number, obj in read_jsonl(path):
            text, title = obj.get("text"), obj.get("title")
            if not isinstance(text, str):
                raise InputError(path, 'each line needs a string field "text"', number)
            if title is not None and not isinstance(title, str):
                raise InputError(path, '"title" must be a string when present', number)
            texts.append(text)
            titles.append(title)
        return texts, titles
    texts = [line for _, line in _lines(path)]
    return texts, [None] * len(texts)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Local: a temporary sibling, fsync, rename over `path`. URI: one object upload."""
    paths.write_bytes_atomic(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`text` as UTF-8, atomically (atomic_write_bytes)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """`obj` as indented, key-sorted JSON (values JSON cannot hold are written as str)."""
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True,
                                       default=str) + "\n")


def remove_partials(folder: pathlib.Path) -> int:
    """Deletes the temporary files of atomic writes a killed process left; returns how many.
    (Only local writes use temporary files.)"""
    if paths.is_remote(folder):
        return 0
    n = 0
    for p in pathlib.Path(folder).rglob(".*.tmp*"):
        p.unlink(missing_ok=True)
        n += 1
    return n
