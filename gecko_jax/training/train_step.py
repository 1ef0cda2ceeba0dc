"""The Gecko train step: the loss wired to the model, and the sharded, jitted update.

Train state = {step, params, opt_state} with params a flat
{'backbone/layers/0/query/kernel': array} dict, so optax, orbax and the sharding
table all see one simple pytree. The loss is gecko_jax.losses (pure);
partitioning.py owns the mesh and the logical-axis rules.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gecko_jax import losses, start_distill
from gecko_jax.errors import GeckoError
from gecko_jax.training import grad_cache as grad_cache_lib
from gecko_jax import partitioning
from gecko_jax.training.grad_cache import GradCache

log = logging.getLogger(__name__)


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
    # Weight of the distillation from the stage's start tower on prompt-free queries
    # (start_distill.py); 0: off. The Trainer then keeps a frozen copy of the initial
    # parameters in its state.
    start_distill: float = 0.0


# --------------------------------------------------------------------------- the step
def _flatten(state: nnx.State) -> dict[str, jax.Array]:
    return {partitioning.path_key(p): v.get_value() for p, v in nnx.to_flat_state(state)}


def encode_batch(model, batch: dict[str, jax.Array], use_negatives: bool):
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


def loss_on_batch(model, batch: dict[str, jax.Array], cfg: LossConfig, start=None):
    """Gecko loss of one (micro-)batch of model features. Returns (loss, metrics).

    start: the frozen start tower (cfg.start_distill > 0): adds cfg.start_distill
    times start_distill.start_kl of the batch's documents, the start tower reading
    each query without its prompt."""
    q, p, n = encode_batch(model, batch, cfg.use_hard_negatives)
    loss, metrics = loss_on_embeddings(q, p, n, batch, cfg)
    if start is None or not cfg.start_distill:
        return loss, metrics
    raw = dict(batch)
    raw["query_ids"], raw["query_mask"] = start_distill.strip_prompt(
        batch["query_ids"], batch["query_mask"], getattr(model, "prompt_markers", ()))
    q0, p0, n0 = jax.lax.stop_gradient(encode_batch(start, raw, cfg.use_hard_negatives))
    docs = p if n is None else jnp.concatenate([p, n.reshape(-1, n.shape[-1])])
    docs0 = p0 if n0 is None else jnp.concatenate([p0, n0.reshape(-1, n0.shape[-1])])
    kd, kd_metrics = start_distill.start_kl(q, docs, q0, docs0, tau=cfg.tau,
                                            dims=cfg.mrl_dims, weights=cfg.mrl_weights)
    loss = loss + cfg.start_distill * kd
    return loss, dict(metrics, **kd_metrics, loss=loss, distill=kd)


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
      model: a DualEncoder (its Params carry logical axis names). The Trainer owns it:
        its parameter arrays are replaced by their shapes once the sharded state holds
        them (one whole copy less in memory); updated_model() fills it again.
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
        if grad_cache.chunk_size and loss_config.start_distill:
            raise GeckoError("LossConfig.start_distill is not implemented with GradCache "
                             "(set GradCache.chunk_size = 0, or start_distill = 0)")
        if loss_config.start_distill and not getattr(model, "prompt_markers", ()):
            log.warning("LossConfig.start_distill: this tower pools its prompt (no prompt "
                        "markers), so the start tower reads each query with its prompt")
        self.model = model
        self.grad_cache = grad_cache
        self.mesh = mesh
        self.loss_config = loss_config
        self.grad_accum_steps = grad_accum_steps
        self.optimizer = optimizer
        self._schedule = schedule
        graphdef, params_state, rest = nnx.split(model, nnx.Param, ...)
        self._graphdef, self._rest = graphdef, rest
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params_state)
        self._template = nnx.to_flat_state(abstract)     # paths and metadata, no arrays
        flat = _flatten(params_state)
        names = partitioning.param_logical_names(params_state)
        self.param_shardings = partitioning.param_shardings(flat, names, mesh)
        # Every process loaded the whole model; each places only its devices' shards.
        params = {k: partitioning.host_to_sharded(v, self.param_shardings[k])
                  for k, v in flat.items()}
        opt_shardings = partitioning.optimizer_state_shardings(
            jax.eval_shape(optimizer.init, params), self.param_shardings, params, mesh)
        replicated = partitioning.replicated(mesh)
        self.state_shardings = {"step": replicated, "params": self.param_shardings,
                                "opt_state": opt_shardings}
        self.state = {"step": partitioning.host_to_sharded(np.zeros((), np.int32), replicated),
                      "params": params,
                      "opt_state": jax.jit(optimizer.init, out_shardings=opt_shardings)(params)}
        # LossConfig.start_distill: the start tower's parameters, a frozen copy (the step
        # donates `params`). Not part of the checkpointed state: a resumed stage builds
        # its Trainer from the same initial model, so the copy is the same.
        self.start = None
        if loss_config.start_distill:
            self.start = jax.jit(lambda p: jax.tree.map(lambda x: jnp.array(x, copy=True), p),
                                 out_shardings=self.param_shardings)(params)
        # The model's own arrays (the whole model, on one device) are dropped: the
        # state holds the parameters from here on; updated_model() writes them back.
        del flat, params_state
        nnx.update(model, abstract)
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
    def _grad_cache_loss_and_grads(self, params, batch):  # (start_distill is refused)
        cfg = self.loss_config

        def embed_fn(p, chunk, _key):   # the towers have no dropout: the key is unused
            q, d, n = encode_batch(self.merged_model(p), chunk, cfg.use_hard_negatives)
            return {"q": q, "p": d, "n": n} if n is not None else {"q": q, "p": d}

        def loss_fn(emb, b):
            return loss_on_embeddings(emb["q"], emb["p"], emb.get("n"), b, cfg)

        n = self.grad_cache.num_chunks(next(iter(batch.values())).shape[0])
        _, metrics, grads = grad_cache_lib.loss_and_grads(
            params, batch, embed_fn=embed_fn, loss_fn=loss_fn, num_chunks=n)
        return grads, metrics

    def _loss_and_grads(self, params, batch, start=None):
        if self.grad_cache.chunk_size:
            return self._grad_cache_loss_and_grads(params, batch)
        start_model = None if start is None else self.merged_model(start)

        def loss_fn(p, b):
            loss, metrics = loss_on_batch(self.merged_model(p), b, self.loss_config,
                                          start=start_model)
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

    def _train_step(self, state, batch, start=None):
        grads, metrics = self._loss_and_grads(state["params"], batch, start)
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
        start = self.start is not None
        grads_fn = jax.jit(self._loss_and_grads,
                           in_shardings=(self.param_shardings, self.batch_shardings(host_batch))
                           + ((self.param_shardings,) if start else ()),
                           out_shardings=(self.param_shardings, rep))
        update_fn = jax.jit(self._apply_update,
                            in_shardings=(self.state_shardings, self.param_shardings, rep),
                            out_shardings=(self.state_shardings, rep), donate_argnums=(0, 1))

        def step(state, batch):
            grads, metrics = grads_fn(state["params"], batch, *((self.start,) if start else ()))
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
            start = () if self.start is None else (self.param_shardings,)
            self._step_fn = jax.jit(
                self._train_step,
                in_shardings=(self.state_shardings, self.batch_shardings(host_batch), *start),
                out_shardings=(self.state_shardings, partitioning.replicated(self.mesh)),
                donate_argnums=(0,))
        extra = () if self.start is None or self.separate_update else (self.start,)
        self.state, metrics = self._step_fn(self.state, batch, *extra)
        return metrics

    def abstract_state(self):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            self.state)
