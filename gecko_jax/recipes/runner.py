"""One runner of staged recipes: named stages, each in OUT/<name>/, resumable and checked.

A stage has a name, a config (what decides its output: JSON-able), the names of
the earlier stages it reads (`inputs`), and a function that does the work in its
folder. Its marker OUT/<name>/stage.json records the config, the config's hash
and the status: "running" while it works, "done" (with wall time and the
function's summary) once finished. A stage's effective config includes the
hashes of its inputs' effective configs, so a change anywhere marks that stage
and every stage that reads from it as changed.

A rerun skips done stages, calls a running stage's function again (each function
resumes its own partial work: FRet keeps finished shards, training restores its
last checkpoint), refuses a stage whose recorded config differs from this run's
(naming the keys), and with `redo` deletes that stage's folder, every later
stage's and the recipe's derived outputs, and runs them again.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import pathlib
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

from gecko_jax.errors import GeckoError
from gecko_jax.textio import atomic_write_json

log = logging.getLogger(__name__)

MARKER = "stage.json"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a recipe.

    Attributes:
      name: folder name under the run directory.
      config: what decides the stage's output (JSON-able mapping).
      run: (stage folder, {earlier stage name: its marker}) -> summary (JSON-able).
      inputs: names of earlier stages whose output this stage reads.
    """
    name: str
    config: Mapping[str, Any]
    run: Callable[[pathlib.Path, Mapping[str, dict]], dict]
    inputs: tuple[str, ...] = ()


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def chain_configs(configs: Mapping[str, Mapping[str, Any]],
                  inputs: Mapping[str, Sequence[str]]) -> dict[str, dict]:
    """Effective configs: each stage's config plus {"inputs": {name: hash}} of its inputs'
    effective configs (in stage order, so inputs must name earlier stages)."""
    out: dict[str, dict] = {}
    for name, config in configs.items():
        missing = [i for i in inputs.get(name, ()) if i not in out]
        if missing:
            raise GeckoError(f"stage {name!r}: inputs {missing} are not earlier stages")
        out[name] = dict(config)
        if inputs.get(name):
            out[name]["inputs"] = {i: config_hash(out[i]) for i in inputs[name]}
    return out


def effective_configs(stages: Sequence[Stage]) -> dict[str, dict]:
    names = [s.name for s in stages]
    if not stages or len(set(names)) != len(names) or not all(names):
        raise GeckoError(f"a recipe needs named, distinct stages, got {names}")
    return chain_configs({s.name: s.config for s in stages},
                         {s.name: s.inputs for s in stages})


def read_marker(out: pathlib.Path, stage: str) -> dict | None:
    path = pathlib.Path(out) / stage / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def _diff(old: Mapping, new: Mapping) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def check_stages(out: pathlib.Path, configs: Mapping[str, dict], redo: bool,
                 derived: Sequence[str] = ()) -> list[str]:
    """Stages whose recorded config differs from `configs`: refused (GeckoError naming
    the keys), or with `redo` removed with every later stage and the `derived` outputs
    (files or folders under OUT). Returns the stages to be rerun because of a change."""
    out = pathlib.Path(out)
    order = list(configs)
    changed = []
    for stage in order:
        marker = read_marker(out, stage)
        if marker is not None and marker["config"] != configs[stage]:
            changed.append((stage, _diff(marker["config"], configs[stage])))
    if not changed:
        return []
    first = order.index(changed[0][0])
    if not redo:
        detail = "\n  ".join(f"{s}: {d}" for s, d in changed)
        raise GeckoError(
            f"{out} holds stages run with a different configuration:\n  {detail}\n"
            f"Use another output folder, or pass --redo to delete and rerun stage "
            f"{order[first]!r} and every stage after it.")
    for stage in order[first:]:
        if (out / stage).exists():
            log.info("redo: removing %s", out / stage)
            shutil.rmtree(out / stage)
    for name in derived:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return order[first:]


def peak_rss_gib() -> float:
    """This process's peak resident memory so far, GiB (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_recipe(out_dir, stages: Sequence[Stage], redo: bool = False, progress: bool = True,
               derived: Sequence[str] = (), desc: str = "recipe") -> dict:
    """Runs (or resumes) `stages` in order under OUT_DIR.

    Returns {"stages": {name: marker}, "ran": [names run by this call]}.
    """
    from tqdm.auto import tqdm

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    configs = effective_configs(stages)
    check_stages(out, configs, redo, derived)
    ran = []
    markers: dict[str, dict] = {}
    overall = tqdm(total=len(stages), desc=desc, unit="stage", disable=not progress,
                   bar_format="{desc}: {n_fmt}/{total_fmt} stages |{bar:20}| "
                              "{elapsed} elapsed{postfix}")
    for i, stage in enumerate(stages):
        stage_dir = out / stage.name
        marker = read_marker(out, stage.name)
        if marker is not None and marker["status"] == "done":
            log.info("stage %d/%d %s: done in an earlier run (%.0f s), reused",
                     i + 1, len(stages), stage.name, marker["wall_s"])
            markers[stage.name] = marker
            overall.update(1)
            continue
        overall.set_postfix_str(f"now: {stage.name}")
        overall.refresh()
        stage_dir.mkdir(parents=True, exist_ok=True)
        config = configs[stage.name]
        started = time.time()
        atomic_write_json(stage_dir / MARKER, {"status": "running", "config": config,
                                               "config_hash": config_hash(config),
                                               "started": _now()})
        if progress:
            tqdm.write(f"== stage {i + 1}/{len(stages)}: {stage.name}"
                       f"{' (resuming)' if marker else ''}")
        summary = stage.run(stage_dir, dict(markers))
        wall = time.time() - started  # of this process (a resumed stage: the rest only)
        atomic_write_json(stage_dir / MARKER, {
            "status": "done", "config": config, "config_hash": config_hash(config),
            "finished": _now(), "wall_s": round(wall, 1), "resumed": marker is not None,
            "peak_rss_gib": peak_rss_gib(), "summary": summary})
        markers[stage.name] = read_marker(out, stage.name)
        if progress:
            tqdm.write(f"== stage {stage.name} done in {wall:.0f} s")
        ran.append(stage.name)
        overall.update(1)
    overall.close()
    return {"stages": markers, "ran": ran}
