"""`gecko distill`: the whole Gecko recipe in one command, on the embedded default data.

    gecko distill --output runs/distill

Stages: FRet on the Wikipedia sample with the shipped teacher -> pre-finetune
MiniLM on title -> body pairs (Wikipedia sections, BBC training-pool headlines) ->
fine-tune on the FRet + public mixture -> evaluate base MiniLM and the distilled
model on the local BBC tasks -> OUT/report.md (+ PNGs) and OUT/model (loads with `gecko embed` and
sentence-transformers). The defaults take about 6 minutes on a 2-core CPU.

--ablation adds three fine-tuning runs (without FRet; with the seed passage as
positive and no hard negative; with the re-labelled positive and no hard negative), a
compute-matched control (the fine-tuning steps spent on more pre-finetuning instead)
and their evaluations, and an ablation table: the paper's Table 3 at this scale. On an
existing OUT it reuses every stage the default run finished. --fret-scaling 125,250
adds fine-tuning on the first 125 and 250 FRet records (a data-scaling curve, plotted).
--seeds 3 reruns every training stage (the arms and the curve included) under each
seed and adds the seeds' fine-tuned models averaged (a model soup) as one more model.

Every stage is cached in OUT/<stage>/ and resumable: rerun the same command to
reuse finished stages and continue an interrupted one. A run whose options
differ from the finished stages' is refused, naming the differences; --redo
deletes the first changed stage and every later one and runs them again.

--student gemma3 (or smollm2) starts from a decoder LLM (bidirectional, mean
pooling) instead of MiniLM, with its own smaller defaults (Gemma-3: 32 minutes on
a loaded 2-core CPU, about 20 idle; 10.5 GB peak RSS); the report then shows the raw LLM,
the pre-finetuned and the fine-tuned model, with MiniLM as a reference row.

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


def _record_counts(text: str) -> tuple[int, ...]:
    """--fret-scaling: comma-separated positive record counts, or "none"."""
    if text.strip().lower() == "none":
        return ()
    try:
        counts = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated record counts (or none)") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: record counts must be positive")
    return counts


def _corpora(text: str) -> tuple[str, ...]:
    from gecko_jax.recipes.distill_fret import FRET_CORPORA

    names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    bad = [n for n in names if n not in FRET_CORPORA]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected some of {', '.join(FRET_CORPORA)}")
    return names


def _title_body(text: str) -> tuple[str, ...]:
    from gecko_jax.recipes.distill import check_title_body

    try:
        return check_title_body(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(subparsers) -> None:
    from gecko_jax.commands.fret import scorers_arg
    from gecko_jax.recipes.distill import PRESETS, DistillConfig
    from gecko_jax.recipes.distill_student import STUDENTS

    d = DistillConfig()
    p = subparsers.add_parser("distill", help="the whole recipe: FRet -> pre-finetune -> "
                                              "fine-tune -> evaluate -> report",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="run folder (stages, report.md, model/)")
    p.add_argument("--teacher", default=d.teacher,
                   help="smollm2 | gemma3 | FILE.gguf | HF folder | http(s) URL")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named scale: reference = FRet on 1,000 Wikipedia passages (all "
                        "3,685 as corpus, 20 neighbours, rank-20 negatives, bfloat16 "
                        "teacher), 300 + 300 steps, 3 seeds, the ablation, a scaling "
                        "curve at 125/250/500 records (hours on 2 cores; with "
                        "--fret-records data/fret_reference, its released FRet set, the "
                        "teacher is not run); flags given beside it win")
    p.add_argument("--fret-corpus-size", type=int, default=None,
                   help="passages in the FRet corpus, evenly spaced over its sources (0: all; "
                        f"default {d.fret_corpus_size})")
    p.add_argument("--fret-corpus", type=_corpora, default=d.fret_corpus,
                   help="comma-separated sources of the FRet corpus, an equal share each: "
                        "wikipedia, bbc (training-pool articles) (default "
                        f"{','.join(d.fret_corpus)})")
    p.add_argument("--title-body", type=_title_body, default=None,
                   help="comma-separated corpora of the title -> body pairs both training "
                        "stages use: wikipedia (section headings), bbc (training-pool "
                        f"headlines) (default {','.join(d.title_body)})")
    p.add_argument("--fret-limit", type=int, default=None,
                   help="seed passages the teacher writes queries for")
    p.add_argument("--fret-neighbors", type=int, default=None,
                   help="candidates re-labelled per query")
    p.add_argument("--fret-records", default=None, metavar="DIR",
                   help="train on a finished FRet run folder (`gecko fret` output: "
                        "manifest.json + records) instead of running the teacher")
    p.add_argument("--fret-records-limit", type=int, default=None, metavar="N",
                   help="with --fret-records: its first N records only")
    p.add_argument("--fret-scorers", default=None, metavar="ql,rc", type=scorers_arg,
                   help="with --fret-records: re-select positives and negatives from the "
                        "stored teacher scores, fusing these (ql, rc or both)")
    p.add_argument("--fret-negative", default=None, metavar="STRATEGY",
                   help="with --fret-records: re-select hard negatives: none | lowest | "
                        "rank:K | random")
    p.add_argument("--fret-scaling", type=_record_counts, default=None, metavar="N,N,...",
                   help="a data-scaling curve: fine-tune also on the first N FRet records "
                        "for each N, at the same steps, each under every seed (reference "
                        "preset: 125,250,500; none: off)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"steps of each training stage (default {d.prefinetune_steps} "
                        f"and {d.finetune_steps})")
    p.add_argument("--prefinetune-steps", type=int, default=None)
    p.add_argument("--finetune-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help=f"default {d.batch_size}")
    p.add_argument("--query-length", type=int, default=None, help=f"default {d.query_length}")
    p.add_argument("--doc-length", type=int, default=None, help=f"default {d.doc_length}")
    p.add_argument("--learning-rate", type=float, default=None,
                   help=f"peak learning rate of pre-finetuning, and of fine-tuning unless "
                        f"--finetune-learning-rate is given (default {d.learning_rate})")
    p.add_argument("--finetune-learning-rate", type=float, default=None,
                   help=f"peak learning rate of fine-tuning (default "
                        f"{d.finetune_learning_rate})")
    p.add_argument("--start-distill", type=float, default=None, metavar="W",
                   help=f"weight of distillation from the frozen start tower reading each "
                        f"query without its prompt, in both training stages (0: off; "
                        f"default {d.start_distill})")
    p.add_argument("--prompt-format", choices=("gecko", "raw"), default=None,
                   help=f"train (and export) with the unified format's task and title "
                        f"prompts, or on each text alone (default {d.prompt_format})")
    p.add_argument("--eval-limit", type=int, default=None,
                   help=f"evenly spaced BBC articles to evaluate on (0: all; default "
                        f"{d.eval_limit})")
    p.add_argument("--eval-max-length", type=int, default=None, help=f"default {d.eval_max_length}")
    p.add_argument("--dims", type=_dims, default=None,
                   help=f"Matryoshka dims, e.g. 384,128 (default {','.join(map(str, d.dims))})")
    p.add_argument("--student", default=d.student, choices=sorted(STUDENTS),
                   help="the tower to train: MiniLM, or a decoder LLM (its own defaults: "
                        "recipes/distill_student.py)")
    p.add_argument("--gin_bindings", "--gin-bindings", action="append", default=[],
                   help="gin binding (repeatable): FRetConfig.* etc. for FRet, else training")
    p.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=None,
                   help="also fine-tune (a) without FRet, (b) with FRet's seed passages as "
                        "positives, (c) with re-labelled positives and no hard negatives, "
                        "and (e) pre-finetune for both stages' steps, and report them beside "
                        "the default (the paper's Table 3); --no-ablation turns a preset's "
                        "off")
    p.add_argument("--seeds", type=int, default=None,
                   help="run every training stage under this many training seeds, and "
                        "score their soup; the report gives mean and min-max over seeds, "
                        "and calls a change significant only when every seed's paired "
                        "interval agrees")
    p.add_argument("--redo", action="store_true",
                   help="rerun the first stage whose options changed and every later one")
    p.add_argument("--validation", action="store_true",
                   help="score the validation tasks (carved from the training pools, "
                        "data/splits.py) instead of the held-out BBC tasks: for choosing "
                        "settings without looking at the held-out articles")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def config_from_args(args):
    from gecko_jax.errors import GeckoError
    from gecko_jax.recipes.distill import TASKS, VALIDATION_TASKS, DistillConfig, preset_defaults
    from gecko_jax.recipes.distill_student import student_defaults

    for flag in ("fret_records_limit", "fret_scorers", "fret_negative"):
        if getattr(args, flag) is not None and not args.fret_records:
            raise GeckoError(f"--{flag.replace('_', '-')} needs --fret-records")
    if args.fret_negative:
        from gecko_jax.fret.relabel import parse_negative

        try:
            parse_negative(args.fret_negative)
        except ValueError as err:
            raise GeckoError(f"--fret-negative: {err}") from None
    preset = preset_defaults(args.preset)
    d = DistillConfig(student=args.student, **{**student_defaults(args.student), **preset})
    pick = lambda value, default: default if value is None else value  # noqa: E731
    pft = args.prefinetune_steps or args.steps or d.prefinetune_steps
    ft = args.finetune_steps or args.steps or d.finetune_steps
    return DistillConfig(
        teacher=args.teacher, fret_corpus_size=pick(args.fret_corpus_size, d.fret_corpus_size),
        fret_corpus=tuple(args.fret_corpus), fret_limit=pick(args.fret_limit, d.fret_limit),
        title_body=tuple(pick(args.title_body, d.title_body)),
        fret_neighbors=pick(args.fret_neighbors, d.fret_neighbors),
        prefinetune_steps=pft, finetune_steps=ft,
        fret_records=args.fret_records, fret_records_limit=args.fret_records_limit,
        fret_scorers=args.fret_scorers, fret_negative=args.fret_negative,
        fret_scaling=pick(args.fret_scaling, d.fret_scaling),
        batch_size=pick(args.batch_size, d.batch_size),
        query_length=pick(args.query_length, d.query_length),
        doc_length=pick(args.doc_length, d.doc_length),
        learning_rate=pick(args.learning_rate, d.learning_rate),
        finetune_learning_rate=pick(args.finetune_learning_rate,
                                    None if args.learning_rate else d.finetune_learning_rate),
        eval_limit=pick(args.eval_limit, d.eval_limit) or None,
        eval_max_length=pick(args.eval_max_length, d.eval_max_length),
        dims=tuple(pick(args.dims, d.dims)),
        start_distill=pick(args.start_distill, d.start_distill),
        prompt_format=pick(args.prompt_format, d.prompt_format),
        gin_bindings=tuple(d.gin_bindings) + tuple(args.gin_bindings),
        ablation=pick(args.ablation, d.ablation), student=args.student,
        seeds=max(1, pick(args.seeds, d.seeds)),
        tasks=VALIDATION_TASKS if args.validation else TASKS)


def run(args) -> int:
    from gecko_jax.recipes.distill import distill

    result = distill(args.output, config_from_args(args), redo=args.redo,
                     progress=not args.no_progress)
    text = result["report"].read_text()
    print(text.split("![")[0].rstrip())
    print(f"\nreport: {result['report']}\nmodel: {result['model']}")
    return 0
