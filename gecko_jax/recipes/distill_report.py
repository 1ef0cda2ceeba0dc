"""The `gecko distill` report: stage times, the before/after table, plots.

    OUT/report.md     the recipe's settings, each stage's wall time, base vs distilled
                      main scores at every task and dim (with the difference), FRet counts
    OUT/report.json   the same as data
    OUT/eval/         the side-by-side evaluation report (report.md/json, PNGs) from
                      gecko_jax.evaluation.report, and OUT/stage_times.png
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from gecko_jax.recipes import distill_seeds

BASE, DISTILLED = "minilm (base)", "distilled"
NO_FRET, SEED_POSITIVE = "no FRet", "FRet seed positive"
NO_NEGATIVE = "FRet re-labelled, no negative"
LONG_PREFINETUNE = "pre-finetuned only, same steps"
SOUP = "soup of the seeds' fine-tuned models"
# (label, model) rows of the ablation table, in Table 3's order, then the
# compute-matched control.
ABLATION = (("(a) no FRet", NO_FRET), ("(b) FRet, seed passage as positive", SEED_POSITIVE),
            ("(c) FRet, re-labelled positive", NO_NEGATIVE),
            ("(d) FRet, re-labelled positive + LLM hard negative", DISTILLED),
            ("(e) no fine-tuning: its steps spent on pre-finetuning", LONG_PREFINETUNE))
# The default (d) against each other arm.
ABLATION_CHANGES = ((NO_FRET, "(a)"), (SEED_POSITIVE, "(b)"), (NO_NEGATIVE, "(c)"),
                    (LONG_PREFINETUNE, "(e)"))


CORPUS_NAMES = {"wikipedia": "Wikipedia sample",
                "bbc": "BBC News training-pool articles"}


def _results(out: pathlib.Path, stages) -> tuple[dict, dict]:
    results, models = {}, {}
    for stage in (s for s in stages if s.startswith("eval_")):
        data = json.loads((out / stage / "results.json").read_text())
        results[data["model"]] = {t: {int(d): s for d, s in by_dim.items()}
                                  for t, by_dim in data["results"].items()}
        models[data["model"]] = data["info"]
    return results, models


def before_after_table(results: dict, tasks: dict) -> list[str]:
    """Main scores with bootstrap 95% intervals, and the paired interval of the change.

    A change whose interval contains 0 is marked "not significant" (within
    noise); without per-item data the interval cells read "n/a".
    """
    from gecko_jax.evaluation import bootstrap, intervals

    lines = ["| task | metric | dim | base MiniLM [95% CI] | distilled [95% CI] | change "
             "[95% CI] | significant? |", "|---|---|---:|---:|---:|---:|---|"]
    for task, info in tasks.items():
        metric, kind = info["main_score"], info["type"]
        dims = sorted({int(d) for m in results.values() for d in m.get(task, {})}, reverse=True)
        for dim in dims:
            row_b, row_d = results[BASE][task][dim], results[DISTILLED][task][dim]
            base, new = row_b[metric], row_d[metric]
            cells = []
            for row, value in ((row_b, base), (row_d, new)):
                iv = intervals.score_interval(kind, metric, row)
                cells.append(f"{100 * value:.2f}" + _ci(iv))
            change = intervals.change_interval(kind, metric, row_b, row_d)
            sig = "n/a" if change is None else bootstrap.significance(change)
            lines.append(f"| {task} | {metric} | {dim} | {cells[0]} | {cells[1]} | "
                         f"{100 * (new - base):+.2f}{_ci(change, signed=True)} | {sig} |")
    return lines


def ablation_table(results: dict, tasks: dict) -> list[str]:
    """Table 3 at our scale: each variant's main score [95% CI], and the default (d)
    minus each other arm with paired intervals; within-noise changes are labelled so."""
    from gecko_jax.evaluation import bootstrap, intervals

    lines = ["| task | dim | " + " | ".join(label for label, _ in ABLATION) + " | "
             + " | ".join(f"(d) - {arm}" for _, arm in ABLATION_CHANGES) + " |",
             "|---|---:|" + "---:|" * (len(ABLATION) + len(ABLATION_CHANGES))]
    for task, info in tasks.items():
        metric, kind = info["main_score"], info["type"]
        dims = sorted({int(d) for m in results.values() for d in m.get(task, {})}, reverse=True)
        for dim in dims:
            rows = {m: results[m][task][dim] for _, m in ABLATION}
            cells = [f"{100 * rows[m][metric]:.2f}" + _ci(intervals.score_interval(
                kind, metric, rows[m])) for _, m in ABLATION]
            for other, _ in ABLATION_CHANGES:
                change = intervals.change_interval(kind, metric, rows[other], rows[DISTILLED])
                delta = rows[DISTILLED][metric] - rows[other][metric]
                sig = "" if change is None else f" ({bootstrap.significance(change)})"
                cells.append(f"{100 * delta:+.2f}{_ci(change, signed=True)}{sig}")
            lines.append(f"| {task} | {dim} | " + " | ".join(cells) + " |")
    return lines


BASE_GECKO = "minilm (base), Gecko prompts"


def stage_columns(is_llm: bool) -> tuple[tuple, tuple]:
    """(columns (model, heading), changes (new, old, heading)) of the stage table."""
    from gecko_jax.recipes.distill_student import PREFINETUNED, RAW, RAW_GECKO

    if is_llm:
        cols = ((RAW, "raw LLM (mean-pooled, no training)"),
                (RAW_GECKO, "raw LLM, Gecko prompts"), (PREFINETUNED, "pre-finetuned"),
                (DISTILLED, "fine-tuned"), (BASE, "MiniLM (base, reference)"))
        steps = ((PREFINETUNED, RAW, "pre-finetuned - raw"),
                 (DISTILLED, PREFINETUNED, "fine-tuned - pre-finetuned"))
    else:
        cols = ((BASE, "base, raw texts"), (BASE_GECKO, "base, Gecko prompts"),
                (PREFINETUNED, "pre-finetuned"), (DISTILLED, "fine-tuned"))
        steps = ((PREFINETUNED, BASE_GECKO, "pre-finetuned - base (Gecko)"),
                 (DISTILLED, PREFINETUNED, "fine-tuned - pre-finetuned"),
                 (DISTILLED, BASE, "fine-tuned - base (raw)"))
    return cols, steps


def student_table(results: dict, tasks: dict, is_llm: bool = True) -> list[str]:
    """Every stage of a student side by side: the base model in both prompt formats,
    pre-finetuned, fine-tuned (an LLM student: Gemini Embedding's direction, no
    training < pre-finetuning < the full recipe, MiniLM as reference): main score
    [95% CI] per (task, dim), and the paired intervals of each stage's change. A
    model narrower than the dim has no cell (-)."""
    from gecko_jax.evaluation import bootstrap, intervals

    cols, steps = stage_columns(is_llm)
    lines = ["| task | metric | dim | " + " | ".join(c for _, c in cols) + " | "
             + " | ".join(c for *_, c in steps) + " |",
             "|---|---|---:|" + "---:|" * (len(cols) + len(steps))]
    for task, info in tasks.items():
        metric, kind = info["main_score"], info["type"]
        dims = sorted({int(d) for m in results.values() for d in m.get(task, {})}, reverse=True)
        for dim in dims:
            rows = {m: results.get(m, {}).get(task, {}).get(dim) for m, _ in cols}
            cells = ["-" if rows[m] is None else f"{100 * rows[m][metric]:.2f}" + _ci(
                intervals.score_interval(kind, metric, rows[m])) for m, _ in cols]
            for new, old, _ in steps:
                if rows[new] is None or rows[old] is None:
                    cells.append("-")
                    continue
                change = intervals.change_interval(kind, metric, rows[old], rows[new])
                sig = "" if change is None else f" ({bootstrap.significance(change)})"
                delta = rows[new][metric] - rows[old][metric]
                cells.append(f"{100 * delta:+.2f}{_ci(change, signed=True)}{sig}")
            lines.append(f"| {task} | {metric} | {dim} | " + " | ".join(cells) + " |")
    return lines


def _ci(iv, signed: bool = False) -> str:
    if iv is None:
        return " [n/a]"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    return f" [{fmt.format(100 * iv.low)}, {fmt.format(100 * iv.high)}]"


def split_note(limit, tasks=None) -> list[str]:
    """Which BBC and Wikipedia texts each pool holds, what training excludes, which
    pool chose the recipe's defaults, and what each scored task scored."""
    from gecko_jax.data.sources import read_bbc_news, read_wikipedia
    from gecko_jax.data import splits

    articles = read_bbc_news(dedup=True)
    held = splits.bbc_held_out_ids(articles)
    val = splits.bbc_validation_ids(articles)
    wiki = read_wikipedia()
    wiki_val = splits.wikipedia_validation_titles(wiki)
    lines = ["## Evaluation and validation split (data/splits.py)", "",
             f"BBC News: {len(articles)} deduplicated articles. {len(held)} are held out for "
             f"evaluation (every 2nd article of each category, plus every article sharing a "
             f"headline or opening words with one). {len(val)} more, carved from the rest "
             f"the same way, are the validation pool. Fine-tuning's BBC classification task "
             f"uses the other {len(articles) - len(held) - len(val)}; FRet records hold no "
             f"text of either pool. Wikipedia sample: {len(wiki_val)} of {len(wiki)} "
             f"articles validate (every {splits.WIKI_VALIDATION_EVERY}th) and are left out "
             f"of pre-finetuning, fine-tuning and the FRet corpus.", "",
             "The recipe's defaults were chosen on the validation tasks "
             f"({', '.join(splits.VALIDATION_TASKS)}); the held-out tasks only report.",
             f"Scored at limit {limit}:", ""]
    for task in tasks or splits.BBC_TASKS:
        if task not in splits.BBC_TASKS + splits.BBC_VALIDATION_TASKS:
            continue
        s = splits.bbc_task_split(task, articles, limit)
        pool = "validation" if task in splits.BBC_VALIDATION_TASKS else "held-out"
        fit = f"; classifier fitted on {len(s.fit)} training-pool articles" if s.fit else ""
        lines.append(f"- {task}: {len(s.scored)} {pool} articles{fit}")
    lines += ["", "The article ids are listed in report.json (`split`).", ""]
    return lines


def split_json(limit) -> dict:
    from gecko_jax.data.sources import read_bbc_news
    from gecko_jax.data import splits

    articles = read_bbc_news(dedup=True)
    return {"held_out": sorted(splits.bbc_held_out_ids(articles)),
            "scored": {t: list(splits.bbc_task_split(t, articles, limit).scored)
                       for t in splits.BBC_TASKS},
            "fit": {"bbc_classification":
                    list(splits.bbc_task_split("bbc_classification", articles, limit).fit)}}


def plot_stage_times(markers: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(markers)
    secs = [markers[n]["wall_s"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.barh(names[::-1], secs[::-1], color="tab:blue")
    ax.set_xlabel("wall time (s)")
    ax.set_title("gecko distill: time per stage")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(out: pathlib.Path, cfg, markers: dict, ran: list[str]) -> tuple[pathlib.Path, dict]:
    """Writes the report files; returns (OUT/report.md, {model: {task: {dim: scores}}})."""
    from gecko_jax.evaluation import intervals, report
    from gecko_jax.evaluation.local_tasks import get_task

    from gecko_jax.recipes.distill_student import get_student

    student = get_student(getattr(cfg, "student", "minilm"))
    results, models = _results(out, markers)
    tasks = {}
    for name in cfg.tasks:
        t = get_task(name)
        tasks[name] = {"type": t.type, "main_score": t.main_score, "gecko_task": t.gecko_task,
                       "description": t.description}
    report.write_report(out / "eval", results, tasks, models,
                        extra={"limit": cfg.eval_limit, "max_length": cfg.eval_max_length},
                        title="gecko distill: base vs distilled")
    plot_stage_times(markers, out / "stage_times.png")

    total = sum(m["wall_s"] for m in markers.values())
    fret = markers["fret"]["summary"]
    ft = markers["finetune"]["summary"]
    pft = markers["prefinetune"]["summary"]
    ev = markers["eval_base"]["config"]
    subset = ("all articles" if ev["limit"] is None
              else f"an evenly spaced {ev['limit']} articles")
    released = fret.get("released")
    fret_line = (
        f"Teacher `{released['teacher']}` (a finished FRet run's records; no teacher "
        f"run), student "
        f"{student.label}. FRet: the first {fret['records']} of the "
        f"{released['records_in_set']} records in `{released['folder']}` "
        f"({fret['relabelled']} relabelled, {fret['relabel_rate']:.0%}). "
        if released else
        f"Teacher `{cfg.teacher}`, student {student.label}. "
        f"FRet: {fret['passages']} seed passages from a {cfg.fret_corpus_size}-passage "
        f"corpus ({' + '.join(CORPUS_NAMES[c] for c in cfg.fret_corpus)}), "
        f"{cfg.fret_neighbors} neighbours each -> {fret['records']} "
        f"records ({fret['relabelled']} relabelled, {fret['relabel_rate']:.0%}; dropped "
        f"{fret['dropped'] or 'none'}). ")
    news = "bbc" in getattr(cfg, "title_body", ())
    news_pairs = (("Wikipedia section headings, BBC headlines", "BBC headline -> lead pairs + ")
                  if news else ("Wikipedia section headings", ""))
    lines = [
        "# gecko distill report", "",
        fret_line + f"Pre-finetuning: {pft['step']} steps on title -> body pairs "
        f"({news_pairs[0]}). Fine-tuning: {ft['step']} steps on Wikipedia sections + "
        f"{news_pairs[1]}BBC classification (BBC: training pool only, held-out and "
        f"validation articles excluded) + the FRet records, "
        f"from the pre-finetuned model. Batch {cfg.batch_size}, query/doc lengths "
        f"{cfg.query_length}/{cfg.doc_length}, peak learning rate {cfg.learning_rate}"
        + (f" (fine-tuning {cfg.finetune_learning_rate})"
           if getattr(cfg, "finetune_learning_rate", None) else "") + ". "
        f"Final losses: pre-finetune {_f(pft['loss'])}, fine-tune {_f(ft['loss'])}.", "",
        f"Evaluation: {', '.join(ev['tasks'])} on {subset}, max length {ev['max_length']} tokens, dims {', '.join(map(str, ev['dims']))}; "
        "the base model" + (" and the raw LLM encode" if student.is_llm else " encodes")
        + " raw texts, the trained ones "
        + ("raw texts too (trained without prompts)."
           if getattr(cfg, "prompt_format", "gecko") == "raw"
           else "Gecko prompts (`task: ... | query: ...`)."), "",
        "## Stages", "",
        "Peak RSS: the peak resident memory of the process that ran the stage, up to its "
        "end.", "",
        "| stage | wall time (s) | peak RSS (GiB) | this run |", "|---|---:|---:|---|"]
    for name, m in markers.items():
        how = "ran" + (" (resumed)" if m.get("resumed") else "") if name in ran else "reused"
        rss = f"{m['peak_rss_gib']:.2f}" if "peak_rss_gib" in m else "-"
        lines.append(f"| {name} | {m['wall_s']:.0f} | {rss} | {how} |")
    lines += [f"| **total** | **{total:.0f}** | | |", ""]
    lines += split_note(ev["limit"], ev["tasks"])
    ci_note = ("Intervals: seeded bootstrap, 95%, over queries (retrieval), test items "
               "(classification) or clustered items (clustering, clusterings held fixed); "
               "the change's interval is a paired bootstrap on the same resamples. "
               "\"not significant\": the change's interval contains 0 (within noise).")
    if student.is_llm:
        lines += ["## Raw LLM -> pre-finetuned -> fine-tuned, MiniLM as reference "
                  "(main score x100)", "", ci_note, ""]
        lines += student_table(results, tasks)
    else:
        lines += ["## Base vs distilled (main score x100)", "", ci_note, ""]
        lines += before_after_table(results, tasks)
        raw = getattr(cfg, "prompt_format", "gecko") == "raw"
        lines += ["", "## Every stage (main score x100)", "",
                  "The base model in both prompt formats, then each training stage in "
                  + ("raw texts." if raw else "Gecko prompts.") + (
                      " Mean pooling leaves the prompt's tokens out (include_prompt=False), "
                      "for the base in Gecko prompts"
                      + ("." if raw else " as for the trained models.")
                      if not getattr(cfg, "include_prompt", True) else ""), ""]
        lines += student_table(results, tasks, is_llm=False)
    seeds = getattr(cfg, "seeds", 1)
    if seeds > 1:
        from gecko_jax.recipes.distill_student import PREFINETUNED, RAW, RAW_GECKO

        starts = (((RAW, "raw"), (RAW_GECKO, "raw (Gecko)")) if student.is_llm else
                  ((BASE, "base (raw)"), (BASE_GECKO, "base (Gecko)")))
        lines += ["", f"## Over {seeds} training seeds (main score x100)", "",
                  "Every training stage reruns under each seed (initialisation and data "
                  "order); the untrained models and FRet are shared. Each cell: mean "
                  "[min, max] over seeds; a change is significant only where every "
                  "seed's paired 95% interval excludes 0 on the same side.", ""]
        lines += distill_seeds.seeds_table(results, tasks, PREFINETUNED, DISTILLED, starts)
        if SOUP in results:
            lines += ["", "The seeds' fine-tuned models averaged parameter by parameter "
                      "(`gecko soup`), scored like them:", ""]
            lines += distill_seeds.soup_table(results, tasks, SOUP, DISTILLED)
    if NO_FRET in results and SEED_POSITIVE in results:
        lines += ["", "## Ablation: what FRet's re-labelling adds (the paper's Table 3 "
                  "direction)", "",
                  "Four fine-tuning runs from the same pre-finetuned model, mixture and "
                  "steps, differing only in the FRet task: (a) left out, (b) the seed "
                  "passage as positive and no hard negative, (c) the re-labelled positive "
                  "and no hard negative, (d) the default: the re-labelled positive and the "
                  "LLM-mined hard negative; and (e), the compute-matched control: no "
                  "fine-tuning, pre-finetuning run for the steps of both stages."
                  + (" Seed 0 with its intervals, then every seed." if seeds > 1 else ""), ""]
        lines += ablation_table(results, tasks)
        if seeds > 1:
            lines += ["", f"Over {seeds} seeds (each arm from its seed's pre-finetuned "
                      "model): mean [min, max]; (d) - each arm, paired seed by seed.", ""]
            lines += distill_seeds.ablation_seeds_table(
                results, tasks, ABLATION, DISTILLED,
                [(m, label) for m, label in ABLATION_CHANGES])
    if getattr(cfg, "fret_scaling", ()):
        points = distill_seeds.scaling_points(results, cfg.fret_scaling, NO_FRET, DISTILLED,
                                              fret["records"])
        distill_seeds.plot_scaling(results, tasks, points, out / "scaling.png")
        lines += ["", "## Data scaling: more FRet records at equal steps (main score x100)",
                  "", f"Fine-tuning on the first N of the {fret['records']} FRet records "
                  "(0: the ablation's arm (a); all: the default fine-tuning), the same "
                  "mixture, steps and pre-finetuned model otherwise; mean [min, max] over "
                  "seeds, and each size minus the first, paired seed by seed.", ""]
        lines += distill_seeds.scaling_table(results, tasks, points)
        lines += ["", "![data scaling](scaling.png)"]
    lines += ["", "Full metrics: [eval/report.md](eval/report.md). Distilled model: `model/` "
              "(`gecko embed --model model`, sentence-transformers).", "",
              "![scores by task](eval/scores_by_task.png)", "",
              "![score vs dim](eval/score_vs_dim.png)", "",
              "![stage times](stage_times.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({
        "config": dataclasses.asdict(cfg), "stages": markers, "ran_this_invocation": ran,
        "total_wall_s": round(total, 1), "split": split_json(ev["limit"]),
        "results": {m: {t: {str(d): s for d, s in bd.items()} for t, bd in r.items()}
                    for m, r in intervals.strip_per_item(results).items()}},
        indent=1, default=str) + "\n")
    return path, results


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"
