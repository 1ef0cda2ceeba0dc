"""The Gecko trainer: a jitted, sharded train step; orbax checkpoints; exact resume.

    gecko train --gin_file=experiments/minilm_jsonl.gin --model_dir=runs/x

Responsibilities (t5x's split): the model is gecko_jax's DualEncoder, the loss
is gecko_jax.losses (pure), partitioning.py owns the mesh and the logical-axis
rules, this file owns the steps. Train state = {step, params, opt_state} with
params a flat {'backbone/layers/0/query/kernel': array} dict, so optax, orbax
and the sharding table all see one simple pytree.

Exactness: batch s is a pure function of (data, seed, s) (data/batching.py);
a checkpoint at step s holds params, optimizer state, the step and the data
position, so a resumed run replays the uninterrupted one bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import time
from typing import Any, Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gecko_jax import gin_files, losses, paths
from gecko_jax.errors import GeckoError
from gecko_jax.models.layer_stack import LayerOptions, set_options
from gecko_jax.training import grad_cache as grad_cache_lib
from gecko_jax import partitioning
from gecko_jax.training import metric_logging, optimizers
from gecko_jax.training.grad_cache import GradCache
from gecko_jax.partitioning import MeshSpec

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
DATA_POSITION_DIR = "data_position"   # per-process tf.data iterator states (streaming input)
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


# --------------------------------------------------------------------------- models
@gin.configurable
def pretrained_model(folder: str | os.PathLike = gin.REQUIRED, projection_dim: int | None = None,
                     seed: int = 0):
    """An HF BERT folder (e.g. MiniLM) as DualEncoder; returns (model, tokenizer).

    projection_dim adds a fresh linear projection (Gecko / t5x_retrieval style).
    """
    from gecko_jax.models.dual_encoder import DualEncoder
    from gecko_jax.models.weights import load_dual_encoder

    model, tokenizer, _ = load_dual_encoder(folder)
    if projection_dim and model.projection is None:
        with nnx.use_eager_sharding(False):
            model = DualEncoder(model.backbone, projection_dim=projection_dim,
                                rngs=nnx.Rngs(seed))
    return model, tokenizer


@gin.configurable
def random_model(config: dict = gin.REQUIRED, tokenizer_folder: str | os.PathLike = gin.REQUIRED,
                 projection_dim: int | None = None, seed: int = 0):
    """A randomly initialised BertEncoder of `config` (BertConfig fields) + a tokenizer."""
    from gecko_jax.models.bert import BertConfig, BertEncoder
    from gecko_jax.models.dual_encoder import DualEncoder
    from gecko_jax.tokenization import Tokenizer

    tokenizer = Tokenizer.from_folder(tokenizer_folder)
    cfg = BertConfig(**{"vocab_size": tokenizer.vocab_size, **dict(config)})
    with nnx.use_eager_sharding(False):
        model = DualEncoder(BertEncoder(cfg, rngs=nnx.Rngs(seed)), projection_dim=projection_dim,
                            rngs=nnx.Rngs(seed + 1))
    return model, tokenizer


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Arguments of losses.gecko_loss (see there). tau 0.05 = sentence-transformers' scale 20."""

    tau: float = 0.05
    same_tower: bool = True
    all_hard_negatives: bool = False
    bidirectional: bool = False
    use_hard_negatives: bool = True
    mask_duplicates: bool = True
    mrl_dims: tuple[int, ...] | None = None
    mrl_weights: tuple[float, ...] | None = None


# --------------------------------------------------------------------------- the step
def _flatten(state: nnx.State) -> dict[str, jax.Array]:
    return {partitioning.path_key(p): v.get_value() for p, v in nnx.to_flat_state(state)}


def _encode_batch(model, batch: dict[str, jax.Array], use_negatives: bool):
    """Embeds queries and documents. Returns q [B,d], p [B,d], n [B,1,d] or None.

    Positive and negative of a row are stacked row-locally ([B,2,L] -> [2B,L])
    so that both stay on the device that holds the row: no resharding.
    """
    q_bd = model(batch["query_ids"], batch["query_mask"])
    if not use_negatives:
        return q_bd, model(batch["positive_ids"], batch["positive_mask"]), None
    b, l = batch["positive_ids"].shape
    ids = jnp.stack([batch["positive_ids"], batch["negative_ids"]], axis=1).reshape(2 * b, l)
    mask = jnp.stack([batch["positive_mask"], batch["negative_mask"]], axis=1).reshape(2 * b, l)
    d_b2d = model(ids, mask).reshape(b, 2, -1)
    return q_bd, d_b2d[:, 0], d_b2d[:, 1:]


def loss_on_batch(model, batch: dict[str, jax.Array], cfg: LossConfig):
    """Gecko loss of one (micro-)batch of model features. Returns (loss, metrics)."""
    return loss_on_embeddings(*_encode_batch(model, batch, cfg.use_hard_negatives), batch, cfg)


def loss_on_embeddings(q, p, n, batch: dict[str, jax.Array], cfg: LossConfig):
    """Gecko loss of embeddings q [B,d], p [B,d], n [B,1,d] or None and the batch's text ids."""
    ids = {}
    if cfg.mask_duplicates and "query_text_id" in batch:
        ids = dict(query_ids=batch["query_text_id"], positive_ids=batch["positive_text_id"],
                   negative_ids=batch["negative_text_id"][:, None] if n is not None else None)
    return losses.gecko_loss(q, p, n, tau=cfg.tau, same_tower=cfg.same_tower,
                             all_hard_negatives=cfg.all_hard_negatives,
                             bidirectional=cfg.bidirectional, mrl_dims=cfg.mrl_dims,
                             mrl_weights=cfg.mrl_weights, **ids)


class Trainer:
    """Owns the sharded train state and the jitted step for one model + optimizer.

    Args:
      model: a DualEncoder (its Params carry logical axis names).
      optimizer: an optax GradientTransformation.
      mesh: from partitioning.make_mesh.
      loss_config: LossConfig.
      grad_accum_steps: micro-batches per step; in-batch negatives then come from
        each micro-batch (global batch / grad_accum_steps rows).
      grad_cache: GradCache(chunk_size) for the exact full-batch gradient with the
        towers run chunk_size rows at a time (grad_cache.py); not with grad_accum_steps.
      schedule: learning-rate schedule, only for the logged `learning_rate`.
      separate_update: run a step as two compiled calls, gradients then the optimizer
        update, instead of one. Same arithmetic; on XLA:CPU the single call of a
        Gemma-3-270M step took 30 s and the two calls 20 s (bench/train_step.py
        --student gemma3), so the LLM towers' gin configs turn it on.
    """

    def __init__(self, model, optimizer: optax.GradientTransformation, mesh,
                 loss_config: LossConfig = LossConfig(), grad_accum_steps: int = 1,
                 schedule: optax.Schedule | None = None,
                 grad_cache: GradCache = GradCache(), separate_update: bool = False):
        if grad_cache.chunk_size and grad_accum_steps > 1:
            raise GeckoError("use GradCache.chunk_size or grad_accum_steps, not both "
                             "(GradCache keeps the full-batch negatives)")
        self.model = model
        self.grad_cache = grad_cache
        self.mesh = mesh
        self.loss_config = loss_config
        self.grad_accum_steps = grad_accum_steps
        self.optimizer = optimizer
        self._schedule = schedule
        graphdef, params_state, rest = nnx.split(model, nnx.Param, ...)
        self._graphdef, self._rest = graphdef, rest
        self._template = nnx.to_flat_state(params_state)
        flat = _flatten(params_state)
        names = partitioning.param_logical_names(params_state)
        self.param_shardings = partitioning.param_shardings(flat, names, mesh)
        params = {k: jax.device_put(v, self.param_shardings[k]) for k, v in flat.items()}
        opt_state = jax.jit(optimizer.init)(params)
        self.state_shardings = {
            "step": partitioning.replicated(mesh),
            "params": self.param_shardings,
            "opt_state": partitioning.state_shardings_like(opt_state, mesh),
        }
        self.state = jax.device_put(
            {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": opt_state},
            self.state_shardings)
        self._step_fn = None
        self.separate_update = separate_update

    # -- params <-> model
    def _rebuild(self, flat: dict[str, jax.Array]) -> nnx.State:
        pairs = [(path, var.replace(flat[partitioning.path_key(path)]))
                 for path, var in self._template]
        return nnx.from_flat_state(pairs)

    def merged_model(self, flat: dict[str, jax.Array]):
        return nnx.merge(self._graphdef, self._rebuild(flat), self._rest)

    def host_params(self) -> dict[str, np.ndarray]:
        """Full parameter values on this host, whatever the mesh.

        Multi-process: parameters split over other hosts' devices are gathered with
        process_allgather, a collective that EVERY process must call.
        """
        params = self.state["params"]
        if all(x.is_fully_addressable for x in params.values()):
            return jax.device_get(params)
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(params, tiled=True)

    def updated_model(self):
        """The nnx model holding the current params (host copies), e.g. for export.

        Multi-process: a collective (see host_params); call it on every process.
        """
        host = self.host_params()
        nnx.update(self.model, self._rebuild({k: jnp.asarray(v) for k, v in host.items()}))
        return self.model

    # -- the step
    def _grad_cache_loss_and_grads(self, params, batch):
        cfg = self.loss_config

        def embed_fn(p, chunk, _key):   # the towers have no dropout: the key is unused
            q, d, n = _encode_batch(self.merged_model(p), chunk, cfg.use_hard_negatives)
            return {"q": q, "p": d, "n": n} if n is not None else {"q": q, "p": d}

        def loss_fn(emb, b):
            return loss_on_embeddings(emb["q"], emb["p"], emb.get("n"), b, cfg)

        n = self.grad_cache.num_chunks(next(iter(batch.values())).shape[0])
        _, metrics, grads = grad_cache_lib.loss_and_grads(
            params, batch, embed_fn=embed_fn, loss_fn=loss_fn, num_chunks=n)
        return grads, metrics

    def _loss_and_grads(self, params, batch):
        if self.grad_cache.chunk_size:
            return self._grad_cache_loss_and_grads(params, batch)

        def loss_fn(p, b):
            loss, metrics = loss_on_batch(self.merged_model(p), b, self.loss_config)
            return loss, metrics

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        g = self.grad_accum_steps
        if g == 1:
            (_, metrics), grads = grad_fn(params, batch)
            return grads, metrics

        # Micro-batch m takes rows m, m+g, m+2g, ...: every micro-batch stays spread
        # over all data shards (a contiguous split would idle most devices).
        def micro(x):
            return x.reshape(x.shape[0] // g, g, *x.shape[1:]).swapaxes(0, 1)

        micro_batches = jax.tree.map(micro, batch)

        def body(acc, mb):
            (_, metrics), grads = grad_fn(params, mb)
            return jax.tree.map(jnp.add, acc, (grads, metrics)), None

        zeros = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro_batches))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (zeros[1], zeros[0][1]))
        (grads, metrics), _ = jax.lax.scan(body, zeros, micro_batches)
        return jax.tree.map(lambda x: x / g, (grads, metrics))

    def _train_step(self, state, batch):
        grads, metrics = self._loss_and_grads(state["params"], batch)
        return self._apply_update(state, grads, metrics)

    def _apply_update(self, state, grads, metrics):
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = dict(metrics, grad_norm=optax.global_norm(grads))
        if self._schedule is not None:
            metrics["learning_rate"] = self._schedule(state["step"])
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

    def _compile_separate(self, host_batch):
        """(loss_and_grads, apply_update) as two jitted calls (`separate_update`)."""
        rep = partitioning.replicated(self.mesh)
        grads_fn = jax.jit(self._loss_and_grads,
                           in_shardings=(self.param_shardings, self.batch_shardings(host_batch)),
                           out_shardings=(self.param_shardings, rep))
        update_fn = jax.jit(self._apply_update,
                            in_shardings=(self.state_shardings, self.param_shardings, rep),
                            out_shardings=(self.state_shardings, rep), donate_argnums=(0, 1))

        def step(state, batch):
            grads, metrics = grads_fn(state["params"], batch)
            return update_fn(state, grads, metrics)
        return step

    def batch_shardings(self, batch: dict[str, Any]):
        return {k: partitioning.batch_sharding(self.mesh, np.ndim(v)) for k, v in batch.items()}

    def step(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """One optimizer update on this process's rows of the global batch."""
        batch = partitioning.host_to_global(host_batch, self.mesh)
        if self._step_fn is None and self.separate_update:
            self._step_fn = self._compile_separate(host_batch)
        elif self._step_fn is None:
            self._step_fn = jax.jit(
                self._train_step,
                in_shardings=(self.state_shardings, self.batch_shardings(host_batch)),
                out_shardings=(self.state_shardings, partitioning.replicated(self.mesh)),
                donate_argnums=(0,))
        self.state, metrics = self._step_fn(self.state, batch)
        return metrics

    def abstract_state(self):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            self.state)


# --------------------------------------------------------------------------- checkpoints
class Checkpointer:
    """orbax CheckpointManager: train state + data position, keep N, every K steps."""

    def __init__(self, directory: str | os.PathLike, every: int, keep: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.every = every
        # orbax writes arrays with tensorstore: local folders and gs:// (not memory://).
        directory = (paths.as_path(directory) if paths.is_remote(directory)
                     else pathlib.Path(directory).absolute())
        self.manager = ocp.CheckpointManager(
            directory,
            # We decide when to save (every K steps and the last); orbax's own interval
            # logic would also save the very first step.
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=1,
                                                 create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_position: dict, force: bool = False) -> bool:
        ocp = self._ocp
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_position)),
            force=force)

    def restore(self, step: int, abstract_state):
        ocp = self._ocp
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return out.state, out.data

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.close()


# --------------------------------------------------------------------------- export
def export_model(model, tokenizer, folder: str | os.PathLike, max_length: int | None = None):
    """Writes the model folder of a trained tower (Gecko prompts recorded).

    BERT towers: weights.export_dual_encoder. LLM towers: EmbeddingGemma's
    sentence-transformers layout (models/llm_export.py).
    """
    from gecko_jax.models.llm_encoder import LLMEncoder
    from gecko_jax.models.weights import export_dual_encoder

    if isinstance(model, LLMEncoder):
        from gecko_jax.models.llm_export import export_llm_encoder

        max_len = max_length or min(2048, model.config.max_position_embeddings)
        return export_llm_encoder(model, tokenizer, folder, prompt_format="gecko",
                                  max_length=max_len)
    # Inference length: the model's own limit (training lengths are often shorter).
    max_len = max_length or min(512, model.backbone.cfg.max_position_embeddings)
    return export_dual_encoder(model, tokenizer, folder, prompt_format="gecko", max_length=max_len)


# --------------------------------------------------------------------------- the loop
def _write_config(model_dir) -> None:
    if jax.process_index() == 0:
        (model_dir / "config.gin").write_text(gin.config_str())


def _scalar_metrics(metrics) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
    """Parses a training config (this module registers the trainer's configurables;
    gin files import the data modules they bind). Errors are GeckoErrors."""
    gin_files.parse(files, bindings)


@gin.configurable(denylist=["model_dir"])
def train(
    model_dir: str | os.PathLike,
    *,
    model_fn: Callable[[], tuple[Any, Any]] = gin.REQUIRED,
    train_files: Sequence[str] = (),
    feature_lengths: dict[str, int] = gin.REQUIRED,
    batch_size: int = gin.REQUIRED,
    num_steps: int = gin.REQUIRED,
    seed: int = 0,
    loss_config: LossConfig = LossConfig(),
    optimizer_fn: Callable[..., optax.GradientTransformation] = optimizers.make_optimizer,
    schedule_fn: Callable[..., optax.Schedule] = optimizers.learning_rate_schedule,
    mesh_spec: MeshSpec = MeshSpec(),
    grad_accum_steps: int = 1,
    grad_cache: GradCache = GradCache(),
    layer_options: LayerOptions = LayerOptions(),
    checkpoint_every: int = 500,
    keep_checkpoints: int = 3,
    log_every: int = 10,
    export: bool = True,
    export_max_length: int | None = None,
    task_name: str = "gecko_jsonl",
    progress: bool = True,
    data_fn: Callable[..., Any] | None = None,
    streaming: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    restore_data_position: bool = True,
    separate_update: bool = False,
) -> dict[str, Any]:
    """Fine-tunes a dual encoder on FRet-format JSONL with the Gecko loss.

    Data: `train_files` (one JSONL task), or `data_fn` (e.g.
    gecko_jax.data.mixtures.mixture_data), called with tokenizer, feature_lengths,
    batch_size, seed, process_index, process_count and returning an object with
    `.batch(step)` and `.num_examples` (a pure function of the step, for exact resume),
    or with `.save_position(dir, step)` / `.restore_position(dir, step)` (a stream read in
    step order whose position is saved beside each checkpoint).
    streaming: `train_files` are streamed (data/streaming.py, data/stream_batches.py;
    JSONL or FRet TFRecord shards, read per host); False reads them whole into memory
    (data/tasks.load_examples, data/batching.py).
    restore_data_position: on resume, continue a stream from the position saved with
    the checkpoint (exact resume; refused if the files changed since). False resumes
    the parameters with a fresh stream (seed + step) of the files as they are now.
    separate_update: gradients and optimizer update as two compiled calls (Trainer).

    Resumes from the latest checkpoint in MODEL_DIR/checkpoints (or `checkpoint_dir`)
    when one exists. MODEL_DIR may be local or a URI (gs://, memory://; gecko_jax/paths.py);
    orbax checkpoints need a local or gs:// folder.
    Writes MODEL_DIR/config.gin, TensorBoard events, checkpoints and, at the end,
    MODEL_DIR/export (a model folder that `gecko embed --model` reads).

    Returns a summary: final step, last metrics, the losses of this process's steps.
    """
    from gecko_jax.data.batching import StepIndexedBatches

    if batch_size % grad_accum_steps:
        raise GeckoError(f"batch_size {batch_size} is not divisible by grad_accum_steps "
                         f"{grad_accum_steps}")
    # First: jax.distributed.initialize() (MeshSpec.distributed) must run before
    # anything touches the backend, jax.process_index() included.
    mesh = partitioning.make_mesh(mesh_spec)
    model_dir = paths.as_path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = paths.as_path(checkpoint_dir or model_dir / CHECKPOINT_DIR)
    _write_config(model_dir)
    model, tokenizer = model_fn()
    if layer_options != LayerOptions():    # remat / scan / bf16 compute (models/layer_stack.py)
        set_options(model, layer_options)

    # Data: read + validate + tokenise everything before any model compute.
    if data_fn is not None:
        batches = data_fn(tokenizer=tokenizer, feature_lengths=dict(feature_lengths),
                          batch_size=batch_size, seed=seed, process_index=jax.process_index(),
                          process_count=jax.process_count())
    elif not train_files:
        raise GeckoError("train: no data; set train.train_files (JSONL) or train.data_fn")
    elif streaming:
        # seqio + TensorFlow: only the file data paths need them.
        from gecko_jax.data import stream_batches, streaming as streaming_lib

        streaming_lib.register_streaming_task(task_name, list(train_files), tokenizer.folder)

        def open_stream(stream_seed: int):
            return stream_batches.stream_batches(
                task_name, feature_lengths=feature_lengths, batch_size=batch_size,
                seed=stream_seed, pad_id=tokenizer.pad_id, process_index=jax.process_index(),
                process_count=jax.process_count(), files=list(map(str, train_files)))

        batches = open_stream(seed)
    else:
        from gecko_jax.data import tasks

        tasks.register_jsonl_task(task_name, {"train": list(train_files)}, tokenizer.folder)
        examples = tasks.load_examples(task_name, "train", feature_lengths, tokenizer.pad_id)
        batches = StepIndexedBatches(examples, batch_size, seed=seed,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count())
    if hasattr(batches, "epochs"):
        log.info("expected epochs per task over %d steps: %s", num_steps,
                 batches.epochs(num_steps))
    position_meta = {"seed": seed, "global_batch_size": batch_size,
                     "num_examples": batches.num_examples}

    schedule = schedule_fn()
    trainer = Trainer(model, optimizer_fn(schedule=schedule), mesh, loss_config,
                      grad_accum_steps=grad_accum_steps, schedule=schedule,
                      grad_cache=grad_cache, separate_update=separate_update)
    ckpt = Checkpointer(checkpoint_dir, checkpoint_every, keep_checkpoints)
    start = 0
    latest = ckpt.latest_step()
    if latest is not None:
        state, position = ckpt.restore(latest, trainer.abstract_state())
        for key, want in position_meta.items():
            if position.get(key) != want:
                raise GeckoError(f"{model_dir}: checkpoint {latest} was written with {key}="
                                 f"{position.get(key)}, this run has {want}; exact resume "
                                 "needs the same data, seed and batch size (or a new model_dir)")
        trainer.state = state
        start = int(position["step"])
        if hasattr(batches, "restore_position") and restore_data_position:
            batches.restore_position(model_dir / DATA_POSITION_DIR, start)
        elif hasattr(batches, "restore_position"):
            log.warning("train.restore_data_position=False: step %d resumes with a fresh "
                        "stream, not the saved data position", start)
            if streaming and data_fn is None and train_files:
                batches = open_stream(seed + start)
            batches.start_at(start)
        log.info("resumed from %s at step %d", ckpt.manager.directory, start)

    writer = metric_logging.create_writer(model_dir, just_logging=jax.process_index() > 0)
    bar = None
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)

    losses_seen: list[float] = []
    last: dict[str, float] = {}
    t0, steps_timed = time.perf_counter(), 0
    try:
        for step in range(start, num_steps):
            try:
                metrics = trainer.step(batches.batch(step))
                loss = float(metrics["loss"])   # a host sync per step: NaN stops before a save
            except Exception as err:    # noqa: BLE001  (re-raised with the likely cause)
                if jax.process_count() == 1:
                    raise
                raise PeerProcessFailed(
                    f"process {jax.process_index()} of {jax.process_count()}: step {step + 1} "
                    f"failed ({type(err).__name__}: {str(err)[:300]}); most likely another "
                    "process died or lost its connection. Rerun every process to resume "
                    f"from the last checkpoint in {checkpoint_dir}") from err
            if not math.isfinite(loss):
                ckpt.wait()
                good = ckpt.latest_step()
                raise TrainingDiverged(
                    f"loss is {loss} at step {step + 1}; stopped. Last good checkpoint: "
                    f"{'none' if good is None else f'step {good}'} in {checkpoint_dir}"
                    " (lower the learning rate or check the data, then rerun to resume)")
            losses_seen.append(loss)
            done = step + 1
            steps_timed += 1
            if done % checkpoint_every == 0 or done == num_steps:
                if hasattr(batches, "save_position"):   # before the state: never a state
                    batches.save_position(model_dir / DATA_POSITION_DIR, done)  # without it
                ckpt.save(done, trainer.state, {"step": done, **position_meta}, force=True)
                if hasattr(batches, "prune_positions") and jax.process_index() == 0:
                    batches.prune_positions(model_dir / DATA_POSITION_DIR,
                                            set(ckpt.manager.all_steps()) | {done})
            if done % log_every == 0 or done == num_steps:
                last = _scalar_metrics(metrics)
                elapsed = time.perf_counter() - t0
                last["steps_per_second"] = steps_timed / max(elapsed, 1e-9)
                last["examples_per_second"] = last["steps_per_second"] * batch_size
                writer.write_scalars(done, last)
                t0, steps_timed = time.perf_counter(), 0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", acc=f"{float(metrics['accuracy']):.3f}")
    finally:
        if bar is not None:
            bar.close()
        writer.flush()
        ckpt.wait()
        ckpt.close()

    summary = {"step": max(start, num_steps), "start_step": start, "losses": losses_seen,
               "metrics": last}
    if export:
        exported = trainer.updated_model()      # a collective: every process gathers
    if export and jax.process_index() == 0:
        summary["export"] = str(export_model(exported, tokenizer, model_dir / EXPORT_DIR,
                                             export_max_length))
    if jax.process_index() == 0:
        (model_dir / "train_summary.json").write_text(json.dumps(
            {k: v for k, v in summary.items() if k != "losses"}, indent=2) + "\n")
    summary["trainer"] = trainer
    return summary
