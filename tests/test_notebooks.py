"""notebooks/gecko_quickstart.ipynb runs top to bottom in a real kernel (nbclient)."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow   # the whole quickstart in a fresh kernel: over a minute on 2 cores
def test_quickstart_notebook_runs():
    nb = nbformat.read(ROOT / "notebooks" / "gecko_quickstart.ipynb", as_version=4)
    # The kernel sees the machine as a reader's would: one CPU device, not the suite's
    # 8 emulated ones (a data=8 mesh would train 8 replicas: ~7 GB, twice the time).
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute(env=env)
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "nDCG@10 @384" in outputs and "fine-tuned (gecko prompts)" in outputs
    assert "max |ours - sentence-transformers|" in outputs
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
