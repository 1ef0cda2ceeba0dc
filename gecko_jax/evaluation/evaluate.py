"""One model on a list of tasks, by our local loop, the MTEB harness, or both."""

from __future__ import annotations

import logging
import time

from gecko_jax.evaluation import mteb_adapter

log = logging.getLogger(__name__)


def evaluate_model(encoder, model_name: str, local_tasks, standard_names, dims, route: str,
                   limit=None, progress=None) -> dict[str, dict[str, dict[int, dict]]]:
    """{route label: {task name: {dim: scores}}} for one model."""
    out: dict[str, dict[str, dict[int, dict]]] = {}
    if route in ("local", "both"):
        res = out.setdefault("local", {})
        for task in local_tasks:
            if progress is not None:
                progress.set_description(f"{model_name}: {task.name}")
            start = time.perf_counter()
            res[task.name] = task.evaluate(encoder, dims, limit=limit)
            log.info("%s %s (local): %.1f s", model_name, task.name, time.perf_counter() - start)
            if progress is not None:
                progress.update(1)
    mteb_local = local_tasks if route in ("mteb", "both") else []
    if mteb_local or standard_names:
        res = out.setdefault("mteb", {})
        pairs = [(t.name, mteb_adapter.mteb_task(t, limit=limit)) for t in mteb_local]
        pairs += [(f"mteb:{n}", mteb_adapter.standard_mteb_task(n)) for n in standard_names]
        for name, mtask in pairs:
            if progress is not None:
                progress.set_description(f"{model_name}: {name} (mteb)")
            scores = mteb_adapter.evaluate_with_mteb(encoder, [mtask], dims,
                                                     name=f"gecko_jax/{model_name}")
            res[name] = scores[mtask.metadata.name]
            if progress is not None:
                progress.update(1)
    return out
