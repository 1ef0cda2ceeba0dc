"""Deterministic, step-indexed batches: the data position IS the step number.

Batch `s` is a pure function of (examples, seed, batch size, s): epoch
e = s // steps_per_epoch draws the permutation `default_rng([seed, e])`, and
the batch takes rows [i*B, (i+1)*B) of it (the last partial batch of an epoch
is dropped). Resuming at step s therefore needs nothing but s, and fast-
forwarding costs nothing; a run killed and resumed sees exactly the batches
of an uninterrupted one.

Multi-host: process p of P takes its contiguous 1/P of every global batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gecko_jax.data.batches import BatchSource
from gecko_jax.errors import GeckoError


@dataclasses.dataclass
class StepIndexedBatches(BatchSource):
    """Epoch permutations of one example set (module docstring); a BatchSource."""

    examples: dict[str, np.ndarray]      # every value [N, ...]
    global_batch_size: int
    seed: int = 0
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        sizes = {len(v) for v in self.examples.values()}
        if len(sizes) != 1:
            raise GeckoError(f"examples have different lengths {sizes}")
        self.num_examples = sizes.pop()
        if self.global_batch_size % self.process_count:
            raise GeckoError(f"global batch {self.global_batch_size} is not divisible by "
                             f"{self.process_count} processes")
        if self.num_examples < self.global_batch_size:
            raise GeckoError(f"{self.num_examples} examples are fewer than one batch of "
                             f"{self.global_batch_size}")
        self.steps_per_epoch = self.num_examples // self.global_batch_size
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm_cache = (epoch, rng.permutation(self.num_examples))
        return self._perm_cache[1]

    def indices(self, step: int) -> np.ndarray:
        """Row indices [global_batch_size] of batch `step` (all processes)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        b = self.global_batch_size
        return self._permutation(epoch)[i * b:(i + 1) * b]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of batch `step`."""
        idx = self.indices(step)
        per = self.global_batch_size // self.process_count
        idx = idx[self.process_index * per:(self.process_index + 1) * per]
        return {k: v[idx] for k, v in self.examples.items()}
