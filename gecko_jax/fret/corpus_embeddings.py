"""The initial embedder's corpus vectors, computed in fixed chunks of corpus rows.

Both runners embed the corpus chunk by chunk (`CHUNK_ROWS` rows each): the local
runner in a loop, the Beam runner as a pipeline stage (one encoder per worker,
chunks spread over the workers). A chunk's vectors depend only on its rows, so
the two runners produce the same bytes and a chunk is a unit of resume:

    corpus_embeddings/chunk-CCCCC-of-NNNNN.npy   float32 [rows of chunk, d], atomic
    corpus_embeddings.npy                          all chunks concatenated [N, d]
"""

from __future__ import annotations

import io
import logging
import pathlib
import time

import numpy as np

from gecko_jax import textio

log = logging.getLogger(__name__)

CHUNK_ROWS = 2048
FOLDER = "corpus_embeddings"
FILE = "corpus_embeddings.npy"


def chunk_ranges(num_rows: int, chunk_rows: int | None = None) -> list[tuple[int, int]]:
    """[(first row, end row)] of each chunk (default `CHUNK_ROWS` rows), in order."""
    chunk_rows = CHUNK_ROWS if chunk_rows is None else chunk_rows
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    return [(lo, min(lo + chunk_rows, num_rows)) for lo in range(0, num_rows, chunk_rows)]


def chunk_path(out_dir: pathlib.Path, chunk: int, num_chunks: int) -> pathlib.Path:
    return pathlib.Path(out_dir) / FOLDER / f"chunk-{chunk:05d}-of-{num_chunks:05d}.npy"


def save_npy(path: pathlib.Path, array: np.ndarray) -> None:
    """np.save, atomically (a killed writer leaves no partial file)."""
    buf = io.BytesIO()
    np.save(buf, array)
    textio.atomic_write_bytes(path, buf.getvalue())


def embed_chunk(out_dir, encoder, titles: list[str], texts: list[str], fmt: str | None,
                chunk: int, num_chunks: int) -> pathlib.Path:
    """Embeds one chunk's documents and writes its file (skipped when it exists)."""
    path = chunk_path(out_dir, chunk, num_chunks)
    if not path.exists():
        save_npy(path, encoder.encode_documents(texts, titles=titles, format=fmt))
    return path


def pending_chunks(out_dir, num_rows: int) -> list[tuple[int, int, int]]:
    """[(chunk, first row, end row)] of the chunks whose file is missing."""
    ranges = chunk_ranges(num_rows)
    return [(c, lo, hi) for c, (lo, hi) in enumerate(ranges)
            if not chunk_path(out_dir, c, len(ranges)).exists()]


def assemble(out_dir, num_rows: int) -> np.ndarray:
    """The chunk files concatenated [N, d]; also written as corpus_embeddings.npy."""
    out_dir = pathlib.Path(out_dir)
    path = out_dir / FILE
    if path.exists():
        emb = np.load(path)
        if emb.shape[0] == num_rows:
            return emb
    n = len(chunk_ranges(num_rows))
    missing = [c for c in range(n) if not chunk_path(out_dir, c, n).exists()]
    if missing:
        raise RuntimeError(f"corpus embedding chunks {missing[:5]} of {n} are missing")
    emb = np.concatenate([np.load(chunk_path(out_dir, c, n)) for c in range(n)])
    save_npy(path, emb)
    return emb


def corpus_embeddings(out_dir, encoder, corpus, fmt: str | None) -> np.ndarray:
    """All chunks (those not on disk are embedded here, in order), concatenated [N, d]."""
    t0 = time.time()
    todo = pending_chunks(out_dir, len(corpus))
    n = len(chunk_ranges(len(corpus)))
    for c, lo, hi in todo:
        embed_chunk(out_dir, encoder, corpus.titles[lo:hi], corpus.texts[lo:hi], fmt, c, n)
    if todo:
        log.info("embedded %d corpus chunks in %.1fs", len(todo), time.time() - t0)
    return assemble(out_dir, len(corpus))
