"""The interface every source of training batches implements (no TensorFlow here).

The trainer reads its data through this interface only:

    batches.batch(step)                      this process's rows of global batch `step`
    batches.num_examples                     examples in the data (None when unknown)
    batches.epochs(num_steps)                expected passes per task (may be {})
    batches.save_position(dir, step)         the data position after `step` batches
    batches.restore_position(dir, step)      continue from a saved position
    batches.prune_positions(dir, keep)       drop the positions of other steps
    batches.start_at(step)                   continue at `step` without a saved position

Two kinds implement it. Step-indexed sources (step_indexed = True: batching.py,
mixtures.MixtureBatches) compute batch `s` as a pure function of (seed, s): their
position is the step, so the position methods do nothing. Streamed sources
(stream_batches.StreamingBatches) read in step order and save their position
beside each checkpoint.
"""

from __future__ import annotations

import abc
import os
from typing import Iterable

import numpy as np


class BatchSource(abc.ABC):
    """A source of training batches (see the module docstring).

    Subclasses define batch() and num_examples; streamed sources also override
    the position methods and set step_indexed = False.
    """

    #: True when batch(s) is a pure function of (seed, s): resuming needs only the step.
    step_indexed: bool = True
    #: Examples in the data; None when unknown without reading it all (streams).
    num_examples: int | None = None
    #: How the texts were formatted (unified_format.PROMPT_FORMATS): the trainer's
    #: export declares it, so the model is embedded the way it was trained.
    prompt_format: str = "gecko"

    @abc.abstractmethod
    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of global batch `step` (host numpy arrays)."""

    def epochs(self, num_steps: int) -> dict[str, float]:
        """Expected passes over each task's examples in `num_steps` steps ({} if unknown)."""
        del num_steps
        return {}

    def save_position(self, directory: str | os.PathLike, step: int) -> None:
        """Writes the data position after `step` batches under `directory`."""

    def restore_position(self, directory: str | os.PathLike, step: int) -> None:
        """Continues from the position saved for `step` under `directory`."""

    def prune_positions(self, directory: str | os.PathLike, keep_steps: Iterable[int]) -> None:
        """Removes the saved positions of steps not in keep_steps (process 0 calls it)."""

    def start_at(self, step: int) -> None:
        """Continues at `step` from where the source is now, without a saved position."""
