"""`train.train_files` as a data_fn: a one-task mixture of FRet files, streamed or in memory.

    files_data_fn(["fret/records-00000-of-00002.jsonl", ...], streaming=True)

streaming: a one-task streamed mixture (stream_mixtures.streaming_mixture_data:
JSONL or FRet TFRecord shards read per host, a checkpointed data position).
Otherwise: a one-task in-memory mixture (mixtures.mixture_data over
mixtures.jsonl_examples: step-indexed batches). Both drop the records touching
held-out evaluation texts. The streamed Task's name is derived from the files
and the tokenizer, so each file list is its own Task in a process.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

from gecko_jax.data import mixtures, stream_mixtures, tasks
from gecko_jax.data.batches import BatchSource

TASK = "gecko_files"


def files_data(*, tokenizer, feature_lengths: Mapping[str, int], batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1, files: Sequence[str],
               streaming: bool = True) -> BatchSource:
    """The trainer's data_fn over `files` (see the module docstring)."""
    files = [str(f) for f in files]
    common = dict(tokenizer=tokenizer, feature_lengths=feature_lengths, batch_size=batch_size,
                  seed=seed, process_index=process_index, process_count=process_count)
    if not streaming:
        return mixtures.mixture_data(
            **common, mixture=TASK, rates={TASK: 1.0},
            task_sources={TASK: functools.partial(mixtures.jsonl_examples, files=files)})
    name = tasks.derived_name(TASK, {"files": files,
                                     "tokenizer": tasks.tokenizer_key(tokenizer.folder)})
    return stream_mixtures.streaming_mixture_data(
        **common, mixture=TASK, file_sets={name: files}, rates={name: 1.0})


def files_data_fn(files: Sequence[str], streaming: bool = True):
    """files_data with the files bound: a data_fn for train()."""
    return functools.partial(files_data, files=list(files), streaming=streaming)
