"""Per-host batches streamed from a seqio Task or Mixture, with a checkpointable position.

    batches = stream_batches("gecko_fret", feature_lengths={...}, batch_size=1024, seed=0,
                             pad_id=0, process_index=p, process_count=P)
    batches.batch(step)                # this host's rows of global batch `step`, in order
    batches.save_position(dir, step)   # the tf.data iterator state of this host
    batches.restore_position(dir, step)

Host p reads seqio's ShardInfo(p, P) share of every task (whole files when a task
has at least P files, else every P-th element) and batches B/P rows; the global
batch of a step is the hosts' batches side by side.

Mixtures: rows are drawn from the tasks at the seqio Mixture's rates
(Mixture.get_dataset); with single_task_batches every batch comes from one
task, drawn at the Mixture's rates by a seeded sampler that is the same on
every host (so the global batch holds one task).

Data position: the iterator of the tf.data pipeline is saved with
tf.train.Checkpoint, one file set per process (t5x's way, see README "Data
position"): its shuffle buffers, file offsets and sampler state come back
exactly, so a resumed run sees the batches an uninterrupted one would, without
re-reading from the start.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
from typing import Iterable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from gecko_jax.data.batches import BatchSource
from gecko_jax.data.feature_converters import (TEXT_ID_FEATURES, DualEncoderFeatureConverter,
                                               task_feature_lengths)
from gecko_jax.data import tasks as tasks_lib
from gecko_jax.errors import GeckoError, InputError

SHUFFLE_BUFFER = 1024   # rows; files are also shuffled and interleaved 16 at a time


def _options() -> tf.data.Options:
    opts = tf.data.Options()
    opts.deterministic = True
    # The tokenizer and parser run in numpy_function (pure functions of their inputs):
    # their "external state" is nothing, so iterator checkpoints may ignore it.
    opts.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return opts


def _task_rows(task: seqio.Task, lengths: Mapping[str, int], seed: int,
               shard: seqio.ShardInfo, pad_id: int, shuffle_buffer: int,
               use_cached: bool = False) -> tf.data.Dataset:
    ds = task.get_dataset(sequence_length=dict(lengths), split="train", shuffle=True,
                          shuffle_buffer_size=shuffle_buffer, seed=seed, shard_info=shard,
                          num_epochs=None, use_cached=use_cached, try_in_mem_cache=False)
    keep = tasks_lib.closing_count(task.output_features["query"].vocabulary)
    return DualEncoderFeatureConverter(pad_id=pad_id, keep_last=keep)(
        ds, task_feature_lengths(lengths))


def host_dataset(name: str, *, feature_lengths: Mapping[str, int], batch_size: int, seed: int,
                 pad_id: int = 0, process_index: int = 0, process_count: int = 1,
                 single_task_batches: bool = False, shuffle_buffer: int = SHUFFLE_BUFFER,
                 use_cached: bool = False) -> tf.data.Dataset:
    """This host's endless stream of batches [B/P, ...] of model features of a Task or Mixture.

    Args:
      name: a registered seqio Task or Mixture.
      feature_lengths: {"query": Lq, "positive": Ld, "negative": Ld}.
      batch_size: the global batch size (all hosts); divisible by process_count.
      use_cached: read the tasks' offline caches (data/stream_cache.py; every task
        that supports caching must be cached in a seqio global cache dir).
    """
    if batch_size % process_count:
        raise GeckoError(f"global batch {batch_size} is not divisible by {process_count} "
                         "processes")
    per_host = batch_size // process_count
    shard = seqio.ShardInfo(index=process_index, num_shards=process_count)
    lengths = {k: int(feature_lengths[k]) for k in ("query", "positive", "negative")}
    provider = seqio.get_mixture_or_task(name)
    if use_cached:
        tasks = [provider] if isinstance(provider, seqio.Task) else provider.tasks
        missing = [t.name for t in tasks if t.supports_caching and not t.cache_dir]
        if missing:
            raise GeckoError(f"use_cached: task(s) {missing} have no completed cache in "
                             f"{seqio.utils.get_global_cache_dirs()} (data/stream_cache.py)")
    if isinstance(provider, seqio.Task):
        ds = _task_rows(provider, lengths, seed, shard, pad_id, shuffle_buffer, use_cached)
        ds = ds.batch(per_host, drop_remainder=True)
    elif single_task_batches:
        tasks = provider.tasks
        parts = [_task_rows(t, lengths, seed, shard, pad_id, shuffle_buffer, use_cached)
                 .batch(per_host, drop_remainder=True) for t in tasks]
        rates = [float(provider.get_rate(t)) for t in tasks]
        ds = tf.data.Dataset.sample_from_datasets(
            parts, weights=[r / sum(rates) for r in rates], seed=seed)
    else:
        ds = provider.get_dataset(sequence_length=lengths, split="train", shuffle=True,
                                  seed=seed, shard_info=shard, num_epochs=None,
                                  use_cached=use_cached, passthrough_features=TEXT_ID_FEATURES,
                                  log_mixing_proportions=False, try_in_mem_cache=False)
        keep = tasks_lib.closing_count(provider.tasks[0].output_features["query"].vocabulary)
        ds = DualEncoderFeatureConverter(pad_id=pad_id, keep_last=keep)(
            ds, task_feature_lengths(lengths))
        ds = ds.batch(per_host, drop_remainder=True)
    return ds.prefetch(2).with_options(_options())


_WHERE = re.compile(r"(\S+:\d+: [^\n]*)")


def input_error(err: tf.errors.OpError, step: int) -> GeckoError:
    """The InputError raised inside the pipeline (file:line: message), else a GeckoError."""
    text = str(err.message if hasattr(err, "message") else err)
    if "InputError" in text:
        tail = text.split("InputError:", 1)[1].strip()
        match = _WHERE.match(tail)
        if match:
            return GeckoError(f"{match.group(1)} (read for step {step + 1})")
    return GeckoError(f"input pipeline failed at step {step + 1}: {text[:2000]}")


FILES_MANIFEST = "files.json"


class DataChanged(GeckoError):
    """The training files changed after the data position of a checkpoint was saved."""

    def __init__(self, what: str, step: int):
        super().__init__(
            f"{what} changed since the data position of step {step} was saved: that "
            "position (file offsets, rows read ahead) no longer matches the files. Put "
            "the file back as it was, or resume the parameters with a fresh stream of "
            "the changed files: --gin_bindings='train.restore_data_position=False'")


def file_stats(files: Sequence[str]) -> dict[str, list[int]]:
    """{file: [size, mtime_ns]} through tf.io.gfile (local paths and gs:// alike)."""
    out = {}
    for f in files:
        st = tf.io.gfile.stat(f)
        out[f] = [int(st.length), int(st.mtime_nsec)]
    return out


def changed_files(saved: Mapping[str, Sequence[int]], now: Mapping[str, Sequence[int]]
                  ) -> list[str]:
    """Files whose size or modification time differ, or that were added or removed,
    each with what changed."""
    out = []
    for f in sorted(set(saved) | set(now)):
        if f not in now:
            out.append(f"{f}: no longer read")
        elif f not in saved:
            out.append(f"{f}: not read when the position was saved")
        elif list(saved[f]) != list(now[f]):
            (s0, t0), (s1, t1) = saved[f], now[f]
            what = f"size {s0} -> {s1} bytes" if s0 != s1 else "modified"
            out.append(f"{f}: {what}")
    return out


def _position_dir(directory: str | os.PathLike, step: int) -> pathlib.Path:
    return pathlib.Path(directory) / f"step_{step:010d}"


class StreamingBatches(BatchSource):
    """Batches of a tf.data pipeline read in step order; the position is the iterator state.

    Args:
      dataset: this host's batches (host_dataset).
      process_index, process_count: this host; names its position files.
      files: the files the stream reads. Their sizes and modification times are saved
        with each position, and a restore refuses files that changed since: a saved
        position holds file offsets and rows read ahead, which no longer match them.
    """

    step_indexed = False
    num_examples = None      # unknown without reading every file; the trainer logs it only

    def __init__(self, dataset: tf.data.Dataset, process_index: int = 0, process_count: int = 1,
                 files: Sequence[str] = ()):
        self.dataset = dataset
        self.process_index, self.process_count = process_index, process_count
        self.files = tuple(str(f) for f in files)
        self._iterator = iter(dataset)
        self._next_step = 0

    def start_at(self, step: int) -> None:
        """Continues a run at `step` with this (fresh) stream instead of a saved position."""
        self._iterator = iter(self.dataset)
        self._next_step = step

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This host's rows of batch `step`; steps come in order (restore_position first)."""
        if step != self._next_step:
            raise GeckoError(f"streaming batches are read in order: asked for step {step}, "
                             f"the stream is at step {self._next_step} (restore the data "
                             "position of a checkpoint to resume)")
        try:
            out = next(self._iterator)
        except tf.errors.OpError as err:
            raise input_error(err, step) from None
        self._next_step += 1
        return {k: v.numpy() for k, v in out.items()}

    def _file(self, directory, step: int) -> pathlib.Path:
        return (_position_dir(directory, step)
                / f"process_{self.process_index:05d}-of-{self.process_count:05d}")

    def save_position(self, directory: str | os.PathLike, step: int) -> None:
        """Writes this host's iterator state after `step` batches (atomically: a folder
        written under a temporary name, then renamed)."""
        if step != self._next_step:
            raise GeckoError(f"data position: the stream is at step {self._next_step}, "
                             f"not {step}")
        final = self._file(directory, step)
        tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tf.train.Checkpoint(iterator=self._iterator).write(str(tmp / "iterator"))
        (tmp / FILES_MANIFEST).write_text(json.dumps(file_stats(self.files), indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)

    def restore_position(self, directory: str | os.PathLike, step: int) -> None:
        final = self._file(directory, step)
        if not final.is_dir():
            raise GeckoError(
                f"{final}: no data position for process {self.process_index} of "
                f"{self.process_count} at step {step} (a checkpoint written with another "
                "number of processes, or without a streaming input, cannot resume here)")
        manifest = final / FILES_MANIFEST
        if manifest.is_file():
            changed = changed_files(json.loads(manifest.read_text()), file_stats(self.files))
            if changed:
                raise DataChanged(
                    f"{changed[0]} (and {len(changed) - 1} more)" if len(changed) > 1
                    else changed[0], step)
        self._iterator = iter(self.dataset)
        tf.train.Checkpoint(iterator=self._iterator).read(str(final / "iterator")) \
            .assert_consumed()
        self._next_step = step

    @staticmethod
    def prune_positions(directory: str | os.PathLike, keep_steps: Iterable[int]) -> None:
        """Removes saved positions of steps not in keep_steps (process 0 only calls it)."""
        keep = {_position_dir(directory, s).name for s in keep_steps}
        root = pathlib.Path(directory)
        if root.is_dir():
            for p in root.iterdir():
                if p.name.startswith("step_") and p.name not in keep:
                    shutil.rmtree(p, ignore_errors=True)


def stream_batches(name: str, *, feature_lengths: Mapping[str, int], batch_size: int, seed: int,
                   pad_id: int = 0, process_index: int = 0, process_count: int = 1,
                   single_task_batches: bool = False, shuffle_buffer: int = SHUFFLE_BUFFER,
                   files: Sequence[str] = (), use_cached: bool = False) -> StreamingBatches:
    """StreamingBatches over host_dataset (same arguments; `files`: see StreamingBatches)."""
    ds = host_dataset(name, feature_lengths=feature_lengths, batch_size=batch_size, seed=seed,
                      pad_id=pad_id, process_index=process_index, process_count=process_count,
                      single_task_batches=single_task_batches, shuffle_buffer=shuffle_buffer,
                      use_cached=use_cached)
    return StreamingBatches(ds, process_index, process_count, files)


__all__ = ["host_dataset", "stream_batches", "StreamingBatches", "input_error", "InputError",
           "DataChanged", "file_stats", "changed_files"]
