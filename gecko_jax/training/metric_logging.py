"""Training metrics writer: clu's TensorBoard writer, or JSON lines without TensorFlow.

clu.metric_writers imports TensorFlow (its summary writer is tf.summary). Where
only the core packages are installed (jax, flax, optax, orbax, e.g. a GPU box),
the trainer writes MODEL_DIR/metrics.jsonl instead: one {"step": s, ...} per line.
So does a model dir TensorFlow cannot write (a URI other than gs://, e.g. memory://).
Object stores cannot append: there each write rewrites the (small) file whole.
"""

from __future__ import annotations

import json
import logging
import os

from gecko_jax import paths

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class JsonlWriter:
    """The part of clu's MetricWriter the trainer uses: write_scalars, flush, close."""

    def __init__(self, model_dir: str | os.PathLike, just_logging: bool):
        self._path = None if just_logging else paths.as_path(model_dir) / METRICS_FILE
        self._rows: list[str] | None = None
        if self._path is not None and paths.is_remote(self._path):
            self._rows = self._path.read_text().splitlines(True) if self._path.exists() else []

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        log.info("step %d: %s", step, row)
        line = json.dumps(row) + "\n"
        if self._rows is not None:          # object store: rewrite the object whole
            self._rows.append(line)
            paths.write_bytes_atomic(self._path, "".join(self._rows).encode())
        elif self._path is not None:
            with open(self._path, "a") as f:
                f.write(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def create_writer(model_dir: str | os.PathLike, just_logging: bool):
    """TensorBoard events via clu when TensorFlow imports, else JsonlWriter."""
    if paths.is_remote(model_dir) and not os.fspath(model_dir).startswith("gs://"):
        return JsonlWriter(model_dir, just_logging)     # not a filesystem TensorFlow knows
    try:
        from clu import metric_writers
    except ImportError as err:
        log.info("no TensorBoard writer (%s): metrics go to %s", err, METRICS_FILE)
        return JsonlWriter(model_dir, just_logging)
    return metric_writers.create_default_writer(str(model_dir), just_logging=just_logging,
                                                asynchronous=True)
