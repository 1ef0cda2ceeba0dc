"""hardware.tune_allocator (applied when gecko_jax is imported with
GECKO_MALLOC_TUNING=1): a large block freed and allocated again is reused, on the main
thread and on another thread, instead of being mapped and page-faulted afresh; without
the variable (the default) glibc's allocator is left alone."""

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt")

# 40 MB: over glibc's largest dynamic mmap threshold (32 MB), under a thread arena's
# 64 MB heap. Each line: page faults of one allocation after the first, averaged.
_PROBE = """
import json, resource, threading
import gecko_jax, gecko_jax.hardware as hw
import numpy as np

def faults(out):
    np.ones(40 << 18, np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        np.ones(40 << 18, np.float32)
    out.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)

out = []
faults(out)
t = threading.Thread(target=faults, args=(out,))
t.start()
t.join()
print(json.dumps({"applied": hw.tune_allocator(), "faults": out}))
"""


def _probe(env_value):
    env = dict(os.environ)
    env.pop("GECKO_MALLOC_TUNING", None)
    if env_value is not None:
        env["GECKO_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_large_blocks_are_reused_without_page_faults():
    tuned, default, off = _probe("1"), _probe(None), _probe("0")
    assert tuned["applied"] and not default["applied"] and not off["applied"]
    # A block reused from the heap touches no new page; a fresh mapping faults one per
    # page (or per huge page where the kernel backs it with those).
    assert tuned["faults"] == [0.0, 0.0], tuned
    assert min(default["faults"]) >= 10, default
