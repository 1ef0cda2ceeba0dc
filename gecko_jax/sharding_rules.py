"""The ONE table of logical-axis rules, and the mapping of logical names to PartitionSpecs.

Parameters carry logical axis names (`out_sharding` metadata, e.g. ('embed', 'mlp'));
activations use 'batch' and 'length'. `LOGICAL_AXIS_RULES` maps every name to mesh
axes (the maxtext habit); the trainer's and FRet's mesh (partitioning.py) and the
teacher engine's (llm/jax_engine.py) both place arrays through `logical_to_spec`.
Mesh axes: data (pure data parallel), fsdp (batch AND parameters split: ZeRO-3
style), model (tensor parallel over heads / mlp / vocab). A mesh may lack an axis
(the teacher's is data x model): names mapped to it are then replicated.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from jax.sharding import Mesh, PartitionSpec

from gecko_jax.errors import GeckoError

# logical name -> mesh axis (or tuple of axes, or None = replicated).
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("vocab", "model"),
    ("layers", None),
)


def logical_to_spec(names: Sequence[str | None] | None, shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None, rules=LOGICAL_AXIS_RULES) -> PartitionSpec:
    """Logical axis names -> PartitionSpec.

    A dimension whose size the mesh axes do not divide is replicated instead
    (e.g. a vocabulary of 30522 over model=4, or 1 kv head over 2 devices), mesh
    axes the mesh lacks or of size 1 are dropped, and a mesh axis is used at most
    once per array; these keep tiny test configs and odd sizes runnable.
    """
    if not names:
        return PartitionSpec()
    table = dict(rules)
    used: set[str] = set()
    out = []
    for i, name in enumerate(names):
        if name is not None and name not in table:
            raise GeckoError(f"logical axis {name!r} has no rule in LOGICAL_AXIS_RULES")
        axes = table.get(name) if name is not None else None
        if axes is None:
            out.append(None)
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        if mesh is not None:
            axes = tuple(a for a in axes if mesh.shape.get(a, 1) > 1)
        axes = tuple(a for a in axes if a not in used)
        if mesh is not None and shape is not None and axes:
            if shape[i] % math.prod(mesh.shape[a] for a in axes):
                axes = ()
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)
