"""`gecko distill`: the whole Gecko recipe in one resumable run, on the embedded default.

    fret           FRet on a Wikipedia-sample corpus with the shipped teacher
                   (generate task + query, retrieve neighbours, re-label)
    prefinetune    MiniLM on Wikipedia (article: section) -> section pairs
    finetune       from the prefinetune export, on the fine-tuning mixture
                   (Wikipedia sections + BBC classification train split + FRet records)
    eval_base      base MiniLM on the local BBC tasks at each dim
    eval_distilled the fine-tuned model on the same tasks
    -> OUT/report.md (+ report.json, PNGs), OUT/model (the distilled model folder)

Each stage runs in OUT/<stage>/ and records its config in OUT/<stage>/stage.json:
status "running" while it works, "done" (with its wall time) once finished. A
rerun skips done stages and resumes a running one (FRet keeps finished shards,
training restores its last checkpoint). Each stage's config includes the
configs of the stages it reads from, so a change anywhere marks that stage and
every later one as changed. A changed stage that already has output is refused
with the differing keys named (nothing is reused silently); `redo=True`
(`--redo`) deletes that stage's output and every later stage's, and runs them again.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import pathlib
import shutil
import time
from typing import Sequence

from gecko_jax.errors import GeckoError

log = logging.getLogger(__name__)

STAGES = ("fret", "prefinetune", "finetune", "eval_base", "eval_distilled")
MARKER = "stage.json"
TASKS = ("bbc_retrieval", "bbc_classification", "bbc_clustering")
# Routed to FRet (FRetConfig / GenerateConfig / RelabelConfig); every other binding goes
# to both training stages.
FRET_BINDING_PREFIXES = ("FRetConfig.", "GenerateConfig.", "RelabelConfig.", "FilterConfig.")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """The scale of a run. Defaults fit ~15 minutes on a 2-core CPU (README)."""
    teacher: str = "smollm2"
    fret_corpus_size: int = 512        # Wikipedia passages (evenly spaced) FRet retrieves from
    fret_limit: int = 16               # seed passages the teacher writes queries for
    fret_neighbors: int = 4            # N candidates re-labelled per query
    fret_embed_max_length: int = 128
    prefinetune_steps: int = 30
    finetune_steps: int = 30
    batch_size: int = 16
    query_length: int = 32
    doc_length: int = 64
    learning_rate: float = 3e-5
    eval_limit: int | None = 600       # evenly spaced BBC articles (None: all ~2,100)
    eval_max_length: int = 128
    dims: tuple[int, ...] = (384, 128)
    tasks: tuple[str, ...] = TASKS
    gin_bindings: tuple[str, ...] = ()  # FRetConfig.* etc. go to FRet, the rest to training


# ---------------------------------------------------------------- stage markers

def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: pathlib.Path, obj) -> None:
    from gecko_jax.fret.records import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def read_marker(out: pathlib.Path, stage: str) -> dict | None:
    path = out / stage / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def stage_configs(cfg: DistillConfig, out: pathlib.Path) -> dict[str, dict]:
    """Each stage's config (what decides its output), chained through its inputs."""
    fret_bind = sorted(b for b in cfg.gin_bindings if b.strip().startswith(FRET_BINDING_PREFIXES))
    train_bind = [b for b in cfg.gin_bindings if not b.strip().startswith(FRET_BINDING_PREFIXES)]
    fret = {"teacher": cfg.teacher, "corpus_size": cfg.fret_corpus_size,
            "limit": cfg.fret_limit, "num_neighbors": cfg.fret_neighbors,
            "embed_max_length": cfg.fret_embed_max_length, "gin_bindings": fret_bind}
    train = {"batch_size": cfg.batch_size, "query_length": cfg.query_length,
             "doc_length": cfg.doc_length, "learning_rate": cfg.learning_rate,
             "gin_bindings": train_bind}
    pft = {**train, "steps": cfg.prefinetune_steps}
    ft = {**train, "steps": cfg.finetune_steps,
          "inputs": {"fret": _sha(fret), "prefinetune": _sha(pft)}}
    ev = {"tasks": list(cfg.tasks), "dims": list(cfg.dims), "limit": cfg.eval_limit,
          "max_length": cfg.eval_max_length}
    return {"fret": fret, "prefinetune": pft, "finetune": ft,
            "eval_base": {**ev, "model": "minilm"},
            "eval_distilled": {**ev, "model": "finetune", "inputs": {"finetune": _sha(ft)}}}


def check_stages(out: pathlib.Path, configs: dict[str, dict], redo: bool) -> list[str]:
    """Stages whose recorded config differs from this run's. Refuses, or clears them (redo)."""
    changed = []
    for stage in STAGES:
        marker = read_marker(out, stage)
        if marker is not None and marker["config"] != configs[stage]:
            changed.append((stage, _diff(marker["config"], configs[stage])))
    if not changed:
        return []
    first = STAGES.index(changed[0][0])
    if not redo:
        detail = "\n  ".join(f"{s}: {d}" for s, d in changed)
        raise GeckoError(
            f"{out} holds stages run with a different configuration:\n  {detail}\n"
            f"Use another --output, or pass --redo to delete and rerun stage "
            f"{STAGES[first]!r} and every stage after it.")
    for stage in STAGES[first:]:
        if (out / stage).exists():
            log.info("redo: removing %s", out / stage)
            shutil.rmtree(out / stage)
    for name in ("model", "report.md", "report.json"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return list(STAGES[first:])


# ---------------------------------------------------------------- the stages

def _fret_corpus(out: pathlib.Path, size: int) -> pathlib.Path:
    """An evenly spaced `size`-passage subset of the Wikipedia sample (FRet corpus JSONL)."""
    import numpy as np

    from gecko_jax.fret import corpus

    rows = corpus.wikipedia_passages()
    if size and size < len(rows):
        keep = np.unique(np.linspace(0, len(rows) - 1, size).round().astype(int))
        rows = [rows[i] for i in keep]
    path = out / "corpus.jsonl"
    corpus.write_corpus(rows, path)
    return path


def run_fret(cfg: DistillConfig, conf: dict, stage_dir: pathlib.Path,
             progress: bool) -> dict:
    from gecko_jax.commands.fret import _config_from_gin
    from gecko_jax.fret.pipeline import run_local

    fret_cfg = _config_from_gin([], conf["gin_bindings"])
    fret_cfg = dataclasses.replace(
        fret_cfg, teacher=cfg.teacher, limit=cfg.fret_limit,
        embed_max_length=cfg.fret_embed_max_length, tfrecord=False, progress=progress,
        relabel=dataclasses.replace(fret_cfg.relabel, num_neighbors=cfg.fret_neighbors))
    corpus_path = _fret_corpus(stage_dir, cfg.fret_corpus_size)
    manifest = run_local(fret_cfg, corpus_path, stage_dir / "run")
    c = manifest["counts"]
    return {"records": c["records"], "passages": c["passages"], "generated": c["generated"],
            "relabelled": c["relabelled"], "relabel_rate": c["relabel_rate"],
            "dropped": c["dropped"], "files": [str(stage_dir / "run" / f)
                                               for f in manifest["files"]["jsonl"]]}


def _train_bindings(conf: dict) -> list[str]:
    return [f"BATCH_SIZE = {conf['batch_size']}", f"TRAIN_STEPS = {conf['steps']}",
            f"QUERY_LENGTH = {conf['query_length']}", f"DOC_LENGTH = {conf['doc_length']}",
            f"LEARNING_RATE = {conf['learning_rate']}",
            f"WARMUP_STEPS = {max(1, conf['steps'] // 10)}",
            # Training examples no longer than the doc length need (speed).
            "wikipedia_title_body.max_words = 48", "wikipedia_sections.max_words = 48"]


def _train(stage_dir: pathlib.Path, gin_files: list[str], bindings: list[str],
           progress: bool) -> dict:
    import gin

    from gecko_jax.commands.train import parse_gin
    from gecko_jax.training import trainer

    parse_gin(gin_files, bindings)
    summary = trainer.train(stage_dir, progress=progress)
    (stage_dir / "operative_config.gin").write_text(gin.operative_config_str())
    return {"step": summary["step"], "start_step": summary["start_step"],
            "loss": summary["metrics"].get("loss"), "accuracy": summary["metrics"].get("accuracy"),
            "export": summary.get("export")}


def run_prefinetune(conf: dict, stage_dir: pathlib.Path, progress: bool) -> dict:
    files = ["gin_configs/models/minilm.gin", "gin_configs/runs/prefinetune.gin"]
    return _train(stage_dir, files, _train_bindings(conf) + list(conf["gin_bindings"]), progress)


def run_finetune(conf: dict, stage_dir: pathlib.Path, init_export: pathlib.Path,
                 fret_files: Sequence[str], progress: bool) -> dict:
    files = ["gin_configs/models/minilm.gin", "gin_configs/runs/finetune.gin",
             "gin_configs/mixtures/finetune_default.gin"]
    fret_files = [f for f in fret_files if pathlib.Path(f).stat().st_size > 0]
    num_fret = sum(len(pathlib.Path(f).read_text().splitlines()) for f in fret_files)
    # Single-task batches need a batch worth of examples in every task; a FRet set
    # smaller than one batch joins mixed batches instead (per-row task draws).
    single = num_fret == 0 or num_fret >= conf["batch_size"]
    bindings = (_train_bindings(conf) + [f"FRET_FILES = {fret_files!r}",
                                         f"SINGLE_TASK_BATCHES = {single}"]
                + list(conf["gin_bindings"])
                + ["train.model_fn = @pretrained_model",
                   f"pretrained_model.folder = {str(init_export)!r}"])
    summary = _train(stage_dir, files, bindings, progress)
    summary.update(fret_files=len(fret_files), fret_records=num_fret, single_task_batches=single)
    return summary


def run_eval(conf: dict, folder: pathlib.Path, name: str, stage_dir: pathlib.Path,
             progress: bool) -> dict:
    """Scores one model on the local tasks; writes stage_dir/results.json."""
    from tqdm.auto import tqdm

    from gecko_jax.commands.eval import evaluate_model
    from gecko_jax.encode import Encoder
    from gecko_jax.evaluation.local_tasks import CachedEncoder, get_task

    tasks = [get_task(t) for t in conf["tasks"]]
    enc = Encoder.from_pretrained(folder, max_length=conf["max_length"], batch_size=32)
    cached = CachedEncoder(enc)
    bar = tqdm(total=len(tasks), desc=f"eval {name}", unit="task", disable=not progress)
    res = evaluate_model(cached, name, tasks, [], conf["dims"], "local",
                         limit=conf["limit"], progress=bar)["local"]
    bar.close()
    info = {"path": str(folder), "format": cached.format, "embedding_dim": enc.embedding_dim,
            "max_length": enc.max_length}
    results = {t: {str(d): s for d, s in by_dim.items()} for t, by_dim in res.items()}
    _write_json(stage_dir / "results.json", {"model": name, "info": info, "results": results})
    return {"model": name, "format": cached.format}


# ---------------------------------------------------------------- orchestration

def distill(out_dir, cfg: DistillConfig = DistillConfig(), redo: bool = False,
            progress: bool = True) -> dict:
    """Runs (or resumes) every stage under OUT_DIR, then writes the report and OUT_DIR/model.

    Returns {"stages": {stage: marker}, "ran": [stages run by this call], "report": path,
    "model": path, "results": {model: {task: {dim: scores}}}}.
    """
    from tqdm.auto import tqdm

    from gecko_jax import assets
    from gecko_jax.encode import enable_compile_cache
    from gecko_jax.training import trainer

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enable_compile_cache()
    configs = stage_configs(cfg, out)
    check_stages(out, configs, redo)

    ran = []
    overall = tqdm(total=len(STAGES), desc="distill", unit="stage", disable=not progress,
                   bar_format="{desc}: {n_fmt}/{total_fmt} stages |{bar:20}| "
                              "{elapsed} elapsed{postfix}")
    for i, stage in enumerate(STAGES):
        stage_dir = out / stage
        marker = read_marker(out, stage)
        if marker is not None and marker["status"] == "done":
            log.info("stage %d/%d %s: done in an earlier run (%.0f s), reused",
                     i + 1, len(STAGES), stage, marker["wall_s"])
            overall.update(1)
            continue
        overall.set_postfix_str(f"now: {stage}")
        overall.refresh()
        stage_dir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        _write_json(stage_dir / MARKER, {"status": "running", "config": configs[stage],
                                         "started": _now()})
        if progress:
            tqdm.write(f"== stage {i + 1}/{len(STAGES)}: {stage}"
                       f"{' (resuming)' if marker else ''}")
        if stage == "fret":
            summary = run_fret(cfg, configs[stage], stage_dir, progress)
        elif stage == "prefinetune":
            summary = run_prefinetune(configs[stage], stage_dir, progress)
        elif stage == "finetune":
            fret = read_marker(out, "fret")["summary"]
            summary = run_finetune(configs[stage], stage_dir,
                                   out / "prefinetune" / trainer.EXPORT_DIR,
                                   fret["files"], progress)
        elif stage == "eval_base":
            summary = run_eval(configs[stage], assets.minilm_dir(), "minilm (base)", stage_dir,
                               progress)
        else:
            summary = run_eval(configs[stage], out / "finetune" / trainer.EXPORT_DIR,
                               "distilled", stage_dir, progress)
        wall = time.time() - started  # of this process (a resumed stage: the rest only)
        _write_json(stage_dir / MARKER, {"status": "done", "config": configs[stage],
                                         "finished": _now(), "wall_s": round(wall, 1),
                                         "resumed": marker is not None, "summary": summary})
        if progress:
            tqdm.write(f"== stage {stage} done in {wall:.0f} s")
        ran.append(stage)
        overall.update(1)
    overall.close()

    model_dir = export_model(out)
    from gecko_jax import distill_report

    markers = {s: read_marker(out, s) for s in STAGES}
    report_path, results = distill_report.write(out, cfg, markers, ran)
    return {"stages": markers, "ran": ran, "report": report_path, "model": model_dir,
            "results": results}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def export_model(out: pathlib.Path) -> pathlib.Path:
    """OUT/model: a copy of the fine-tuned export (replaced atomically when it changes)."""
    src = out / "finetune" / "export"
    dst = out / "model"
    stamp = read_marker(out, "finetune")["finished"]
    if (dst / ".from_finetune").is_file() and (dst / ".from_finetune").read_text() == stamp:
        return dst
    tmp = out / ".model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    (tmp / ".from_finetune").write_text(stamp)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst
