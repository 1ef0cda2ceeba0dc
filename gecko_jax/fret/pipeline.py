"""The FRet pipeline over a corpus, in shards: stage 1 + retrieval + stage 2 per shard.

    corpus JSONL {"id", "title", "text"}
      -> seed passages (a seeded random sample of `limit`), cut into shards of
         `shard_size` (fixed composition: the same config gives the same shards)
      -> per shard: stage 1 (generate) -> initial embedder top-N -> stage 2
         (relabel) -> records, written atomically with the shard's counts
      -> manifest (counts summed over shards), TFRecords

`ShardWorker` holds what a worker loads once (teacher, embedder, corpus index)
and runs one shard; the local runner (`run_local`) and the Beam runner
(`fret/beam.py`) both call it, so the two produce the same records. A killed
run restarted with the same config skips the shards whose files exist and ends
with the records an uninterrupted run writes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import logging
import os
import pathlib
import time

from typing import Sequence

import numpy as np

from gecko_jax import gin_files as gin_files_lib
from gecko_jax import textio
from gecko_jax.data import fret_records
from gecko_jax.errors import GeckoError, InputError
from gecko_jax.fret import corpus as corpus_lib
from gecko_jax.fret import filters as filters_lib
from gecko_jax.fret import generate as generate_lib
from gecko_jax.fret import prompts as prompts_lib
from gecko_jax.fret import record_shards
from gecko_jax.fret import relabel as relabel_lib
from gecko_jax.unified_format import check_prompt_format, format_query

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FRetConfig:
    """Everything that decides a run's records (the resume identity), plus runtime knobs.

    teacher: smollm2 | gemma3 | FILE.gguf | HF folder | http(s):// URL (OpenAI-compatible).
    embedder: initial embedder folder (None: the shipped MiniLM); embedder_format
      'raw' (plain texts, MiniLM) or 'gecko' (task/title prompts), None: the folder's.
    limit: seed passages drawn (None: all); shard_size: passages per shard.
    teacher_mesh: the local teacher data-parallel over a device mesh, as mesh axis sizes
      ("data=-1": every device; "data=8"; "data=4,model=2"); None: one device.
      Scores agree with one device to float rounding, so it is not part of the identity.
    teacher_batch_invariant: the local teacher scores each row by itself
      (`JaxEngine(batch_invariant=True)`): scores are then the same bits on any number
      of devices (otherwise within ~2e-5: float32 sums in another order). Runtime only,
      like teacher_mesh.
    teacher_dtype: "float32" or "bfloat16" compute for the local teacher (bfloat16
      changes scores, so it joins the identity).
    prompt_style: 'auto' (chat turns for a teacher with a chat template, or an
      instruction model's name behind a server; completion text otherwise), 'chat' or
      'completion' (fret/prompts.py).
    """
    teacher: str = "smollm2"
    embedder: str | None = None
    embedder_format: str | None = None
    limit: int | None = None
    shard_size: int = 8
    seed: int = 0
    prompts_dir: str | None = None
    prompt_style: str = "auto"
    generate: generate_lib.GenerateConfig = generate_lib.GenerateConfig()
    relabel: relabel_lib.RelabelConfig = relabel_lib.RelabelConfig()
    filters: filters_lib.FilterConfig = filters_lib.FilterConfig()
    teacher_dtype: str = "float32"
    # Runtime only (not part of the identity: they do not change the records).
    max_batch: int = 16
    teacher_mesh: str | None = None
    teacher_batch_invariant: bool = False
    embed_max_length: int = 256
    tfrecord: bool = True
    progress: bool = True

    def identity(self, corpus_path: pathlib.Path, prompts: prompts_lib.PromptSet,
                 style: str = "completion") -> dict:
        """The run identity; `style` is the resolved prompt style (`resolve_prompt_style`)."""
        return {
            "schema_version": fret_records.SCHEMA_VERSION,
            "corpus": {"path": str(corpus_path.resolve()), "sha256": file_sha256(corpus_path)},
            "teacher": self.teacher,
            "embedder": str(self.embedder) if self.embedder else "minilm (shipped)",
            "embedder_format": self.embedder_format,
            "limit": self.limit, "shard_size": self.shard_size, "seed": self.seed,
            "prompts": prompts.provenance(),
            "generate": dataclasses.asdict(self.generate),
            "relabel": self.relabel.identity(),
            "embed_max_length": self.embed_max_length,
            # Chat only: completion-form runs keep the identity they had before styles.
            **({"prompt_style": style} if style != "completion" else {}),
            # Only when on: runs with every filter off keep their old identity (and resume).
            **({"filters": dataclasses.asdict(self.filters)} if self.filters.enabled else {}),
            **({"teacher_dtype": self.teacher_dtype} if self.teacher_dtype != "float32" else {}),
        }

    def __post_init__(self):
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher_dtype {self.teacher_dtype!r}: one of {TEACHER_DTYPES}")
        if self.teacher_mesh is not None:
            parse_mesh(self.teacher_mesh)


TEACHER_DTYPES = ("float32", "bfloat16")


def parse_mesh(text: str) -> dict[str, int]:
    """'data=4,model=2' -> {'data': 4, 'model': 2} (axes data, fsdp, model; -1: the rest)."""
    out = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        try:
            size = int(value)
        except ValueError:
            size = 0
        if name not in ("data", "fsdp", "model") or name in out or not (size >= 1 or size == -1):
            raise ValueError(f"teacher mesh {text!r}: expected axis=size pairs over data, "
                             f"fsdp, model (size >= 1 or -1), e.g. 'data=-1' or 'data=4,model=2'")
        out[name] = size
    if not out:
        raise ValueError(f"teacher mesh {text!r} names no axis (e.g. 'data=-1')")
    return out


@functools.lru_cache(maxsize=None)
def _gin_configurables() -> dict:
    """FRetConfig, GenerateConfig, RelabelConfig and FilterConfig as gin configurables
    (registered once)."""
    import gin

    return {c.__name__: gin.external_configurable(c, c.__name__)
            for c in (FRetConfig, generate_lib.GenerateConfig, relabel_lib.RelabelConfig,
                      filters_lib.FilterConfig)}


def config_from_gin(gin_files: Sequence[str] = (), gin_bindings: Sequence[str] = ()
                    ) -> FRetConfig:
    """A FRetConfig from gin files and bindings of FRetConfig.*, GenerateConfig.*,
    RelabelConfig.*, FilterConfig.* (the nested configs' bindings apply even when
    FRetConfig.generate etc. are not bound)."""
    if not gin_files and not gin_bindings:
        return FRetConfig()
    configurables = _gin_configurables()
    gin_files_lib.parse(gin_files, gin_bindings)
    try:
        fret = configurables["FRetConfig"]()
        generate = configurables["GenerateConfig"]()
        relabel = configurables["RelabelConfig"]()
        filters = configurables["FilterConfig"]()
    except (ValueError, KeyError, TypeError) as err:
        raise GeckoError(f"gin config: {err}") from None
    return dataclasses.replace(fret, generate=generate, relabel=relabel, filters=filters)


def file_sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- corpus ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Corpus:
    ids: list[str]
    titles: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def iter_corpus(path: str | os.PathLike, rows: tuple[int, int] | None = None,
                check_ids: bool = True):
    """Yields (row, id, title, text) of a JSONL corpus, streaming (one line in memory).

    rows: only rows [first, end) (lines before are parsed for the row count only
    when `check_ids` is off; it stops after `end`). check_ids: refuse duplicate ids
    (keeps every id seen in a set).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(path, "corpus file does not exist")
    lo, hi = rows if rows is not None else (0, None)
    seen: set[str] = set()
    row = 0
    for line, obj in textio.read_jsonl(path):
        if hi is not None and row >= hi:
            return
        pid, text, title = obj.get("id"), obj.get("text"), obj.get("title") or ""
        if not isinstance(text, str) or not text.strip():
            raise InputError(path, 'each line needs a non-empty string "text"', line)
        if pid is None or not str(pid).strip():
            raise InputError(path, 'each line needs an "id"', line)
        if not isinstance(title, str):
            raise InputError(path, '"title" must be a string', line)
        pid = str(pid)
        if check_ids:
            if pid in seen:
                raise InputError(path, f"duplicate id {pid!r}", line)
            seen.add(pid)
        if row >= lo:
            yield row, pid, title, text
        row += 1


def read_corpus(path: str | os.PathLike) -> Corpus:
    """A JSONL corpus: one {"id", "title" (optional), "text"} per line, ids unique."""
    ids, titles, texts = [], [], []
    for _, pid, title, text in iter_corpus(path):
        ids.append(pid)
        titles.append(title)
        texts.append(text)
    if not ids:
        raise InputError(path, "the corpus is empty")
    return Corpus(ids, titles, texts)


def count_corpus(path: str | os.PathLike) -> int:
    """Rows of a JSONL corpus, each line checked as `read_corpus` does, streaming (no
    texts kept; duplicate ids are left to the readers of the texts)."""
    n = sum(1 for _ in iter_corpus(path, check_ids=False))
    if not n:
        raise InputError(path, "the corpus is empty")
    return n


def read_corpus_rows(path: str | os.PathLike, first: int, end: int
                     ) -> tuple[list[str], list[str]]:
    """(titles, texts) of rows [first, end), streaming (the Beam embedding stage)."""
    titles, texts = [], []
    for _, _, title, text in iter_corpus(path, (first, end), check_ids=False):
        titles.append(title)
        texts.append(text)
    if len(texts) != end - first:
        raise InputError(path, f"rows {first}..{end} asked, the corpus has fewer")
    return titles, texts


def seed_shards(num_passages: int, limit: int | None, shard_size: int, seed: int
                ) -> list[list[int]]:
    """Corpus rows of the seed passages, cut into shards (fixed by the arguments)."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    order = np.random.default_rng(seed).permutation(num_passages)
    if limit is not None:
        order = order[:limit]
    rows = [int(r) for r in order]
    return [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]


# -- models loaded once per process ------------------------------------------------------

_CACHE: dict = {}


def release_cached() -> None:
    """Drops the teachers and embedders this process cached (open_teacher,
    open_embedder); the next call loads them again."""
    _CACHE.clear()


def open_teacher(spec: str, max_batch: int = 16, mesh: str | None = None,
                 dtype: str = "float32", batch_invariant: bool = False):
    """The teacher LLM (cached per process: a Beam worker loads it once). mesh, dtype,
    batch_invariant: FRetConfig.teacher_mesh / teacher_dtype / teacher_batch_invariant
    (local teachers only)."""
    key = ("teacher", spec, max_batch, mesh, dtype, batch_invariant)
    if key not in _CACHE:
        if spec.startswith(("http://", "https://")):
            if mesh is not None or dtype != "float32" or batch_invariant:
                raise InputError(f"teacher {spec}: teacher_mesh / teacher_dtype / "
                                 "teacher_batch_invariant apply to a local teacher only "
                                 "(the server decides its own)")
            from gecko_jax.llm.openai_compat import OpenAICompatLLM

            _CACHE[key] = OpenAICompatLLM(spec)
        else:
            import jax.numpy as jnp

            from gecko_jax.llm.jax_engine import JaxEngine

            device_mesh = None
            if mesh is not None:
                from gecko_jax.partitioning import MeshSpec, make_mesh

                device_mesh = make_mesh(MeshSpec(**parse_mesh(mesh)))
            _CACHE[key] = JaxEngine.load(spec, max_batch=max_batch, mesh=device_mesh,
                                         dtype=jnp.dtype(dtype), batch_invariant=batch_invariant)
    return _CACHE[key]


def teacher_for(cfg: FRetConfig):
    """The run's teacher (FRetConfig's teacher, max_batch, teacher_mesh, teacher_dtype,
    teacher_batch_invariant)."""
    return open_teacher(cfg.teacher, cfg.max_batch, cfg.teacher_mesh, cfg.teacher_dtype,
                        cfg.teacher_batch_invariant)


def resolve_prompt_style(setting: str, teacher: str) -> str:
    """'chat' or 'completion' for a FRetConfig.prompt_style and teacher spec.

    'auto' asks the model: a local teacher's tokenizer (GGUF metadata / HF files) for a
    chat template; a server for its model name (an instruction model's name -> chat).
    """
    if setting not in prompts_lib.STYLES:
        raise GeckoError(f"prompt style {setting!r}: use one of {', '.join(prompts_lib.STYLES)}")
    if setting != "auto":
        return setting
    if teacher.startswith(("http://", "https://")):
        return prompts_lib.style_from_model(None, open_teacher(teacher).model)
    from gecko_jax.llm.loading import has_chat_template

    return prompts_lib.style_from_model(has_chat_template(teacher))


def make_renderer(style: str, llm) -> prompts_lib.Renderer:
    """The Renderer of a resolved style for this teacher (chat text from its template)."""
    if style == "completion":
        return prompts_lib.COMPLETION
    if llm.has_chat_template is False:
        raise GeckoError(f"teacher {llm.name} has no chat template: use "
                         f"FRetConfig.prompt_style = 'completion' (or 'auto')")
    return prompts_lib.Renderer("chat", llm.render_chat if llm.has_chat_template else None)


def open_embedder(folder: str | None, max_length: int = 256):
    key = ("embedder", folder, max_length)
    if key not in _CACHE:
        from gecko_jax import assets
        from gecko_jax.encode import Encoder, enable_compile_cache

        enable_compile_cache()
        _CACHE[key] = Encoder.from_pretrained(folder or assets.minilm_dir(),
                                              max_length=max_length, show_progress=False)
    return _CACHE[key]


def embed_documents(encoder, corpus: Corpus, fmt: str | None) -> np.ndarray:
    return encoder.encode_documents(corpus.texts, titles=corpus.titles, format=fmt)


def embed_queries(encoder, gens: list[generate_lib.Generated], fmt: str | None) -> np.ndarray:
    fmt = check_prompt_format(fmt or encoder.meta.prompt_format)
    texts = [g.query if fmt == "raw" else format_query(g.query, g.task) for g in gens]
    return encoder.encode(texts)


def corpus_embeddings(out_dir: pathlib.Path, encoder, corpus: Corpus, fmt: str | None
                      ) -> np.ndarray:
    """The corpus vectors [N, d], computed once per run dir in fixed chunks (atomic .npy
    files, reused on resume; see fret/corpus_embeddings.py)."""
    from gecko_jax.fret import corpus_embeddings as embeddings_lib

    return embeddings_lib.corpus_embeddings(out_dir, encoder, corpus, fmt)


# -- one shard ---------------------------------------------------------------------------

def count_negative_rules(rel: relabel_lib.Relabelled, strategy: str,
                         counts: collections.Counter) -> None:
    """What the hard-negative rules (relabel.NEGATIVE_RULES) removed for one record:
    `negative_excluded:<rule>` candidates taken out of the negative pool,
    `negative_moved:<rule>` records whose strategy-only pick that rule replaced, and
    `negative_none` records left without a negative (no eligible candidate)."""
    for why in rel.exclusions:
        if why in relabel_lib.NEGATIVE_RULES:
            counts[f"negative_excluded:{why}"] += 1
    if rel.moved_by is not None:
        counts[f"negative_moved:{rel.moved_by}"] += 1
    if rel.negative is None and relabel_lib.parse_negative(strategy)[0] != "none":
        counts["negative_none"] += 1


class ShardWorker:
    """Stage 1 + retrieval + stage 2 for one shard of seed passages.

    Args:
      llm: the teacher (gecko_jax.llm.base.LLM).
      encoder: the initial embedder (gecko_jax.encode.Encoder).
      corpus, corpus_emb: the corpus and its [N, d] vectors.
      prompts, cfg, identity: the run's prompts, config, and identity (provenance).
    """

    def __init__(self, llm, encoder, corpus: Corpus, corpus_emb: np.ndarray,
                 prompts: prompts_lib.PromptSet, cfg: FRetConfig, identity: dict):
        from gecko_jax.retrieval import ExactIndex

        self.llm, self.encoder, self.corpus = llm, encoder, corpus
        self.corpus_emb = corpus_emb
        self.index = ExactIndex(corpus_emb)
        self.row_of = {pid: i for i, pid in enumerate(corpus.ids)}
        self.prompts, self.cfg = prompts, cfg
        self.renderer = make_renderer(identity.get("prompt_style", "completion"), llm)
        self.provenance = {"prompts": identity["prompts"], "teacher": identity["teacher"],
                           "embedder": identity["embedder"], "schema_version": fret_records.SCHEMA_VERSION,
                           "config_sha": record_shards.config_sha(identity)}

    def stage1(self, shard: int, rows: list[int], counts: collections.Counter):
        passages = [(self.corpus.ids[r], self.corpus.texts[r]) for r in rows]
        counts["passages"] += len(rows)
        return generate_lib.generate_queries(self.llm, passages, self.prompts.qg, self.cfg.generate,
                                  seed=self.cfg.seed, shard=shard, counts=counts,
                                  renderer=self.renderer)

    def stage2(self, gens: list[generate_lib.Generated], counts: collections.Counter,
               filtered: list | None = None) -> list[dict]:
        """Retrieval, re-labelling and the quality filters of one shard's queries.

        filtered: if a list, each dropped query is appended as {"filter", "passage_id",
          "task", "query", "value"} (value: the similar kept query, the seed's retrieval
          rank, or the QL per word).
        """
        filt = self.cfg.filters
        drop = filtered.append if filtered is not None else (lambda _: None)

        def note(name, g, value):
            counts[f"dropped:{name}"] += 1
            drop({"filter": name, "passage_id": g.passage_id, "task": g.task,
                  "query": g.query, "value": value})

        if filt.dedup_jaccard is not None and gens:
            keep = filters_lib.keep_distinct([g.query for g in gens], filt.dedup_jaccard)
            kept = [g for g, k in zip(gens, keep) if k]
            for g, k in zip(gens, keep):
                if not k:
                    like = max(kept, key=lambda o: filters_lib.jaccard(o.query, g.query))
                    note("duplicate", g, like.query)
            gens = kept
        if not gens:
            return []
        n = self.cfg.relabel.num_neighbors
        row_of = self.row_of
        rt_k = filters_lib.round_trip_top_k(filt, len(self.corpus))
        q_emb = embed_queries(self.encoder, gens, self.cfg.embedder_format)
        top = self.index.search(q_emb, min(len(self.corpus), max(n, rt_k or 0)))
        cand_rows, cand_scores = [], []
        for k, g in enumerate(gens):
            rows = relabel_lib.candidate_rows(top.indices[k], row_of[g.passage_id], n)
            cand_rows.append(rows)
            cand_scores.append((self.corpus_emb[rows] @ q_emb[k]).astype(np.float64).tolist())
        scored = relabel_lib.score_candidates(self.llm, [g.query for g in gens],
                                     [[self.corpus.texts[r] for r in rows] for rows in cand_rows],
                                     self.prompts, self.cfg.relabel, counts, self.renderer)
        out = []
        for k, (g, rows, rs, sc) in enumerate(zip(gens, cand_rows, cand_scores, scored)):
            if sc is None:
                counts["dropped:invalid_scores"] += 1
                continue
            seed_row = row_of[g.passage_id]
            rel = relabel_lib.fuse_and_select(
                rows, rs, sc, self.cfg.relabel, relabel_lib.query_rng(self.cfg.seed, g.passage_id),
                documents=[corpus_lib.document_id(self.corpus.ids[r]) for r in rows],
                seed=rows.index(seed_row) if seed_row in rows else None)
            if rt_k is not None and not filters_lib.round_trip_ok(
                    top.indices[k], row_of[g.passage_id], rows[rel.positive], rt_k):
                hits = [j + 1 for j, r in enumerate(top.indices[k]) if r == row_of[g.passage_id]]
                note("round_trip", g, {"k": rt_k, "seed_rank": hits[0] if hits else None,
                                       "positive_is_seed": rel.positive == rows.index(
                                           row_of[g.passage_id])})
                continue
            if filt.ql_floor is not None and not filters_lib.ql_ok(sc.ql[rel.positive], g.query,
                                                         filt.ql_floor):
                note("ql_floor", g, round(filters_lib.ql_per_word(sc.ql[rel.positive], g.query), 3))
                continue
            count_negative_rules(rel, self.cfg.relabel.negative, counts)
            rec = record_shards.build_record(g, rel, self.corpus, self.provenance)
            counts["relabelled"] += int(not rec["positive_is_seed"])
            out.append(rec)
        counts["records"] += len(out)
        return out

    def process_shard(self, shard: int, rows: list[int]
                      ) -> tuple[list[dict], collections.Counter, list[dict]]:
        """(records, counts, filtered queries) of one shard."""
        counts: collections.Counter = collections.Counter()
        filtered: list[dict] = []
        records = self.stage2(self.stage1(shard, rows, counts), counts, filtered)
        return records, counts, filtered


# -- runners -----------------------------------------------------------------------------

@dataclasses.dataclass
class RunSetup:
    out_dir: pathlib.Path
    corpus: Corpus | None  # None when prepared without texts (the Beam driver)
    num_rows: int
    prompts: prompts_lib.PromptSet
    identity: dict
    shards: list[list[int]]
    store: record_shards.ShardStore
    resumed: bool


def prepare_run(cfg: FRetConfig, corpus_path, out_dir, clean_partials: bool = True,
                read_texts: bool = True) -> RunSetup:
    """Reads inputs, checks/writes the run identity, and lists the shards.

    read_texts: False only counts the corpus rows (streaming; `corpus` is None): the
    Beam driver, whose stages read the texts they need.

    clean_partials: delete temporary files a killed run left behind. Only the process
    that owns the run (the local runner, the Beam driver before its pipeline starts)
    may: a Beam worker doing it would delete other workers' files in flight.
    """
    corpus_path, out_dir = pathlib.Path(corpus_path), pathlib.Path(out_dir)
    prompts = prompts_lib.load_prompts(cfg.prompts_dir)
    corpus = read_corpus(corpus_path) if read_texts else None
    num_rows = len(corpus) if corpus is not None else count_corpus(corpus_path)
    if cfg.embedder_format not in (None, "raw", "gecko"):
        raise GeckoError(f"embedder format {cfg.embedder_format!r}: use raw or gecko")
    identity = cfg.identity(corpus_path, prompts,
                            resolve_prompt_style(cfg.prompt_style, cfg.teacher))
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed = record_shards.check_or_write_config(out_dir, identity)
    if clean_partials and textio.remove_partials(out_dir):
        log.info("removed partial files of an interrupted run in %s", out_dir)
    shards = seed_shards(num_rows, cfg.limit, cfg.shard_size, cfg.seed)
    store = record_shards.ShardStore(out_dir, len(shards))
    if resumed:
        log.info("resuming %s: %d of %d shards done", out_dir,
                 len(shards) - len(store.pending()), len(shards))
    return RunSetup(out_dir, corpus, num_rows, prompts, identity, shards, store, resumed)


def make_worker(setup: RunSetup, cfg: FRetConfig, llm=None, encoder=None) -> ShardWorker:
    llm = llm if llm is not None else teacher_for(cfg)
    encoder = encoder if encoder is not None else open_embedder(cfg.embedder,
                                                                cfg.embed_max_length)
    emb = corpus_embeddings(setup.out_dir, encoder, setup.corpus, cfg.embedder_format)
    return ShardWorker(llm, encoder, setup.corpus, emb, setup.prompts, cfg, setup.identity)


def finalize(setup: RunSetup, cfg: FRetConfig, timing: dict | None = None) -> dict:
    """Manifest (+ TFRecords) once every shard is done."""
    store = setup.store
    missing = store.pending()
    if missing:
        raise GeckoError(f"{len(missing)} shards are not done (e.g. {missing[:5]}); "
                         f"rerun with the same options to finish")
    files = {"jsonl": [str(store.records_path(i).relative_to(setup.out_dir))
                       for i in range(store.num_shards)]}
    if cfg.tfrecord:
        files["tfrecord"] = record_shards.write_tfrecords(store)
    return record_shards.write_manifest(setup.out_dir, setup.identity, store.total_counts(), files,
                            extra={"timing": timing or {}})


def run_local(cfg: FRetConfig, corpus_path, out_dir, llm=None, encoder=None) -> dict:
    """The single-process resumable runner; returns the manifest."""
    setup = prepare_run(cfg, corpus_path, out_dir)
    pending = setup.store.pending()
    t0 = time.time()
    done_passages = 0
    if pending:
        worker = make_worker(setup, cfg, llm, encoder)
        from tqdm.auto import tqdm

        total = sum(len(setup.shards[i]) for i in pending)
        bar1 = tqdm(total=total, desc="stage 1 generate", unit="passage", disable=not cfg.progress)
        bar2 = tqdm(total=total, desc="stage 2 relabel", unit="passage", disable=not cfg.progress)
        for i in pending:
            counts: collections.Counter = collections.Counter()
            gens = worker.stage1(i, setup.shards[i], counts)
            bar1.update(len(setup.shards[i]))
            filtered: list[dict] = []
            records = worker.stage2(gens, counts, filtered)
            bar2.update(len(setup.shards[i]))
            setup.store.write(i, records, counts, filtered)
            done_passages += len(setup.shards[i])
        bar1.close()
        bar2.close()
    wall = time.time() - t0
    timing = {"wall_s_this_process": round(wall, 2), "passages_this_process": done_passages,
              "passages_per_min": round(60 * done_passages / wall, 2) if wall > 0 else None}
    return finalize(setup, cfg, timing)
