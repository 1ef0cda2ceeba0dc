"""FRet stage 2: re-label the positive and pick a hard negative with the teacher LLM.

For a generated query q, the initial embedder retrieves the top N passages
(the seed passage is always among them). The teacher scores each candidate p
two ways:
  - QL, query likelihood: log P_LLM(q | p, P_QL);
  - RC, relevance classification: log P_LLM("yes" | q, p, P_RC), normalised
    against "no" by default: log p(yes) - log(p(yes) + p(no)).
Each score list becomes ranks (1 = best) and the ranks are fused by reciprocal
rank fusion R(q, p) = sum_m 1 / (k + r_m(q, p)), k = 0 as in the paper's
appendix A. The positive is argmax R; the hard negative follows a strategy:
the lowest fused rank of the N ("lowest"), a given fused rank ("rank:20", the
paper's p_20), or a random candidate ("random"), among the candidates that are
neither the positive, nor the seed passage, nor another passage of the
positive's or the seed's document (NEGATIVE_RULES).

`scorers` picks which teacher scores the fusion uses: both (the paper), or QL or
RC alone. A tiny teacher's RC can be near chance at telling the seed passage (the
one its query was written from) from the other candidates, and fusing a near-chance
ranking moves positives away from good seeds; `gecko fret stats` measures each
ranking on the run's own records (stats.seed_first_rates). Both scores are computed
and stored either way, so records can be re-fused later (`refuse_record`).

Ties (frequent with k = 0: ranks (1, 3) and (3, 1) fuse equally) go to the
candidate the initial embedder ranked higher: candidate order is retrieval
order, and every selection here is stable in that order.

All (prefix, continuation) pairs of a shard go to the teacher in one `score`
call per kind, so the engine batches them and reuses the shared few-shot block.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import zlib
from typing import Sequence

import numpy as np

from gecko_jax.fret import prompts as prompts_lib
from gecko_jax.fret.generate import call_with_retries

log = logging.getLogger(__name__)

NEGATIVE_STRATEGIES = ("lowest", "rank:K", "random", "none")
SCORERS = ("ql", "rc")


@dataclasses.dataclass(frozen=True)
class RelabelConfig:
    num_neighbors: int = 10        # N: candidates per query (seed passage included)
    rrf_k: float = 0.0             # reciprocal rank fusion constant (paper: 0)
    negative: str = "lowest"       # lowest | rank:K | random | none
    rc_normalize: bool = True      # RC = log p(yes) - log(p(yes) + p(no))
    max_passage_words: int = 128   # passages are cut to this many words in scoring prompts
    call_retries: int = 3
    retry_backoff_s: float = 0.5
    score_repairs: int = 2         # re-scores of pairs that came back invalid (NaN, missing)
    scorers: tuple[str, ...] = SCORERS   # the teacher scores the fusion uses

    def __post_init__(self):
        if self.num_neighbors < 1:
            raise ValueError("num_neighbors must be >= 1")
        parse_negative(self.negative)
        object.__setattr__(self, "scorers", check_scorers(self.scorers))

    def identity(self) -> dict:
        """The fields that decide records; `scorers` only when not the default (runs
        made before it existed keep their identity and resume)."""
        out = dataclasses.asdict(self)
        if out["scorers"] == SCORERS:
            del out["scorers"]
        else:
            out["scorers"] = list(out["scorers"])
        return out


def check_scorers(scorers: Sequence[str]) -> tuple[str, ...]:
    """The teacher scores to fuse, as a tuple: one or both of SCORERS, each once."""
    out = tuple(scorers)
    if not out or len(set(out)) != len(out) or set(out) - set(SCORERS):
        raise ValueError(f"scorers {scorers!r}: one or both of {SCORERS}")
    return out


def parse_scorers(text: str) -> tuple[str, ...]:
    """'ql,rc' | 'ql' | 'rc' (the command-line form) -> checked scorers."""
    return check_scorers([x.strip() for x in text.split(",") if x.strip()])


def parse_negative(strategy: str) -> tuple[str, int | None]:
    """'lowest' | 'random' | 'none' | 'rank:K' (K >= 2) -> (kind, K)."""
    if strategy in ("lowest", "random", "none"):
        return strategy, None
    if strategy.startswith("rank:"):
        try:
            k = int(strategy.split(":", 1)[1])
        except ValueError:
            k = 0
        if k >= 2:
            return "rank", k
    raise ValueError(f"unknown hard-negative strategy {strategy!r} "
                     f"(lowest, random, none, or rank:K with K >= 2)")


# -- pure functions ----------------------------------------------------------------------

def ranks(scores_n: Sequence[float]) -> np.ndarray:
    """Rank positions of scores, 1 = highest; ties keep candidate order.

    Args:
      scores_n: [N] scores (higher is better).
    Returns:
      [N] int ranks in 1..N, a permutation.
    """
    s = np.asarray(scores_n, np.float64)
    order = np.argsort(-s, kind="stable")
    out = np.empty(len(s), np.int64)
    out[order] = np.arange(1, len(s) + 1)
    return out


def reciprocal_rank_fusion(ranks_mn: Sequence[Sequence[int]], k: float = 0.0) -> np.ndarray:
    """R = sum over rankings m of 1 / (k + r_m).

    Args:
      ranks_mn: [M, N] rank positions (1 = best) of N candidates under M rankings.
      k: fusion constant (the paper's appendix A uses 0; the usual RRF uses 60).
    Returns:
      [N] fused scores (higher is better).
    """
    r = np.asarray(ranks_mn, np.float64)
    if k + r.min() <= 0:
        raise ValueError("k + rank must be positive")
    return np.sum(1.0 / (k + r), axis=0)


def select_positive(fused_n: Sequence[float]) -> int:
    """Index of the top fused candidate (ties: the earliest, i.e. best retrieved)."""
    return int(np.argmax(np.asarray(fused_n, np.float64)))


def select_negative(fused_n: Sequence[float], positive: int, strategy: str,
                    rng: np.random.Generator | None = None,
                    excluded: Sequence[int] = ()) -> int | None:
    """Index of the hard negative under `strategy`, or None (strategy 'none', or no
    candidate left).

    Eligible: every candidate but the positive and the `excluded` ones
    (`negative_exclusions`). lowest: the eligible candidate of lowest fused rank;
    rank:K: the eligible candidate at fused rank K, else the next eligible one below
    it, else the lowest eligible one above it (fewer than K candidates); random:
    uniform over the eligible candidates.
    """
    kind, k = parse_negative(strategy)
    n = len(fused_n)
    skip = set(int(i) for i in excluded) | {int(positive)}
    eligible = [i for i in range(n) if i not in skip]
    if kind == "none" or not eligible:
        return None
    if kind == "random":
        rng = rng if rng is not None else np.random.default_rng(0)
        return int(eligible[int(rng.integers(len(eligible)))])
    fused_rank = ranks(fused_n)
    by_rank = sorted(eligible, key=lambda i: fused_rank[i])
    if kind == "lowest":
        return int(by_rank[-1])
    at_or_below = [i for i in by_rank if fused_rank[i] >= k]
    return int(at_or_below[0] if at_or_below else by_rank[-1])


# Why a candidate may not be a hard negative, in the order checked (`gecko fret stats`
# counts each): the seed passage is what the query was written for; another passage
# of the positive's or the seed's document (fret/corpus.document_id) most often
# answers the query too.
NEGATIVE_RULES = ("seed", "positive_document", "seed_document")


def negative_exclusions(documents: Sequence[str], positive: int, seed: int | None
                        ) -> list[str | None]:
    """Per candidate, the first NEGATIVE_RULES rule that rules it out as the hard
    negative, or None (eligible). The positive itself is "positive".

    Args:
      documents: [N] document id of each candidate (fret/corpus.document_id).
      positive, seed: candidate indices (seed None when the seed is not a candidate).
    """
    out: list[str | None] = []
    for i, doc in enumerate(documents):
        if i == positive:
            out.append("positive")
        elif seed is not None and i == seed:
            out.append("seed")
        elif doc == documents[positive]:
            out.append("positive_document")
        elif seed is not None and doc == documents[seed]:
            out.append("seed_document")
        else:
            out.append(None)
    return out


def rc_score(logp_yes: float, logp_no: float, normalize: bool) -> float:
    """RC score: log p(yes), or log p(yes) - log(p(yes) + p(no))."""
    if not normalize:
        return float(logp_yes)
    return float(logp_yes - np.logaddexp(logp_yes, logp_no))


def candidate_rows(top_rows: Sequence[int], seed_row: int, n: int) -> list[int]:
    """The first n retrieved rows, with the seed passage replacing the last if absent."""
    rows = [int(r) for r in top_rows if r >= 0][:n]
    if seed_row not in rows:
        rows = rows[:n - 1] + [int(seed_row)]
    return rows


def truncate_words(text: str, words: int) -> str:
    parts = text.split()
    return text if len(parts) <= words else " ".join(parts[:words])


# -- teacher scores ----------------------------------------------------------------------

def _valid(x) -> bool:
    return isinstance(x, (int, float, np.floating)) and math.isfinite(float(x)) and float(x) <= 1e-6


def checked_scores(llm, prefixes: list[str], conts: list[str], cfg: RelabelConfig,
                   counts: collections.Counter, what: str) -> list[float | None]:
    """llm.score with call retries; pairs with invalid results (NaN, positive, missing)
    are re-scored up to `score_repairs` times; still invalid -> None."""
    out: list[float | None] = [None] * len(prefixes)
    todo = list(range(len(prefixes)))
    for round_ in range(cfg.score_repairs + 1):
        if not todo:
            break
        pre, con = [prefixes[i] for i in todo], [conts[i] for i in todo]
        got = call_with_retries(lambda: llm.score(pre, con), what, counts, cfg.call_retries,
                                cfg.retry_backoff_s)
        if not isinstance(got, (list, tuple)) or len(got) != len(todo):
            counts["teacher_bad_replies"] += 1
            got = [None] * len(todo)
        bad = []
        for i, v in zip(todo, got):
            if _valid(v):
                out[i] = float(v)
            else:
                bad.append(i)
        if bad:
            counts["invalid_scores"] += len(bad)
            log.warning("teacher %s: %d invalid scores (round %d)", what, len(bad), round_ + 1)
        todo = bad
    return out


@dataclasses.dataclass(frozen=True)
class Scored:
    """Teacher scores of one query's candidates (lists aligned with the candidates)."""
    ql: list[float]
    rc: list[float]
    rc_yes: list[float]
    rc_no: list[float] | None


def score_candidates(llm, queries: Sequence[str], candidates: Sequence[Sequence[str]],
                     prompts: prompts_lib.PromptSet, cfg: RelabelConfig,
                     counts: collections.Counter,
                     renderer: prompts_lib.Renderer = prompts_lib.COMPLETION
                     ) -> list[Scored | None]:
    """QL and RC scores of every (query, candidate passage) pair of a shard.

    Args:
      queries: [Q] queries.
      candidates: [Q][N_q] candidate passage texts (truncated here for the prompts).
      renderer: the prompt style (completion text, or chat turns for a chat teacher).
    Returns:
      [Q] Scored, or None for a query whose scores stayed invalid.
    """
    ql_pre, ql_con, rc_pre, owner = [], [], [], []
    for qi, (q, cands) in enumerate(zip(queries, candidates)):
        for text in cands:
            text = truncate_words(text, cfg.max_passage_words)
            pre, con = renderer.ql(prompts.ql, text, q)
            ql_pre.append(pre)
            ql_con.append(con)
            rc_pre.append(renderer.rc(prompts.rc, q, text))
            owner.append(qi)
    yes, no = renderer.labels(prompts.rc)
    ql = checked_scores(llm, ql_pre, ql_con, cfg, counts, "score(QL)")
    if cfg.rc_normalize:
        # yes/no pairs of one prompt sort next to each other in the engine's batches.
        both = checked_scores(llm, rc_pre + rc_pre, [yes] * len(rc_pre) + [no] * len(rc_pre),
                              cfg, counts, "score(RC)")
        rc_yes, rc_no = both[:len(rc_pre)], both[len(rc_pre):]
    else:
        rc_yes = checked_scores(llm, rc_pre, [yes] * len(rc_pre), cfg, counts, "score(RC)")
        rc_no = None
    counts["scored_pairs"] += len(ql_pre)
    out: list[Scored | None] = []
    pos = 0
    for qi, cands in enumerate(candidates):
        sl = slice(pos, pos + len(cands))
        pos += len(cands)
        parts = [ql[sl], rc_yes[sl]] + ([rc_no[sl]] if rc_no is not None else [])
        if any(v is None for part in parts for v in part):
            out.append(None)
            continue
        n_ = rc_no[sl] if rc_no is not None else [0.0] * len(cands)
        rc = [rc_score(y, n, cfg.rc_normalize) for y, n in zip(rc_yes[sl], n_)]
        out.append(Scored(list(ql[sl]), rc, list(rc_yes[sl]),
                          list(rc_no[sl]) if rc_no is not None else None))
    return out


@dataclasses.dataclass(frozen=True)
class Relabelled:
    """Stage-2 outcome of one query. Lists are aligned with `rows` (retrieval order)."""
    rows: list[int]                # corpus rows of the candidates
    retrieval_scores: list[float]
    scored: Scored
    rank_ql: list[int]
    rank_rc: list[int]
    fused: list[float]
    fused_rank: list[int]
    positive: int                  # index into rows
    negative: int | None
    # Per candidate: the NEGATIVE_RULES rule that kept it from being the negative.
    exclusions: list[str | None] = dataclasses.field(default_factory=list)
    # The rule that excluded the negative the strategy alone would have picked.
    moved_by: str | None = None


def fuse_and_select(rows: Sequence[int], retrieval_scores: Sequence[float], scored: Scored,
                    cfg: RelabelConfig, rng: np.random.Generator,
                    documents: Sequence[str] | None = None, seed: int | None = None
                    ) -> Relabelled:
    """Ranks, reciprocal rank fusion and positive / hard-negative choice for one query.

    documents: [N] document id of each candidate; seed: the seed passage's index
    among the candidates. With them the negative is never the seed passage nor a
    passage of the positive's or the seed's document (NEGATIVE_RULES).
    """
    r_ql, r_rc = ranks(scored.ql), ranks(scored.rc)
    by_name = {"ql": r_ql, "rc": r_rc}
    fused = reciprocal_rank_fusion([by_name[m] for m in cfg.scorers], cfg.rrf_k)
    pos = select_positive(fused)
    why = (negative_exclusions(documents, pos, seed) if documents is not None
           else [None] * len(rows))
    excluded = [i for i, w in enumerate(why) if w not in (None, "positive")]
    # Same draws for both picks, so `moved_by` names what the rules changed.
    state = rng.bit_generator.state
    free = select_negative(fused, pos, cfg.negative, rng)
    rng.bit_generator.state = state
    neg = select_negative(fused, pos, cfg.negative, rng, excluded=excluded)
    moved = why[free] if free is not None and free in excluded else None
    return Relabelled(list(map(int, rows)), [float(s) for s in retrieval_scores], scored,
                      r_ql.tolist(), r_rc.tolist(), [float(f) for f in fused],
                      ranks(fused).tolist(), pos, neg, why, moved)


def query_rng(seed: int, query_id: str) -> np.random.Generator:
    """The random-negative generator of one query (stable across processes)."""
    return np.random.default_rng(zlib.crc32(f"{seed}/{query_id}".encode()))
