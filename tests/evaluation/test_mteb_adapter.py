"""The mteb route: our encoder in mteb's protocol, our tasks as mteb tasks, same numbers."""

import numpy as np
import pytest

pytest.importorskip("mteb")  # the eval extra (in dev)

from gecko_jax.errors import GeckoError  # noqa: E402
from gecko_jax.evaluation import local_tasks as lt  # noqa: E402
from gecko_jax.evaluation import mteb_adapter as ma  # noqa: E402

LIMIT = 40  # evenly spaced articles over all 5 categories; full size is the slow test below
MAIN = {"bbc_retrieval": ["ndcg_at_10", "recall_at_10", "mrr_at_10", "map_at_10"],
        "bbc_classification": ["accuracy", "f1"], "bbc_clustering": ["v_measure"]}


def _both_routes(encoder, limit, dims):
    # Separate caches: each route batches and encodes its own inputs. One task of each
    # kind (the validation tasks are the same classes on other articles).
    tasks = {name: lt.LOCAL_TASKS[name] for name in MAIN}
    local = {name: task.evaluate(lt.CachedEncoder(encoder, format="raw"), dims, limit=limit)
             for name, task in tasks.items()}
    mteb_tasks = {name: ma.mteb_task(task, limit=limit) for name, task in tasks.items()}
    via_mteb = ma.evaluate_with_mteb(lt.CachedEncoder(encoder, format="raw"),
                                     list(mteb_tasks.values()), dims, name="gecko_jax/minilm")
    return local, {name: via_mteb[t.metadata.name] for name, t in mteb_tasks.items()}


def _assert_agree(local, via_mteb, dims, tol):
    for task, keys in MAIN.items():
        for dim in dims:
            for key in keys:
                assert via_mteb[task][dim][key] == pytest.approx(local[task][dim][key], abs=tol), (
                    task, dim, key)


def test_minilm_local_and_mteb_routes_agree(minilm_encoder):
    dims = [384, 128]
    local, via_mteb = _both_routes(minilm_encoder, LIMIT, dims)
    _assert_agree(local, via_mteb, dims, tol=1e-3)
    # Sanity on real data: a sentence-tuned model finds headlines' articles.
    assert local["bbc_retrieval"][384]["ndcg_at_10"] > 0.85
    assert local["bbc_retrieval"][384]["num_queries"] == LIMIT


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two full encodes; took > 15 min on 2 shared, busy cores
def test_minilm_routes_agree_full_bbc():
    """Full deduplicated BBC (about 2,100 articles) at 256 tokens: many minutes on 2 cores."""
    from gecko_jax import assets
    from gecko_jax.encode import Encoder

    dims = [384, 256, 128, 64]
    local, via_mteb = _both_routes(Encoder.from_pretrained(assets.minilm_dir()), None, dims)
    _assert_agree(local, via_mteb, dims, tol=1e-3)


def test_mteb_model_applies_gecko_prompts_and_dims(minilm_encoder):
    from mteb.types import PromptType

    enc = lt.CachedEncoder(minilm_encoder, format="gecko")
    model = ma.mteb_model(enc, name="gecko_jax/minilm", dim=64)
    task = ma.mteb_task(lt.LOCAL_TASKS["bbc_classification"], limit=10)
    queries = [{"text": ["stocks fell sharply", "the striker scored twice"]}]
    x = model.encode(queries, task_metadata=task.metadata, hf_split="test", hf_subset="default",
                     prompt_type=PromptType.query)
    assert x.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert "task: classification | query: stocks fell sharply" in enc._cache
    # Documents: mteb joins title and text into "text" and keeps "body"/"title" apart.
    docs = [{"text": ["Markets Shares slid.", "Goal"], "body": ["Shares slid.", "Goal"],
             "title": ["Markets", ""]}]
    retrieval = ma.mteb_task(lt.LOCAL_TASKS["bbc_retrieval"], limit=10)
    model.encode(docs, task_metadata=retrieval.metadata, hf_split="test", hf_subset="default",
                 prompt_type=PromptType.document)
    assert "title: Markets | text: Shares slid." in enc._cache
    assert "title: none | text: Goal" in enc._cache
    # Standard MTEB task types map to Gecko task strings.
    sts = ma.standard_mteb_task("STS12")
    assert model.gecko_task_string(sts.metadata) == "sentence similarity"


def test_standard_mteb_task_errors_are_clean(minilm_encoder):
    with pytest.raises(GeckoError, match="unknown MTEB task 'NoSuchTask'"):
        ma.standard_mteb_task("NoSuchTask")
    # No network here (HF_HUB_OFFLINE=1): loading STS12's data fails with a clear message.
    with pytest.raises(GeckoError, match="STS12 failed.*network"):
        ma.evaluate_with_mteb(lt.CachedEncoder(minilm_encoder), [ma.standard_mteb_task("STS12")],
                              [384], name="gecko_jax/minilm")
