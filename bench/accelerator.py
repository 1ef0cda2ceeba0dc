"""Training throughput and MFU on whatever backend JAX finds (CPU, GPU, TPU).

Dual-encoder train steps (Gecko loss, AdamW, one hard negative) on synthetic token
batches (random ids, every position real), for a MiniLM-shaped BERT tower and a
Gemma-3-270M-shaped LLM tower (random init), at several batch sizes, plain / with
GradCache / bf16 compute / remat. Prints step time, examples/s, achieved model
TFLOP/s and MFU against the device's peak:

  - GPU/TPU: a table of bf16 dense peaks (H100/H200 989, TPU v4 275, v5e 197, v5p 459
    TFLOP/s per chip), times the number of devices (data parallel over all of them).
  - CPU: measured with a matmul probe in the row's compute dtype.

Model FLOPs (PaLM's MFU convention): 6 x matmul parameters x tokens plus 12 x L x l^2 x
width per sequence for attention, recomputation (GradCache's extra forward, remat) not
counted: a row that recomputes shows lower MFU for the same work.

Also: compile seconds of the train step with layers scanned vs unrolled (the
`layer_options.scan` figure), and, when torch and sentence-transformers are
importable, their MultipleNegativesRankingLoss step on the same MiniLM shape and
synthetic batch ("theirs") for the largest plain MiniLM configuration.

    python bench/accelerator.py            # < 5 min
    python bench/accelerator.py --quick    # < 1 min (MiniLM only, small batches)

Runs with only the core packages (jax, flax, optax, orbax; no TensorFlow / seqio /
tfds). Last line: `ratio <ours examples/s / theirs examples/s>` or `ratio n/a (...)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from machine import describe  # noqa: E402

# bf16 dense peak TFLOP/s per chip, matched against jax's device_kind (lower case).
PEAK_BF16_TFLOPS = (("h200", 989.0), ("h100", 989.0), ("a100", 312.0), ("tpu v4", 275.0),
                    ("tpu v5 lite", 197.0), ("tpu v5e", 197.0), ("tpu v5p", 459.0),
                    ("tpu v5", 459.0))

MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
              intermediate_size=1536, max_position_embeddings=512)
GEMMA3_270M = dict(architecture="gemma3", vocab_size=262144, hidden_size=640,
                   intermediate_size=2048, num_layers=18, num_heads=4, num_kv_heads=1,
                   head_dim=256, rms_norm_eps=1e-6, rope_theta=1e6, rope_local_theta=1e4,
                   sliding_window=512, sliding_window_pattern=6, query_pre_attn_scalar=256)
TINY_BERT = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64)


@dataclasses.dataclass(frozen=True)
class Row:
    tower: str            # "minilm" | "gemma3" | "tiny"
    batch: int
    query_len: int
    doc_len: int
    chunk: int = 0        # GradCache chunk size (0 = off)
    dtype: str = "float32"
    remat: str = "none"
    scan: bool | None = None

    @property
    def label(self) -> str:
        parts = [self.dtype]
        if self.chunk:
            parts.append(f"gradcache {self.chunk}")
        if self.remat != "none":
            parts.append(f"remat {self.remat}")
        if self.scan is not None:
            parts.append("scan" if self.scan else "unrolled")
        return ", ".join(parts)


# ----------------------------------------------------------------------------- model

def build_model(tower: str, options):
    """A random-init dual-encoder tower of the named shape."""
    from flax import nnx

    with nnx.use_eager_sharding(False):
        if tower in ("minilm", "tiny"):
            from gecko_jax.models.bert import BertConfig, BertEncoder
            from gecko_jax.models.dual_encoder import DualEncoder

            cfg = BertConfig(**(MINILM if tower == "minilm" else TINY_BERT))
            return DualEncoder(BertEncoder(cfg, rngs=nnx.Rngs(0), options=options)), cfg
        from gecko_jax.models.decoder import Decoder, DecoderConfig
        from gecko_jax.models.llm_encoder import LLMEncoder

        cfg = DecoderConfig(**GEMMA3_270M)
        backbone = Decoder(cfg, causal=False, rngs=nnx.Rngs(0), options=options)
        return LLMEncoder(backbone, pooling="mean", rngs=nnx.Rngs(1)), cfg


def flops_per_example(tower: str, cfg, query_len: int, doc_len: int) -> float:
    """Training model FLOPs of one example (query + positive + 1 hard negative)."""
    if tower in ("minilm", "tiny"):
        d, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
        per_token = 4 * d * d + 2 * d * f
        attn_width = d
    else:
        d, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
        per_token = 2 * d * cfg.num_heads * cfg.head_dim + 2 * d * cfg.num_kv_heads * cfg.head_dim
        per_token += 3 * d * f
        attn_width = cfg.num_heads * cfg.head_dim
    total = 0.0
    for length in (query_len, doc_len, doc_len):
        total += 6 * layers * per_token * length + 12 * layers * length * length * attn_width
    return total


def synthetic_batch(batch: int, query_len: int, doc_len: int, vocab: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for name, length in (("query", query_len), ("positive", doc_len), ("negative", doc_len)):
        out[f"{name}_ids"] = rng.integers(5, vocab, (batch, length)).astype(np.int32)
        out[f"{name}_mask"] = np.ones((batch, length), np.int32)
    return out


def make_trainer(row: Row, mesh):
    from gecko_jax.models.layer_stack import LayerOptions
    from gecko_jax.training import optimizers, train_step
    from gecko_jax.training.grad_cache import GradCache

    options = LayerOptions(remat=row.remat, scan=row.scan,
                           compute_dtype=None if row.dtype == "float32" else row.dtype)
    model, cfg = build_model(row.tower, options)
    sched = optimizers.learning_rate_schedule(peak_value=2e-5, total_steps=1000)
    opt = optimizers.make_optimizer(schedule=sched, clip_norm=None, weight_decay=0.01)
    loss_cfg = train_step.LossConfig(tau=0.05, same_tower=False, all_hard_negatives=True,
                                  mask_duplicates=False)
    return train_step.Trainer(model, opt, mesh, loss_cfg, grad_cache=GradCache(row.chunk)), cfg


def compile_seconds(tr, host_batch) -> tuple[float, float]:
    """(wall, process CPU) seconds to lower and compile `tr`'s train step (as
    Trainer.step jits it). XLA compiles on one thread: CPU seconds resist load."""
    import jax

    from gecko_jax import partitioning

    batch = partitioning.host_to_global(host_batch, tr.mesh)
    fn = jax.jit(tr._train_step, in_shardings=(tr.state_shardings, tr.batch_shardings(host_batch)),
                 out_shardings=(tr.state_shardings, partitioning.replicated(tr.mesh)))
    t0, c0 = time.perf_counter(), time.process_time()
    fn.lower(tr.state, batch).compile()
    return time.perf_counter() - t0, time.process_time() - c0


def run_row(row: Row, mesh, steps: int) -> dict:
    """Median step seconds of `row` (after a compile + warm-up step)."""
    import numpy as np

    tr, cfg = make_trainer(row, mesh)
    batch = synthetic_batch(row.batch, row.query_len, row.doc_len, cfg.vocab_size)
    t0 = time.perf_counter()
    float(tr.step(batch)["loss"])
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = float(tr.step(batch)["loss"])
        times.append(time.perf_counter() - t0)
    step = float(np.median(times))
    flops = flops_per_example(row.tower, cfg, row.query_len, row.doc_len) * row.batch
    return {"step_s": step, "first_s": first, "examples_per_s": row.batch / step,
            "tflops": flops / step / 1e12, "loss": loss}


# ------------------------------------------------------------------------------ peaks

def matmul_peak_tflops(dtype: str, n: int = 1024, reps: int = 5) -> float:
    """Measured matmul TFLOP/s of device 0 (the CPU's peak stand-in), best of reps."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e12


def device_peak_tflops(dtype: str, cache: dict) -> tuple[float, str]:
    """(peak TFLOP/s of all devices, where the figure comes from)."""
    import jax

    dev = jax.devices()[0]
    kind = dev.device_kind.lower()
    n = len(jax.devices())
    for key, peak in PEAK_BF16_TFLOPS:
        if key in kind:
            return peak * n, f"{dev.device_kind} bf16 table {peak:g} x {n}"
    if dev.platform == "cpu":
        if dtype not in cache:
            cache[dtype] = matmul_peak_tflops(dtype)
        return cache[dtype] * n, f"CPU {dtype} matmul probe"
    return float("nan"), f"{dev.device_kind}: peak unknown"


# ------------------------------------------------------------------------------- peer

def _peer_folder(folder: str) -> str:
    """A random-init MiniLM-shaped BertModel with a stub WordPiece vocabulary, as a
    folder SentenceTransformer loads (no asset package needed; ids are synthetic)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    os.makedirs(folder, exist_ok=True)
    vocab = os.path.join(folder, "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                          + [f"w{i}" for i in range(100)]) + "\n")
    BertTokenizerFast(vocab_file=vocab).save_pretrained(folder)
    BertModel(BertConfig(**MINILM)).save_pretrained(folder)
    return folder


def theirs_examples_per_s(row: Row, steps: int) -> float | str:
    """sentence-transformers MNRL on a MiniLM-shaped model on the same synthetic
    batch; a reason string when not possible."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer, losses
    except ImportError:
        return "no peer installed"
    import tempfile

    import numpy as np

    tmp = tempfile.TemporaryDirectory(prefix="bench_accel_peer_")
    folder = _peer_folder(os.path.join(tmp.name, "minilm_shape"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = SentenceTransformer(folder, device=device)   # Transformer + mean pooling
    model.train()
    loss_fn = losses.MultipleNegativesRankingLoss(model, scale=20.0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    batch = synthetic_batch(row.batch, row.query_len, row.doc_len, MINILM["vocab_size"])
    feats = [{"input_ids": torch.tensor(batch[f"{n}_ids"], dtype=torch.long, device=device),
              "attention_mask": torch.tensor(batch[f"{n}_mask"], device=device),
              "token_type_ids": torch.zeros(batch[f"{n}_ids"].shape, dtype=torch.long,
                                            device=device)}
             for n in ("query", "positive", "negative")]
    labels = torch.arange(row.batch, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn([dict(f) for f in feats], labels)
        loss.backward()
        opt.step()
        return float(loss.detach())   # a host sync, as ours

    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return row.batch / float(np.median(times))


# ------------------------------------------------------------------------------- plan

def plan(args, platform: str) -> tuple[list[Row], list[Row]]:
    """(throughput rows, scan-vs-unrolled compile rows) for this backend and mode."""
    accel = platform != "cpu"
    if args.tiny:
        rows = [Row("tiny", 8, 8, 16),
                Row("tiny", 8, 8, 16, chunk=4, dtype="bfloat16", remat="full")]
        return rows, [Row("tiny", 8, 8, 16, scan=s) for s in (False, True)]
    if args.quick:
        b, q, d = (128, 64, 256) if accel else (8, 32, 64)
        rows = [Row("minilm", b, q, d), Row("minilm", b, q, d, chunk=b // 4),
                Row("minilm", b, q, d, dtype="bfloat16", remat="dots_no_batch")]
        return rows, []
    q, d = (64, 256) if accel else (32, 64)
    sizes = (64, 256, 1024) if accel else (8, 32)
    rows = [Row("minilm", b, q, d) for b in sizes]
    big = sizes[-1]
    rows += [Row("minilm", big, q, d, chunk=big // 4),
             Row("minilm", big, q, d, dtype="bfloat16"),
             Row("minilm", big, q, d, dtype="bfloat16", remat="dots_no_batch", scan=True)]
    llm_b = (64, 256) if accel else (4,)
    rows += [Row("gemma3", b, q, d, dtype="bfloat16", remat="dots_no_batch") for b in llm_b]
    rows += [Row("gemma3", llm_b[-1], q, d, dtype="bfloat16", remat="full",
                 chunk=llm_b[-1] // 4)]
    compile_rows = [Row("minilm", sizes[0], q, d, scan=s) for s in (False, True)]
    compile_rows += [Row("gemma3", llm_b[0], q, d, scan=s) for s in (False, True)]
    if args.skip_llm:
        rows = [r for r in rows if r.tower != "gemma3"]
        compile_rows = [r for r in compile_rows if r.tower != "gemma3"]
    return rows, compile_rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="MiniLM only, 3 rows (< 1 min)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests
    p.add_argument("--skip-llm", action="store_true", help="no Gemma-3-shaped rows")
    p.add_argument("--no-peer", action="store_true", help="skip the torch peer")
    p.add_argument("--only", choices=("minilm", "gemma3"), help="rows of this tower only")
    p.add_argument("--llm-vocab", type=int, default=None,
                   help="vocabulary of the Gemma-3-shaped tower (default 262144; a smaller "
                        "one fits a small CPU machine's memory)")
    p.add_argument("--compile-only", action="store_true",
                   help="only the scanned-vs-unrolled compile rows")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds; rows that would start later are skipped (default 270, "
                        "quick 50)")
    args = p.parse_args(argv)
    budget = args.budget or (50.0 if (args.quick or args.tiny) else 270.0)
    start = time.perf_counter()

    import jax

    from gecko_jax import partitioning

    devices = jax.devices()
    platform = devices[0].platform
    print(describe())
    print(f"JAX {jax.__version__}, backend {platform}: {len(devices)} x {devices[0].device_kind}")
    mesh = partitioning.make_mesh(partitioning.MeshSpec(data=len(devices)), devices=devices)
    rows, compile_rows = plan(args, platform)
    if args.compile_only:
        rows = []
    if args.only:
        rows = [r for r in rows if r.tower == args.only]
        compile_rows = [r for r in compile_rows if r.tower == args.only]
    if args.llm_vocab:
        GEMMA3_270M["vocab_size"] = args.llm_vocab
        print(f"Gemma-3-shaped tower with vocabulary {args.llm_vocab}")
    steps = 2 if (args.quick or args.tiny) else 3
    peaks: dict = {}
    print(f"{'tower':7s} {'batch':>5s} {'q/d':>7s}  {'variant':40s} {'step s':>8s} "
          f"{'ex/s':>9s} {'TFLOP/s':>8s} {'MFU':>7s}  peak")
    results = {}
    for row in rows:
        if time.perf_counter() - start > budget:
            print(f"{row.tower:7s} {row.batch:5d} {row.query_len:3d}/{row.doc_len:<3d}  "
                  f"{row.label:40s} skipped (time budget {budget:.0f} s)")
            continue
        try:
            r = run_row(row, mesh, steps)
        except Exception as err:   # noqa: BLE001  (e.g. out of memory: report, go on)
            print(f"{row.tower:7s} {row.batch:5d} {row.query_len:3d}/{row.doc_len:<3d}  "
                  f"{row.label:40s} failed: {type(err).__name__}: {str(err)[:120]}")
            continue
        peak, where = device_peak_tflops(row.dtype, peaks)
        results[row] = r
        print(f"{row.tower:7s} {row.batch:5d} {row.query_len:3d}/{row.doc_len:<3d}  "
              f"{row.label:40s} {r['step_s']:8.4f} {r['examples_per_s']:9.1f} "
              f"{r['tflops']:8.3f} {r['tflops'] / peak:7.2%}  {where}", flush=True)
    for row in compile_rows:
        if time.perf_counter() - start > budget:
            print(f"compile {row.tower} {row.label}: skipped (time budget)")
            continue
        tr, cfg = make_trainer(row, mesh)
        wall, cpu = compile_seconds(tr, synthetic_batch(row.batch, row.query_len, row.doc_len,
                                                        cfg.vocab_size))
        print(f"compile {row.tower} batch {row.batch} {row.query_len}/{row.doc_len} "
              f"{'scanned' if row.scan else 'unrolled'} layers: {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU", flush=True)

    plain = [r for r in results if r.tower in ("minilm", "tiny") and r.chunk == 0
             and r.dtype == "float32" and r.remat == "none"]
    if args.no_peer or args.tiny or not plain:
        print("ratio n/a (no peer run)")
        return 0
    row = max(plain, key=lambda r: r.batch)
    theirs = theirs_examples_per_s(row, steps)
    if isinstance(theirs, str):
        print(f"ratio n/a ({theirs})")
        return 0
    ours = results[row]["examples_per_s"]
    print(f"peer: sentence-transformers MultipleNegativesRankingLoss, MiniLM shape, batch "
          f"{row.batch}, {row.query_len}/{row.doc_len} tokens: {theirs:.1f} ex/s "
          f"vs ours {ours:.1f} ex/s (float32)")
    print(f"ratio {ours / theirs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
