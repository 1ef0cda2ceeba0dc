"""The repository describes the code, not how it was written: no tracked text file
refers to development tickets or sessions ("issue 12", "the issue's bound", "this
session", "work log"). Comments say why in terms of the code instead."""

import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    r"\bissue\s*#?\d+",
    r"\bthe issue'?s?\b",
    r"\b(this|last|previous|next) session\b",
    r"\bwork ?log\b",
)]

# This file spells the patterns out.
SKIP = {"tests/test_no_process_references.py"}


def _tracked_text_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e})")
    files = []
    for name in out.decode().split("\0"):
        path = REPO / name
        if not name or name in SKIP or not path.is_file():
            continue
        with open(path, "rb") as f:
            if b"\0" in f.read(8192):   # binary: model weights, arrays
                continue
        files.append(name)
    return files


def _references(name: str, text: str) -> list[str]:
    return [f"{name}:{i}: {line.strip()[:120]}"
            for i, line in enumerate(text.splitlines(), 1)
            if any(p.search(line) for p in PATTERNS)]


def test_no_tracked_file_refers_to_the_development_process():
    files = _tracked_text_files()
    assert any(f.startswith("gecko_jax/") for f in files)   # the listing found the tree
    found = []
    for name in files:
        text = (REPO / name).read_text(encoding="utf-8", errors="replace")
        found += _references(name, text)
    assert found == [], "development-process references:\n" + "\n".join(found)


def test_the_scan_catches_what_it_looks_for():
    text = ("x = 1  # measured in issue 17\n"
            "# within the issue's 1e-5\n"
            "ok = 'tissue 3'  # not a reference\n"
            "# as in This Session's run\n"
            "# see the work log\n"
            "# the issue of padding is handled below\n")
    assert [r.split(":")[1] for r in _references("f.py", text)] == ["1", "2", "4", "5", "6"]
