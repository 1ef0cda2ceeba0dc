"""Exact top-k search: gecko_jax.retrieval.ExactIndex vs faiss IndexFlatIP.

Both do exact inner-product search in float32 over the same unit vectors
(100k x 384 corpus, 1,000 queries, k = 100 by default) in one process.
Each side is timed on its best of `--repeats` searches after a warm-up (which
for ours includes the jit compile); index build time is reported apart.
The last line is `ratio <x>` = our queries per second / faiss's.

    python bench/knn.py            # full size
    python bench/knn.py --quick    # 20k x 384, 200 queries (well under a minute)
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def unit_vectors(rng, n, d):
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=16384)
    parser.add_argument("--group-size", type=int, default=16,
                        help="rows per group in the running top-k (1 = plain per-chunk top-k)")
    parser.add_argument("--quick", action="store_true", help="20k corpus, 200 queries")
    args = parser.parse_args(argv)
    if args.quick:
        args.corpus, args.queries = 20_000, 200

    import faiss
    import jax

    from gecko_jax.retrieval import ExactIndex, corpus_mesh

    rng = np.random.default_rng(0)
    corpus = unit_vectors(rng, args.corpus, args.dim)
    queries = unit_vectors(rng, args.queries, args.dim)
    print(f"corpus {args.corpus} x {args.dim}, {args.queries} queries, k={args.k}, "
          f"jax devices {len(jax.devices())} ({jax.default_backend()}), "
          f"faiss threads {faiss.omp_get_max_threads()}")

    start = time.perf_counter()
    theirs = faiss.IndexFlatIP(args.dim)
    theirs.add(corpus)
    print(f"faiss build   {time.perf_counter() - start:.3f} s")
    theirs.search(queries, args.k)  # warm-up
    t_theirs, (d_ref, i_ref) = best_time(lambda: theirs.search(queries, args.k), args.repeats)

    start = time.perf_counter()
    ours = ExactIndex(corpus, mesh=corpus_mesh(jax.devices()[:1]), chunk_size=args.chunk_size,
                      group_size=args.group_size)
    print(f"ours  build   {time.perf_counter() - start:.3f} s")
    start = time.perf_counter()
    ours.search(queries, args.k)  # warm-up, includes compile
    print(f"ours  compile+first search {time.perf_counter() - start:.3f} s")
    t_ours, res = best_time(lambda: ours.search(queries, args.k), args.repeats)

    # Agreement with faiss: same neighbour sets (ties may reorder), same scores.
    overlap = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(res.indices, i_ref)])
    score_err = float(np.abs(res.scores - d_ref).max())
    qps_theirs = args.queries / t_theirs
    qps_ours = args.queries / t_ours
    print(f"faiss IndexFlatIP  {t_theirs:.3f} s  {qps_theirs:,.0f} queries/s")
    print(f"gecko ExactIndex   {t_ours:.3f} s  {qps_ours:,.0f} queries/s")
    print(f"neighbour overlap {overlap:.5f}, max |score diff| {score_err:.2e}")
    if overlap < 0.999:
        raise SystemExit(f"results disagree with faiss: overlap {overlap}")
    print(f"ratio {qps_ours / qps_theirs:.3f}")


if __name__ == "__main__":
    main()
