"""A soup of one run's checkpoints: average the parameters saved at several steps.

    gecko soup --output runs/x/soup runs/x/checkpoints/800 runs/x/checkpoints/1000

The run's model is rebuilt from RUN/config.gin (the resolved config the trainer
wrote), each checkpoint's parameters are read with orbax, averaged with
models/soup.average_tensors (float64, cast back) and exported as the trainer
exports (BERT folder, or EmbeddingGemma's layout for an LLM tower).
"""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

import numpy as np

from gecko_jax import paths
from gecko_jax.errors import GeckoError
from gecko_jax.models import soup


def is_checkpoint(path: str | os.PathLike) -> bool:
    """An orbax step folder written by the trainer: RUN/checkpoints/<step>/state."""
    path = paths.as_path(path)
    return (path / "state").is_dir() and path.parent.name == "checkpoints" and path.name.isdigit()


def _absolute(path: str | os.PathLike):
    """Local paths made absolute (orbax wants that); URIs (gs://) as epath."""
    return paths.as_path(path) if paths.is_remote(path) else pathlib.Path(path).resolve()


def checkpoint_params(step_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The flat {'backbone/...': array} parameters of one checkpoint (host numpy)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(_absolute(step_dir) / "state")
    return {k: np.asarray(v) for k, v in state["params"].items()}


def soup_checkpoints(step_dirs: Sequence[str | os.PathLike], output: str | os.PathLike,
                     weights: Sequence[float] | None = None) -> pathlib.Path:
    """Average checkpoints of ONE run and export the result to `output`."""
    import gin
    import jax.numpy as jnp
    from flax import nnx

    from gecko_jax import partitioning
    from gecko_jax.training import export

    step_dirs = [_absolute(s) for s in step_dirs]
    runs = {s.parent.parent for s in step_dirs}
    if len(runs) != 1:
        raise GeckoError(f"soup: checkpoints must come from one run, got {sorted(map(str, runs))}")
    run_dir = runs.pop()
    if not (run_dir / "config.gin").is_file():
        raise GeckoError(f"soup: {run_dir}/config.gin is missing (not a gecko train run)")
    w = soup.soup_weights(len(step_dirs), weights)
    states = [checkpoint_params(s) for s in step_dirs]
    mean = soup.average_tensors(states, w, [str(s) for s in step_dirs])

    gin.clear_config()
    gin.parse_config((run_dir / "config.gin").read_text(), skip_unknown=True)
    model, tokenizer = gin.query_parameter("train.model_fn").scoped_configurable_fn()
    params = nnx.state(model, nnx.Param)
    pairs = []
    for path, var in nnx.to_flat_state(params):
        key = partitioning.path_key(path)
        if key not in mean:
            raise GeckoError(f"soup: parameter {key!r} of the run's model is not in the checkpoints")
        if mean[key].shape != var.get_value().shape:
            raise GeckoError(f"soup: parameter {key!r} has shape {mean[key].shape} in the "
                             f"checkpoints, the model has {var.get_value().shape}")
        pairs.append((path, var.replace(jnp.asarray(mean[key]))))
    nnx.update(model, nnx.from_flat_state(pairs))
    return export.export_model(model, tokenizer, output, _trained_doc_length(),
                               _trained_prompt_format())


def _trained_doc_length() -> int:
    """The document length of the parsed run config (train.feature_lengths["positive"]),
    which the soup declares as its input length like the run's own export."""
    import gin

    length = gin.query_parameter("train.feature_lengths")["positive"]
    return int(length.scoped_configurable_fn() if hasattr(length, "scoped_configurable_fn")
               else length)


def _trained_prompt_format() -> str:
    """The prompt format of the parsed run config's data (mixture_data.prompt_format,
    "gecko" when unbound), which the soup declares like the run's own export."""
    import gin

    try:
        return str(gin.query_parameter("mixture_data.prompt_format"))
    except ValueError:
        return "gecko"
