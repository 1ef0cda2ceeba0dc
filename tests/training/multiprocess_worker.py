"""One process of a `gecko train` job, for tests/training/test_multiprocess.py.

    python -m tests.training.multiprocess_worker GIN_FILE MODEL_DIR OUT_JSON [BINDING ...]

Parses the gin file + bindings exactly as `gecko train` does, trains, and writes
{"losses": [...], "start_step": s, "process_index": p} to OUT_JSON. Exit 2 with
the message on stderr for a GeckoError (as the CLI does).

GECKO_TEST_STALL_AT=S (and GECKO_TEST_STALL_PROCESS=P): process P stops before
building batch S and sleeps, so that the test can kill it while its peer waits
inside step S's collectives. The data are then read through train.data_fn, the
same rows as train.train_files in memory (GECKO_TEST_TRAIN_FILES, comma-separated).
"""

import json
import os
import sys
import time


def _stalling_data_fn(train_files, stall_at, stall_process):
    from gecko_jax.data import file_data
    from gecko_jax.data.batches import BatchSource

    class Stalling(BatchSource):
        def __init__(self, batches):
            self._batches = batches
            self.num_examples = batches.num_examples

        def batch(self, step):
            if step >= stall_at:
                print(f"stalling at step {step}", file=sys.stderr, flush=True)
                time.sleep(3600)
            return self._batches.batch(step)

    def data_fn(**kwargs):
        batches = file_data.files_data(files=list(train_files), streaming=False, **kwargs)
        return Stalling(batches) if kwargs["process_index"] == stall_process else batches
    return data_fn


def main(argv):
    gin_file, model_dir, out_json, *bindings = argv
    from gecko_jax.errors import GeckoError
    from gecko_jax.training import trainer

    trainer.parse_gin([gin_file], bindings)
    kwargs = {}
    if os.environ.get("GECKO_TEST_STALL_AT"):
        kwargs["data_fn"] = _stalling_data_fn(
            os.environ["GECKO_TEST_TRAIN_FILES"].split(","), int(os.environ["GECKO_TEST_STALL_AT"]),
            int(os.environ.get("GECKO_TEST_STALL_PROCESS", "1")))
        kwargs["train_files"] = ()
    try:
        summary = trainer.train(model_dir, progress=False, **kwargs)
    except GeckoError as err:
        print(f"worker: error: {err}", file=sys.stderr, flush=True)
        return 2
    import resource

    import jax

    with open(out_json, "w") as f:
        json.dump({"losses": summary["losses"], "start_step": summary["start_step"],
                   "process_index": jax.process_index(), "export": summary.get("export"),
                   # this process's own peak (kB on Linux)
                   "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
