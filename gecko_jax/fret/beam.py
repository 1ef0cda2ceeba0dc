"""The FRet stages as an Apache Beam pipeline (DirectRunner here; Dataflow, Flink or
Spark unchanged through `--runner` and their usual pipeline options).

    shards (fixed composition) -> Reshuffle -> ParDo(FRetShardFn) -> written shard ids

`FRetShardFn.setup` loads the teacher, the initial embedder, the corpus and its
vectors once per worker; `process` runs `pipeline.ShardWorker.process_shard`,
the same function the local runner calls, and writes the shard atomically (a
retried bundle rewrites identical files, so retries are harmless). The driver
does the preparation and the finishing (`pipeline.prepare_run` / `finalize`):
identity check, corpus vectors, manifest. Shards already done are skipped, so a
Beam run resumes like a local one, and the records equal the local runner's.

Distributed runners need the output folder on storage every worker mounts
(NFS, GCS FUSE): shard files are written with ordinary file operations.
"""

from __future__ import annotations

import logging
import pathlib
import time

from gecko_jax.errors import GeckoError
from gecko_jax.fret import pipeline as pipeline_lib

log = logging.getLogger(__name__)


def _beam():
    try:
        import apache_beam as beam
    except ImportError as err:
        raise GeckoError("the Beam runner needs apache-beam: pip install -e '.[beam]' "
                         "(see setup.py's beam extra)") from err
    return beam


def make_shard_fn(cfg: pipeline_lib.FRetConfig, corpus_path: str, out_dir: str):
    """A DoFn over (shard index, corpus rows) that writes the shard and yields its index."""
    beam = _beam()

    class FRetShardFn(beam.DoFn):
        def __init__(self):
            super().__init__()
            self.cfg, self.corpus_path, self.out_dir = cfg, corpus_path, out_dir
            self.worker = None

        def setup(self):
            # Once per worker: prepare_run only re-reads (the driver wrote config.json).
            t0 = time.time()
            self.setup_ = pipeline_lib.prepare_run(self.cfg, self.corpus_path, self.out_dir)
            self.worker = pipeline_lib.make_worker(self.setup_, self.cfg)
            log.info("FRet worker ready in %.1fs", time.time() - t0)

        def process(self, element):
            shard, rows = element
            store = self.setup_.store
            if not store.is_done(shard):
                records, counts = self.worker.process_shard(shard, list(rows))
                store.write(shard, records, counts)
            yield shard

    return FRetShardFn()


def run_beam(cfg: pipeline_lib.FRetConfig, corpus_path, out_dir, pipeline_args: list[str] | None = None
             ) -> dict:
    """Runs the pending shards on a Beam runner, then writes the manifest."""
    beam = _beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    setup = pipeline_lib.prepare_run(cfg, corpus_path, out_dir)
    pending = setup.store.pending()
    t0 = time.time()
    if pending:
        # Corpus vectors once, in the driver; workers load the .npy in setup().
        pipeline_lib.corpus_embeddings(setup.out_dir, pipeline_lib.open_embedder(cfg.embedder, cfg.embed_max_length),
                             setup.corpus, cfg.embedder_format)
        args = list(pipeline_args or [])
        if not any(a.startswith("--runner") for a in args):
            args.append("--runner=DirectRunner")
        options = PipelineOptions(args)
        with beam.Pipeline(options=options) as p:
            _ = (p
                 | "Shards" >> beam.Create([(i, setup.shards[i]) for i in pending])
                 | "Spread" >> beam.Reshuffle()
                 | "FRet" >> beam.ParDo(make_shard_fn(cfg, str(pathlib.Path(corpus_path)),
                                                      str(setup.out_dir))))
    wall = time.time() - t0
    n = sum(len(setup.shards[i]) for i in pending)
    timing = {"wall_s_this_process": round(wall, 2), "passages_this_process": n,
              "passages_per_min": round(60 * n / wall, 2) if wall > 0 else None,
              "runner": "beam"}
    return pipeline_lib.finalize(setup, cfg, timing)
