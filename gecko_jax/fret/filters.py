"""FRet quality filters: pure functions over one shard's generated queries.

  round trip     (Promptagator, Dai et al. 2022, "round-trip consistency"):
                 keep a query only if its seed passage, or the re-labelled
                 positive, is within the top k of the initial retriever for that
                 query. A query the retriever cannot lead back to its passage is
                 usually unrelated to it. k is `round_trip_k`, or else
                 `round_trip_fraction` of the corpus (at least 1): then a query
                 unrelated to every passage passes with that probability whatever
                 the corpus size.
  QL floor       keep a query only if the teacher's query likelihood given the
                 chosen positive, per query word, is at least `ql_floor`
                 (natural-log probability).
  deduplication  drop a query whose normalised word set has Jaccard
                 similarity >= `dedup_jaccard` with an earlier kept query of
                 the same shard (done before stage 2, so no teacher calls are
                 spent on it). Shards are independent (resumable), so
                 duplicates across shards survive.

Defaults (chosen from principle, not from scores on our files; README "FRet filters"):
round trip within the top 1% of the corpus; QL floor log(1/1000) per word (drop a
query whose words are, on average, less likely given the passage than a 1-in-1,000
guess); near-duplicates at Jaccard 0.8. A setting of None turns its filter off. Each
drop is counted as `dropped:<filter>`, kept with examples in the shard's stats file,
and reported by `gecko fret stats`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence


QL_FLOOR = round(math.log(1 / 1000), 4)   # -6.9078 per query word


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    round_trip_k: int | None = None             # seed or positive within the top k...
    round_trip_fraction: float | None = 0.01    # ...or the top fraction of the corpus
    ql_floor: float | None = QL_FLOOR           # min QL log-prob per query word (positive)
    dedup_jaccard: float | None = 0.8           # drop near-identical queries

    def __post_init__(self):
        if self.round_trip_k is not None and self.round_trip_k < 1:
            raise ValueError(f"round_trip_k must be >= 1, got {self.round_trip_k}")
        if self.round_trip_fraction is not None and not 0 < self.round_trip_fraction <= 1:
            raise ValueError(f"round_trip_fraction must lie in (0, 1], "
                             f"got {self.round_trip_fraction}")
        if self.dedup_jaccard is not None and not 0 < self.dedup_jaccard <= 1:
            raise ValueError(f"dedup_jaccard must lie in (0, 1], got {self.dedup_jaccard}")

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in dataclasses.asdict(self).values())


def round_trip_top_k(cfg: FilterConfig, corpus_size: int) -> int | None:
    """The round trip's k: `round_trip_k`, else ceil(fraction * corpus size) (>= 1);
    None when the filter is off."""
    if cfg.round_trip_k is not None:
        return cfg.round_trip_k
    if cfg.round_trip_fraction is None:
        return None
    return max(1, math.ceil(cfg.round_trip_fraction * corpus_size - 1e-9))


def round_trip_ok(top_rows: Sequence[int], seed_row: int, positive_row: int, k: int) -> bool:
    """True when the seed passage or the positive is among the first k retrieved rows.

    Args:
      top_rows: corpus rows of the initial retriever's ranking for the query [N].
    """
    top = [int(r) for r in list(top_rows)[:k]]
    return int(seed_row) in top or int(positive_row) in top


def ql_per_word(ql_logprob: float, query: str) -> float:
    """Query log-likelihood per query word (so long and short queries compare)."""
    return float(ql_logprob) / max(1, len(query.split()))


def ql_ok(ql_logprob: float, query: str, floor: float) -> bool:
    return ql_per_word(ql_logprob, query) >= floor


def _words(text: str) -> frozenset[str]:
    return frozenset(re.sub(r"[\W_]+", " ", text.lower()).split())


def jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the normalised word sets of two texts (1.0 for two empties)."""
    wa, wb = _words(a), _words(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def keep_distinct(queries: Sequence[str], threshold: float) -> list[bool]:
    """Keep flags [Q]: False for a query too similar (>= threshold) to an earlier kept one."""
    kept: list[str] = []
    out = []
    for q in queries:
        dup = any(jaccard(q, k) >= threshold for k in kept)
        out.append(not dup)
        if not dup:
            kept.append(q)
    return out
