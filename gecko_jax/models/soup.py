"""Model soups: the (weighted) average of fine-tuned models that share an architecture.

Gemini Embedding and EmbeddingGemma both average several fine-tuning runs
(different seeds or mixtures); EmbeddingGemma's soup gained 0.8 points over its
best single run. A soup here is file-level: every `*.safetensors` tensor of the
input folders (the tower, and any dense head or projection module) is averaged
in float64 and cast back, and the other files (configs, tokenizer, prompts) are
copied from the first folder. This needs no model code, so it works for any
folder gecko_jax exports (BERT or LLM towers), and the soup of a model with
itself is that model bit for bit.

    gecko soup --output runs/soup runs/seed0/export runs/seed1/export runs/seed2/export
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Sequence

import numpy as np

from gecko_jax import paths
from gecko_jax.errors import GeckoError

SOUP_RECORD = "soup.json"
# Files whose content must agree for two folders to share an architecture.
_ARCHITECTURE_FILES = ("config.json", "modules.json")


def soup_weights(n: int, weights: Sequence[float] | None) -> np.ndarray:
    """Mixing weights [n] (float64) summing to 1; uniform when `weights` is None."""
    if n < 1:
        raise GeckoError("soup: no models given")
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(list(weights), np.float64)
    if w.shape != (n,):
        raise GeckoError(f"soup: {len(w)} weights for {n} models")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise GeckoError(f"soup: weights must be non-negative and not all zero, got {list(w)}")
    return w / w.sum()


def average_tensors(states: Sequence[dict[str, np.ndarray]], weights: np.ndarray,
                    names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Weighted mean of same-named tensors, in float64, cast to each tensor's dtype.

    Args:
      states: one {name: array} per model.
      weights: [len(states)] summing to 1.
      names: a label per model for error messages (e.g. its folder).
    Raises GeckoError naming the parameter when names or shapes disagree.
    """
    names = list(names or [f"model {i}" for i in range(len(states))])
    ref = states[0]
    for state, who in zip(states[1:], names[1:]):
        missing, extra = sorted(set(ref) - set(state)), sorted(set(state) - set(ref))
        if missing or extra:
            raise GeckoError(f"soup: {who} does not share {names[0]}'s parameters: "
                             f"missing {missing[:3]}, extra {extra[:3]}")
        for key, value in ref.items():
            if state[key].shape != value.shape:
                raise GeckoError(f"soup: parameter {key!r} has shape {tuple(state[key].shape)} in "
                                 f"{who} but {tuple(value.shape)} in {names[0]}")
            if state[key].dtype != value.dtype:
                raise GeckoError(f"soup: parameter {key!r} is {state[key].dtype} in {who} but "
                                 f"{value.dtype} in {names[0]}")
    out = {}
    for key, value in ref.items():
        if not np.issubdtype(value.dtype, np.floating):
            for state, who in zip(states[1:], names[1:]):
                if not np.array_equal(state[key], value):
                    raise GeckoError(f"soup: non-float parameter {key!r} differs in {who}")
            out[key] = value
            continue
        acc = np.zeros(value.shape, np.float64)
        for state, w in zip(states, weights):
            acc += w * np.asarray(state[key], np.float64)
        out[key] = acc.astype(value.dtype)
    return out


def _tensor_files(folder: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.safetensors"))


def soup_folders(folders: Sequence[str | os.PathLike], output: str | os.PathLike,
                 weights: Sequence[float] | None = None):
    """Average exported model folders into `output` (same layout as the inputs).

    Raises GeckoError when the folders differ in architecture (config.json /
    modules.json), in their tensor files, or in any parameter's name or shape.
    """
    from safetensors.numpy import load_file, save_file

    names = [f if paths.is_remote(f) else str(pathlib.Path(f)) for f in map(os.fspath, folders)]
    output_name = os.fspath(output)
    if output_name in names or (not paths.is_remote(output) and any(
            not paths.is_remote(f) and pathlib.Path(f).resolve() == pathlib.Path(output).resolve()
            for f in names)):
        raise GeckoError(f"soup: the output {output} is one of the inputs")
    for f in names:
        if not paths.as_path(f).is_dir():
            raise GeckoError(f"soup: {f}: no such model folder")
    folders = [paths.local_folder(f) for f in names]      # URIs: local copies
    w = soup_weights(len(folders), weights)
    for f in folders:
        if not f.is_dir():
            raise GeckoError(f"soup: {f}: no such model folder")
    files = _tensor_files(folders[0])
    if not files:
        raise GeckoError(f"soup: {folders[0]}: no *.safetensors files (not an exported model)")
    for f in folders[1:]:
        if _tensor_files(f) != files:
            raise GeckoError(f"soup: {f} holds tensor files {_tensor_files(f)}, "
                             f"{folders[0]} holds {files}")
    means = {}
    for rel in files:  # parameters first: a shape mismatch names the parameter
        try:
            states = [load_file(str(f / rel)) for f in folders]
        except Exception as err:  # safetensors raises its own error types
            raise GeckoError(f"soup: cannot read {rel}: {err}") from None
        means[rel] = average_tensors(states, w, [str(f / rel) for f in folders])
    for f in folders[1:]:
        for name in _ARCHITECTURE_FILES:
            a, b = folders[0] / name, f / name
            if a.is_file() != b.is_file() or (a.is_file() and
                                              json.loads(a.read_text()) != json.loads(b.read_text())):
                raise GeckoError(f"soup: {f}/{name} differs from {folders[0]}/{name}: "
                                 "the models do not share an architecture")
    from gecko_jax.models.weights import export_staging

    tmp = export_staging(output)
    shutil.rmtree(tmp)
    shutil.copytree(folders[0], tmp, ignore=shutil.ignore_patterns("*.safetensors", SOUP_RECORD))
    for rel, mean in means.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in mean.items()}, str(tmp / rel),
                  metadata={"format": "pt"})
    (tmp / SOUP_RECORD).write_text(json.dumps(
        {"ingredients": names, "weights": [float(x) for x in w]}, indent=2) + "\n")
    return paths.publish_folder(tmp, output)
