"""MeshSpec.distributed once the backend is up: a clear error, not jax's RuntimeError.

(The working start-up is tested for real in test_multiprocess.py, 2 processes, and
test_core_without_tf.py, 1 process through trainer.train.)"""

import jax
import pytest

from gecko_jax.errors import GeckoError
from gecko_jax import partitioning
from gecko_jax.partitioning import MeshSpec


def test_distributed_after_backend_start_is_a_clear_error():
    jax.devices()                                   # the backend is up
    with pytest.raises(GeckoError, match="already initialised"):
        partitioning.maybe_initialize_distributed(MeshSpec(
            distributed=True, coordinator_address="127.0.0.1:1", num_processes=1,
            process_id=0))
