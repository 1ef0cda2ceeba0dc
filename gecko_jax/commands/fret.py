"""`gecko fret`: FRet, the two-step LLM distillation data pipeline (generate, re-label).

  gecko fret corpus --source wikipedia --output wiki.jsonl
  gecko fret --corpus wiki.jsonl --output runs/fret_wiki --teacher smollm2 --limit 64
  gecko fret stats runs/fret_wiki
  gecko fret release runs/fret_wiki --output data/fret_wiki   # one file + manifest
  gecko fret rerank-eval --teacher gemma3 --queries 100 --num-neighbors 20

A run resumes when restarted with the same options (finished shards are kept);
different options into the same --output are refused. --runner beam runs the same
stages as an Apache Beam pipeline (pass runner options with --beam-arg, e.g.
--beam-arg=--runner=FlinkRunner). Options may also come from gin: bind
FRetConfig.*, GenerateConfig.*, RelabelConfig.* and FilterConfig.* (flags win over
gin). Prompts are chat turns for a chat teacher (SmolLM2-Instruct) and completion text
for a base one (Gemma-3-270M); --prompt-style overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib

log = logging.getLogger(__name__)


def scorers_arg(text: str) -> tuple[str, ...]:
    """argparse type of --scorers / --fret-scorers: 'ql,rc' | 'ql' | 'rc'."""
    from gecko_jax.fret.relabel import parse_scorers

    try:
        return parse_scorers(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(subparsers) -> None:
    p = subparsers.add_parser("fret", help="generate FRet training data with a teacher LLM",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", help='JSONL corpus, one {"id", "title", "text"} per line')
    p.add_argument("--output", help="run folder (records, manifest); resumable")
    p.add_argument("--teacher", help="smollm2 | gemma3 | FILE.gguf | HF folder | http(s) URL")
    p.add_argument("--embedder", help="initial embedder folder (default: shipped MiniLM)")
    p.add_argument("--embedder-format", choices=("raw", "gecko"),
                   help="how the embedder wants texts (default: its folder's setting)")
    p.add_argument("--num-neighbors", type=int, help="N candidates per query (default 10)")
    p.add_argument("--limit", type=int, help="seed passages to draw (default: all)")
    p.add_argument("--shard-size", type=int, help="seed passages per shard (default 8)")
    p.add_argument("--seed", type=int, help="sampling seed (default 0)")
    p.add_argument("--negative", help="hard negative: lowest | rank:K | random | none")
    p.add_argument("--rrf-k", type=float, help="reciprocal rank fusion k (default 0)")
    p.add_argument("--scorers", type=scorers_arg,
                   help="teacher scores the fusion uses: ql,rc (default, the paper), ql or rc "
                        "(`gecko fret stats` shows how often each ranks the seed first)")
    p.add_argument("--prompts", help="folder with qg.json, ql.json, rc.json")
    p.add_argument("--prompt-style", choices=("auto", "chat", "completion"),
                   help="chat turns or completion text (default auto: chat for a teacher "
                        "with a chat template)")
    p.add_argument("--max-batch", type=int, help="teacher rows per batch (default 16)")
    p.add_argument("--teacher-mesh", help="data-parallel local teacher over a device mesh: "
                                          "data=-1 (all devices), data=8, data=4,model=2")
    p.add_argument("--teacher-dtype", choices=("float32", "bfloat16"),
                   help="local teacher compute dtype (default float32)")
    p.add_argument("--teacher-batch-invariant", action="store_true", default=None,
                   help="score each row by itself: the same scores on any number of "
                        "devices (--teacher-mesh)")
    p.add_argument("--runner", choices=("local", "beam"), default="local")
    p.add_argument("--beam-arg", action="append", default=[],
                   help="Beam pipeline option, e.g. --beam-arg=--runner=DirectRunner")
    p.add_argument("--no-tfrecord", action="store_true", help="skip the TFRecord copies")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--gin_file", "--gin-file", action="append", default=[])
    p.add_argument("--gin_bindings", "--gin-bindings", action="append", default=[])
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="fret_command")
    c = sub.add_parser("corpus", help="write a shipped corpus as FRet corpus JSONL (training "
                                      "articles only: FRet output is training data, so the "
                                      "evaluation and validation articles of data/splits.py "
                                      "stay out)")
    c.add_argument("--source", choices=("wikipedia", "bbc"), required=True)
    c.add_argument("--output", dest="corpus_output", required=True)
    c.add_argument("--words", type=int, default=None,
                   help="words per passage (wikipedia: 100; bbc: 0 = whole body)")
    c.add_argument("--path", default=None, help="source file/folder (default: shipped asset)")
    c.set_defaults(func=run_corpus)
    s = sub.add_parser("stats", help="counts, task and query-length histograms, plot")
    s.add_argument("run_dir")
    s.add_argument("--plot", default=None, help="PNG path (default RUN_DIR/stats.png)")
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.set_defaults(func=run_stats)
    rel = sub.add_parser("release", help="pack a finished run for release: its records in "
                                         "one JSONL file, a manifest with their count and "
                                         "sha256, its statistics (training reads it with "
                                         "`gecko distill --fret-records`)")
    rel.add_argument("run_dir")
    rel.add_argument("--output", dest="release_output", default=None,
                     help="the release folder (created)")
    rel.add_argument("--command", dest="release_command", default="",
                     help="the command that made the run, kept in the manifest")
    rel.add_argument("--check", action="store_true",
                     help="only check RUN_DIR, a released folder, against its manifest")
    rel.set_defaults(func=run_release)
    r = sub.add_parser("rerank-eval", help="appendix A: stage 2 as a re-ranker on BBC "
                                           "headline -> article retrieval")
    r.add_argument("--teacher", dest="rerank_teacher", default="smollm2")
    r.add_argument("--queries", type=int, default=50)
    r.add_argument("--num-neighbors", dest="rerank_n", type=int, default=20)
    r.add_argument("--passage-words", type=int, default=96)
    r.add_argument("--seed", dest="rerank_seed", type=int, default=0)
    r.add_argument("--max-batch", dest="rerank_max_batch", type=int, default=16)
    r.add_argument("--report", default=None, help="also write the result as JSON here")
    r.set_defaults(func=run_rerank_eval)


def build_config(args):
    from gecko_jax.errors import GeckoError

    from gecko_jax.fret.pipeline import config_from_gin

    cfg = config_from_gin(args.gin_file, args.gin_bindings)
    top = {"teacher": args.teacher, "embedder": args.embedder,
           "embedder_format": args.embedder_format, "limit": args.limit,
           "shard_size": args.shard_size, "seed": args.seed, "prompts_dir": args.prompts,
           "prompt_style": args.prompt_style,
           "max_batch": args.max_batch, "teacher_mesh": args.teacher_mesh,
           "teacher_dtype": args.teacher_dtype,
           "teacher_batch_invariant": args.teacher_batch_invariant}
    rel = {"num_neighbors": args.num_neighbors, "negative": args.negative, "rrf_k": args.rrf_k,
           "scorers": args.scorers}
    try:
        relabel = dataclasses.replace(cfg.relabel, **{k: v for k, v in rel.items() if v is not None})
        cfg = dataclasses.replace(cfg, relabel=relabel,
                                  **{k: v for k, v in top.items() if v is not None})
    except ValueError as err:
        raise GeckoError(str(err)) from None
    return dataclasses.replace(cfg, tfrecord=not args.no_tfrecord, progress=not args.no_progress)


def run(args) -> int:
    from gecko_jax.errors import GeckoError

    if not args.corpus or not args.output:
        raise GeckoError("gecko fret needs --corpus FILE.jsonl and --output DIR "
                         "(or a subcommand: corpus, stats, release, rerank-eval)")
    cfg = build_config(args)
    if args.runner == "beam":
        from gecko_jax.fret.beam import run_beam

        manifest = run_beam(cfg, args.corpus, args.output, args.beam_arg)
    else:
        from gecko_jax.fret.pipeline import run_local

        manifest = run_local(cfg, args.corpus, args.output)
    c = manifest["counts"]
    print(f"FRet: {c['records']} records from {c['passages']} passages "
          f"(generated {c['generated']}, parse failures {c['parse_failures']}, relabelled "
          f"{c['relabelled']} = {c['relabel_rate']:.1%}, dropped {c['dropped'] or 'none'}) "
          f"-> {args.output}")
    return 0


def run_corpus(args) -> int:
    from gecko_jax.fret import corpus

    if args.source == "wikipedia":
        rows = corpus.wikipedia_passages(args.path, words=args.words or 100)
    else:
        rows = corpus.bbc_passages(args.path, words=args.words or 0)
    n = corpus.write_corpus(rows, args.corpus_output)
    print(f"wrote {n} passages to {args.corpus_output}")
    return 0


def run_stats(args) -> int:
    from gecko_jax.fret import stats

    s = stats.collect(args.run_dir)
    png = stats.plot(s, args.plot or pathlib.Path(args.run_dir) / "stats.png")
    print(json.dumps(s, indent=1) if args.json else stats.format_stats(s))
    print(f"plot: {png}")
    return 0


def run_release(args) -> int:
    from gecko_jax.errors import GeckoError
    from gecko_jax.fret import release

    if args.check:
        print(f"{args.run_dir}: ok, " + release.describe(release.verify(args.run_dir)))
        return 0
    if not args.release_output:
        raise GeckoError("gecko fret release needs --output DIR (or --check)")
    release.release(args.run_dir, args.release_output, args.release_command)
    manifest = release.verify(args.release_output)
    print(f"released to {args.release_output}: " + release.describe(manifest))
    return 0


def run_rerank_eval(args) -> int:
    from gecko_jax.fret import rerank_eval

    result = rerank_eval.bbc_rerank_eval(args.rerank_teacher, num_queries=args.queries,
                                         num_neighbors=args.rerank_n,
                                         passage_words=args.passage_words, seed=args.rerank_seed,
                                         max_batch=args.rerank_max_batch)
    print(rerank_eval.format_result(result))
    if args.report:
        pathlib.Path(args.report).write_text(json.dumps(result, indent=1) + "\n")
    return 0
