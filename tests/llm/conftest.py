"""Shared teacher models, package-scoped: each loads once while tests/llm runs and is
released when the package is done."""

import pathlib

import pytest

# Three real prompts per model (test_vs_transformers.py's greedy check uses all three).
PROMPTS = {
    "smollm2": ["The capital of France is", "Here is a recipe for pancakes:",
                "Question: What is the boiling point of water?\nAnswer:"],
    "gemma3": ["The capital of France is", "Here is a recipe for pancakes:",
               "Question: What is the boiling point of water?\nAnswer:"],
}


def _load_engine(name):
    from gecko_jax.llm.jax_engine import JaxEngine

    return JaxEngine.load(name, max_batch=8)


def _load_torch(name):
    """transformers' own reading of the shipped GGUF (model in float32, tokenizer).

    transformers converts a GGUF in ~45 s (Gemma-3: its 262k-piece tokenizer and the
    de-quantisation); the converted model and tokenizer are saved once, by
    transformers, under GECKO_CACHE/transformers_gguf/ (keyed by the GGUF's name, size
    and mtime and the transformers version) and read back in seconds. The reference
    stays transformers' conversion: the saved tensors are exactly the loaded ones.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gecko_jax.llm.loading import gguf_cache_folder, resolve

    path = resolve(name)
    ours = gguf_cache_folder(path)
    folder = (ours.parent.parent / "transformers_gguf"
              / f"{ours.name}-transformers-{transformers.__version__}")
    if not (folder / "model.safetensors").is_file():
        _save_transformers_conversion(path, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), tok


def _save_transformers_conversion(path, folder):
    import json
    import shutil
    import tempfile

    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        # save_pretrained refuses a GGUF-loaded model: its config without the GGUF
        # quantisation entry (the weights are de-quantised float32) and its tensors
        # (a tied weight once) are written as the folder from_pretrained reads.
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        tok.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_CACHE = {}


def _get(kind, name):
    if (kind, name) not in _CACHE:
        if kind == "torch":
            # One transformers reference at a time (each reloads in seconds from the
            # saved conversion): SmolLM2's and Gemma-3's together hold ~2 GB.
            _drop_torch()
        _CACHE[kind, name] = (_load_engine if kind == "engine" else _load_torch)(name)
    return _CACHE[kind, name]


def _drop_torch():
    for key in [k for k in _CACHE if k[0] == "torch"]:
        del _CACHE[key]


@pytest.fixture(scope="package", autouse=True)
def _release_models():
    yield
    _CACHE.clear()


@pytest.fixture(scope="module", autouse=True)
def _release_torch_models():
    """The engines serve the whole package; a module's transformers models end with it."""
    yield
    _drop_torch()


@pytest.fixture(scope="package")
def smollm2_engine():
    return _get("engine", "smollm2")


@pytest.fixture(scope="package")
def gemma3_engine():
    return _get("engine", "gemma3")


@pytest.fixture(scope="package")
def get_model():
    """get_model(kind, name): kind 'engine' (ours) or 'torch' (transformers, tokenizer)."""
    return _get
