"""`gecko fret stats`: counts, task histogram, relabel rate, query lengths, and a plot."""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np

from gecko_jax.data import fret_records
from gecko_jax.fret import record_shards

LENGTH_BINS = (0, 3, 5, 8, 12, 16, 24, 32, 48, 10_000)
EXAMPLES = 3   # kept and dropped queries shown per filter


def kept_example(rec: dict) -> dict:
    """A kept query with what the filters looked at: the seed's place among the
    re-labelled candidates and the positive's QL per query word."""
    pos = next(c for c in rec["candidates"] if c["id"] == rec["positive"]["id"])
    seed = next((c for c in rec["candidates"] if c["id"] == rec["seed_passage_id"]), None)
    return {"query": rec["query"], "task": rec["task"],
            "positive_is_seed": rec["positive_is_seed"],
            "seed_candidate_rank": seed["retrieval_rank"] if seed else None,
            "ql_per_word": round(pos["ql"] / max(1, len(rec["query"].split())), 3)}


SEED_CHECK_RANKINGS = (("embedder", "retrieval_rank"), ("QL", "rank_ql"), ("RC", "rank_rc"),
                       ("fused", "fused_rank"))


def seed_candidate(rec: dict) -> dict | None:
    """The record's seed passage among its candidates (None: not retrieved)."""
    return next((c for c in rec["candidates"] if c["id"] == rec["seed_passage_id"]), None)


def seed_first_rates(recs: list[dict]) -> dict:
    """A check of the teacher on the run's own records: each query was written from its
    seed passage, so a ranking that knows relevance puts the seed first among the N
    candidates more often than chance (1/N). Returns {ranking: share of records whose
    seed it ranks first} for the embedder, QL, RC and their fusion, and `chance`."""
    seeds = [(c, len(r["candidates"])) for r in recs if (c := seed_candidate(r)) is not None]
    if not seeds:
        return {}
    out = {name: sum(c.get(key) == 1 for c, _ in seeds) / len(seeds)
           for name, key in SEED_CHECK_RANKINGS}
    out["chance"] = float(np.mean([1 / n for _, n in seeds]))
    return out


def collect(out_dir) -> dict:
    """Statistics of a finished run from its manifest and records."""
    out_dir = pathlib.Path(out_dir)
    if (out_dir / "manifest.json").exists():
        manifest = record_shards.read_manifest(out_dir)
    else:  # a run still going (or interrupted): its finished shards
        manifest = record_shards.partial_manifest(out_dir)
    recs = list(fret_records.read_jsonl_records(out_dir / p for p in manifest["files"]["jsonl"]))
    tasks = collections.Counter(r["task"] for r in recs)
    lengths = [len(r["query"].split()) for r in recs]
    hist, _ = np.histogram(lengths, bins=LENGTH_BINS) if lengths else (np.zeros(len(LENGTH_BINS) - 1), None)
    relabelled = sum(not r["positive_is_seed"] for r in recs)
    seeds = [c for c in map(seed_candidate, recs) if c is not None]
    filtered = []
    for path in sorted((out_dir / "shards").glob("stats-*.json")):
        filtered += json.loads(path.read_text()).get("filtered", [])
    by_filter: dict[str, list] = collections.defaultdict(list)
    for f in filtered:
        if len(by_filter[f["filter"]]) < EXAMPLES:
            by_filter[f["filter"]].append({k: f[k] for k in ("query", "task", "value")})
    return {
        "partial": manifest.get("partial"),
        "counts": manifest["counts"],
        "filters": manifest.get("config", {}).get("filters"),
        "prompt_style": manifest.get("config", {}).get("prompt_style", "completion"),
        "dropped_examples": dict(by_filter),
        "kept_examples": [kept_example(r) for r in recs[:EXAMPLES]],
        "records": len(recs),
        "relabel_rate": relabelled / len(recs) if recs else 0.0,
        "tasks": dict(tasks.most_common()),
        "query_words": {"mean": float(np.mean(lengths)) if lengths else 0.0,
                        "bins": [f"{a}-{b - 1}" if b < 10_000 else f">={a}"
                                 for a, b in zip(LENGTH_BINS[:-1], LENGTH_BINS[1:])],
                        "hist": [int(h) for h in hist]},
        "seed_fused_rank": dict(collections.Counter(c["fused_rank"] for c in seeds)),
        "seed_first": seed_first_rates(recs),
        "timing": manifest.get("timing", {}),
    }


FILTERS = ("duplicate", "round_trip", "ql_floor")   # fret/filters.py, in the order applied


def filter_line(counts: dict) -> str:
    """'filters: generated G -> after duplicate a -> after round_trip b -> ...'."""
    dropped = counts.get("dropped", {})
    left = counts.get("generated", 0)
    parts = [f"generated {left}"]
    for name in FILTERS:
        left -= dropped.get(name, 0)
        parts.append(f"after {name} {left} (-{dropped.get(name, 0)})")
    return "filters: " + " -> ".join(parts)


def negative_line(counts: dict) -> str:
    """'hard negatives: rules removed seed a, positive_document b, ... candidates; ...'."""
    from gecko_jax.fret.relabel import NEGATIVE_RULES

    neg = counts.get("negatives") or {}
    excl, moved = neg.get("excluded", {}), neg.get("moved", {})
    return ("hard-negative rules: candidates removed "
            + ", ".join(f"{r} {excl.get(r, 0)}" for r in NEGATIVE_RULES)
            + "; picks replaced " + ", ".join(f"{r} {moved.get(r, 0)}" for r in NEGATIVE_RULES)
            + f"; records left without a negative {neg.get('none', 0)}")


def seed_first_line(rates: dict) -> str:
    """'seed passage ranked first: embedder a%, QL b%, RC c%, fused d% (chance e%)'."""
    if not rates:
        return "seed passage ranked first: no record has its seed among the candidates"
    return ("seed passage ranked first (the query was written from it): "
            + ", ".join(f"{name} {rates[name]:.0%}" for name, _ in SEED_CHECK_RANKINGS)
            + f" (chance {rates['chance']:.0%}); a teacher score near chance adds noise "
              "to the fusion")


def format_stats(s: dict) -> str:
    c = s["counts"]
    lines = ([f"UNFINISHED RUN: {s['partial']}"] if s.get("partial") else []) + [
             f"passages {c['passages']}  generated {c['generated']}  parse failures "
             f"{c['parse_failures']}  records {s['records']}  teacher errors {c['teacher_errors']}",
             f"dropped: {c['dropped'] or 'none'}",
             f"prompt style: {s.get('prompt_style', 'completion')}  filters: "
             f"{s.get('filters') or 'off'}",
             filter_line(c),
             negative_line(c),
             f"relabel rate (positive != seed): {s['relabel_rate']:.3f}",
             f"seed passage's fused rank: {dict(sorted(s['seed_fused_rank'].items()))}",
             seed_first_line(s.get("seed_first") or {}),
             "kept (first shown):"]
    for ex in s.get("kept_examples", []):
        lines.append(f"  + {ex['query']!r}  (seed is positive: {ex['positive_is_seed']}, "
                     f"QL/word {ex['ql_per_word']})")
    for name, exs in s.get("dropped_examples", {}).items():
        lines.append(f"dropped by {name} (first shown):")
        for ex in exs:
            lines.append(f"  - {ex['query']!r}  ({ex['value']})")
    lines.append("tasks:")
    for task, n in list(s["tasks"].items())[:20]:
        lines.append(f"  {n:5d}  {task}")
    if len(s["tasks"]) > 20:
        lines.append(f"  ... {len(s['tasks']) - 20} more")
    lines.append(f"query length (words), mean {s['query_words']['mean']:.1f}:")
    for label, n in zip(s["query_words"]["bins"], s["query_words"]["hist"]):
        lines.append(f"  {label:>6}  {n:5d}  {'#' * min(n, 60)}")
    return "\n".join(lines)


def plot(s: dict, path) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.bar(s["query_words"]["bins"], s["query_words"]["hist"])
    a1.set_title("query length (words)")
    top = list(s["tasks"].items())[:8]
    a2.barh([t[:40] for t, _ in top][::-1], [n for _, n in top][::-1])
    a2.set_title(f"top tasks (relabel rate {s['relabel_rate']:.2f})")
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
