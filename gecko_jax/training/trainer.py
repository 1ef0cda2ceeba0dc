"""The Gecko training loop: data, steps, checkpoints, metrics, export; exact resume.

    gecko train --gin_file=experiments/minilm_jsonl.gin --model_dir=runs/x

The parts live beside it: model_fns.py and llm_tower.py build the model,
train_step.py holds the loss wiring and the sharded, jitted step (Trainer),
checkpoints.py the orbax checkpoints, export.py the exported model folder, and
data/batches.py the interface every data source implements (BatchSource).

Exactness: a checkpoint at step s holds params, optimizer state, the step and
the data position (for a step-indexed source the step itself; for a stream its
saved tf.data position), so a resumed run replays the uninterrupted one bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Callable, Sequence

import gin
import jax
import optax

from gecko_jax import gin_files, paths
from gecko_jax.data.batches import BatchSource
from gecko_jax.errors import GeckoError
from gecko_jax.models.layer_stack import LayerOptions, set_options
from gecko_jax import partitioning
from gecko_jax.training import metric_logging, optimizers
from gecko_jax.training import model_fns  # noqa: F401  (registers pretrained_model, random_model)
from gecko_jax.training.checkpoints import Checkpointer
from gecko_jax.training.export import export_model
from gecko_jax.training.grad_cache import GradCache
from gecko_jax.partitioning import MeshSpec
from gecko_jax.training.train_step import LossConfig, Trainer

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
DATA_POSITION_DIR = "data_position"   # per-process data positions (streamed input)
EXPORT_DIR = "export"


def _register_gin_externals():
    from gecko_jax import assets

    gin.external_configurable(MeshSpec, "MeshSpec")
    gin.external_configurable(GradCache, "GradCache")
    gin.external_configurable(LayerOptions, "LayerOptions")
    gin.external_configurable(assets.minilm_dir, "minilm_dir")


_register_gin_externals()


class TrainingDiverged(GeckoError):
    """The loss went NaN/inf; the last good checkpoint is kept."""


class PeerProcessFailed(GeckoError):
    """Multi-process: a step's collective failed, usually because a peer process died."""


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
    """Parses a training config (this module registers the trainer's configurables;
    gin files import the data modules they bind). Errors are GeckoErrors."""
    gin_files.parse(files, bindings)


@gin.configurable(denylist=["model_dir"])
def train(model_dir: str | os.PathLike, *,
          model_fn: Callable[[], tuple[Any, Any]] = gin.REQUIRED,
          data_fn: Callable[..., BatchSource] | None = None,
          train_files: Sequence[str] = (), streaming: bool = True,
          feature_lengths: dict[str, int] = gin.REQUIRED,
          batch_size: int = gin.REQUIRED, num_steps: int = gin.REQUIRED, seed: int = 0,
          loss_config: LossConfig = LossConfig(),
          optimizer_fn: Callable[..., optax.GradientTransformation] = optimizers.make_optimizer,
          schedule_fn: Callable[..., optax.Schedule] = optimizers.learning_rate_schedule,
          mesh_spec: MeshSpec = MeshSpec(),
          grad_accum_steps: int = 1, grad_cache: GradCache = GradCache(),
          layer_options: LayerOptions = LayerOptions(),
          checkpoint_every: int = 500, keep_checkpoints: int = 3, log_every: int = 10,
          export: bool = True, export_max_length: int | None = None, progress: bool = True,
          checkpoint_dir: str | os.PathLike | None = None,
          restore_data_position: bool = True, separate_update: bool = False) -> dict[str, Any]:
    """Fine-tunes a dual encoder with the Gecko loss.

    Data: `data_fn` (e.g. gecko_jax.data.mixtures.mixture_data or
    stream_mixtures.streaming_mixture_data), called with tokenizer, feature_lengths,
    batch_size, seed, process_index, process_count and returning a BatchSource
    (data/batches.py); or `train_files` (FRet JSONL or TFRecord shards) as a one-task
    mixture (data/file_data.py), streamed per host or, with streaming=False, read
    whole into memory.
    restore_data_position: on resume, continue a stream from the position saved with
    the checkpoint (exact resume; refused if the files changed since). False resumes
    the parameters with a fresh stream (seed + step) of the files as they are now.
    separate_update: gradients and optimizer update as two compiled calls (Trainer).

    Resumes from the latest checkpoint in MODEL_DIR/checkpoints (or `checkpoint_dir`)
    when one exists. MODEL_DIR may be local or a URI (gs://, memory://; gecko_jax/paths.py);
    orbax checkpoints need a local or gs:// folder.
    Writes MODEL_DIR/config.gin, TensorBoard events, checkpoints and, at the end,
    MODEL_DIR/export (a model folder that `gecko embed --model` reads). The folder
    declares export_max_length as its input length, by default the document length
    trained at: positions past it were never trained, and sentence-transformers and
    MTEB encode up to the declared length.

    Returns a summary: final step, last metrics, the losses of this process's steps.
    """
    _check_batch(batch_size, grad_accum_steps)
    # First: jax.distributed.initialize() (MeshSpec.distributed) must run before
    # anything touches the backend, jax.process_index() included.
    mesh = partitioning.make_mesh(mesh_spec)
    model_dir, checkpoint_dir = _run_folders(model_dir, checkpoint_dir)
    model, tokenizer = _build_model(model_fn, layer_options)
    # Data: read + validate + tokenise everything before any model compute.
    open_data, batches, meta = _open_data(data_fn or _files_data_fn(train_files, streaming),
                                          tokenizer, feature_lengths, batch_size, seed, num_steps)
    trainer = _make_trainer(model, mesh, optimizer_fn, schedule_fn, loss_config,
                            grad_accum_steps=grad_accum_steps, grad_cache=grad_cache,
                            separate_update=separate_update)
    ckpt = Checkpointer(checkpoint_dir, checkpoint_every, keep_checkpoints)
    start, batches = _resume(ckpt, trainer, batches, open_data, meta, model_dir,
                             restore_data_position)

    report = _Progress(model_dir, num_steps, start, batch_size, log_every, progress)
    losses_seen: list[float] = []
    try:
        for step in range(start, num_steps):
            metrics, loss = _run_step(trainer, batches, step, checkpoint_dir)
            if not math.isfinite(loss):
                raise _diverged(loss, step, ckpt, checkpoint_dir)
            losses_seen.append(loss)
            done = step + 1
            if done % checkpoint_every == 0 or done == num_steps:
                _save(ckpt, trainer, batches, model_dir, done, meta)
            report.step(done, metrics, loss)
    finally:
        report.close()
        ckpt.close()   # after the last save has finished

    summary = {"step": max(start, num_steps), "start_step": start, "losses": losses_seen,
               "metrics": report.last}
    if export:
        summary.update(_export(trainer, tokenizer, model_dir,
                               export_max_length or feature_lengths["positive"],
                               batches.prompt_format))
    _write_summary(model_dir, summary)
    summary["trainer"] = trainer
    return summary


# --------------------------------------------------------------------------- set-up
def _check_batch(batch_size: int, grad_accum_steps: int) -> None:
    if batch_size % grad_accum_steps:
        raise GeckoError(f"batch_size {batch_size} is not divisible by grad_accum_steps "
                         f"{grad_accum_steps}")


def _run_folders(model_dir, checkpoint_dir):
    """(model_dir, checkpoint_dir) as paths; model_dir created, its config.gin written."""
    model_dir = paths.as_path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    _write_config(model_dir)
    return model_dir, paths.as_path(checkpoint_dir or model_dir / CHECKPOINT_DIR)


def _build_model(model_fn: Callable[[], tuple[Any, Any]], layer_options: LayerOptions):
    """(model, tokenizer) of model_fn, with remat / scan / bf16 compute set
    (models/layer_stack.py) when layer_options asks for them."""
    model, tokenizer = model_fn()
    if layer_options != LayerOptions():
        set_options(model, layer_options)
    return model, tokenizer


def _make_trainer(model, mesh, optimizer_fn, schedule_fn, loss_config: LossConfig,
                  **options) -> Trainer:
    """The Trainer with optimizer_fn's optimizer on schedule_fn's schedule (which is
    also the `learning_rate` the trainer logs)."""
    schedule = schedule_fn()
    return Trainer(model, optimizer_fn(schedule=schedule), mesh, loss_config,
                   schedule=schedule, **options)


def _export(trainer: Trainer, tokenizer, model_dir, max_length: int | None,
            prompt_format: str) -> dict[str, str]:
    """{"export": folder} on process 0, {} on the others: the trained model written to
    MODEL_DIR/export, declaring the data's prompt format. A collective: every process
    gathers the parameters."""
    exported = trainer.updated_model()
    if jax.process_index() != 0:
        return {}
    return {"export": str(export_model(exported, tokenizer, model_dir / EXPORT_DIR,
                                       max_length, prompt_format))}


# --------------------------------------------------------------------------- data
def _files_data_fn(train_files: Sequence[str], streaming: bool) -> Callable[..., BatchSource]:
    if not train_files:
        raise GeckoError("train: no data; set train.train_files (JSONL) or train.data_fn")
    from gecko_jax.data import file_data    # seqio + TensorFlow: only the file route needs them

    return file_data.files_data_fn(train_files, streaming)


def _open_data(data_fn: Callable[..., BatchSource], tokenizer, feature_lengths,
               batch_size: int, seed: int, num_steps: int
               ) -> tuple[Callable[[int], BatchSource], BatchSource, dict]:
    """(open_data, this process's batches under `seed`, the meta a checkpoint must match)."""
    open_data = _data_opener(data_fn, tokenizer, feature_lengths, batch_size)
    batches = open_data(seed)
    log.info("expected epochs per task over %d steps: %s", num_steps, batches.epochs(num_steps))
    meta = {"seed": seed, "global_batch_size": batch_size, "num_examples": batches.num_examples}
    return open_data, batches, meta


def _data_opener(data_fn: Callable[..., BatchSource], tokenizer, feature_lengths, batch_size
                 ) -> Callable[[int], BatchSource]:
    """seed -> this process's BatchSource of data_fn (refusing anything else)."""

    def open_data(seed: int) -> BatchSource:
        batches = data_fn(tokenizer=tokenizer, feature_lengths=dict(feature_lengths),
                          batch_size=batch_size, seed=seed, process_index=jax.process_index(),
                          process_count=jax.process_count())
        if not isinstance(batches, BatchSource):
            raise GeckoError(f"train.data_fn {data_fn!r} returned a {type(batches).__name__}, "
                             "not a BatchSource (gecko_jax/data/batches.py)")
        return batches

    return open_data


# --------------------------------------------------------------------------- resume
def _resume(ckpt: Checkpointer, trainer: Trainer, batches: BatchSource,
            open_data: Callable[[int], BatchSource], meta: dict, model_dir,
            restore_data_position: bool) -> tuple[int, BatchSource]:
    """(start step, batches positioned there): the latest checkpoint restored, if any."""
    latest = ckpt.latest_step()
    if latest is None:
        return 0, batches
    state, position = ckpt.restore(latest, trainer.abstract_state())
    for key, want in meta.items():
        if position.get(key) != want:
            raise GeckoError(f"{model_dir}: checkpoint {latest} was written with {key}="
                             f"{position.get(key)}, this run has {want}; exact resume "
                             "needs the same data, seed and batch size (or a new model_dir)")
    trainer.state = state
    start = int(position["step"])
    if batches.step_indexed or restore_data_position:
        batches.restore_position(model_dir / DATA_POSITION_DIR, start)
    else:
        log.warning("train.restore_data_position=False: step %d resumes with a fresh "
                    "stream (seed + %d), not the saved data position", start, start)
        batches = open_data(meta["seed"] + start)
        batches.start_at(start)
    log.info("resumed from %s at step %d", ckpt.manager.directory, start)
    return start, batches


# --------------------------------------------------------------------------- steps
def _run_step(trainer: Trainer, batches: BatchSource, step: int, checkpoint_dir):
    """(metrics, loss) of step `step`; a failed step of several processes is PeerProcessFailed."""
    try:
        metrics = trainer.step(batches.batch(step))
        return metrics, float(metrics["loss"])  # a host sync per step: NaN stops before a save
    except Exception as err:    # noqa: BLE001  (re-raised with the likely cause)
        if jax.process_count() == 1:
            raise
        raise PeerProcessFailed(
            f"process {jax.process_index()} of {jax.process_count()}: step {step + 1} "
            f"failed ({type(err).__name__}: {str(err)[:300]}); most likely another "
            "process died or lost its connection. Rerun every process to resume "
            f"from the last checkpoint in {checkpoint_dir}") from err


def _diverged(loss: float, step: int, ckpt: Checkpointer, checkpoint_dir) -> TrainingDiverged:
    ckpt.wait()
    good = ckpt.latest_step()
    return TrainingDiverged(
        f"loss is {loss} at step {step + 1}; stopped. Last good checkpoint: "
        f"{'none' if good is None else f'step {good}'} in {checkpoint_dir}"
        " (lower the learning rate or check the data, then rerun to resume)")


def _save(ckpt: Checkpointer, trainer: Trainer, batches: BatchSource, model_dir, done: int,
          meta: dict) -> None:
    """The data position first, then the state: never a state without its position."""
    batches.save_position(model_dir / DATA_POSITION_DIR, done)
    ckpt.save(done, trainer.state, {"step": done, **meta}, force=True)
    if jax.process_index() == 0:
        batches.prune_positions(model_dir / DATA_POSITION_DIR,
                                set(ckpt.manager.all_steps()) | {done})


# --------------------------------------------------------------------------- reporting
class _Progress:
    """TensorBoard scalars every log_every steps (and the last), plus a progress bar."""

    def __init__(self, model_dir, num_steps: int, start: int, batch_size: int, log_every: int,
                 progress: bool):
        self.num_steps, self.batch_size, self.log_every = num_steps, batch_size, log_every
        self.writer = metric_logging.create_writer(model_dir,
                                                   just_logging=jax.process_index() > 0)
        self.bar = None
        if progress and jax.process_index() == 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=num_steps, initial=start, desc="train", unit="step",
                            dynamic_ncols=True)
        self.last: dict[str, float] = {}
        self._t0, self._steps = time.perf_counter(), 0

    def step(self, done: int, metrics, loss: float) -> None:
        self._steps += 1
        if done % self.log_every == 0 or done == self.num_steps:
            self.last = {k: float(v) for k, v in jax.device_get(metrics).items()}
            elapsed = time.perf_counter() - self._t0
            self.last["steps_per_second"] = self._steps / max(elapsed, 1e-9)
            self.last["examples_per_second"] = self.last["steps_per_second"] * self.batch_size
            self.writer.write_scalars(done, self.last)
            self._t0, self._steps = time.perf_counter(), 0
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{float(metrics['accuracy']):.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.flush()


def _write_config(model_dir) -> None:
    if jax.process_index() == 0:
        (model_dir / "config.gin").write_text(gin.config_str())


def _write_summary(model_dir, summary: dict) -> None:
    if jax.process_index() == 0:
        (model_dir / "train_summary.json").write_text(json.dumps(
            {k: v for k, v in summary.items() if k != "losses"}, indent=2) + "\n")
