"""How XLA's SPMD partitioner splits the oneDNN custom calls over a device mesh.

XLA knows nothing of a custom call's math, so by default it all-gathers every operand
and runs the whole global product on every device (a data-parallel step on 8 devices
computed each dense layer 8 times). These rules (jax `custom_partitioning`) keep the
work local:
- matmul op(a) [M, K] @ op(b) [K, N] (+ bias [N]): rows stay split as op(a)'s rows
  are, columns as op(b)'s; the contracted K is gathered when it is split (a weight
  gradient x^T g over data-parallel rows then runs whole on each device);
- the attention kernels: split over the batch (sequences); the length, head and
  feature dimensions are gathered.
Each device then calls the kernel on its local block.
"""

from __future__ import annotations

from typing import Callable

from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def _spec(sharding, mesh, rank: int):
    """An operand's partition spec over `mesh`, or None for a layout that is not one
    (XLA can give an operand a tiling no mesh-axis spec describes, e.g. after a
    reshape of padded rows: such an operand is then gathered, as without these rules).
    Shardings come undecoded (`decode_shardings=False`): JAX's own decoding asserts
    on those layouts instead of returning."""
    from jax._src import sharding_impls

    if isinstance(sharding, NamedSharding):
        spec = tuple(sharding.spec)
    elif mesh is None or mesh.empty:
        return None
    else:
        try:
            spec = tuple(sharding_impls.parse_flatten_op_sharding(
                sharding._to_xla_hlo_sharding(rank), mesh)[0])
        except Exception:  # noqa: BLE001 - an unparseable tiling: gather the operand
            return None
    return spec + (None,) * (rank - len(spec))


def _placed(mesh, spec, like):
    """NamedSharding(mesh, spec); without a mesh (operands placed by device lists, not
    named axes) the operand is replicated over `like`'s devices."""
    if mesh is not None and not mesh.empty:
        return NamedSharding(mesh, spec)
    from jax._src.sharding_impls import GSPMDSharding

    return GSPMDSharding.get_replicated(like._device_assignment)


def _axes(sharding, mesh, dim: int, rank: int):
    """Mesh axes that split dimension `dim` of an operand (None when whole or unknown)."""
    spec = _spec(sharding, mesh, rank)
    return None if spec is None else spec[dim]


def _names(axes) -> set:
    if axes is None:
        return set()
    return {axes} if isinstance(axes, str) else set(axes)


def _matmul_layout(transpose_a: bool, transpose_b: bool):
    """(a's row dim, b's column dim) and a rule in einsum-like factors."""
    a = "k m" if transpose_a else "m k"
    b = "n k" if transpose_b else "k n"
    return (1 if transpose_a else 0), (0 if transpose_b else 1), a, b


def matmul_partitioned(local: Callable) -> Callable:
    """`local(a, b, bias, transpose_a, transpose_b, out_dtype, activation)` split over a
    mesh by rows of op(a) and columns of op(b); bias is [N] or [0] (none)."""
    fn = custom_partitioning(local, static_argnums=(3, 4, 5, 6))

    def plan(transpose_a, transpose_b, mesh, arg_shapes):
        a, b, bias = arg_shapes
        m_dim, n_dim, _, _ = _matmul_layout(transpose_a, transpose_b)
        m_axes = _axes(a.sharding, mesh, m_dim, 2)
        n_axes = _axes(b.sharding, mesh, n_dim, 2)
        if _names(m_axes) & _names(n_axes):  # one mesh axis cannot split both
            n_axes = None
        a_spec = P(None, m_axes) if transpose_a else P(m_axes, None)
        b_spec = P(n_axes, None) if transpose_b else P(None, n_axes)
        bias_spec = P(n_axes) if bias.shape[0] else P(None)
        args = tuple(_placed(mesh, s, a.sharding) for s in (a_spec, b_spec, bias_spec))
        return args, _placed(mesh, P(m_axes, n_axes), a.sharding)

    def infer(transpose_a, transpose_b, out_dtype, activation, mesh, arg_shapes, result_shape):
        return plan(transpose_a, transpose_b, mesh, arg_shapes)[1]

    def partition(transpose_a, transpose_b, out_dtype, activation, mesh, arg_shapes,
                  result_shape):
        args, out = plan(transpose_a, transpose_b, mesh, arg_shapes)

        def lower(a, b, bias):
            return local(a, b, bias, transpose_a, transpose_b, out_dtype, activation)

        return mesh, lower, out, args

    def rule(transpose_a, transpose_b, out_dtype, activation, mesh, value_types, result_types):
        _, _, a, b = _matmul_layout(transpose_a, transpose_b)
        bias = "n" if value_types[2].shape[0] else "e"
        return f"{a}, {b}, {bias} -> m n", {"need_replication_factors": ("k",)}

    fn.def_partition(partition=partition, infer_sharding_from_operands=infer,
                     sharding_rule=rule, decode_shardings=False)
    return fn


def batch_partitioned(local: Callable, rule: str, static_argnums: tuple,
                      need_replication: tuple) -> Callable:
    """`local(*arrays, *statics)` whose operands and result all lead with the batch:
    each device runs its sequences; every other dimension is gathered. `rule` names
    the factors (the batch is "b")."""
    fn = custom_partitioning(local, static_argnums=static_argnums)
    n_static = len(static_argnums)

    def plan(mesh, arg_shapes, result_shape):
        batch = _axes(arg_shapes[0].sharding, mesh, 0, len(arg_shapes[0].shape))
        like = arg_shapes[0].sharding
        args = tuple(_placed(mesh, P(batch), like) for _ in arg_shapes)
        return args, _placed(mesh, P(batch), like)

    def infer(*a):
        mesh, arg_shapes, result_shape = a[n_static:]
        return plan(mesh, arg_shapes, result_shape)[1]

    def partition(*a):
        statics, (mesh, arg_shapes, result_shape) = a[:n_static], a[n_static:]
        args, out = plan(mesh, arg_shapes, result_shape)
        return mesh, lambda *xs: local(*xs, *statics), out, args

    def sharding_rule(*a):
        return rule, {"need_replication_factors": need_replication}

    fn.def_partition(partition=partition, infer_sharding_from_operands=infer,
                     sharding_rule=sharding_rule, decode_shardings=False)
    return fn

