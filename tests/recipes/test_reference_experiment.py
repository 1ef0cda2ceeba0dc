"""gin_configs/experiments/reference.gin is the training half of `gecko distill --preset
reference` (seed 0): the same gin files and bindings per stage as the distill run
builds, and its fine-tuning reads the released reference FRet set."""

import gzip
import json
import pathlib

import gin
import pytest

from gecko_jax import gin_files
from gecko_jax.data import mixtures
from gecko_jax.recipes import distill, distill_stages, experiment  # noqa: F401  (configurables)
from gecko_jax.recipes.distill_fret import released_fret_digest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RELEASE = ROOT / "data" / "fret_reference"


@pytest.fixture
def stages():
    gin.clear_config()
    gin_files.parse(["gin_configs/experiments/reference.gin"], [])
    yield {s["name"]: s for s in gin.query_parameter("run_stages.stages")}
    gin.clear_config()


def _reference_configs():
    cfg = distill.DistillConfig(**distill.preset_defaults("reference"),
                                fret_records=str(RELEASE))
    return distill_stages.stage_configs(cfg)


def test_stages_train_as_the_reference_distill_run(stages):
    own = _reference_configs()
    assert list(stages) == ["prefinetune", "finetune"]
    assert stages["finetune"]["init_from"] == "prefinetune"

    files, bindings = distill.prefinetune_gin(own["prefinetune"])
    assert stages["prefinetune"]["gin_files"] == files
    assert stages["prefinetune"]["gin_bindings"] == bindings

    fret_files = ["data/fret_reference/records.jsonl.gz"]
    count = json.loads((RELEASE / "manifest.json").read_text())["release"]["records"]
    files, bindings = distill.finetune_gin(own["finetune"], fret_files, count)
    assert stages["finetune"]["gin_files"] == files
    assert stages["finetune"]["gin_bindings"] == bindings
    # A different seed or step count would not match: the comparison can fail.
    other = distill.prefinetune_gin({**own["prefinetune"], "seed": 1})[1]
    assert stages["prefinetune"]["gin_bindings"] != other


def test_fine_tuning_reads_the_released_records(stages):
    binding = next(b for b in stages["finetune"]["gin_bindings"] if b.startswith("FRET_FILES"))
    paths = [ROOT / p for p in eval(binding.split("=", 1)[1])]  # a Python list literal
    # The file the experiment names is the released set the distill run verifies
    # (its digest is of the decompressed JSONL text).
    assert paths == [RELEASE / "records.jsonl.gz"]
    assert released_fret_digest(str(RELEASE)) == _reference_configs()["fret"]["records_sha256"]
    lines = gzip.decompress(paths[0].read_bytes()).decode().splitlines()
    examples = mixtures.jsonl_examples([str(paths[0])])
    assert len(examples) == len(lines) == 920
    first = json.loads(lines[0])
    assert (examples[0].id, examples[0].query) == (first["id"], first["query"])
