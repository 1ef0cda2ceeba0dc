"""`gecko distill`: the whole Gecko recipe in one resumable run, on the embedded default.

    fret           FRet on a Wikipedia-sample corpus with the shipped teacher
                   (generate task + query, retrieve neighbours, re-label)
    prefinetune    MiniLM on Wikipedia (article: section) -> section pairs
    finetune       from the prefinetune export, on the fine-tuning mixture
                   (Wikipedia sections + BBC classification train split + FRet records)
    eval_base      base MiniLM on the local BBC tasks at each dim (raw texts)
    eval_base_gecko  the same in Gecko prompts (what the student starts from)
    eval_prefinetuned  the pre-finetuned model
    eval_distilled the fine-tuned model on the same tasks
    -> OUT/report.md (+ report.json, PNGs), OUT/model (the distilled model folder)

`student="gemma3"` / `"smollm2"` (recipes/distill_student.py) trains a decoder LLM
instead of MiniLM and adds eval_raw / eval_raw_gecko (the untrained LLM, mean-pooled,
both prompt formats), so the report shows raw / pre-finetuned / fine-tuned / MiniLM.

The stages run on the one recipe runner (recipes/runner.py): each in OUT/<stage>/
with its marker OUT/<stage>/stage.json; a rerun skips done stages and resumes a
running one (FRet keeps finished shards, training restores its last checkpoint).
Each stage's config includes the configs of the stages it reads from, so a change
anywhere marks that stage and every later one as changed. A changed stage that
already has output is refused with the differing keys named (nothing is reused
silently); `redo=True` (`--redo`) deletes that stage's output and every later
stage's, and runs them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
from typing import Sequence

from gecko_jax.data import splits
from gecko_jax.errors import GeckoError
from gecko_jax.recipes import runner
from gecko_jax.recipes.distill_student import LLM_EVAL_STAGES, PREFINETUNED, get_student
from gecko_jax.recipes.runner import read_marker
from gecko_jax.textio import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

# Every student's report scores its base model in both prompt formats, the
# pre-finetuned and the fine-tuned model (distill_report.stage_table).
STAGES = ("fret", "prefinetune", "finetune", "eval_base", "eval_base_gecko",
          "eval_prefinetuned", "eval_distilled")
# --ablation (the paper's Table 3): fine-tuning (a) without FRet, (b) with FRet's seed
# passage as positive and no hard negative, (c) with the re-labelled positive and no
# hard negative, beside the default (d): the re-labelled positive and the LLM-mined
# hard negative. Same mixture and steps otherwise. (e), the compute-matched control:
# no fine-tuning, its steps spent on more
# pre-finetuning (prefinetune_steps + finetune_steps from the base model): is it the
# fine-tuning mixture, or just more steps?
ABLATION_STAGES = ("finetune_no_fret", "finetune_seed_positive", "finetune_no_negative",
                   "prefinetune_long", "eval_no_fret", "eval_seed_positive",
                   "eval_no_negative", "eval_prefinetune_long")
INPUTS = {"finetune": ("fret", "prefinetune"), "eval_distilled": ("finetune",),
          "finetune_no_fret": ("prefinetune",),
          "finetune_seed_positive": ("fret", "prefinetune"),
          "finetune_no_negative": ("fret", "prefinetune"),
          "eval_no_fret": ("finetune_no_fret",),
          "eval_no_negative": ("finetune_no_negative",),
          "eval_seed_positive": ("finetune_seed_positive",),
          "eval_prefinetuned": ("prefinetune",),
          "eval_prefinetune_long": ("prefinetune_long",)}
# Training under more seeds (`seeds`): seed s > 0 repeats these stages as <stage>_s<s>.
SEEDED_STAGES = ("prefinetune", "finetune", "eval_prefinetuned", "eval_distilled")
# Model names in results.json / the report, by evaluation stage.
EVAL_MODELS = {"eval_base": "minilm (base)", "eval_base_gecko": "minilm (base), Gecko prompts",
               "eval_prefinetuned": PREFINETUNED, "eval_distilled": "distilled",
               "eval_no_fret": "no FRet", "eval_seed_positive": "FRet seed positive",
               "eval_no_negative": "FRet re-labelled, no negative",
               "eval_prefinetune_long": "pre-finetuned only, same steps",
               **LLM_EVAL_STAGES}
DERIVED = ("model", "report.md", "report.json")
TASKS = ("bbc_retrieval", "bbc_classification", "bbc_clustering")
# `gecko distill --validation` scores these instead (carved from the training pools and
# excluded from training): where the recipe's defaults are chosen.
VALIDATION_TASKS = splits.VALIDATION_TASKS
# Routed to FRet (FRetConfig / GenerateConfig / RelabelConfig); every other binding goes
# to both training stages.
FRET_BINDING_PREFIXES = ("FRetConfig.", "GenerateConfig.", "RelabelConfig.", "FilterConfig.")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """The scale of a run. Defaults fit ~15 minutes on a 2-core CPU (README)."""
    teacher: str = "smollm2"
    fret_corpus_size: int = 512        # passages (evenly spaced) FRet retrieves from
    # Where they come from, an equal share each: "wikipedia" (100-word chunks of the
    # sample's training articles), "bbc" (the first 100 words of BBC training-pool
    # articles). Held-out and validation articles never enter (data/splits.py).
    fret_corpus: tuple[str, ...] = ("wikipedia",)
    fret_limit: int = 16               # seed passages the teacher writes queries for
    # A finished FRet run folder (`gecko fret` output: manifest.json and its record
    # files) to train on instead of running the teacher; then the teacher and corpus
    # options above are unused. Only its first fret_records_limit records when that is
    # set (a data-scaling curve).
    fret_records: str | None = None
    fret_records_limit: int | None = None
    # Re-select those records' positives and negatives from their stored teacher scores
    # (fret/refuse.py): the scores fused ("ql", "rc" or both) and the negative strategy
    # ("none", "lowest", "rank:K", "random"); None keeps the run's choice.
    fret_scorers: tuple[str, ...] | None = None
    fret_negative: str | None = None
    fret_neighbors: int = 4            # N candidates re-labelled per query
    fret_embed_max_length: int = 128
    prefinetune_steps: int = 30
    finetune_steps: int = 30
    batch_size: int = 16
    query_length: int = 32
    # Documents are trained at the length they are evaluated at (eval_max_length).
    doc_length: int = 128
    learning_rate: float = 3e-5
    # Fine-tuning's peak learning rate (None: learning_rate). 1e-5 was chosen on the
    # validation tasks: BBC retrieval, the task unlike the Wikipedia training data, stays
    # at the pre-finetuned level in every validation seed, where 3e-5 lowered it in each
    # (docs/results.md); 3e-5 gains 1.5-2 more points on Wikipedia sections.
    finetune_learning_rate: float | None = 1e-5
    eval_limit: int | None = 600       # evenly spaced BBC articles (None: all ~2,100)
    eval_max_length: int = 128
    dims: tuple[int, ...] = (384, 128)
    tasks: tuple[str, ...] = TASKS
    gin_bindings: tuple[str, ...] = ()  # FRetConfig.* etc. go to FRet, the rest to training
    ablation: bool = False             # also the Table 3 arms and the compute-matched control
    student: str = "minilm"            # or an LLM: gemma3 | smollm2 (recipes/distill_student.py)
    seeds: int = 1                     # training seeds: pre-finetuning and fine-tuning under each
    # MiniLM student: whether mean pooling averages the prompt's tokens with the text's.
    # False (the text's tokens only; the prompt acts through attention) was chosen on the
    # validation tasks: level after training, and a base model much nearer its raw-text
    # scores when it starts (docs/results.md). LLM towers keep the prompt in the mean.
    include_prompt: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        llm = tuple(LLM_EVAL_STAGES) if get_student(self.student).is_llm else ()
        seeded = tuple(seeded_name(s, k) for k in range(1, self.seeds) for s in SEEDED_STAGES)
        return STAGES + (ABLATION_STAGES if self.ablation else ()) + llm + seeded


# Named scales (`gecko distill --preset NAME`): DistillConfig fields; flags win over them.
# reference: the paper's FRet settings at a size that runs overnight on 2 CPU cores
# (its FRet stage about 2.5 hours; `--fret-records` on a finished run skips it): 1,000
# seed passages, every Wikipedia training passage as corpus, N = 20 neighbours and the
# hard negative at fused rank 20 (Table 3's p_20), a bfloat16 teacher; hundreds of
# steps per stage with the default warm-up (a tenth) and single-task batches; 3 seeds;
# the ablation arms.
PRESETS = {
    "reference": {"fret_corpus_size": 0, "fret_limit": 1000, "fret_neighbors": 20,
                  "prefinetune_steps": 300, "finetune_steps": 300, "seeds": 3,
                  "ablation": True,
                  "gin_bindings": ("FRetConfig.teacher_dtype = 'bfloat16'",
                                   "RelabelConfig.negative = 'rank:20'")},
}


def preset_defaults(name: str | None) -> dict:
    """The DistillConfig fields of a preset (None: none)."""
    if name is None:
        return {}
    if name not in PRESETS:
        raise GeckoError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return dict(PRESETS[name])


def seeded_name(stage: str, seed: int) -> str:
    """A SEEDED_STAGES stage under training seed `seed` (seed 0 keeps the plain name)."""
    return stage if seed == 0 else f"{stage}_s{seed}"


def seed_of(stage: str) -> int:
    head, sep, tail = stage.rpartition("_s")
    return int(tail) if sep and tail.isdigit() and head in SEEDED_STAGES else 0


def base_stage(stage: str) -> str:
    return stage.rpartition("_s")[0] if seed_of(stage) else stage


def eval_model_name(stage: str) -> str:
    """The model name an evaluation stage writes to results.json."""
    seed = seed_of(stage)
    name = EVAL_MODELS[base_stage(stage)]
    return f"{name} (seed {seed})" if seed else name


def stage_configs(cfg: DistillConfig, out: pathlib.Path | None = None) -> dict[str, dict]:
    """Each stage's effective config (what decides its output), chained through its inputs."""
    fret_bind = sorted(b for b in cfg.gin_bindings if b.strip().startswith(FRET_BINDING_PREFIXES))
    train_bind = [b for b in cfg.gin_bindings if not b.strip().startswith(FRET_BINDING_PREFIXES)]
    fret = ({"records_sha256": released_fret_digest(cfg.fret_records),
             "records_limit": cfg.fret_records_limit,
             **({"scorers": list(cfg.fret_scorers)} if cfg.fret_scorers else {}),
             **({"negative": cfg.fret_negative} if cfg.fret_negative else {})}
            if cfg.fret_records else
            {"teacher": cfg.teacher, "corpus_size": cfg.fret_corpus_size,
             "corpus": list(cfg.fret_corpus),
             "limit": cfg.fret_limit, "num_neighbors": cfg.fret_neighbors,
             "embed_max_length": cfg.fret_embed_max_length, "gin_bindings": fret_bind})
    train = {"batch_size": cfg.batch_size, "query_length": cfg.query_length,
             "doc_length": cfg.doc_length, "learning_rate": cfg.learning_rate,
             "gin_bindings": train_bind}
    if cfg.student != "minilm":
        train["student"] = cfg.student
    else:
        train["include_prompt"] = cfg.include_prompt
    ft_train = {**train, "learning_rate": cfg.finetune_learning_rate or cfg.learning_rate}
    ev = {"tasks": list(cfg.tasks), "dims": list(cfg.dims), "limit": cfg.eval_limit,
          "max_length": cfg.eval_max_length}
    own = {"fret": fret, "prefinetune": {**train, "steps": cfg.prefinetune_steps},
           "finetune": {**ft_train, "steps": cfg.finetune_steps},
           "eval_base": {**ev, "model": "minilm"},
           "eval_base_gecko": {**ev, "model": "minilm", "format": "gecko",
                               **({"include_prompt": cfg.include_prompt}
                                  if cfg.student == "minilm" else {})},
           "eval_distilled": {**ev, "model": "finetune"},
           "finetune_no_fret": {**ft_train, "steps": cfg.finetune_steps, "fret": "none"},
           "finetune_seed_positive": {**ft_train, "steps": cfg.finetune_steps,
                                      "fret": "seed_positive"},
           "finetune_no_negative": {**ft_train, "steps": cfg.finetune_steps,
                                    "fret": "no_negative"},
           "eval_no_fret": {**ev, "model": "finetune_no_fret"},
           "eval_no_negative": {**ev, "model": "finetune_no_negative"},
           "eval_seed_positive": {**ev, "model": "finetune_seed_positive"},
           "eval_raw": {**ev, "model": f"raw {cfg.student}"},
           "eval_raw_gecko": {**ev, "model": f"raw {cfg.student}", "format": "gecko"},
           "eval_prefinetuned": {**ev, "model": "prefinetune"},
           "prefinetune_long": {**train, "steps": cfg.prefinetune_steps + cfg.finetune_steps},
           "eval_prefinetune_long": {**ev, "model": "prefinetune_long"}}
    inputs = {n: i for n, i in INPUTS.items()}
    for k in range(1, cfg.seeds):
        for stage in ("prefinetune", "finetune"):
            own[seeded_name(stage, k)] = {**own[stage], "seed": k}
        own[seeded_name("eval_prefinetuned", k)] = {**ev, "model": seeded_name("prefinetune", k)}
        own[seeded_name("eval_distilled", k)] = {**ev, "model": seeded_name("finetune", k)}
        inputs[seeded_name("finetune", k)] = ("fret", seeded_name("prefinetune", k))
        inputs[seeded_name("eval_prefinetuned", k)] = (seeded_name("prefinetune", k),)
        inputs[seeded_name("eval_distilled", k)] = (seeded_name("finetune", k),)
    own = {name: own[name] for name in cfg.stages}
    return runner.chain_configs(own, {n: i for n, i in inputs.items() if n in own})


# ---------------------------------------------------------------- the stages

FRET_CORPORA = ("wikipedia", "bbc")
FRET_PASSAGE_WORDS = 100


def _fret_corpus(out: pathlib.Path, size: int, sources: Sequence[str] = ("wikipedia",)
                 ) -> pathlib.Path:
    """A `size`-passage FRet corpus (JSONL): an evenly spaced equal share of each source's
    training passages (size 0: all of them)."""
    import numpy as np

    from gecko_jax.fret import corpus

    unknown = sorted(set(sources) - set(FRET_CORPORA))
    if unknown or not sources:
        raise GeckoError(f"FRet corpus {list(sources)}: expected some of {list(FRET_CORPORA)}")
    rows = []
    for k, name in enumerate(sources):
        part = (corpus.wikipedia_passages(words=FRET_PASSAGE_WORDS) if name == "wikipedia"
                else corpus.bbc_passages(words=FRET_PASSAGE_WORDS))
        share = size // len(sources) + (k < size % len(sources)) if size else 0
        if share and share < len(part):
            keep = np.unique(np.linspace(0, len(part) - 1, share).round().astype(int))
            part = [part[i] for i in keep]
        rows += part
    path = out / "corpus.jsonl"
    corpus.write_corpus(rows, path)
    return path


def released_fret_digest(folder: str | os.PathLike) -> str:
    """sha256 (16 hex digits) of a finished FRet run's record files, in manifest order:
    what identifies the records a `fret_records` run trains on (not the folder's path)."""
    from gecko_jax.fret import record_shards

    h = hashlib.sha256()
    for path in record_shards.record_paths(folder):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def take_fret_records(folder: str | os.PathLike, limit: int | None,
                      stage_dir: pathlib.Path, scorers: Sequence[str] | None = None,
                      negative: str | None = None) -> dict:
    """The fret stage on finished records: the first `limit` of them (all: None) into
    stage_dir/records.jsonl, re-selected under `scorers` / `negative` when given
    (fret/refuse.py), and the Wikipedia corpus they were drawn from (for re-selection
    and the ablation's seed positives) into stage_dir/corpus.jsonl when it is the
    shipped one."""
    from gecko_jax.fret import record_shards, refuse
    from gecko_jax.fret.relabel import RelabelConfig

    manifest = record_shards.read_manifest(folder)
    lines = [line for path in record_shards.record_paths(folder)
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if limit is not None:
        if not 0 <= limit <= len(lines):
            raise GeckoError(f"{folder}: {len(lines)} FRet records; cannot take {limit}")
        lines = lines[:limit]
    corpus_path = _fret_corpus(stage_dir, 0, ("wikipedia",))
    want = manifest["config"].get("corpus", {}).get("sha256")
    if hashlib.sha256(corpus_path.read_bytes()).hexdigest() != want:
        corpus_path.unlink()   # not the shipped Wikipedia corpus: no seed-positive arm
    if scorers or negative:
        if not corpus_path.is_file():
            raise GeckoError(f"{folder}: its corpus is not the shipped Wikipedia corpus, so "
                             "its records cannot be re-selected here")
        run_cfg = manifest["config"]["relabel"]
        cfg = RelabelConfig(**{**run_cfg, **({"scorers": tuple(scorers)} if scorers else {}),
                               **({"negative": negative} if negative else {})})
        rows = [json.loads(line) for line in corpus_path.read_text(encoding="utf-8").splitlines()]
        lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in refuse.refuse_records(
            (json.loads(line) for line in lines), rows, cfg, manifest["config"].get("seed", 0))]
    path = stage_dir / "records.jsonl"
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    c = manifest["counts"]
    relabelled = sum(not json.loads(line).get("positive_is_seed", True) for line in lines)
    return {"records": len(lines), "passages": c["passages"], "generated": c["generated"],
            "relabelled": relabelled,
            "relabel_rate": round(relabelled / len(lines), 4) if lines else 0.0,
            "dropped": c["dropped"], "files": [str(path)],
            "released": {"folder": str(folder), "records_in_set": c["records"],
                         "teacher": manifest["models"]["teacher"]}}


def run_fret(cfg: DistillConfig, conf: dict, stage_dir: pathlib.Path,
             progress: bool) -> dict:
    from gecko_jax.fret.pipeline import config_from_gin, run_local

    if cfg.fret_records:
        return take_fret_records(cfg.fret_records, cfg.fret_records_limit, stage_dir,
                                 cfg.fret_scorers, cfg.fret_negative)
    fret_cfg = config_from_gin([], conf["gin_bindings"])
    fret_cfg = dataclasses.replace(
        fret_cfg, teacher=cfg.teacher, limit=cfg.fret_limit,
        embed_max_length=cfg.fret_embed_max_length, tfrecord=False, progress=progress,
        relabel=dataclasses.replace(fret_cfg.relabel, num_neighbors=cfg.fret_neighbors))
    corpus_path = _fret_corpus(stage_dir, cfg.fret_corpus_size, cfg.fret_corpus)
    manifest = run_local(fret_cfg, corpus_path, stage_dir / "run")
    c = manifest["counts"]
    return {"records": c["records"], "passages": c["passages"], "generated": c["generated"],
            "relabelled": c["relabelled"], "relabel_rate": c["relabel_rate"],
            "dropped": c["dropped"], "files": [str(stage_dir / "run" / f)
                                               for f in manifest["files"]["jsonl"]]}


def _train_bindings(conf: dict) -> list[str]:
    return [f"BATCH_SIZE = {conf['batch_size']}", f"TRAIN_STEPS = {conf['steps']}",
            # Model initialisation (a new head) and the data order of every stage.
            f"train.seed = {conf.get('seed', 0)}",
            f"QUERY_LENGTH = {conf['query_length']}", f"DOC_LENGTH = {conf['doc_length']}",
            f"LEARNING_RATE = {conf['learning_rate']}",
            f"WARMUP_STEPS = {max(1, conf['steps'] // 10)}",
            # Training examples no longer than the doc length needs (speed): about
            # 1.3 MiniLM tokens a word.
            f"wikipedia_title_body.max_words = {max(16, conf['doc_length'] * 3 // 4)}",
            f"wikipedia_sections.max_words = {max(16, conf['doc_length'] * 3 // 4)}"] + (
        [f"pretrained_model.include_prompt = {conf['include_prompt']}"]
        if "include_prompt" in conf else [])


def base_encoder(include_prompt: bool, max_length: int):
    """Base MiniLM as an Encoder whose mean pooling does (not) include the prompt."""
    from gecko_jax import assets
    from gecko_jax.encode import Encoder
    from gecko_jax.models.weights import read_meta
    from gecko_jax.training.model_fns import pretrained_model

    model, tokenizer = pretrained_model(assets.minilm_dir(), include_prompt=include_prompt)
    return Encoder(model, tokenizer, read_meta(assets.minilm_dir()), max_length=max_length,
                   batch_size=32)


def _train(stage_dir: pathlib.Path, gin_files: list[str], bindings: list[str],
           progress: bool) -> dict:
    import gin

    from gecko_jax.training import trainer

    trainer.parse_gin(gin_files, bindings)
    summary = trainer.train(stage_dir, progress=progress)
    (stage_dir / "operative_config.gin").write_text(gin.operative_config_str())
    return {"step": summary["step"], "start_step": summary["start_step"],
            "loss": summary["metrics"].get("loss"), "accuracy": summary["metrics"].get("accuracy"),
            "export": summary.get("export")}


def run_prefinetune(conf: dict, stage_dir: pathlib.Path, progress: bool) -> dict:
    files = [*get_student(conf.get("student", "minilm")).gin_files,
             "gin_configs/runs/prefinetune.gin"]
    return _train(stage_dir, files, _train_bindings(conf) + list(conf["gin_bindings"]), progress)


def run_finetune(conf: dict, stage_dir: pathlib.Path, init_export: pathlib.Path,
                 fret_files: Sequence[str], progress: bool) -> dict:
    from gecko_jax.recipes.distill_student import init_bindings

    student = conf.get("student", "minilm")
    files = [*get_student(student).gin_files, "gin_configs/runs/finetune.gin",
             "gin_configs/mixtures/finetune_default.gin"]
    fret_files = [f for f in fret_files if pathlib.Path(f).stat().st_size > 0]
    num_fret = sum(len(pathlib.Path(f).read_text().splitlines()) for f in fret_files)
    # Single-task batches need a batch worth of examples in every task; a FRet set
    # smaller than one batch joins mixed batches instead (per-row task draws).
    single = num_fret == 0 or num_fret >= conf["batch_size"]
    bindings = (_train_bindings(conf) + [f"FRET_FILES = {fret_files!r}",
                                         f"SINGLE_TASK_BATCHES = {single}"]
                + list(conf["gin_bindings"])
                + init_bindings(student, init_export))
    summary = _train(stage_dir, files, bindings, progress)
    summary.update(fret_files=len(fret_files), fret_records=num_fret, single_task_batches=single)
    return summary


def seed_positive_files(fret_files: Sequence[str], corpus_path: pathlib.Path,
                        stage_dir: pathlib.Path) -> list[str]:
    """FRet records with the seed passage as positive and no hard negative (ablation b),
    written to stage_dir/seed_positive.jsonl."""
    from gecko_jax import textio
    from gecko_jax.data import fret_records

    if not corpus_path.is_file():
        raise GeckoError(f"{corpus_path.parent}: the FRet records were not drawn from the "
                         "shipped Wikipedia corpus, so their seed passages are unknown "
                         "(no seed-positive arm)")
    corpus = {str(obj["id"]): fret_records.passage_json(
        str(obj["id"]), str(obj.get("title") or ""), str(obj["text"]))
        for _, obj in textio.read_jsonl(corpus_path, ("id", "text"))}
    return _write_variant(fret_files, stage_dir / "seed_positive.jsonl",
                          lambda rec: fret_records.with_seed_positive(
                              rec, corpus[rec["seed_passage_id"]]))


def no_negative_files(fret_files: Sequence[str], stage_dir: pathlib.Path) -> list[str]:
    """FRet records with the re-labelled positive and no hard negative (Table 3's p_1 /
    none), written to stage_dir/no_negative.jsonl."""
    return _write_variant(fret_files, stage_dir / "no_negative.jsonl", lambda rec: dict(
        rec, negative=None, provenance=dict(rec.get("provenance", {}), variant="no_negative")))


def _write_variant(fret_files: Sequence[str], path: pathlib.Path, change) -> list[str]:
    """Every record of fret_files through `change`, written as JSONL to path: [path]."""
    from gecko_jax.data import fret_records

    records = [change(rec) for rec in fret_records.read_jsonl_records(
        f for f in fret_files if pathlib.Path(f).stat().st_size > 0)]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                    for r in records))
    return [str(path)]


def run_eval(conf: dict, folder: pathlib.Path | None, name: str, stage_dir: pathlib.Path,
             progress: bool, encoder=None) -> dict:
    """Scores one model (a folder, or an in-memory `encoder`) on the local tasks at the
    dims it is wide enough for; writes stage_dir/results.json."""
    from tqdm.auto import tqdm

    from gecko_jax.encode import Encoder
    from gecko_jax.evaluation.evaluate import evaluate_model
    from gecko_jax.evaluation.local_tasks import CachedEncoder, get_task

    tasks = [get_task(t) for t in conf["tasks"]]
    enc = encoder or Encoder.from_pretrained(folder, max_length=conf["max_length"], batch_size=32)
    if not progress:
        enc.show_progress = False   # no per-encode bars either (None: by input size)
    cached = CachedEncoder(enc, format=conf.get("format"))
    dims = [d for d in conf["dims"] if d <= enc.embedding_dim]
    bar = tqdm(total=len(tasks), desc=f"eval {name}", unit="task", disable=not progress)
    res = evaluate_model(cached, name, tasks, [], dims, "local",
                         limit=conf["limit"], progress=bar)["local"]
    bar.close()
    info = {"path": str(folder or enc.meta.source), "format": cached.format, "embedding_dim": enc.embedding_dim,
            "max_length": enc.max_length}
    results = {t: {str(d): s for d, s in by_dim.items()} for t, by_dim in res.items()}
    atomic_write_json(stage_dir / "results.json", {"model": name, "info": info, "results": results})
    return {"model": name, "format": cached.format}


# ---------------------------------------------------------------- orchestration

def recipe_stages(cfg: DistillConfig, out: pathlib.Path, progress: bool) -> list[runner.Stage]:
    """The stages of `gecko distill` (five; +4 with the ablation, +2 for an LLM student)."""
    from gecko_jax import assets
    from gecko_jax.training import trainer

    own = stage_configs(cfg)
    export = trainer.EXPORT_DIR

    def fret(stage_dir, _):
        return run_fret(cfg, own["fret"], stage_dir, progress)

    def prefinetune_stage(stage):
        def run(stage_dir, _):
            return run_prefinetune(own[stage], stage_dir, progress)
        return run

    def finetune_stage(stage):
        def run(stage_dir, done):
            init = out / seeded_name("prefinetune", seed_of(stage)) / export
            return run_finetune(own[stage], stage_dir, init, done["fret"]["summary"]["files"],
                                progress)
        return run

    def finetune_no_fret(stage_dir, _):
        return run_finetune(own["finetune_no_fret"], stage_dir, out / "prefinetune" / export,
                            [], progress)

    def finetune_seed_positive(stage_dir, done):
        files = seed_positive_files(done["fret"]["summary"]["files"],
                                    out / "fret" / "corpus.jsonl", stage_dir)
        return run_finetune(own["finetune_seed_positive"], stage_dir,
                            out / "prefinetune" / export, files, progress)

    def finetune_no_negative(stage_dir, done):
        files = no_negative_files(done["fret"]["summary"]["files"], stage_dir)
        return run_finetune(own["finetune_no_negative"], stage_dir,
                            out / "prefinetune" / export, files, progress)

    def evaluation(stage, model_stage):
        def run(stage_dir, _):
            folder = (assets.minilm_dir() if model_stage is None
                      else out / model_stage / export)
            encoder = None
            if model_stage is None and "include_prompt" in own[stage]:
                # The base model pooled as the student starts out (cfg.include_prompt).
                encoder = base_encoder(own[stage]["include_prompt"], own[stage]["max_length"])
            return run_eval(own[stage], folder, eval_model_name(stage), stage_dir, progress,
                            encoder=encoder)
        return run

    def eval_raw_llm(stage):
        def run(stage_dir, _):
            from gecko_jax.recipes.distill_student import raw_encoder

            enc = raw_encoder(cfg.student, own[stage]["max_length"])
            return run_eval(own[stage], None, EVAL_MODELS[stage], stage_dir, progress,
                            encoder=enc)
        return run

    runs = {"fret": fret, "prefinetune": prefinetune_stage("prefinetune"),
            "finetune": finetune_stage("finetune"),
            "prefinetune_long": prefinetune_stage("prefinetune_long"),
            "eval_prefinetune_long": evaluation("eval_prefinetune_long", "prefinetune_long"),
            "eval_base": evaluation("eval_base", None),
            "eval_base_gecko": evaluation("eval_base_gecko", None),
            "eval_distilled": evaluation("eval_distilled", "finetune"),
            "finetune_no_fret": finetune_no_fret,
            "finetune_seed_positive": finetune_seed_positive,
            "finetune_no_negative": finetune_no_negative,
            "eval_no_negative": evaluation("eval_no_negative", "finetune_no_negative"),
            "eval_no_fret": evaluation("eval_no_fret", "finetune_no_fret"),
            "eval_seed_positive": evaluation("eval_seed_positive", "finetune_seed_positive"),
            "eval_raw": eval_raw_llm("eval_raw"), "eval_raw_gecko": eval_raw_llm("eval_raw_gecko"),
            "eval_prefinetuned": evaluation("eval_prefinetuned", "prefinetune")}
    for k in range(1, cfg.seeds):
        runs[seeded_name("prefinetune", k)] = prefinetune_stage(seeded_name("prefinetune", k))
        runs[seeded_name("finetune", k)] = finetune_stage(seeded_name("finetune", k))
        for stage, model in (("eval_prefinetuned", "prefinetune"), ("eval_distilled", "finetune")):
            runs[seeded_name(stage, k)] = evaluation(seeded_name(stage, k), seeded_name(model, k))
    strip = lambda conf: {k: v for k, v in conf.items() if k != "inputs"}  # noqa: E731
    return [runner.Stage(name, strip(own[name]), runs[name], tuple(own[name].get("inputs", {})))
            for name in cfg.stages]


def distill(out_dir, cfg: DistillConfig = DistillConfig(), redo: bool = False,
            progress: bool = True) -> dict:
    """Runs (or resumes) every stage under OUT_DIR, then writes the report and OUT_DIR/model.

    Returns {"stages": {stage: marker}, "ran": [stages run by this call], "report": path,
    "model": path, "results": {model: {task: {dim: scores}}}}.
    """
    from gecko_jax.encode import enable_compile_cache
    from gecko_jax.recipes import distill_report

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enable_compile_cache()
    result = runner.run_recipe(out, recipe_stages(cfg, out, progress), redo=redo,
                               progress=progress, derived=DERIVED, desc="distill")
    model_dir = export_model(out)
    markers = {s: read_marker(out, s) for s in cfg.stages}
    report_path, results = distill_report.write(out, cfg, markers, result["ran"])
    return {"stages": markers, "ran": result["ran"], "report": report_path, "model": model_dir,
            "results": results}


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
