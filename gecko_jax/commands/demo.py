"""`gecko demo`: the main job on the embedded default data.

Embeds the deduplicated BBC News headlines (as queries) and article bodies (as
documents) with a model folder (default: the shipped MiniLM) and prints
headline -> article retrieval nDCG@10. (Issue 8 grows this into `gecko distill`.)
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="BBC headline -> article retrieval with MiniLM (nDCG@10)",
                       description=__doc__)
    p.add_argument("--model", default="minilm", help="model folder, or 'minilm'")
    p.add_argument("--format", choices=("gecko", "raw"), default=None)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="use only the first N articles")
    p.set_defaults(func=run)


def ndcg_at_10_single(scores_qn, relevant_q):
    """nDCG@10 with one relevant document per query: 1/log2(1 + rank) within the top 10."""
    import numpy as np

    target = scores_qn[np.arange(len(relevant_q)), relevant_q]
    rank_q = 1 + np.sum(scores_qn > target[:, None], axis=1)
    return float(np.mean(np.where(rank_q <= 10, 1.0 / np.log2(1.0 + rank_q), 0.0)))


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from gecko_jax.commands.embed import resolve_model
    from gecko_jax.data.sources import read_bbc_news
    from gecko_jax.encode import Encoder, enable_compile_cache

    start = time.perf_counter()
    articles = read_bbc_news(dedup=True)[:args.limit]
    enable_compile_cache()
    encoder = Encoder.from_pretrained(resolve_model(args.model), max_length=args.max_length)
    queries = encoder.encode_queries([a.headline for a in articles], task="search result",
                                     format=args.format)
    docs = encoder.encode_documents([a.body for a in articles], format=args.format)
    ndcg = ndcg_at_10_single(queries @ docs.T, np.arange(len(articles)))
    print(f"BBC News headline -> article retrieval: {len(articles)} queries, "
          f"{len(articles)} documents, model {args.model}, "
          f"format {args.format or encoder.meta.prompt_format}")
    print(f"nDCG@10 = {ndcg:.4f}  ({time.perf_counter() - start:.0f} s)")
    return 0
