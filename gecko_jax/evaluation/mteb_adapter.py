"""The MTEB harness over gecko_jax encoders.

- `GeckoMTEBModel` wraps a gecko_jax Encoder in mteb 2.x's encoder protocol
  (`encode(DataLoader[BatchedInput], task_metadata=, hf_split=, hf_subset=,
  prompt_type=)`). Prompts are Gecko's: the query side (and every input of
  symmetric tasks) is `task: {task string} | query: {text}`, the document
  side `title: {title} | text: {body}`. The task string comes from the local
  task's definition, else from the mteb task type (TASK_TYPE_STRINGS).
  A Matryoshka `dim` truncates and renormalises every embedding.
- `mteb_task(local_task)` registers one of our local tasks as an mteb task
  (AbsTaskRetrieval / AbsTaskClassification / AbsTaskClusteringLegacy) whose
  data come from our loaders, so `mteb.evaluate` runs it offline.
- Standard MTEB tasks by name (`mteb:STS12`) go through the same model wrapper
  with mteb's own loaders (they need the network to fetch their data).

mteb's settings for our tasks are chosen to match local_tasks exactly: the
classifier is fit once on the whole train split (n_experiments=1, no
undersampling), clustering is one set with MTEB's mini-batch k-means, and
retrieval is scored by pytrec_eval at the same cutoffs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from gecko_jax.encode import truncate_dim
from gecko_jax.errors import GeckoError
from gecko_jax.unified_format import DEFAULT_TASK, MTEB_TASK_TYPE_KINDS, TASK_DESCRIPTIONS
from gecko_jax.evaluation.local_tasks import (
    RETRIEVAL_K,
    SEED,
    CachedEncoder,
    LocalTask,
)

log = logging.getLogger(__name__)

# Gecko task string of each standard MTEB task type (unified_format.MTEB_TASK_TYPE_KINDS).
TASK_TYPE_STRINGS = {t: TASK_DESCRIPTIONS[k] for t, k in MTEB_TASK_TYPE_KINDS.items()}

# mteb task name -> Gecko task string, filled by `mteb_task` for our local tasks.
_LOCAL_TASK_STRINGS: dict[str, str] = {}


def _import_mteb():
    try:
        import mteb
    except ImportError as err:  # the eval extra is optional
        raise GeckoError(f"the mteb route needs the eval extra: pip install -e '.[eval]' "
                         f"({err})") from None
    return mteb


def _mteb_name(task: LocalTask) -> str:
    return "Gecko" + "".join(part.capitalize() for part in task.name.replace(":", "_")
                             .replace("/", "_").split("_") if part)


# ----------------------------------------------------------------------------
# The model wrapper.

def _model_class():
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.types import PromptType

    class GeckoMTEBModel(AbsEncoder):
        """A gecko_jax encoder in mteb's encoder protocol, at one Matryoshka dim.

        Args:
          encoder: a CachedEncoder (or a gecko_jax Encoder, wrapped here).
          name: "org/name" shown in mteb results.
          dim: Matryoshka dim (None: the full embedding).
          format: "gecko" or "raw" (None: the model folder's format).
        """

        def __init__(self, encoder, name: str = "gecko_jax/model", dim: int | None = None,
                     format: str | None = None):
            self.model = encoder if isinstance(encoder, CachedEncoder) else CachedEncoder(
                encoder, format=format)
            self.dim = dim or self.model.embedding_dim
            self.mteb_model_meta = ModelMeta(
                loader=None, name=name if "/" in name else f"gecko_jax/{name}",
                revision=f"dim{self.dim}-{self.model.format}", release_date=None,
                languages=["eng-Latn"], n_parameters=None, memory_usage_mb=None,
                max_tokens=getattr(self.model.encoder, "max_length", None), embed_dim=self.dim,
                license=None, open_weights=True, public_training_code=None,
                public_training_data=None, framework=["JAX"],
                similarity_fn_name=ScoringFunction.COSINE,
                use_instructions=self.model.format == "gecko", training_datasets=None)

        def gecko_task_string(self, task_metadata) -> str:
            if task_metadata.name in _LOCAL_TASK_STRINGS:
                return _LOCAL_TASK_STRINGS[task_metadata.name]
            return TASK_TYPE_STRINGS.get(task_metadata.type, DEFAULT_TASK)

        def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
                   prompt_type=None, **kwargs: Any) -> np.ndarray:
            texts, titles = [], []
            is_document = prompt_type == PromptType.document
            for batch in inputs:
                # mteb joins a document's title into "text"; Gecko wants them apart.
                body = batch.get("body", batch["text"]) if is_document else batch["text"]
                texts.extend(body)
                titles.extend(batch.get("title", [None] * len(body)) if is_document else [])
            if is_document:
                x = self.model.encode_documents(texts, titles=titles)
            else:
                x = self.model.encode_queries(texts, task=self.gecko_task_string(task_metadata))
            return truncate_dim(x, self.dim)

    return GeckoMTEBModel


def mteb_model(encoder, name: str = "gecko_jax/model", dim: int | None = None,
               format: str | None = None):
    """A gecko_jax Encoder (or CachedEncoder) as an mteb model at one Matryoshka dim."""
    _import_mteb()
    return _model_class()(encoder, name=name, dim=dim, format=format)


# ----------------------------------------------------------------------------
# Local tasks as mteb tasks.

def _metadata(task: LocalTask, mteb_type: str, main_score: str):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name=_mteb_name(task), description=task.description,
        reference=None, dataset={"path": f"gecko_jax/{task.name}", "revision": "local"},
        type=mteb_type, category="t2t", modalities=["text"], eval_splits=["test"],
        eval_langs=["eng-Latn"], main_score=main_score, date=None, domains=["News"],
        task_subtypes=None, license="not specified", annotations_creators="derived",
        dialect=[], sample_creation="found", bibtex_citation="")


def mteb_task(task: LocalTask, limit: int | None = None):
    """Our local task as an mteb AbsTask instance (data from our loader, offline)."""
    _import_mteb()
    from datasets import Dataset

    _LOCAL_TASK_STRINGS[_mteb_name(task)] = task.gecko_task

    if task.type == "retrieval":
        from mteb.abstasks.retrieval import AbsTaskRetrieval

        class _Retrieval(AbsTaskRetrieval):
            metadata = _metadata(task, "Retrieval", task.main_score)
            k_values = RETRIEVAL_K

            def load_data(self, num_proc=None, **kwargs):
                if self.data_loaded:
                    return
                data = task.load(limit)
                corpus = Dataset.from_dict({
                    "id": list(data.corpus),
                    "title": [t for t, _ in data.corpus.values()],
                    "text": [x for _, x in data.corpus.values()]})
                queries = Dataset.from_dict({"id": list(data.queries),
                                             "text": list(data.queries.values())})
                self.dataset = {"default": {"test": {
                    "corpus": corpus, "queries": queries,
                    "relevant_docs": data.qrels, "top_ranked": None}}}
                self.data_loaded = True

        return _Retrieval()

    if task.type == "classification":
        from mteb.abstasks.classification import AbsTaskClassification

        class _Classification(AbsTaskClassification):
            metadata = _metadata(task, "Classification", task.main_score)
            n_experiments = 1
            samples_per_label = 10**9  # the whole train split, as local_tasks does

            def load_data(self, num_proc=None, **kwargs):
                if self.data_loaded:
                    return
                data = task.load(limit)
                self.dataset = {"default": {
                    "train": Dataset.from_dict({"text": data.train_texts,
                                                "label": data.train_labels}),
                    "test": Dataset.from_dict({"text": data.test_texts,
                                               "label": data.test_labels})}}
                self.data_loaded = True

        return _Classification(seed=SEED)

    if task.type == "clustering":
        from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy

        class _Clustering(AbsTaskClusteringLegacy):
            metadata = _metadata(task, "Clustering", task.main_score)

            def load_data(self, num_proc=None, **kwargs):
                if self.data_loaded:
                    return
                data = task.load(limit)
                # One cluster set holding every article.
                self.dataset = {"default": {"test": Dataset.from_dict(
                    {"sentences": [data.texts], "labels": [data.labels]})}}
                self.data_loaded = True

        return _Clustering(seed=SEED)

    raise GeckoError(f"task {task.name}: no mteb form for type {task.type!r}")


def standard_mteb_task(name: str):
    """A task from mteb's registry by name (its data are fetched by mteb)."""
    mteb = _import_mteb()
    try:
        return mteb.get_task(name)
    except Exception as err:  # mteb raises KeyError / ValueError with suggestions
        raise GeckoError(f"unknown MTEB task {name!r}: {err}") from None


def main_score_of(task_result) -> tuple[str, dict[str, float]]:
    """(main score name, all numeric scores) of the test split's first subset."""
    split = task_result.scores.get("test") or next(iter(task_result.scores.values()))
    row = split[0]
    scores = {k: float(v) for k, v in row.items()
              if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}
    return task_result.task_name, scores


def evaluate_with_mteb(encoder, tasks: Sequence, dims: Sequence[int], name: str,
                       format: str | None = None, show_progress: bool = False
                       ) -> dict[str, dict[int, dict[str, float]]]:
    """Runs mteb.evaluate per Matryoshka dim.

    Args:
      encoder: a CachedEncoder (shared across dims: inputs are encoded once).
      tasks: mteb AbsTask instances (from `mteb_task` or `standard_mteb_task`).
      dims: Matryoshka dims.
      name: model name for mteb ("org/name").
    Returns:
      {mteb task name: {dim: scores}} with mteb's score names (e.g. ndcg_at_10,
      accuracy, v_measure, main_score).
    """
    mteb = _import_mteb()
    if not show_progress:
        import datasets

        datasets.disable_progress_bars()
    out: dict[str, dict[int, dict[str, float]]] = {}
    for dim in dims:
        model = mteb_model(encoder, name=name, dim=dim, format=format)
        for task in tasks:
            # Fresh state per dim: mteb mutates the dataset (e.g. query filtering).
            task.data_loaded = False
            try:
                result = mteb.evaluate(model, task, cache=None, overwrite_strategy="always",
                                       show_progress_bar=show_progress,
                                       encode_kwargs={"batch_size": 256})
            except GeckoError:
                raise
            except Exception as err:
                hint = (" (its data come from the Hugging Face Hub: this needs network access)"
                        if isinstance(err, (ConnectionError, OSError)) else "")
                raise GeckoError(f"mteb task {task.metadata.name} failed: "
                                 f"{type(err).__name__}: {err}{hint}") from err
            for task_result in result.task_results:
                tname, scores = main_score_of(task_result)
                out.setdefault(tname, {})[dim] = scores
    return out
