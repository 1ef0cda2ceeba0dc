"""Evaluation reports: report.json, report.md and PNG plots, any number of models.

    results = {model name: {task name: {dim: {metric: value}}}}
    tasks   = {task name: {"type": ..., "main_score": ..., "gecko_task": ...}}
    write_report(out_dir, results, tasks, models={name: {...info...}})

The Markdown table has one row per (task, dim) and one column per model, each
cell the task's main score (x100, as MTEB tables print them); a second table
lists every reported metric. Plots: `scores_by_task.png` (grouped bars, the
main score of each task at each model's largest dim) and `score_vs_dim.png`
(main score against Matryoshka dim, one panel per task, one line per model).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
from collections.abc import Mapping

Results = Mapping[str, Mapping[str, Mapping[int, Mapping[str, float]]]]

# Metrics worth a column in the detailed table, by task type, in order, when present.
DETAIL_METRICS = {
    "retrieval": ("ndcg_at_10", "recall_at_10", "mrr_at_10", "map_at_10", "recall_at_1"),
    "classification": ("accuracy", "f1"),
    "clustering": ("v_measure",),
}
ANY_DETAIL = ("ndcg_at_10", "recall_at_10", "mrr_at_10", "map_at_10", "recall_at_1",
              "accuracy", "f1", "v_measure", "cosine_spearman", "main_score")


def _dims(results: Results, task: str) -> list[int]:
    return sorted({int(d) for m in results.values() for d in m.get(task, {})}, reverse=True)


def _score(results: Results, model: str, task: str, dim: int, metric: str):
    by_dim = results.get(model, {}).get(task, {})
    row = by_dim.get(dim, by_dim.get(str(dim)))
    return None if row is None else row.get(metric)


def to_json(results: Results, tasks: Mapping[str, Mapping], models: Mapping[str, Mapping],
            extra: Mapping | None = None) -> dict:
    from gecko_jax.evaluation import intervals

    ivs = intervals.main_score_intervals(results, tasks)
    return {
        "intervals": {m: {t: {str(d): iv.to_json() for d, iv in by_dim.items()}
                          for t, by_dim in by_task.items()} for m, by_task in ivs.items()},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "models": {name: dict(info) for name, info in models.items()},
        "tasks": {name: dict(info) for name, info in tasks.items()},
        "results": {m: {t: {str(d): dict(s) for d, s in by_dim.items()}
                        for t, by_dim in by_task.items()} for m, by_task in results.items()},
        **(dict(extra) if extra else {}),
    }


def to_markdown(results: Results, tasks: Mapping[str, Mapping], models: Mapping[str, Mapping],
                title: str = "Evaluation report") -> str:
    from gecko_jax.evaluation import intervals

    names = list(models)
    ivs = intervals.main_score_intervals(results, tasks)
    lines = [f"# {title}", ""]
    for name in names:
        info = ", ".join(f"{k}: {v}" for k, v in models[name].items())
        lines.append(f"- **{name}**: {info}")
    lines += ["", "## Main scores (x100)", "",
              "Brackets: seeded bootstrap 95% interval (evaluation/intervals.py: "
              "resampling queries, test items or clustered items).", "",
              "| task | main score | dim | " + " | ".join(names) + " |",
              "|---|---|---:|" + "---:|" * len(names)]
    for task, info in tasks.items():
        for dim in _dims(results, task):
            cells = []
            for m in names:
                v = _score(results, m, task, dim, info["main_score"])
                iv = ivs.get(m, {}).get(task, {}).get(int(dim))
                cells.append("-" if v is None else f"{100 * v:.2f}" + (
                    "" if iv is None else f" [{100 * iv.low:.1f}, {100 * iv.high:.1f}]"))
            lines.append(f"| {task} | {info['main_score']} | {dim} | " + " | ".join(cells) + " |")
    lines += ["", "## All metrics (x100)", ""]
    for task, info in tasks.items():
        wanted = DETAIL_METRICS.get(str(info.get("type", "")).lower(), ANY_DETAIL)
        present = [k for k in wanted
                   if any(_score(results, m, task, d, k) is not None
                          for m in names for d in _dims(results, task))]
        if not present:
            continue
        lines += [f"### {task} ({info.get('type', '')}; Gecko task string: "
                  f"\"{info.get('gecko_task', '')}\")", "",
                  "| model | dim | " + " | ".join(present) + " |",
                  "|---|---:|" + "---:|" * len(present)]
        for m in names:
            for dim in _dims(results, task):
                vals = [_score(results, m, task, dim, k) for k in present]
                if all(v is None for v in vals):
                    continue
                lines.append(f"| {m} | {dim} | " + " | ".join(
                    "-" if v is None else f"{100 * v:.2f}" for v in vals) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot_scores_by_task(results: Results, tasks: Mapping[str, Mapping], path) -> None:
    """Grouped bars: main score per task, one bar per model, at its largest dim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names, task_names = list(results), list(tasks)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(task_names) + 2), 4.5))
    x = np.arange(len(task_names))
    for i, m in enumerate(names):
        vals = []
        for t in task_names:
            dims = sorted((int(d) for d in results[m].get(t, {})), reverse=True)
            v = _score(results, m, t, dims[0], tasks[t]["main_score"]) if dims else None
            vals.append(np.nan if v is None else 100 * v)
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=m)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [f"{t}\n({tasks[t]['main_score']})" for t in task_names], fontsize=8)
    ax.set_ylabel("main score (x100)")
    ax.set_ylim(0, 105)
    ax.set_title("Scores by task (largest dim per model)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_score_vs_dim(results: Results, tasks: Mapping[str, Mapping], path) -> None:
    """Main score against Matryoshka dim: one panel per task, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task_names = list(tasks)
    cols = min(3, max(len(task_names), 1))
    rows = -(-len(task_names) // cols) if task_names else 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, t in zip(axes.flat, task_names):
        for m in results:
            dims = sorted(int(d) for d in results[m].get(t, {}))
            vals = [_score(results, m, t, d, tasks[t]["main_score"]) for d in dims]
            pts = [(d, 100 * v) for d, v in zip(dims, vals) if v is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        ax.set_xscale("log", base=2)
        all_dims = sorted({int(d) for m in results for d in results[m].get(t, {})})
        if all_dims:
            ax.set_xticks(all_dims, [str(d) for d in all_dims])
            ax.minorticks_off()
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("embedding dim")
        ax.set_ylabel(f"{tasks[t]['main_score']} (x100)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(task_names):]:
        ax.axis("off")
    fig.suptitle("Score vs Matryoshka dim")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: str | os.PathLike, results: Results, tasks: Mapping[str, Mapping],
                 models: Mapping[str, Mapping], extra: Mapping | None = None,
                 title: str = "Evaluation report") -> dict[str, pathlib.Path]:
    """Writes report.json, report.md, scores_by_task.png, score_vs_dim.png.

    Returns:
      {"json": path, "markdown": path, "scores_by_task": path, "score_vs_dim": path}.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md",
             "scores_by_task": out / "scores_by_task.png",
             "score_vs_dim": out / "score_vs_dim.png"}
    paths["json"].write_text(json.dumps(to_json(results, tasks, models, extra), indent=2) + "\n")
    paths["markdown"].write_text(to_markdown(results, tasks, models, title) + "\n![scores by task]"
                                 "(scores_by_task.png)\n\n![score vs dim](score_vs_dim.png)\n")
    plot_scores_by_task(results, tasks, paths["scores_by_task"])
    plot_score_vs_dim(results, tasks, paths["score_vs_dim"])
    return paths


def load_results(path: str | os.PathLike) -> dict:
    """report.json -> its dict, with dims back as ints."""
    data = json.loads(pathlib.Path(path).read_text())
    data["results"] = {m: {t: {int(d): s for d, s in by_dim.items()}
                           for t, by_dim in by_task.items()}
                       for m, by_task in data["results"].items()}
    return data
