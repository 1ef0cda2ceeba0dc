"""`gecko distill` report tables over training seeds: each stage, the ablation arms and
the data-scaling curve, as mean [min, max] over seeds, with each change judged seed by
seed against its paired 95% bootstrap interval.

A change is called significant only where every seed's paired interval excludes 0 on
the same side ("+ in every seed" / "- in every seed"); otherwise the count of seeds
significant each way is given.
"""

from __future__ import annotations

import pathlib

from gecko_jax.recipes.distill_stages import scaling_model


def seed_models(results: dict, name: str) -> list[str]:
    """The model names of `name` under every training seed (seed 0 first)."""
    more = sorted((m for m in results if m.startswith(f"{name} (seed ")),
                  key=lambda m: int(m.rsplit(" ", 1)[1].rstrip(")")))
    return ([name] if name in results else []) + more


def seed_rows(results: dict, name: str, task: str, dim: int) -> list[dict]:
    """The score rows of `name` under every seed (seed 0 first) at (task, dim)."""
    return [results[m][task][dim] for m in seed_models(results, name)]


def spread(values) -> str:
    """mean [min, max] x100."""
    return (f"{100 * sum(values) / len(values):.2f} [{100 * min(values):.2f}, "
            f"{100 * max(values):.2f}]")


def seed_sides(pairs, kind: str, metric: str) -> tuple[list[float], list[int]]:
    """Per seed (old, new): the change new - old and its side: +1 / -1 where the paired
    95% interval excludes 0 above / below, 0 where it contains 0 (or is unknown)."""
    from gecko_jax.evaluation import intervals

    deltas, sides = [], []
    for old, new in pairs:
        deltas.append(new[metric] - old[metric])
        iv = intervals.change_interval(kind, metric, old, new)
        sides.append(0 if iv is None or iv.contains_zero else (1 if iv.low > 0 else -1))
    return deltas, sides


def seed_change(pairs, kind: str, metric: str) -> str:
    """The change new - old over seeds: mean [min, max] x100 and the seed-by-seed verdict."""
    deltas, sides = seed_sides(pairs, kind, metric)
    word = ("+ in every seed" if all(s > 0 for s in sides) else
            "- in every seed" if all(s < 0 for s in sides) else
            f"not significant in every seed ({sides.count(1)}+, {sides.count(-1)}-)")
    mean = round(sum(deltas) / len(deltas), 12) + 0.0   # no "-0.00"
    return (f"{100 * mean:+.2f} [{100 * min(deltas):+.2f}, {100 * max(deltas):+.2f}] "
            f"({word})")


def _dims(results: dict, models, task: str) -> list[int]:
    return sorted({int(d) for m in models for d in results[m].get(task, {})}, reverse=True)


def seeds_table(results: dict, tasks: dict, pft: str, ft: str,
                starts: tuple[tuple[str, str], ...]) -> list[str]:
    """The pre-finetuned (pft) and fine-tuned (ft) models over seeds, and the changes
    fine-tuned - pre-finetuned, pre-finetuned - each start model and fine-tuned - each
    start model (starts: (model name, heading) of the untrained models, shared by every
    seed)."""
    fts = seed_models(results, ft)
    n = len(fts)
    heads = ([f"pre-finetuned - {h}" for _, h in starts]
             + [f"fine-tuned - {h}" for _, h in starts] + ["fine-tuned - pre-finetuned"])
    lines = [f"| task | metric | dim | pre-finetuned ({n} seeds) | fine-tuned ({n} seeds) | "
             + " | ".join(heads) + " |", "|---|---|---:|" + "---:|" * (2 + len(heads))]
    for task, info in tasks.items():
        metric, kind = info["main_score"], info["type"]
        for dim in _dims(results, fts, task):
            rp, rf = seed_rows(results, pft, task, dim), seed_rows(results, ft, task, dim)
            cells = [spread([r[metric] for r in rp]) if rp else "-",
                     spread([r[metric] for r in rf])]
            for rows in (rp, rf):
                for start, _ in starts:
                    base = results.get(start, {}).get(task, {}).get(dim)
                    cells.append(seed_change([(base, r) for r in rows], kind, metric)
                                 if base and len(rows) == n else "-")
            cells.append(seed_change(list(zip(rp, rf)), kind, metric) if len(rp) == n else "-")
            lines.append(f"| {task} | {metric} | {dim} | " + " | ".join(cells) + " |")
    return lines


def ablation_seeds_table(results: dict, tasks: dict, arms, default: str,
                         changes) -> list[str]:
    """Each arm (label, model) as mean [min, max] over seeds, then the default arm minus
    each other arm (changes: (model, label)), paired seed by seed."""
    lines = ["| task | dim | " + " | ".join(label for label, _ in arms) + " | "
             + " | ".join(f"(d) - {label}" for _, label in changes) + " |",
             "|---|---:|" + "---:|" * (len(arms) + len(changes))]
    for task, info in tasks.items():
        metric, kind = info["main_score"], info["type"]
        for dim in _dims(results, [default], task):
            rows = {m: seed_rows(results, m, task, dim) for _, m in arms}
            cells = [spread([r[metric] for r in rows[m]]) for _, m in arms]
            for other, _ in changes:
                pairs = list(zip(rows[other], rows[default]))
                cells.append(seed_change(pairs, kind, metric) if pairs else "-")
            lines.append(f"| {task} | {dim} | " + " | ".join(cells) + " |")
    return lines


def scaling_points(results: dict, sizes, no_fret: str | None, default: str,
                   all_records: int) -> list[tuple[int, str]]:
    """(records, model) of the scaling curve: none (the no-FRet arm, when run), each
    size, then every record (the default fine-tuning)."""
    points = [(0, no_fret)] if no_fret in results else []
    points += [(n, scaling_model(n)) for n in sorted(sizes) if n < all_records]
    return points + [(all_records, default)]


def scaling_table(results: dict, tasks: dict, points) -> list[str]:
    """Score over seeds at each point of the curve, and each point minus the first."""
    (n0, first), rest = points[0], points[1:]
    lines = ["| task | dim | " + " | ".join(f"{n} records" for n, _ in points) + " | "
             + " | ".join(f"{n} - {n0}" for n, _ in rest) + " |",
             "|---|---:|" + "---:|" * (len(points) + len(rest))]
    for task, info in tasks.items():
        metric, kind = info["main_score"], info["type"]
        for dim in _dims(results, [first], task):
            rows = {m: seed_rows(results, m, task, dim) for _, m in points}
            cells = [spread([r[metric] for r in rows[m]]) for _, m in points]
            cells += [seed_change(list(zip(rows[first], rows[m])), kind, metric)
                      for _, m in rest]
            lines.append(f"| {task} | {dim} | " + " | ".join(cells) + " |")
    return lines


def plot_scaling(results: dict, tasks: dict, points, path: pathlib.Path) -> None:
    """One panel per task at its widest dim: each seed's score (dots) and the mean over
    seeds with its min-max range, against the FRet records fine-tuned on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.2), squeeze=False)
    xs = [n for n, _ in points]
    for ax, (task, info) in zip(axes[0], tasks.items()):
        metric = info["main_score"]
        dim = _dims(results, [points[0][1]], task)[0]
        per_point = [[100 * r[metric] for r in seed_rows(results, m, task, dim)]
                     for _, m in points]
        means = [sum(v) / len(v) for v in per_point]
        low = [m - min(v) for m, v in zip(means, per_point)]
        high = [max(v) - m for m, v in zip(means, per_point)]
        ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=3, label="mean, min-max")
        for x, values in zip(xs, per_point):
            ax.scatter([x] * len(values), values, s=10, color="gray", zorder=3)
        ax.set_title(f"{task} ({dim} dims)", fontsize=9)
        ax.set_xlabel("FRet records in fine-tuning")
        ax.set_ylabel(f"{metric} x100")
    fig.suptitle("data scaling: equal steps, every seed", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def soup_table(results: dict, tasks: dict, soup: str, ft: str) -> list[str]:
    """The soup of the seeds' fine-tuned models beside them: the seeds' mean [min, max],
    the soup's score [95% CI], and soup - each seed's model, paired seed by seed."""
    from gecko_jax.evaluation import intervals

    fts = seed_models(results, ft)
    lines = [f"| task | dim | fine-tuned ({len(fts)} seeds) | soup [95% CI] | "
             "soup - each seed's fine-tuned |", "|---|---:|---:|---:|---:|"]
    for task, info in tasks.items():
        metric, kind = info["main_score"], info["type"]
        for dim in _dims(results, [soup], task):
            rows = seed_rows(results, ft, task, dim)
            row = results[soup][task][dim]
            iv = intervals.score_interval(kind, metric, row)
            ci = "" if iv is None else f" [{100 * iv.low:.2f}, {100 * iv.high:.2f}]"
            lines.append(f"| {task} | {dim} | {spread([r[metric] for r in rows])} | "
                         f"{100 * row[metric]:.2f}{ci} | "
                         f"{seed_change([(r, row) for r in rows], kind, metric)} |")
    return lines
