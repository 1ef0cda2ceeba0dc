"""Input-pipeline throughput: gecko_jax's streaming seqio Task vs HF `datasets` + tokenizer.

Builds (once; reused while its manifest matches) a FRet-format JSONL shard set of
--records records from the shipped texts: Wikipedia sections and BBC articles, record i
= (heading or headline of text i -> text i, hard negative text (7i+3) mod n), cut to
--words words; a deterministic pairing, the point is volume. Then, each side in its own
subprocess (so time to first batch counts the imports and its peak RSS is its own):

  ours    data/streaming.register_streaming_task + data/stream_batches.host_dataset:
          interleaved shard reads, JSON parsed + validated on batches of lines, Gecko
          format, the MiniLM tokenizer on batches of 256 texts, shuffle buffer 1024,
          padded model features [B, L]: what `gecko train` consumes. The same rows as
          theirs: the set pairs BBC articles too, and about half its records touch a
          text held out for evaluation, which training drops by default
          (--exclude_eval_test measures that: fewer rows out per line read).
  theirs  what a sentence-transformers user writes: datasets.load_dataset("json") (Arrow
          conversion of every shard, into a fresh cache folder), a seeded shuffle, then
          batches formatted with the same Gecko prompts and tokenised by the
          transformers fast tokenizer (padding/truncation to the same lengths), as ST's
          data collator does per batch.

Both tokenise query, positive and negative at the same lengths (default q64 / d256,
the fine-tuning run's shapes) and batch --batch rows.

    python bench/data.py            # 1,000,000 records, 30 s steady window per side
    python bench/data.py --quick    # 20,000 records, 10 s window (< 2 min)

Last line: `ratio <ours examples/s / theirs examples/s>`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

from machine import describe

REPO = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the shard set
def _texts(words: int) -> list[tuple[str, str]]:
    """(heading, text) pairs from the shipped Wikipedia sample and BBC News."""
    from gecko_jax.data import sources

    out = []
    for art in sources.read_wikipedia():
        for sec in art.sections:
            out.append((f"{art.title}: {sec.title}" if sec.title else art.title,
                        " ".join(sec.text.split()[:words])))
    for a in sources.read_bbc_news(dedup=True):
        out.append((a.headline, " ".join(a.body.split()[:words])))
    return out


def build_shards(folder: pathlib.Path, records: int, shards: int, words: int) -> list[str]:
    """Writes folder/records-SSSSS-of-NNNNN.jsonl unless its manifest says it is there."""
    manifest = folder / "manifest.json"
    want = {"records": records, "shards": shards, "words": words, "version": 1}
    paths = [folder / f"records-{i:05d}-of-{shards:05d}.jsonl" for i in range(shards)]
    if manifest.exists() and json.loads(manifest.read_text()) == want:
        return [str(p) for p in paths]
    folder.mkdir(parents=True, exist_ok=True)
    texts = _texts(words)
    n = len(texts)
    t0 = time.perf_counter()
    files = [open(p, "w", encoding="utf-8") for p in paths]
    try:
        for i in range(records):
            head, text = texts[i % n]
            _, neg = texts[(7 * i + 3) % n]
            rec = {"id": f"bench:{i}", "task": "search result", "query": f"{head} ({i})",
                   "positive": {"title": "", "text": text},
                   "negative": {"title": "", "text": neg}}
            files[i % shards].write(json.dumps(rec, ensure_ascii=False) + "\n")
    finally:
        for f in files:
            f.close()
    manifest.write_text(json.dumps(want))
    size = sum(p.stat().st_size for p in paths) / 2**20
    print(f"built {records:,} records in {shards} shards ({size:,.0f} MiB, {n} distinct "
          f"texts) in {time.perf_counter() - t0:.0f} s: {folder}", flush=True)
    return [str(p) for p in paths]


# --------------------------------------------------------------------------- the two sides
def _measure(batches, batch: int, window_s: float, t_start: float) -> dict:
    first = next(batches)
    t_first = time.perf_counter() - t_start
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < window_s:
        next(batches)
        n += 1
    dt = time.perf_counter() - t0
    return {"first_batch_s": t_first, "batches": n, "examples_per_s": n * batch / dt,
            "shapes": {k: list(v.shape) for k, v in first.items()}}


def run_ours(args, t_start: float) -> dict:
    from gecko_jax import assets
    from gecko_jax.data import stream_batches, streaming

    streaming.register_streaming_task("bench_fret", args.files, assets.minilm_dir(),
                                      exclude_eval_test=args.exclude_eval_test)
    ds = stream_batches.host_dataset(
        "bench_fret", feature_lengths={"query": args.query_len, "positive": args.doc_len,
                                       "negative": args.doc_len},
        batch_size=args.batch, seed=0)
    return _measure(ds.as_numpy_iterator(), args.batch, args.window, t_start)


def run_theirs(args, t_start: float) -> dict:
    import datasets
    from transformers import AutoTokenizer

    from gecko_jax import assets

    datasets.disable_progress_bars()
    cache = pathlib.Path(args.cache_dir)
    ds = datasets.load_dataset("json", data_files=args.files, split="train",
                               cache_dir=str(cache))
    ds = ds.shuffle(seed=0)
    tok = AutoTokenizer.from_pretrained(str(assets.minilm_dir()))

    def doc(d):
        return f"title: {d.get('title') or 'none'} | text: {d['text']}"

    def batches():
        for start in range(0, len(ds) - args.batch + 1, args.batch):
            rows = ds[start:start + args.batch]
            q = [f"task: {t} | query: {x}" for t, x in zip(rows["task"], rows["query"])]
            out = {}
            for name, texts, length in (("query", q, args.query_len),
                                        ("positive", [doc(d) for d in rows["positive"]],
                                         args.doc_len),
                                        ("negative", [doc(d) for d in rows["negative"]],
                                         args.doc_len)):
                enc = tok(texts, padding="max_length", truncation=True, max_length=length,
                          return_tensors="np")
                out[f"{name}_ids"], out[f"{name}_mask"] = enc["input_ids"], enc["attention_mask"]
            yield out

    return _measure(batches(), args.batch, args.window, t_start)


def main() -> None:
    t_start = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--records", type=int)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--words", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--query_len", type=int, default=64)
    p.add_argument("--doc_len", type=int, default=256)
    p.add_argument("--window", type=float, help="seconds of steady reading per side")
    p.add_argument("--out", default=str(REPO / "runs" / "bench_data"))
    p.add_argument("--exclude_eval_test", action="store_true",
                   help="ours: drop records holding BBC texts held out for evaluation, as "
                        "training does by default (about half of this set; theirs keeps all)")
    p.add_argument("--side", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    p.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--cache_dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.records = args.records or (20_000 if args.quick else 1_000_000)
    args.window = args.window or (10.0 if args.quick else 30.0)

    if args.side:
        out = (run_ours if args.side == "ours" else run_theirs)(args, t_start)
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(out), flush=True)
        return

    print(describe(), f"| load average {os.getloadavg()[0]:.1f}", flush=True)
    folder = pathlib.Path(args.out) / f"fret_{args.records}"
    files = build_shards(folder, args.records, args.shards, args.words)
    common = ["--batch", str(args.batch), "--query_len", str(args.query_len),
              "--doc_len", str(args.doc_len), "--window", str(args.window),
              "--cache_dir", str(pathlib.Path(args.out) / f"hf_cache_{os.getpid()}"),
              *(["--exclude_eval_test"] if args.exclude_eval_test else []), "--files", *files]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="2")
    results = {}
    for side in ("ours", "theirs"):
        proc = subprocess.run([sys.executable, __file__, "--side", side] + common,
                              capture_output=True, text=True, env=env)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(line[-1][len("RESULT "):])
        r = results[side]
        print(f"{side:6s}: first batch {r['first_batch_s']:6.1f} s | "
              f"{r['examples_per_s']:8.1f} examples/s ({r['batches']} batches of {args.batch}) | "
              f"peak RSS {r['peak_rss_mib']:7.0f} MiB | load average {os.getloadavg()[0]:.1f}",
              flush=True)
    import shutil

    shutil.rmtree(pathlib.Path(args.out) / f"hf_cache_{os.getpid()}", ignore_errors=True)
    print(f"records {args.records:,} in {args.shards} shards; batch {args.batch}, "
          f"q{args.query_len} / d{args.doc_len}")
    print(f"ratio {results['ours']['examples_per_s'] / results['theirs']['examples_per_s']:.2f}")


if __name__ == "__main__":
    main()
