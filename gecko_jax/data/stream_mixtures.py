"""The trainer's data_fn for a streamed seqio Mixture of several FRet file sets.

    train.data_fn = @streaming_mixture_data
    streaming_mixture_data.mixture = "gecko_stream"
    streaming_mixture_data.file_sets = {"fret": "/data/fret/records-*.jsonl",
                                        "nq": ["/data/nq-0.tfrecord", "/data/nq-1.tfrecord"]}
    streaming_mixture_data.rates = {"fret": 2.0, "nq": 1.0, "gecko_bbc_classification": 0.5}
    streaming_mixture_data.task_sources = {"gecko_bbc_classification": @bbc_classification}

Each file set (JSONL or FRet TFRecord shards: a list of paths or one glob pattern)
becomes a streaming seqio Task (data/streaming.py: read lazily, tokenised in
batches, held-out evaluation texts dropped); `task_sources` adds small in-memory
sources (the mixtures.py source functions: BBC classification, Wikipedia
sections, tfds NLI / classification, BEIR) as seqio Tasks over their examples.
NLI and classification-as-retrieval pair rows across the whole set (a premise's
hypotheses, another item of the same label), so they are built in memory, then
streamed by seqio with the rest. A seqio Mixture with the rates is registered
and streamed per host (data/stream_batches.py), with a checkpointed position.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import gin
import seqio
import tensorflow as tf

from gecko_jax.data import mixtures, stream_batches, streaming
from gecko_jax.data.formatting import Example
from gecko_jax.errors import GeckoError, InputError

log = logging.getLogger(__name__)


def expand_files(name: str, files: str | Sequence[str]) -> list[str]:
    """A file set: a list of paths, or one glob pattern (sorted matches; gs:// works)."""
    if isinstance(files, str):
        out = sorted(tf.io.gfile.glob(files))
        if not out:
            raise InputError(files, f"file set {name!r}: the pattern matches no file")
        return out
    out = [str(f) for f in files]
    if not out:
        raise GeckoError(f"file set {name!r} lists no files")
    return out


@gin.configurable(denylist=["tokenizer", "feature_lengths", "batch_size", "seed",
                            "process_index", "process_count"])
def streaming_mixture_data(*, tokenizer, feature_lengths: Mapping[str, int], batch_size: int,
                           seed: int, process_index: int = 0, process_count: int = 1,
                           mixture: str = gin.REQUIRED,
                           file_sets: Mapping[str, str | Sequence[str]] = gin.REQUIRED,
                           rates: Mapping[str, float] = gin.REQUIRED,
                           task_sources: Mapping[str, Callable[[], Sequence[Example]]]
                           | None = None,
                           single_task_batches: bool = False, exclude_eval_test: bool = True,
                           shuffle_buffer: int = stream_batches.SHUFFLE_BUFFER,
                           cache_dir: str | None = None) -> stream_batches.StreamingBatches:
    """Registers the Tasks and the Mixture; returns this host's batches of the stream.

    Args:
      mixture: the seqio Mixture name to register (the base of a name derived from the
        rates, as mixtures.mixture_data does; one task is streamed on its own).
      file_sets: {task name: shards (paths or a glob)}; each a streaming Task, registered
        under its name once per process (a name names one file list).
      rates: {task name: rate}; names of file_sets, task_sources or registered Tasks.
      task_sources: {task name: source function} registered in memory (mixtures.py).
      single_task_batches: every global batch from one task, drawn at the rates.
      exclude_eval_test: the file sets drop records touching held-out evaluation texts
        (the in-memory sources have their own flag).
      cache_dir: read every file set from its offline cache under this folder
        (data/stream_cache.cache_task, same task names); the data position then
        checks the cache shards instead of the source files.
    Returns:
      StreamingBatches whose position (saved with checkpoints) covers every file set.
    """
    task_sources = dict(task_sources or {})
    clash = sorted(set(file_sets) & set(task_sources))
    if clash:
        raise GeckoError(f"{mixture}: {clash} named both as file sets and as task sources")
    cached = cache_dir is not None       # the source files need not exist any more
    files = {name: (expand_files(name, f) if not (cached and isinstance(f, str))
                    else sorted(tf.io.gfile.glob(f)) or [f])
             for name, f in file_sets.items()}
    rates = mixtures.check_rates(rates, sorted(set(files) | set(task_sources)
                                               | set(seqio.TaskRegistry.names())),
                                 mixture)
    seqio_names = {}
    for name in rates:
        seqio_names[name] = name
        if name in files:
            streaming.register_streaming_task(name, files[name], tokenizer.folder,
                                              exclude_eval_test=exclude_eval_test,
                                              check_files=not cached)
        elif name in task_sources:
            examples = list(task_sources[name]())
            if not examples:
                raise GeckoError(f"{mixture}: task {name!r} has no examples")
            seqio_names[name] = mixtures.register_examples_task(
                name, examples, tokenizer.folder, derive_name=True).name
    provider = mixtures.register_mixture(
        mixture, {seqio_names[t]: r for t, r in rates.items()}, derive_name=True).name
    if len(rates) == 1:     # one task: its own stream, without the Mixture's sampler
        provider = seqio_names[next(iter(rates))]
    watched = [f for n in rates if n in files for f in files[n]]
    if cache_dir is not None:
        from gecko_jax.data import stream_cache

        seqio.add_global_cache_dirs([str(cache_dir)])
        watched = [f for n in rates if n in files for f in stream_cache.cached_files(n)]
    log.info("%s: streaming %s at rates %s", mixture,
             {n: f"{len(f)} file(s)" for n, f in files.items() if n in rates}, rates)
    return stream_batches.stream_batches(
        provider, feature_lengths=feature_lengths, batch_size=batch_size, seed=seed,
        pad_id=tokenizer.pad_id, process_index=process_index, process_count=process_count,
        single_task_batches=single_task_batches, shuffle_buffer=shuffle_buffer,
        files=watched, use_cached=cache_dir is not None)
