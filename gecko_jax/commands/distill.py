"""`gecko distill`: the whole Gecko recipe in one command, on the embedded default data.

    gecko distill --output runs/distill

Stages: FRet on the Wikipedia sample with the shipped teacher -> pre-finetune
MiniLM on Wikipedia title/section pairs -> fine-tune on the FRet + public
mixture -> evaluate base MiniLM and the distilled model on the local BBC tasks
-> OUT/report.md (+ PNGs) and OUT/model (loads with `gecko embed` and
sentence-transformers). The defaults fit about 15 minutes on a 2-core CPU.

--ablation adds two fine-tuning runs (without FRet; with the seed passage as
positive and no hard negative) and their evaluations, and an ablation table: what
FRet's re-labelling adds at this scale. On an existing OUT it reuses every stage
the default run finished.

Every stage is cached in OUT/<stage>/ and resumable: rerun the same command to
reuse finished stages and continue an interrupted one. A run whose options
differ from the finished stages' is refused, naming the differences; --redo
deletes the first changed stage and every later one and runs them again.

Scale up with the flags below, or with gin bindings: FRetConfig.* /
GenerateConfig.* / RelabelConfig.* go to FRet, every other binding to both
training stages (e.g. --gin_bindings="MeshSpec.data=8").
"""

from __future__ import annotations

import argparse


def _dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(sorted({int(x) for x in text.split(",") if x.strip()}, reverse=True))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: dims must be positive")
    return dims


def register(subparsers) -> None:
    from gecko_jax.recipes.distill import DistillConfig

    d = DistillConfig()
    p = subparsers.add_parser("distill", help="the whole recipe: FRet -> pre-finetune -> "
                                              "fine-tune -> evaluate -> report",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="run folder (stages, report.md, model/)")
    p.add_argument("--teacher", default=d.teacher,
                   help="smollm2 | gemma3 | FILE.gguf | HF folder | http(s) URL")
    p.add_argument("--fret-corpus-size", type=int, default=d.fret_corpus_size,
                   help="Wikipedia passages in the FRet corpus, evenly spaced (0: all)")
    p.add_argument("--fret-limit", type=int, default=d.fret_limit,
                   help="seed passages the teacher writes queries for")
    p.add_argument("--fret-neighbors", type=int, default=d.fret_neighbors,
                   help="candidates re-labelled per query")
    p.add_argument("--steps", type=int, default=None,
                   help=f"steps of each training stage (default {d.prefinetune_steps} "
                        f"and {d.finetune_steps})")
    p.add_argument("--prefinetune-steps", type=int, default=None)
    p.add_argument("--finetune-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--query-length", type=int, default=d.query_length)
    p.add_argument("--doc-length", type=int, default=d.doc_length)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--eval-limit", type=int, default=d.eval_limit,
                   help="evenly spaced BBC articles to evaluate on (0: all)")
    p.add_argument("--eval-max-length", type=int, default=d.eval_max_length)
    p.add_argument("--dims", type=_dims, default=d.dims, help="Matryoshka dims, e.g. 384,128")
    p.add_argument("--gin_bindings", "--gin-bindings", action="append", default=[],
                   help="gin binding (repeatable): FRetConfig.* etc. for FRet, else training")
    p.add_argument("--ablation", action="store_true",
                   help="also fine-tune (a) without FRet and (b) with FRet's seed passages as "
                        "positives, and report them beside the default (the paper's Table 3)")
    p.add_argument("--redo", action="store_true",
                   help="rerun the first stage whose options changed and every later one")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def config_from_args(args):
    from gecko_jax.recipes.distill import DistillConfig

    d = DistillConfig()
    pft = args.prefinetune_steps or args.steps or d.prefinetune_steps
    ft = args.finetune_steps or args.steps or d.finetune_steps
    return DistillConfig(
        teacher=args.teacher, fret_corpus_size=args.fret_corpus_size, fret_limit=args.fret_limit,
        fret_neighbors=args.fret_neighbors, prefinetune_steps=pft, finetune_steps=ft,
        batch_size=args.batch_size, query_length=args.query_length, doc_length=args.doc_length,
        learning_rate=args.learning_rate, eval_limit=args.eval_limit or None,
        eval_max_length=args.eval_max_length, dims=tuple(args.dims),
        gin_bindings=tuple(args.gin_bindings), ablation=args.ablation)


def run(args) -> int:
    from gecko_jax.recipes.distill import distill

    result = distill(args.output, config_from_args(args), redo=args.redo,
                     progress=not args.no_progress)
    text = result["report"].read_text()
    print(text.split("![")[0].rstrip())
    print(f"\nreport: {result['report']}\nmodel: {result['model']}")
    return 0
