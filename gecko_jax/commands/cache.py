"""`gecko cache`: tokenise FRet shards once into a seqio cache (Apache Beam).

    gecko cache --task gecko_fret --files 'fret/records-*.jsonl' \\
        --tokenizer minilm --cache_dir cache/
    # then train on it under the same task name:
    #   train.data_fn = @streaming_mixture_data
    #   streaming_mixture_data.file_sets = {"gecko_fret": "fret/records-*.jsonl"}
    #   streaming_mixture_data.cache_dir = "cache/"

Runs parsing, the held-out evaluation filter, the Gecko format and the encoder's
tokenizer over every shard (Beam's DirectRunner here; --beam-arg=--runner=... for
Dataflow, Flink or Spark) and writes CACHE_DIR/<task>/train.tfrecord-* with seqio's
info and stats files and a COMPLETED marker.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("cache", help="tokenise FRet shards once into a seqio cache (Beam)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help="task name (the file set's name in training)")
    p.add_argument("--files", action="append", required=True,
                   help="FRet JSONL or TFRecord shards: paths or a glob (repeatable)")
    p.add_argument("--tokenizer", required=True,
                   help="model folder holding tokenizer.json, or 'minilm' (the shipped one)")
    p.add_argument("--cache_dir", "--cache-dir", required=True, help="cache root folder")
    p.add_argument("--num-shards", type=int, default=None,
                   help="output shards (default: one per input file)")
    p.add_argument("--keep-eval-test", action="store_true",
                   help="keep records touching texts held out for evaluation")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    p.add_argument("--beam-arg", action="append", default=[],
                   help="a Beam pipeline option, e.g. --beam-arg=--direct_num_workers=2")
    p.set_defaults(func=run)


def run(args) -> int:
    from gecko_jax.commands.embed import resolve_model
    from gecko_jax.data import stream_cache, stream_mixtures

    files = [f for spec in args.files for f in stream_mixtures.expand_files(
        args.task, spec if any(c in spec for c in "*?[") else [spec])]
    out = stream_cache.cache_files(args.task, files, resolve_model(args.tokenizer),
                                   args.cache_dir, exclude_eval_test=not args.keep_eval_test,
                                   num_shards=args.num_shards, pipeline_args=args.beam_arg,
                                   overwrite=args.overwrite)
    print(f"cached {args.task} ({len(files)} file(s)) in {out}")
    return 0
