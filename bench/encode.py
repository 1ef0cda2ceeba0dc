"""Encoding throughput: gecko_jax vs every CPU peer a user could pick, on BBC News articles.

    python bench/encode.py            # 2,000 BBC articles, max length 256, batch 32
    python bench/encode.py --quick    # 400 articles

Sides, all on the same texts and the same MiniLM folder in one process:
  gecko_jax        the default path (`--dtype auto`: bf16 on a CPU with AVX512-BF16/AMX) and
                   float32 (plus bf16 with `--ours-bf16`)
  sentence-transformers fp32, and bf16 (`model_kwargs={"torch_dtype": torch.bfloat16}`)
  onnxruntime fp32 sentence-transformers' `backend="onnx"` (exported from a copy of
                   the folder). Where optimum-onnx cannot be imported next to the pinned
                   transformers, the same thing by hand: the model exported with
                   torch.onnx and run by an onnxruntime session inside the
                   SentenceTransformer (its tokenizer, length-sorted batches, pooling).
Each side first warms up (compilation of every batch shape for gecko_jax, lazy init
for torch/onnxruntime), then the sides take turns over slices of 200 texts so that
load from other processes hits them alike. Prints the CPU, each side's docs/s and
min cosine to the fp32 reference (sentence-transformers fp32) and to gecko_jax fp32,
and last `ratio <ours/peer>` against the fastest peer whose min cosine passes the
bound our default path is tested to (float32 0.9999, bf16 0.998; bench/peers.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import describe  # noqa: E402
from peers import Row, at_least, ratio_lines  # noqa: E402

# Min cosine to sentence-transformers fp32 our paths are tested to
# (tests/models/test_bert.py: float32 vs torch, bf16 vs float32 on 200 texts).
TOLERANCE = {"float32": 0.9999, "bfloat16": 0.998}


def onnx_peer(folder: str, work: str, max_length: int):
    """sentence-transformers with onnxruntime fp32 as its model: (model, note)."""
    from sentence_transformers import SentenceTransformer

    copy = shutil.copytree(folder, os.path.join(work, "minilm"))  # ST exports into the folder
    try:
        st = SentenceTransformer(copy, device="cpu", backend="onnx")
        st.max_seq_length = max_length
        return st, 'backend="onnx"'
    except Exception as e:  # noqa: BLE001 - any import/export failure: fall back, say why
        cause = e.__cause__ or e.__context__ or e
        why = f"{type(cause).__name__}: {str(cause).splitlines()[0][:160]}"
        if "optimum" in why:  # not installed: see setup.py's dev extra
            why += " (optimum-onnx 0.1.0, the newest, needs transformers<4.58)"
    return _torch_onnx_peer(copy, work, max_length), f'backend="onnx" unavailable: {why}; torch.onnx export'


def _torch_onnx_peer(folder: str, work: str, max_length: int):
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(folder, device="cpu")
    st.max_seq_length = max_length
    bert = st[0].auto_model.eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = st.preprocess(["an example to trace", "two"])  # two lengths: padding traced

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    class OrtModel(torch.nn.Module):
        """Stands in for the transformers model inside the SentenceTransformer: the same
        inputs, last_hidden_state from an onnxruntime session (what optimum's
        ORTModelForFeatureExtraction does for backend="onnx")."""

        def __init__(self, path):
            import onnxruntime as ort

            super().__init__()
            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.config = bert.config

        def forward(self, **features):
            feed = {k: features[k].numpy() for k in names}
            return {"last_hidden_state": torch.from_numpy(self.session.run(None, feed)[0])}

    path = os.path.join(work, "model.onnx")
    axes = {k: {0: "batch", 1: "length"} for k in [*names, "last_hidden_state"]}
    torch.onnx.export(Wrapped(), tuple(sample[k] for k in names), path, dynamo=False,
                      input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes)
    st[0].model = OrtModel(path)
    return st


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="our default path (gecko embed --dtype)")
    parser.add_argument("--ours-bf16", action="store_true", help="also time gecko_jax bf16")
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()
    n = 400 if args.quick else args.docs

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from gecko_jax import assets
    from gecko_jax.data.sources import read_bbc_news
    from gecko_jax.encode import Encoder, resolve_compute_dtype

    articles = read_bbc_news(dedup=False)
    texts = [a.body for a in (articles * 2)[:n]]
    folder = str(assets.minilm_dir())
    print(describe(), f"| load average {os.getloadavg()[0]:.1f}")
    print(f"{len(texts)} BBC articles, max length {args.max_length}, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}", flush=True)

    default = resolve_compute_dtype(args.dtype) or "float32"
    ours_dtypes = [default] + [d for d in ("float32", "bfloat16")
                               if d != default and (d == "float32" or args.ours_bf16)]
    sides, notes = {}, {}
    for d in ours_dtypes:
        enc = Encoder.from_pretrained(folder, max_length=args.max_length, batch_size=args.batch_size,
                                      show_progress=False, compute_dtype=d)
        sides[f"gecko_jax {d}"] = enc.encode

    def st_side(model):
        model.max_seq_length = args.max_length
        return lambda part: model.encode(part, batch_size=args.batch_size, normalize_embeddings=True)

    sides["sentence-transformers fp32"] = st_side(SentenceTransformer(folder, device="cpu"))
    st16 = SentenceTransformer(folder, device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    assert next(st16.parameters()).dtype == torch.bfloat16
    sides["sentence-transformers bf16"] = st_side(st16)
    work = tempfile.mkdtemp(prefix="bench_encode_")
    onnx_name = "onnxruntime fp32"
    if args.no_onnx:
        notes[onnx_name] = "unavailable: --no-onnx"
    else:
        try:
            model, notes[onnx_name] = onnx_peer(folder, work, args.max_length)
            sides[onnx_name] = st_side(model)
        except Exception as e:  # noqa: BLE001 - the row says why
            notes[onnx_name] = f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200]}"

    slices = [texts[i:i + 200] for i in range(0, len(texts), 200)]
    for name, encode in sides.items():  # warm-up: every (rows, length) shape the timed pass uses
        t = time.perf_counter()
        for part in slices if name.startswith("gecko_jax") else [texts[:64]]:
            encode(part)
        print(f"  warm-up {name}: {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
    seconds = dict.fromkeys(sides, 0.0)
    parts = {name: [] for name in sides}
    for part in slices:
        for name, encode in sides.items():
            start = time.perf_counter()
            parts[name].append(np.asarray(encode(part), np.float32))
            seconds[name] += time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    emb = {name: unit(np.concatenate(p)) for name, p in parts.items()}
    ref, ours_f32 = emb["sentence-transformers fp32"], emb["gecko_jax float32"]
    rows = {name: Row(name, len(texts) / seconds[name], float(np.sum(e * ref, 1).min()))
            for name, e in emb.items()}
    print(f"{'side':28s} {'docs/s':>8s} {'min cos vs ST fp32':>19s} {'vs gecko_jax fp32':>18s}")
    for name, row in rows.items():
        vs_ours = float(np.sum(emb[name] * ours_f32, 1).min())
        print(f"{name:28s} {row.rate:8.1f} {row.error:19.6f} {vs_ours:18.6f}")
    for name, note in notes.items():
        print(f"{name:28s} {note}")
    ours = rows[f"gecko_jax {default}"]
    bound = TOLERANCE[default]
    peers = [r for name, r in rows.items() if not name.startswith("gecko_jax")]
    print(f"our default path: gecko_jax {default} (--dtype {args.dtype}), {ours.rate:.1f} docs/s")
    for line in ratio_lines(ours, peers, at_least(bound),
                            f"min cosine >= {bound} to sentence-transformers fp32"):
        print(line)


if __name__ == "__main__":
    main()
