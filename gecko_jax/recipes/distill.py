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

The stages' names, configs and seeding (the ablation arms, the data-scaling curve, the
seeds' soup): recipes/distill_stages.py; the FRet stage and the record variants the
arms train on: recipes/distill_fret.py; the report: recipes/distill_report.py and,
over seeds, recipes/distill_seeds.py.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
from typing import Sequence

from gecko_jax.data import splits
from gecko_jax.errors import GeckoError
from gecko_jax.recipes import runner
from gecko_jax.recipes import distill_fret
from gecko_jax.recipes.distill_stages import (
    base_stage, eval_model_name, seed_of, seeded_name, stage_configs, stage_names)
from gecko_jax.recipes.distill_student import get_student
from gecko_jax.recipes.runner import read_marker
from gecko_jax.textio import atomic_write_json
from gecko_jax.unified_format import check_prompt_format

log = logging.getLogger(__name__)

DERIVED = ("model", "report.md", "report.json")
TASKS = ("bbc_retrieval", "bbc_classification", "bbc_clustering")
# `gecko distill --validation` scores these instead (carved from the training pools and
# excluded from training): where the recipe's defaults are chosen.
VALIDATION_TASKS = splits.VALIDATION_TASKS


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """The scale of a run. Defaults take about 6 minutes on a 2-core CPU (results page)."""
    teacher: str = "smollm2"
    fret_corpus_size: int = 512        # passages (evenly spaced) FRet retrieves from
    # Where they come from, an equal share each: "wikipedia" (100-word chunks of the
    # sample's training articles), "bbc" (the first 100 words of BBC training-pool
    # articles). Held-out and validation articles never enter (data/splits.py).
    fret_corpus: tuple[str, ...] = ("wikipedia",)
    fret_limit: int = 16               # seed passages the teacher writes queries for
    # Corpora of the title -> body pairs both training stages train on: "wikipedia"
    # (section headings -> sections; always) and "bbc" (training-pool headlines -> the
    # article's first words). Gecko pre-finetunes on title -> body pairs of a web
    # corpus; Wikipedia alone gave the student one domain, and long training then
    # traded news retrieval away for Wikipedia's (docs/results.md, chosen on the
    # validation split).
    title_body: tuple[str, ...] = ("wikipedia", "bbc")
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
    # A data-scaling curve: fine-tune also on the first N FRet records for each N here,
    # the steps and mixture otherwise the default's (N = 0 is the ablation's "no FRet",
    # all records the default fine-tuning).
    fret_scaling: tuple[int, ...] = ()
    fret_neighbors: int = 4            # N candidates re-labelled per query
    fret_embed_max_length: int = 128
    # 90 pre-finetuning steps: on the validation tasks (3 seeds) 30 left the student
    # scoring its raw queries above the Gecko-prompted ones it was trained with, and 90
    # raised every retrieval and clustering score (docs/results.md, "Pre-finetuning
    # steps"), for about two more minutes on 2 cores.
    prefinetune_steps: int = 90
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
    seeds: int = 1                     # training seeds: every training stage reruns under each
    # MiniLM student: whether mean pooling averages the prompt's tokens with the text's.
    # False (the text's tokens only; the prompt acts through attention) was chosen on the
    # validation tasks: level after training, and a base model much nearer its raw-text
    # scores when it starts (docs/results.md). LLM towers keep the prompt in the mean.
    include_prompt: bool = False
    # Weight of distillation from the frozen start tower reading each query without its
    # prompt (LossConfig.start_distill, start_distill.py), in both training stages;
    # 0: off. It keeps the trained tower ranking the batch's documents as its start
    # model ranks them for the raw query.
    start_distill: float = 0.0
    # How training formats its texts, which the exported model declares: "gecko" (the
    # unified format's task and title prompts) or "raw" (each text alone). Raw was
    # chosen for the MiniLM student on the validation tasks (3 seeds): it raised
    # Wikipedia retrieval by about 4 points in every seed and news by 0.5-1.8, against
    # training in the Gecko format and against the Gecko-trained model embedded raw
    # (docs/results.md, "Training without prompts"). MiniLM was sentence-tuned on raw
    # texts; a few hundred steps do not teach it the prompts. LLM students keep Gecko
    # prompts (distill_student.LLM_DEFAULTS).
    prompt_format: str = "raw"

    def __post_init__(self):
        try:
            check_title_body(self.title_body)
            check_prompt_format(self.prompt_format)
        except ValueError as err:
            raise GeckoError(str(err)) from None
        if self.start_distill and self.prompt_format == "raw":
            raise GeckoError("start distillation (--start-distill) reads each query without "
                             "its prompt; raw-format training (--prompt-format raw, the "
                             "MiniLM default) has none: add --prompt-format gecko")
        # The start tower reads each query without its prompt, found at the pooling's
        # prompt markers; LLM towers keep the prompt in their mean and have none, so
        # their start tower would read the prompted query: not what the term means.
        if self.start_distill and get_student(self.student).is_llm:
            raise GeckoError(f"start distillation (--start-distill) needs a tower that leaves "
                             f"the prompt out of its mean (the MiniLM student); the "
                             f"{self.student} student keeps it in")

    @property
    def stages(self) -> tuple[str, ...]:
        return stage_names(self)


# Named scales (`gecko distill --preset NAME`): DistillConfig fields; flags win over them.
# reference: the paper's FRet settings at a size that runs overnight on 2 CPU cores
# (its FRet stage about 2.5 hours; `--fret-records` on a finished run skips it): 1,000
# seed passages, every Wikipedia training passage as corpus, N = 20 neighbours and the
# hard negative at fused rank 20 (Table 3's p_20), a bfloat16 teacher; hundreds of
# steps per stage with the default warm-up (a tenth) and single-task batches; 3 seeds;
# the ablation arms and a data-scaling curve (125, 250, 500 records beside none and all).
# Fine-tuning at 3e-6: on the validation tasks (3 seeds) 1e-5 gave back 1.9 points of
# pre-finetuning's news retrieval in every seed over 300 steps, 3e-6 0.6, for less of
# the Wikipedia gain (docs/results.md, "The reference scale's fine-tuning rate").
PRESETS = {
    "reference": {"fret_corpus_size": 0, "fret_limit": 1000, "fret_neighbors": 20,
                  "prefinetune_steps": 300, "finetune_steps": 300, "seeds": 3,
                  "finetune_learning_rate": 3e-6,
                  "ablation": True, "fret_scaling": (125, 250, 500),
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


# ---------------------------------------------------------------- the stages

# The title -> body corpora a run may train on (DistillConfig.title_body).
TITLE_BODY = ("wikipedia", "bbc")


def check_title_body(names) -> tuple[str, ...]:
    """DistillConfig.title_body: wikipedia, optionally with bbc (ValueError otherwise)."""
    names = tuple(names)
    if "wikipedia" not in names or not set(names) <= set(TITLE_BODY):
        raise ValueError(f"title_body {names!r}: expected wikipedia, optionally with bbc")
    return names


def _train_bindings(conf: dict) -> list[str]:
    # Training examples no longer than the doc length needs (speed): about 1.3 MiniLM
    # tokens a word.
    words = max(16, conf['doc_length'] * 3 // 4)
    return [f"BATCH_SIZE = {conf['batch_size']}", f"TRAIN_STEPS = {conf['steps']}",
            # Model initialisation (a new head) and the data order of every stage.
            f"train.seed = {conf.get('seed', 0)}",
            f"QUERY_LENGTH = {conf['query_length']}", f"DOC_LENGTH = {conf['doc_length']}",
            f"LEARNING_RATE = {conf['learning_rate']}",
            f"WARMUP_STEPS = {max(1, conf['steps'] // 10)}",
            # A checkpoint every fifth of the stage (at least 10 steps apart): an
            # interrupted stage resumes from the last one, not from its start.
            f"train.checkpoint_every = {max(10, conf['steps'] // 5)}",
            f"wikipedia_title_body.max_words = {words}",
            f"wikipedia_sections.max_words = {words}",
            f"bbc_title_body.max_words = {words}"] + (
        ["bbc_title_body.limit = 0"] if "bbc" not in conf.get("title_body", TITLE_BODY)
        else []) + (
        [f"pretrained_model.include_prompt = {conf['include_prompt']}"]
        if "include_prompt" in conf else []) + (
        [f"LossConfig.start_distill = {conf['start_distill']}"]
        if conf.get("start_distill") else []) + (
        [f"mixture_data.prompt_format = '{conf['prompt_format']}'"]
        if "prompt_format" in conf else [])


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


def prefinetune_gin(conf: dict) -> tuple[list[str], list[str]]:
    """The gin files and bindings a pre-finetuning stage of config `conf` trains with."""
    files = [*get_student(conf.get("student", "minilm")).gin_files,
             "gin_configs/runs/prefinetune.gin"]
    return files, _train_bindings(conf) + list(conf["gin_bindings"])


def single_task_batches(num_fret: int, batch_size: int) -> bool:
    """Single-task batches need a batch worth of examples in every task; a FRet set
    smaller than one batch joins mixed batches instead (per-row task draws)."""
    return num_fret == 0 or num_fret >= batch_size


def finetune_gin(conf: dict, fret_files: Sequence[str],
                 num_fret: int) -> tuple[list[str], list[str]]:
    """The gin files and bindings of a fine-tuning stage on `num_fret` FRet records in
    `fret_files` (the initial model's binding apart: distill_student.init_bindings)."""
    files = [*get_student(conf.get("student", "minilm")).gin_files,
             "gin_configs/runs/finetune.gin", "gin_configs/mixtures/finetune_default.gin"]
    single = single_task_batches(num_fret, conf["batch_size"])
    return files, (_train_bindings(conf) + [f"FRET_FILES = {list(fret_files)!r}",
                                            f"SINGLE_TASK_BATCHES = {single}"]
                   + list(conf["gin_bindings"]))


def run_prefinetune(conf: dict, stage_dir: pathlib.Path, progress: bool) -> dict:
    return _train(stage_dir, *prefinetune_gin(conf), progress)


def run_finetune(conf: dict, stage_dir: pathlib.Path, init_export: pathlib.Path,
                 fret_files: Sequence[str], progress: bool) -> dict:
    from gecko_jax.recipes.distill_student import init_bindings

    fret_files = [f for f in fret_files if pathlib.Path(f).stat().st_size > 0]
    num_fret = sum(len(pathlib.Path(f).read_text().splitlines()) for f in fret_files)
    files, bindings = finetune_gin(conf, fret_files, num_fret)
    summary = _train(stage_dir, files,
                     bindings + init_bindings(conf.get("student", "minilm"), init_export),
                     progress)
    single = single_task_batches(num_fret, conf["batch_size"])
    summary.update(fret_files=len(fret_files), fret_records=num_fret, single_task_batches=single)
    return summary


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
    """The stages of `gecko distill` (distill_stages.stage_names) as runner stages."""
    from gecko_jax import assets
    from gecko_jax.training import trainer

    own = stage_configs(cfg)
    export = trainer.EXPORT_DIR

    def fret(stage_dir, _):
        return distill_fret.run_fret(cfg, own["fret"], stage_dir, progress)

    def prefinetune(name):
        def run(stage_dir, _):
            return run_prefinetune(own[name], stage_dir, progress)
        return run

    def finetune(name):
        # Which FRet records: the stage's "fret" key (none: the re-labelled records as
        # generated; "none", "seed_positive", "no_negative", "first:N").
        variant = own[name].get("fret")

        def run(stage_dir, done):
            files = done["fret"]["summary"]["files"] if "fret" in done else []
            if variant == "none":
                files = []
            elif variant == "seed_positive":
                files = distill_fret.seed_positive_files(files, out / "fret" / "corpus.jsonl",
                                                         stage_dir)
            elif variant == "no_negative":
                files = distill_fret.no_negative_files(files, stage_dir)
            elif variant is not None:
                files = distill_fret.first_records_files(
                    files, int(variant.removeprefix("first:")), stage_dir)
            init = out / seeded_name("prefinetune", seed_of(name)) / export
            return run_finetune(own[name], stage_dir, init, files, progress)
        return run

    def evaluation(name):
        # The stage whose export it scores; None: base MiniLM, untrained.
        model_stage = own[name]["model"] if own[name]["model"] in own else None

        def run(stage_dir, _):
            folder = assets.minilm_dir() if model_stage is None else out / model_stage / export
            encoder = None
            if model_stage is None and "include_prompt" in own[name]:
                # The base model pooled as the student starts out (cfg.include_prompt).
                encoder = base_encoder(own[name]["include_prompt"], own[name]["max_length"])
            return run_eval(own[name], folder, eval_model_name(name), stage_dir, progress,
                            encoder=encoder)
        return run

    def eval_raw_llm(name):
        def run(stage_dir, _):
            from gecko_jax.recipes.distill_student import raw_encoder

            enc = raw_encoder(cfg.student, own[name]["max_length"])
            return run_eval(own[name], None, eval_model_name(name), stage_dir, progress,
                            encoder=enc)
        return run

    def soup(stage_dir, _):
        from gecko_jax.models.soup import soup_folders

        folders = [out / m / export for m in own["soup"]["models"]]
        soup_folders(folders, stage_dir / export)
        return {"models": len(folders), "export": str(stage_dir / export)}

    def runner_of(name):
        stage = base_stage(name)
        if stage == "fret":
            return fret
        if stage == "soup":
            return soup
        if stage.startswith("prefinetune"):
            return prefinetune(name)
        if stage.startswith("finetune"):
            return finetune(name)
        if stage in ("eval_raw", "eval_raw_gecko"):
            return eval_raw_llm(name)
        return evaluation(name)

    strip = lambda conf: {k: v for k, v in conf.items() if k != "inputs"}  # noqa: E731
    return [runner.Stage(name, strip(own[name]), runner_of(name),
                         tuple(own[name].get("inputs", {})))
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
