"""The FRet stages as an Apache Beam pipeline (DirectRunner here; Dataflow, Flink or
Spark unchanged through `--runner` and their usual pipeline options).

    chunk row ranges -> Reshuffle -> ParDo(ReadChunkFn) -> ParDo(EmbedChunkFn)
        -> embedded chunk ids ------------------------------------------+ (side input)
    shards (fixed composition) -> Reshuffle -> ParDo(FRetShardFn) <----+ -> shard ids

`ReadChunkFn` reads one chunk's rows of the corpus (streaming); `EmbedChunkFn`
embeds them (one encoder per worker) into chunk files; the side input makes the
shard stage wait for them. The driver never holds the corpus texts: it counts the
rows (streaming, each line checked) to fix the shards and chunks. A worker loads the
teacher, the embedder and the assembled corpus vectors once; `process` runs
`pipeline.ShardWorker.process_shard`, the same function the local runner calls,
and writes the shard atomically (a retried bundle rewrites identical files, so
retries are harmless). The driver does the preparation and the finishing
(`pipeline.prepare_run` / `finalize`): identity check, removal of a killed run's
partial files (the driver only: workers never delete), manifest. Chunks and shards
already done are skipped, so a Beam run resumes like a local one, and the records
equal the local runner's.

Distributed runners need the output folder on storage every worker mounts
(NFS, GCS FUSE): shard files are written with ordinary file operations.
"""

from __future__ import annotations

import logging
import pathlib
import time

from gecko_jax.errors import GeckoError
from gecko_jax.fret import corpus_embeddings as embeddings_lib
from gecko_jax.fret import pipeline as pipeline_lib

log = logging.getLogger(__name__)


def _beam():
    try:
        import apache_beam as beam
    except ImportError as err:
        raise GeckoError("the Beam runner needs apache-beam: pip install -e '.[beam]' "
                         "(see setup.py's beam extra)") from err
    return beam


def make_read_fn(corpus_path: str):
    """A DoFn over (chunk, first row, end row, chunks) -> (chunk, chunks, titles, texts)."""
    beam = _beam()

    class ReadChunkFn(beam.DoFn):
        def process(self, element):
            chunk, lo, hi, n = element
            titles, texts = pipeline_lib.read_corpus_rows(corpus_path, lo, hi)
            yield chunk, n, titles, texts

    return ReadChunkFn()


def make_embed_fn(cfg: pipeline_lib.FRetConfig, out_dir: str):
    """A DoFn over (chunk, chunks, titles, texts) that writes the chunk's corpus vectors."""
    beam = _beam()

    class EmbedChunkFn(beam.DoFn):
        def __init__(self):
            super().__init__()
            self.cfg, self.out_dir = cfg, out_dir

        def setup(self):
            # One encoder per worker (the per-process cache shares it with FRetShardFn).
            self.encoder = pipeline_lib.open_embedder(self.cfg.embedder, self.cfg.embed_max_length)

        def process(self, element):
            chunk, n, titles, texts = element
            embeddings_lib.embed_chunk(self.out_dir, self.encoder, titles, texts,
                                       self.cfg.embedder_format, chunk, n)
            yield chunk

    return EmbedChunkFn()


def make_shard_fn(cfg: pipeline_lib.FRetConfig, corpus_path: str, out_dir: str):
    """A DoFn over (shard index, corpus rows) that writes the shard and yields its index.

    Its side input (the embedded chunk ids) makes Beam finish the embedding stage first.
    """
    beam = _beam()

    class FRetShardFn(beam.DoFn):
        def __init__(self):
            super().__init__()
            self.cfg, self.corpus_path, self.out_dir = cfg, corpus_path, out_dir
            self.worker = None

        def setup(self):
            # Read-only: the driver wrote config.json and removed partial files before the
            # pipeline started; a worker never deletes anything (others write in flight).
            self.setup_ = pipeline_lib.prepare_run(self.cfg, self.corpus_path, self.out_dir,
                                         clean_partials=False)

        def process(self, element, embedded_chunks):
            del embedded_chunks  # only orders the stages
            if self.worker is None:
                t0 = time.time()
                llm = pipeline_lib.teacher_for(self.cfg)
                encoder = pipeline_lib.open_embedder(self.cfg.embedder, self.cfg.embed_max_length)
                emb = embeddings_lib.assemble(self.setup_.out_dir, len(self.setup_.corpus))
                self.worker = pipeline_lib.ShardWorker(llm, encoder, self.setup_.corpus, emb,
                                             self.setup_.prompts, self.cfg, self.setup_.identity)
                log.info("FRet worker ready in %.1fs", time.time() - t0)
            shard, rows = element
            store = self.setup_.store
            if not store.is_done(shard):
                records, counts, filtered = self.worker.process_shard(shard, list(rows))
                store.write(shard, records, counts, filtered)
            yield shard

    return FRetShardFn()


def run_beam(cfg: pipeline_lib.FRetConfig, corpus_path, out_dir, pipeline_args: list[str] | None = None
             ) -> dict:
    """Runs the pending corpus-embedding chunks and shards on a Beam runner, then writes
    the manifest.

    pipeline_args: Beam options, e.g. ["--runner=DirectRunner", "--direct_num_workers=2",
    "--direct_running_mode=multi_processing"] (default: the in-process DirectRunner).
    """
    beam = _beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    # The driver alone cleans up after a killed run, before any worker starts. It
    # counts the corpus rows; the stages read the texts.
    setup = pipeline_lib.prepare_run(cfg, corpus_path, out_dir, clean_partials=True,
                                     read_texts=False)
    pending = setup.store.pending()
    t0 = time.time()
    if pending:
        n_chunks = len(embeddings_lib.chunk_ranges(setup.num_rows))
        chunks = [(c, lo, hi, n_chunks)
                  for c, lo, hi in embeddings_lib.pending_chunks(setup.out_dir, setup.num_rows)]
        args = list(pipeline_args or [])
        if not any(a.startswith("--runner") for a in args):
            args.append("--runner=DirectRunner")
        options = PipelineOptions(args)
        corpus_path, run_dir = str(pathlib.Path(corpus_path)), str(setup.out_dir)
        with beam.Pipeline(options=options) as p:
            embedded = (p
                        | "Chunks" >> beam.Create(chunks)
                        | "SpreadChunks" >> beam.Reshuffle()
                        | "ReadCorpus" >> beam.ParDo(make_read_fn(corpus_path))
                        | "Embed" >> beam.ParDo(make_embed_fn(cfg, run_dir)))
            _ = (p
                 | "Shards" >> beam.Create([(i, setup.shards[i]) for i in pending])
                 | "Spread" >> beam.Reshuffle()
                 | "FRet" >> beam.ParDo(make_shard_fn(cfg, corpus_path, run_dir),
                                        beam.pvalue.AsList(embedded)))
    wall = time.time() - t0
    n = sum(len(setup.shards[i]) for i in pending)
    timing = {"wall_s_this_process": round(wall, 2), "passages_this_process": n,
              "passages_per_min": round(60 * n / wall, 2) if wall > 0 else None,
              "runner": "beam"}
    return pipeline_lib.finalize(setup, cfg, timing)
