"""Device mesh, and parameter / batch shardings from the logical-axis rules.

Parameters carry logical axis names (`out_sharding` metadata set with
`nnx.with_partitioning`, e.g. ('embed', 'mlp')); activations use 'batch' and
'length'. `gecko_jax.sharding_rules.LOGICAL_AXIS_RULES` maps every name to mesh
axes, in one place (the maxtext habit). The same code runs on:

  * 1 CPU                 MeshSpec()                       -> mesh (1, 1, 1)
  * 8 emulated CPUs       XLA_FLAGS=--xla_force_host_platform_device_count=8
  * a GPU / a TPU slice   MeshSpec(data=-1, model=2) ...   (-1 fills the rest)
  * multi-host            MeshSpec(..., distributed=True) calls
                          jax.distributed.initialize() before devices are read.

Axes: data (pure data parallel), fsdp (batch AND parameters split: ZeRO-3
style), model (tensor parallel over heads / mlp / vocab).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gecko_jax.errors import GeckoError
from gecko_jax.sharding_rules import LOGICAL_AXIS_RULES, logical_to_spec  # noqa: F401

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "model")

@dataclasses.dataclass(frozen=True)
class MeshSpec:
    """Sizes of the data / fsdp / model axes; one of them may be -1 (all the rest)."""

    data: int = -1
    fsdp: int = 1
    model: int = 1
    # Multi-process: call jax.distributed.initialize() before the backend starts.
    # Arguments left None are auto-detected (TPU pods, SLURM, Open MPI, GKE).
    distributed: bool = False
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    # A peer that sends no heartbeat for this long counts as dead and every process
    # stops with an error (jax's default is 100 s).
    heartbeat_timeout_seconds: int | None = None
    initialization_timeout: int | None = None
    shutdown_timeout_seconds: int | None = None
    # CPU-only clusters (and the 2-process test): "gloo" or "mpi" collectives.
    cpu_collectives: str | None = None

    def resolve(self, n_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.model]
        if sizes.count(-1) > 1:
            raise GeckoError(f"mesh {sizes}: at most one axis may be -1")
        known = math.prod(s for s in sizes if s != -1)
        if any(s == 0 or s < -1 for s in sizes) or n_devices % known:
            raise GeckoError(f"mesh data={self.data} fsdp={self.fsdp} model={self.model} "
                             f"does not divide {n_devices} devices")
        sizes = [n_devices // known if s == -1 else s for s in sizes]
        if math.prod(sizes) != n_devices:
            raise GeckoError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} "
                             f"devices, have {n_devices}")
        return tuple(sizes)


def backend_started() -> bool:
    """True once anything has touched jax's backend (devices, arrays, process_index)."""
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def maybe_initialize_distributed(spec: MeshSpec) -> None:
    """Multi-host: connect the processes once (no-op unless spec.distributed).

    Must run before anything touches the backend (jax.devices(), jax.process_index(),
    creating an array); trainer.train calls it first thing.
    """
    if not spec.distributed or jax.distributed.is_initialized():
        return
    if backend_started():
        raise GeckoError(
            "MeshSpec.distributed: jax's backend is already initialised, so "
            "jax.distributed.initialize() can no longer run; something called "
            "jax.devices()/jax.process_index() or created an array before the mesh was made")
    if spec.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", spec.cpu_collectives)
    kwargs = {k: v for k, v in (("coordinator_address", spec.coordinator_address),
                                ("num_processes", spec.num_processes),
                                ("process_id", spec.process_id),
                                ("heartbeat_timeout_seconds", spec.heartbeat_timeout_seconds),
                                ("initialization_timeout", spec.initialization_timeout),
                                ("shutdown_timeout_seconds", spec.shutdown_timeout_seconds))
              if v is not None}
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def make_mesh(spec: MeshSpec = MeshSpec(), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, model) mesh over `devices` (default: all devices of all hosts)."""
    maybe_initialize_distributed(spec)
    if devices is None:
        devices = jax.devices()
    fixed = (spec.data, spec.fsdp, spec.model)
    if -1 not in fixed and 0 < math.prod(fixed) < len(devices):
        # An explicit smaller mesh (e.g. data=1 for a single-device twin) uses the first devices.
        log.warning("mesh of %d devices on a host with %d: using the first %d",
                    math.prod(fixed), len(devices), math.prod(fixed))
        devices = list(devices)[:math.prod(fixed)]
    sizes = spec.resolve(len(devices))
    if len(devices) == len(jax.devices()):
        # Let jax pick an ICI/topology-aware device order on real slices.
        mesh = jax.make_mesh(sizes, MESH_AXES, devices=list(devices),
                             axis_types=(jax.sharding.AxisType.Auto,) * 3)
    else:
        mesh = Mesh(np.asarray(devices).reshape(sizes), MESH_AXES,
                    axis_types=(jax.sharding.AxisType.Auto,) * 3)
    log.info("mesh %s over %d %s device(s), %d process(es)", dict(mesh.shape), len(devices),
             devices[0].platform, jax.process_count())
    return mesh


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Inputs [B, ...]: batch split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), mesh=mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def param_logical_names(state: nnx.State) -> dict[str, tuple | None]:
    """Flat {'a/b/c': logical names} from NNX Variables' `out_sharding` metadata."""
    names = {}
    for path, var in nnx.to_flat_state(state):
        names[path_key(path)] = var.get_metadata().get("out_sharding")
    return names


def path_key(path: Sequence[Any]) -> str:
    return "/".join(str(p) for p in path)


def param_shardings(flat_params: dict[str, jax.Array | jax.ShapeDtypeStruct],
                    logical_names: dict[str, tuple | None], mesh: Mesh,
                    rules=LOGICAL_AXIS_RULES) -> dict[str, NamedSharding]:
    """NamedSharding per flat parameter, from its logical names and shape."""
    return {k: NamedSharding(mesh, logical_to_spec(logical_names.get(k), v.shape, mesh, rules))
            for k, v in flat_params.items()}


def optimizer_state_shardings(abstract_state, param_shardings: dict[str, NamedSharding],
                              params: dict[str, Any], mesh: Mesh):
    """Shardings of an optimizer state laid out like the parameters it tracks.

    A state leaf under a parameter's key with that parameter's shape (AdamW's moments)
    takes the parameter's sharding; anything else (step counts, Adafactor's factored
    rows and columns) is replicated. Placing the state with these out_shardings
    matters: a jitted optimizer.init leaves the zeros_like moments replicated on
    every device, whatever the parameters' sharding.

    Args:
      abstract_state: jax.eval_shape(optimizer.init, params).
      param_shardings, params: {flat key: sharding / array} of the parameters.
    """
    rep = replicated(mesh)

    def one(path, leaf):
        key = path[-1].key if path and isinstance(path[-1], jax.tree_util.DictKey) else None
        if key in param_shardings and tuple(leaf.shape) == tuple(params[key].shape):
            return param_shardings[key]
        return rep
    return jax.tree_util.tree_map_with_path(one, abstract_state)


def host_to_sharded(value, sharding: NamedSharding) -> jax.Array:
    """A value every process holds in full -> a global Array laid out by `sharding`.

    Each process copies only its own devices' shards (make_array_from_callback): no
    cross-process traffic. jax.device_put of a host value onto a multi-process
    sharding first checks that every process holds the same value, by gathering the
    whole array onto every local device (for Gemma-3's embedding table, 4 x 1.3 GB
    per process).
    """
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def host_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's slice of the global batch -> global jax Arrays sharded on 'batch'.

    Single host: the slice IS the global batch. Multi-host: each process passes
    its own rows (global rows / process_count), as t5x does.
    """
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
            for k, v in batch.items()}
