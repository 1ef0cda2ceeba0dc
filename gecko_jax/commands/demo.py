"""`gecko demo`: the main job on the embedded default data.

Embeds the deduplicated BBC News headlines (as queries) and article bodies (as
documents) with a model folder (default: the shipped MiniLM) and prints
headline -> article retrieval nDCG@10 (the `bbc_retrieval` task of `gecko eval`):
a one-minute check of a model. The README's main job is `gecko distill`.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="BBC headline -> article retrieval with MiniLM (nDCG@10)",
                       description=__doc__)
    p.add_argument("--model", default="minilm", help="model folder, or 'minilm'")
    p.add_argument("--format", choices=("gecko", "raw"), default=None,
                   help="prompt format (default: the model folder's; raw for MiniLM)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="use an evenly spaced N articles")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from gecko_jax.commands.embed import resolve_model
    from gecko_jax.encode import Encoder, enable_compile_cache
    from gecko_jax.evaluation.local_tasks import CachedEncoder, get_task

    start = time.perf_counter()
    enable_compile_cache()
    encoder = Encoder.from_pretrained(resolve_model(args.model), max_length=args.max_length)
    task = get_task("bbc_retrieval")
    data = task.load(args.limit)
    scores = task.evaluate(CachedEncoder(encoder, format=args.format), data=data)
    metrics = scores[encoder.embedding_dim]
    print(f"BBC News headline -> article retrieval: {len(data.queries)} queries, "
          f"{len(data.corpus)} documents, model {args.model}, "
          f"format {args.format or encoder.meta.prompt_format}, max length {args.max_length}")
    print(f"nDCG@10 = {metrics['ndcg_at_10']:.4f}  recall@10 = {metrics['recall_at_10']:.4f}  "
          f"MRR@10 = {metrics['mrr_at_10']:.4f}  ({time.perf_counter() - start:.0f} s)")
    return 0
