"""Offline cache of a tokenised streaming Task with Apache Beam (seqio's cache format).

    cache_files("gecko_fret", shards, tokenizer_folder, "/data/cache")   # or `gecko cache`
    seqio.add_global_cache_dirs(["/data/cache"])
    stream_batches.host_dataset("gecko_fret", ..., use_cached=True)

A streaming Task (data/streaming.py) runs its preprocessors up to its
seqio.CacheDatasetPlaceholder (parse, held-out filter, Gecko format, batched
tokenisation) once per source file in a Beam pipeline, and writes the token ids
and text ids as TFRecord shards with seqio's info / stats JSON and a COMPLETED
marker: CACHE_DIR/<task name>/train.tfrecord-NNNNN-of-MMMMM (rows spread over the
shards by a checksum of their bytes). Training with
use_cached=True reads those shards (by file per host) and runs only the
post-cache steps (trimming to the run's lengths), so the source files and the
tokenizer are not read again. This is what seqio's cache_tasks_main does (t5x
users run it on Dataflow); here for tasks registered at run time, without
absl flags. Other runners: pass Beam pipeline options (e.g. --runner=...).
"""

from __future__ import annotations

import functools
import os
import zlib
from typing import Callable, Sequence

import seqio
import tensorflow as tf

from gecko_jax.errors import GeckoError


def cache_files(name: str, files: Sequence[str], tokenizer_folder: str | os.PathLike,
                cache_dir: str | os.PathLike, *, exclude_eval_test: bool = True,
                num_shards: int | None = None, pipeline_args: Sequence[str] = (),
                overwrite: bool = False) -> str:
    """Registers the streaming Task `name` over FRet shards and caches it (cache_task).

    Train on the cache under the same task name: streaming_mixture_data with
    file_sets={name: ...} and cache_dir. Beam workers in other processes (the
    DirectRunner's multi_processing mode, Dataflow) register the Task themselves.
    """
    files = [str(f) for f in files]
    register = functools.partial(_register_once, name, tuple(files), str(tokenizer_folder),
                                 exclude_eval_test)
    register()
    return cache_task(name, cache_dir, num_shards=num_shards, pipeline_args=pipeline_args,
                      overwrite=overwrite, setup_fn=register)


def _register_once(name: str, files: tuple[str, ...], tokenizer_folder: str,
                   exclude_eval_test: bool) -> None:
    """Registers the streaming Task in this process (a no-op where it is; Beam setup_fn)."""
    from gecko_jax.data import streaming

    streaming.register_streaming_task(name, list(files), tokenizer_folder,
                                      exclude_eval_test=exclude_eval_test)


def cache_task(name: str, cache_dir: str | os.PathLike, *, split: str = "train",
               num_shards: int | None = None, pipeline_args: Sequence[str] = (),
               overwrite: bool = False, setup_fn: Callable[[], None] = lambda: None) -> str:
    """Writes the cache of a registered Task's `split`; returns its folder.

    Args:
      name: a registered Task with a CacheDatasetPlaceholder (a streaming Task).
      cache_dir: the cache root (local or gs://); the Task's folder goes under it.
      num_shards: output TFRecord shards (default: one per source file).
      pipeline_args: Beam pipeline options (default: the DirectRunner, in process).
      overwrite: replace an existing cache of this Task.
      setup_fn: run by each Beam worker before it reads (registers the Task there).
    """
    try:
        import apache_beam as beam
        from seqio import beam_utils
    except ImportError as err:
        raise GeckoError("caching needs apache-beam: pip install -e '.[beam]' (see "
                         "setup.py's beam extra)") from err

    task = seqio.TaskRegistry.get(name)
    if not task.supports_caching:
        raise GeckoError(f"task {name!r} has no CacheDatasetPlaceholder; only streaming "
                         "Tasks (data/streaming.py) can be cached")
    out = os.path.join(str(cache_dir), seqio.get_task_dir_from_name(name))
    if tf.io.gfile.exists(out):
        if not overwrite:
            raise GeckoError(f"{out}: a cache of {name!r} exists; pass overwrite=True")
        tf.io.gfile.rmtree(out)
    tf.io.gfile.makedirs(out)
    options = beam.options.pipeline_options.PipelineOptions(list(pipeline_args))
    with beam.Pipeline(options=options) as pipeline:
        pat = beam_utils.PreprocessTask(task, split, setup_fn=setup_fn)
        rows = pipeline | "preprocess" >> pat
        shards = num_shards or len(pat.shards)
        prefix = seqio.get_cached_tfrecord_prefix(out, split)
        _ = (rows | "serialise" >> beam.Map(
                lambda ex: seqio.dict_to_tfexample(ex).SerializeToString())
             | "key" >> beam.Map(lambda pb: (zlib.crc32(pb) % shards, pb))
             | "group" >> beam.GroupByKey()
             | "write" >> beam.MapTuple(functools.partial(_write_shard, prefix, shards)))
        _ = (rows | "info" >> beam_utils.GetInfo(shards)
             | "write_info" >> beam_utils.WriteJson(seqio.get_cached_info_path(out, split)))
        _ = (rows | "stats" >> beam_utils.GetStats(task.output_features)
             | "write_stats" >> beam_utils.WriteJson(seqio.get_cached_stats_path(out, split)))
    for i in range(shards):     # a shard no row hashed to is still there, empty
        path = f"{prefix}-{i:05d}-of-{shards:05d}"
        if not tf.io.gfile.exists(path):
            tf.io.TFRecordWriter(path).close()
    # Last, so a half-written cache is never read (seqio looks for COMPLETED).
    with tf.io.gfile.GFile(os.path.join(out, "COMPLETED"), "w") as f:
        f.write("")
    return out


def _write_shard(prefix: str, num_shards: int, index: int, records) -> str:
    """One cache shard, written with TensorFlow's TFRecord writer (TF computes the
    record checksums, so Beam's tfrecord extra is not needed)."""
    path = f"{prefix}-{index:05d}-of-{num_shards:05d}"
    with tf.io.TFRecordWriter(path) as w:
        for pb in records:
            w.write(pb)
    return path


def cached_files(name: str, split: str = "train") -> list[str]:
    """The cache shards a registered, cached Task reads (for the data position's file check)."""
    task = seqio.TaskRegistry.get(name)
    if not task.cache_dir:
        raise GeckoError(f"task {name!r} is not cached in {seqio.utils.get_global_cache_dirs()}")
    return sorted(tf.io.gfile.glob(seqio.get_cached_tfrecord_prefix(task.cache_dir, split)
                                   + "*"))
