"""Encoding throughput: gecko_jax vs sentence-transformers on BBC News articles.

    python bench/encode.py            # 2,000 BBC articles, max length 256, batch 32
    python bench/encode.py --quick    # 400 articles

Both encode the same texts with the same MiniLM folder in one process; each side
first warms up (compilation of every batch shape for gecko_jax, lazy init for
torch), then the two alternate over slices of 200 texts. Prints docs/s of each and `ratio <ours/theirs>` last.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    n = 400 if args.quick else args.docs

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from gecko_jax import assets
    from gecko_jax.data.sources import read_bbc_news
    from gecko_jax.encode import Encoder

    articles = read_bbc_news(dedup=False)
    texts = [a.body for a in (articles * 2)[:n]]
    folder = str(assets.minilm_dir())
    print(f"{len(texts)} BBC articles, max length {args.max_length}, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")

    ours = Encoder.from_pretrained(folder, max_length=args.max_length,
                                   batch_size=args.batch_size, show_progress=False)
    # Alternate the two sides over slices so that load from other processes on a
    # shared machine hits both alike; each side's rate is total texts / total time.
    slices = [texts[i:i + 200] for i in range(0, len(texts), 200)]
    for part in slices:  # warm-up: compiles every (rows, length) shape the timed pass uses
        ours.encode(part)
    st = SentenceTransformer(folder, device="cpu")
    st.max_seq_length = args.max_length
    st.encode(texts[:64], batch_size=args.batch_size)
    ours_time = st_time = 0.0
    ours_parts, st_parts = [], []
    for part in slices:
        start = time.perf_counter()
        ours_parts.append(ours.encode(part))
        ours_time += time.perf_counter() - start
        start = time.perf_counter()
        st_parts.append(st.encode(part, batch_size=args.batch_size, normalize_embeddings=True))
        st_time += time.perf_counter() - start
    ours_emb, st_emb = np.concatenate(ours_parts), np.concatenate(st_parts)
    ours_rate, st_rate = len(texts) / ours_time, len(texts) / st_time

    cos = np.sum(ours_emb * st_emb, axis=1)
    print(f"gecko_jax             {ours_rate:8.1f} docs/s")
    print(f"sentence-transformers {st_rate:8.1f} docs/s")
    print(f"min cosine(ours, theirs) {cos.min():.6f}")
    print(f"ratio {ours_rate / st_rate:.3f}")


if __name__ == "__main__":
    main()
