"""HF `tokenizers` behind a small interface: truncation, length buckets, padding.

Pitfall (ASSETS.md): MiniLM's tokenizer.json pads every input to 128 by default;
we always switch the library's padding off and pad ourselves to a length bucket,
so mean pooling only ever sees the mask we built.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import logging
import os
import pathlib
from typing import Sequence

import numpy as np

from gecko_jax.errors import GeckoError

log = logging.getLogger(__name__)

# Padded lengths the encoder is compiled for. Few enough that compilation stays
# cheap, fine enough that padding waste stays under ~25% on sorted batches.
BUCKETS = (8, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 448, 512)


def bucket_length(n: int, max_length: int | None = None,
                  buckets: Sequence[int] = BUCKETS) -> int:
    """The smallest bucket >= n (beyond the largest, a multiple of it), capped at
    max_length (itself a valid length). The teacher LLM uses coarser buckets."""
    i = bisect.bisect_left(buckets, n)
    length = buckets[i] if i < len(buckets) else -(-n // buckets[-1]) * buckets[-1]
    return length if max_length is None else min(length, max_length)


def batch_bucket(n: int, batch_size: int, multiple: int = 1) -> int:
    """Rows to pad a batch of n texts to: the smallest power of two >= n, rounded
    up to a multiple of `multiple` (the data shards), capped at batch_size."""
    rows = 1 << max(n - 1, 0).bit_length()
    return min(-(-rows // multiple) * multiple, batch_size)


def truncate_keep_closing(ids: Sequence[int], max_length: int, closing: int) -> list[int]:
    """The first max_length - closing ids and the `closing` last ones (a tokenizer's
    appended special tokens), as transformers truncates before adding them."""
    ids = list(ids)
    if len(ids) <= max_length:
        return ids
    if closing >= max_length:
        raise GeckoError(f"max_length {max_length} leaves no room for the text beside "
                         f"{closing} closing special token(s)")
    return ids[:max_length - closing] + ids[len(ids) - closing:]


def pad_batch(ids_list: list[list[int]], length: int, pad_id: int = 0):
    """Right-pads token id lists to `length`.

    Returns:
      ids [B, length] int32 and attention mask [B, length] int32 (1 = real token).
    """
    ids = np.full((len(ids_list), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(ids_list), length), dtype=np.int32)
    for row, seq in enumerate(ids_list):
        seq = seq[:length]
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    return ids, mask


@dataclasses.dataclass
class Tokenizer:
    """A WordPiece/BPE tokenizer from a model folder's tokenizer.json."""

    backend: object  # tokenizers.Tokenizer
    folder: pathlib.Path
    truncated_count: int = 0  # texts cut to max_length so far (for log lines)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "Tokenizer":
        import tokenizers

        folder = pathlib.Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise GeckoError(f"{folder}: no tokenizer.json (not a model folder?)")
        try:
            backend = tokenizers.Tokenizer.from_file(str(path))
        except Exception as err:  # the library raises a bare Exception
            raise GeckoError(f"{path}: cannot be read as a tokenizer: {err}") from None
        backend.no_padding()
        backend.no_truncation()
        return cls(backend=backend, folder=folder)

    @property
    def pad_id(self) -> int:
        pad = self.backend.token_to_id("[PAD]")
        return 0 if pad is None else pad

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @functools.cached_property
    def closing_count(self) -> int:
        """Special tokens the tokenizer appends after the text ([SEP] for BERT, EOS for
        an LLM tokenizer that adds one, 0 for Gemma's BOS-only rule)."""
        mask = self.backend.encode("a", add_special_tokens=True).special_tokens_mask
        n = 0
        while n < len(mask) and mask[len(mask) - 1 - n]:
            n += 1
        return n

    def encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids with special tokens, each cut to max_length.

        As transformers truncates: the text is cut and the closing special tokens
        ([SEP], or an LLM tokenizer's EOS) are kept, so a cut sequence ends as an
        uncut one does (last-token pooling reads that token)."""
        encodings = self.backend.encode_batch(list(texts))
        out, cut = [], 0
        for enc in encodings:
            ids = enc.ids
            if len(ids) > max_length:
                cut += 1
                ids = truncate_keep_closing(ids, max_length, self.closing_count)
            out.append(ids)
        if cut:
            self.truncated_count += cut
            log.info("truncated %d of %d texts to %d tokens", cut, len(texts), max_length)
        return out

    @functools.cached_property
    def prompt_markers(self) -> tuple[tuple[int, ...], ...]:
        """Token ids of each unified-format prompt marker (`| query:`, `| text:`) as they
        come out inside a formatted text, where the marker follows a word and a space
        and the text follows it (BPE vocabularies join a space to the next word)."""
        from gecko_jax import unified_format

        out = []
        for marker in unified_format.prompt_markers():
            head = self.backend.encode("task: x", add_special_tokens=False).ids
            full = self.backend.encode(f"task: x {marker.strip()} y", add_special_tokens=False).ids
            tail = self.backend.encode(" y", add_special_tokens=False).ids
            if full[:len(head)] != head or full[len(full) - len(tail):] != tail:
                raise GeckoError(f"{self.folder}: the prompt marker {marker!r} does not "
                                 "tokenize apart from its neighbours")
            out.append(tuple(full[len(head):len(full) - len(tail)]))
        return tuple(out)

    def save(self, folder: str | os.PathLike) -> None:
        """Writes tokenizer.json (+ the vocab/config files that transformers reads)."""
        import shutil

        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            if (self.folder / name).is_file():
                shutil.copy(self.folder / name, folder / name)
