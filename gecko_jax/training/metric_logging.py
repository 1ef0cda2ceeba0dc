"""Training metrics writer: clu's TensorBoard writer, or JSON lines without TensorFlow.

clu.metric_writers imports TensorFlow (its summary writer is tf.summary). Where
only the core packages are installed (jax, flax, optax, orbax, e.g. a GPU box),
the trainer writes MODEL_DIR/metrics.jsonl instead: one {"step": s, ...} per line.
"""

from __future__ import annotations

import json
import logging
import pathlib

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class JsonlWriter:
    """The part of clu's MetricWriter the trainer uses: write_scalars, flush, close."""

    def __init__(self, model_dir: pathlib.Path, just_logging: bool):
        self._path = None if just_logging else pathlib.Path(model_dir) / METRICS_FILE

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        log.info("step %d: %s", step, row)
        if self._path is not None:
            with self._path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def create_writer(model_dir: pathlib.Path, just_logging: bool):
    """TensorBoard events via clu when TensorFlow imports, else JsonlWriter."""
    try:
        from clu import metric_writers
    except ImportError as err:
        log.info("no TensorBoard writer (%s): metrics go to %s", err, METRICS_FILE)
        return JsonlWriter(model_dir, just_logging)
    return metric_writers.create_default_writer(str(model_dir), just_logging=just_logging,
                                                asynchronous=True)
