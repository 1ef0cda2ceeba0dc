"""`gecko embed`: texts from a JSONL/.txt file -> a .npy matrix, rows in input order."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed texts from a JSONL or .txt file into a .npy file",
                       description=__doc__)
    p.add_argument("--model", required=True,
                   help="model folder (HF/sentence-transformers format), or 'minilm'")
    p.add_argument("--input", required=True, help='JSONL lines {"text": ..., "title": ...} or .txt')
    p.add_argument("--output", required=True, help="output .npy file [N, dim], float32")
    p.add_argument("--kind", choices=("query", "document"), default="document")
    p.add_argument("--task", default=None, help="task description for queries (gecko format)")
    p.add_argument("--format", choices=("gecko", "raw"), default=None,
                   help="prompt format (default: what the model folder records; raw for base models)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None, help="token cap (default: the model's)")
    p.add_argument("--dim", type=int, default=None, help="Matryoshka: keep the first DIM dims")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="compute dtype: auto = bfloat16 on an accelerator, or on a CPU with "
                        "AVX512-BF16 or AMX where the oneDNN kernel builds, else float32 "
                        "(bf16: min cosine to float32 >= 0.998 on MiniLM)")
    p.add_argument("--shard", action="store_true",
                   help="split each batch over all local devices (data-parallel mesh)")
    p.set_defaults(func=run)


def resolve_model(name: str) -> str:
    """'minilm' names the shipped base encoder; anything else is a folder path."""
    if name == "minilm":
        from gecko_jax import assets

        return str(assets.minilm_dir())
    return name


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    import pathlib

    import numpy as np

    from gecko_jax.encode import Encoder, data_mesh, enable_compile_cache, truncate_dim
    from gecko_jax.errors import GeckoError
    from gecko_jax.textio import read_texts

    log = logging.getLogger("gecko.embed")
    texts, titles = read_texts(args.input)
    empty = sum(1 for t in texts if not t.strip())
    if empty:
        log.warning("%s: %d empty texts (embedded as empty strings)", args.input, empty)
    if args.batch_size < 1:
        raise GeckoError("--batch-size must be >= 1")
    enable_compile_cache()
    mesh = None
    if args.shard:
        mesh = data_mesh()
    encoder = Encoder.from_pretrained(resolve_model(args.model), max_length=args.max_length,
                                      batch_size=args.batch_size, mesh=mesh,
                                      compute_dtype=args.dtype)
    if args.kind == "query":
        emb = encoder.encode_queries(texts, task=args.task, format=args.format)
    else:
        emb = encoder.encode_documents(texts, titles=titles, format=args.format)
    if args.dim:
        if not 0 < args.dim <= emb.shape[1]:
            raise GeckoError(f"--dim {args.dim} outside 1..{emb.shape[1]}")
        emb = truncate_dim(emb, args.dim)
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npy")
    np.save(tmp, emb.astype(np.float32))
    os.replace(tmp, out)
    log.info("wrote %s: %d x %d", out, *emb.shape)
    return 0
