"""`gecko train` on streamed shards: a bad line met mid-run fails naming file and line,
keeps the checkpoints written before it, and a fixed file resumes from the last one."""

import re

import orbax.checkpoint as ocp
import pytest

# Slow: the bad line must lie beyond what the pipeline reads ahead at start-up (the
# 1,024-row shuffle buffer and the parse batches in flight), so this trains ~200 tiny steps.
pytestmark = pytest.mark.slow

from gecko_jax.data import stream_batches, training_records
from gecko_jax.errors import GeckoError
from gecko_jax import partitioning
from gecko_jax.training import trainer
from tests.training.conftest import LENGTHS, tiny_model_fn

LINES_PER_SHARD = 600
BAD_LINE = 590          # 1-based, in shard 3 of 8: ~4,700 lines into the interleaved read


def test_bad_line_met_mid_run_fails_with_file_and_line_and_keeps_checkpoints(
        tmp_path, wiki_records):
    files = [tmp_path / f"records-{i:05d}-of-00008.jsonl" for i in range(8)]
    for i, f in enumerate(files):
        recs = [wiki_records[(i + 8 * j) % len(wiki_records)] for j in range(LINES_PER_SHARD)]
        training_records.write_records(f, recs)
    lines = files[3].read_text().splitlines()
    good = lines[BAD_LINE - 1]
    lines[BAD_LINE - 1] = "{not json"
    files[3].write_text("\n".join(lines) + "\n")

    kwargs = dict(model_fn=tiny_model_fn(), train_files=[str(f) for f in files],
                  feature_lengths=LENGTHS, batch_size=16, checkpoint_every=10, export=False,
                  mesh_spec=partitioning.MeshSpec(data=1), progress=False)
    run = tmp_path / "run"
    with pytest.raises(GeckoError, match=rf"records-00003-of-00008\.jsonl:{BAD_LINE}: not "
                                         r"valid JSON \(.*\) \(read for step \d+\)") as err:
        trainer.train(run, num_steps=2000, **kwargs)
    failed_at = int(re.search(r"read for step (\d+)", str(err.value)).group(1))
    # Met mid-run (not at start-up), and before the stream ran past the bad line: 8
    # shards x 589 good lines come first, i.e. at most ~295 batches of 16.
    assert 10 < failed_at <= (8 * (BAD_LINE - 1)) // 16 + 1
    steps = ocp.CheckpointManager((run / "checkpoints").absolute()).all_steps()
    assert steps and 10 <= steps[-1] < failed_at
    state = ocp.StandardCheckpointer().restore(
        (run / "checkpoints" / str(steps[-1]) / "state").absolute())
    assert int(state["step"]) == steps[-1]
    assert (run / "data_position" / f"step_{steps[-1]:010d}").is_dir()

    # The user fixes the line and reruns. The saved position holds shard 3's offsets and
    # rows read ahead (the bad line among them), so an exact resume is refused, naming
    # the file; resuming the parameters with a fresh stream trains past the failed step.
    lines[BAD_LINE - 1] = good
    files[3].write_text("\n".join(lines) + "\n")
    target = steps[-1] + 20
    with pytest.raises(stream_batches.DataChanged,
                       match=rf"records-00003-of-00008\.jsonl: size \d+ -> \d+ bytes changed "
                             rf"since the data position of step {steps[-1]} was saved"):
        trainer.train(run, num_steps=target, **kwargs)
    trainer.train(run, num_steps=target, restore_data_position=False, **kwargs)
    assert ocp.CheckpointManager((run / "checkpoints").absolute()).all_steps()[-1] == target
