"""`gecko eval`: score embedding models on local tasks and MTEB; write a report.

    gecko eval --model minilm --model runs/x/export \\
        --tasks bbc_retrieval,bbc_classification,bbc_clustering --dims 384,128 \\
        --output runs/eval

Task names: the local tasks (bbc_retrieval, bbc_classification,
bbc_clustering), `beir:<folder>` for a BEIR-format folder, and `mteb:<name>`
for a standard MTEB task (its data are downloaded by mteb). `--route mteb`
runs the local tasks through the MTEB harness instead of our own loop;
`--route both` runs both and reports them side by side.
`--model minilm` names the shipped all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import pathlib

ROUTES = ("local", "mteb", "both")


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate embedding models; write report.json/md/png",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="DIR",
                   help="model folder (repeatable); 'minilm' = the shipped all-MiniLM-L6-v2")
    p.add_argument("--tasks", default="bbc_retrieval,bbc_classification,bbc_clustering",
                   help="comma-separated task names (default: all BBC tasks)")
    p.add_argument("--dims", default=None,
                   help="comma-separated Matryoshka dims (default: each model's full size)")
    p.add_argument("--format", choices=("gecko", "raw"), default=None,
                   help="prompt format (default: what each model folder declares)")
    p.add_argument("--route", choices=ROUTES, default="local",
                   help="local loop, the MTEB harness, or both side by side")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate on an evenly spaced subset of N items per task (quick runs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None, help="token cap (default: model's)")
    p.add_argument("--output", required=True, help="folder for report.json, report.md, PNGs")
    p.set_defaults(func=run)


def resolve_model(spec: str) -> tuple[str, pathlib.Path]:
    """(display name, folder) for a --model value."""
    from gecko_jax import assets
    from gecko_jax.errors import GeckoError

    if spec == "minilm":
        return "minilm", assets.minilm_dir()
    path = pathlib.Path(spec)
    if not path.is_dir():
        raise GeckoError(f"--model {spec}: not a folder (or 'minilm' for the shipped base model)")
    return path.resolve().name, path


def parse_dims(text: str | None) -> list[int] | None:
    from gecko_jax.errors import GeckoError

    if not text:
        return None
    try:
        dims = sorted({int(x) for x in text.split(",") if x.strip()}, reverse=True)
    except ValueError:
        raise GeckoError(f"--dims {text!r}: expected comma-separated integers") from None
    if not dims or min(dims) < 1:
        raise GeckoError(f"--dims {text!r}: dims must be positive")
    return dims


def parse_tasks(text: str):
    """(local tasks, mteb task names): unknown names raise, listing the known ones."""
    from gecko_jax.errors import GeckoError
    from gecko_jax.evaluation.local_tasks import get_task

    local, standard = [], []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise GeckoError("--tasks is empty")
    for name in names:
        if name.startswith("mteb:"):
            standard.append(name[len("mteb:"):])
        else:
            local.append(get_task(name))
    return local, standard


def run(args) -> int:
    from tqdm.auto import tqdm

    from gecko_jax.encode import Encoder
    from gecko_jax.errors import GeckoError
    from gecko_jax.evaluation import mteb_adapter, report
    from gecko_jax.evaluation.evaluate import evaluate_model
    from gecko_jax.evaluation.local_tasks import CachedEncoder

    local_tasks, standard_names = parse_tasks(args.tasks)  # bad names fail before loading
    dims_arg = parse_dims(args.dims)
    specs = [resolve_model(m) for m in args.model]
    seen: dict[str, int] = {}
    results, models, task_info = {}, {}, {}
    for t in local_tasks:
        task_info[t.name] = {"type": t.type, "main_score": t.main_score,
                             "gecko_task": t.gecko_task, "description": t.description}
    for n in standard_names:
        meta = mteb_adapter.standard_mteb_task(n).metadata
        task_info[f"mteb:{n}"] = {"type": meta.type, "main_score": "main_score",
                                  "gecko_task": mteb_adapter.TASK_TYPE_STRINGS.get(
                                      meta.type, mteb_adapter.DEFAULT_TASK),
                                  "description": meta.description}
    steps_per_model = (len(local_tasks) * (2 if args.route == "both" else 1)
                       + len(standard_names))
    progress = tqdm(total=steps_per_model * len(specs), desc="eval", unit="task")
    for name, folder in specs:
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}-{seen[name]}"
        enc = Encoder.from_pretrained(folder, max_length=args.max_length,
                                      batch_size=args.batch_size)
        cached = CachedEncoder(enc, format=args.format)
        dims = dims_arg or [enc.embedding_dim]
        too_big = [d for d in dims if d > enc.embedding_dim]
        if too_big:
            raise GeckoError(f"--dims {too_big} exceed {name}'s embedding size {enc.embedding_dim}")
        by_route = evaluate_model(cached, name, local_tasks, standard_names, dims, args.route,
                                  limit=args.limit, progress=progress)
        for route, res in by_route.items():
            label = name if args.route != "both" else f"{name} [{route}]"
            results[label] = res
            models[label] = {"path": str(folder), "format": cached.format,
                             "embedding_dim": enc.embedding_dim, "max_length": enc.max_length,
                             "route": route}
    progress.close()
    paths = report.write_report(args.output, results, task_info, models,
                                extra={"limit": args.limit, "route": args.route})
    print(report.to_markdown(results, task_info, models).split("## All metrics")[0].rstrip())
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0
