"""Find and read a teacher LLM: a shipped name, a GGUF file, or an HF safetensors folder.

Both file routes end in the same triple (DecoderConfig, HF-named float32 tensors,
LMTokenizer); `save_hf_folder` writes that triple as a folder that transformers
(and `read_hf_folder`) load.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil

import numpy as np

from gecko_jax import assets
from gecko_jax.errors import GeckoError
from gecko_jax.lm_tokenizer import LMTokenizer
from gecko_jax.models.decoder import DecoderConfig

log = logging.getLogger(__name__)

# Names of the teachers that ship as registry packages (ASSETS.md).
SHIPPED = {"smollm2": assets.smollm2_gguf, "gemma3": assets.gemma3_gguf}


def resolve(spec: str | os.PathLike) -> pathlib.Path:
    """A shipped model name, a .gguf file or an HF folder -> its path."""
    if str(spec) in SHIPPED:
        return SHIPPED[str(spec)]()
    path = pathlib.Path(spec).expanduser()
    if not path.exists():
        raise GeckoError(f"{spec}: no such model file or folder (or use one of "
                         f"{sorted(SHIPPED)}, or an http(s):// server URL)")
    return path


def load_decoder(spec: str | os.PathLike, cache: bool = True
                 ) -> tuple[DecoderConfig, dict[str, np.ndarray], LMTokenizer]:
    """(config, HF-named float32 weights, tokenizer) for a name, GGUF file or HF folder.

    A GGUF is converted once into an HF folder under $GECKO_CACHE/gguf/ (unless
    cache=False): the gguf package's reader spends ~10-20 s parsing Gemma-3's 262k
    token strings, and dequantising takes seconds more; the folder loads in about one.
    """
    path = resolve(spec)
    if path.is_dir():
        return read_hf_folder(path)
    if path.suffix.lower() != ".gguf":
        raise GeckoError(f"{path}: expected a .gguf file or a folder with config.json + safetensors")
    from gecko_jax.models.gguf import load_gguf

    if not cache:
        return load_gguf(path)
    folder = gguf_cache_folder(path)
    if (folder / "model.safetensors").exists():
        return read_hf_folder(folder)
    cfg, state, tok = load_gguf(path)
    tmp = folder.with_name(folder.name + f".partial{os.getpid()}")
    try:
        save_hf_folder(tmp, cfg, state, tok)
        os.replace(tmp, folder)
    except OSError as err:  # a read-only or full cache only costs speed
        log.warning("could not cache %s as %s: %s", path, folder, err)
        shutil.rmtree(tmp, ignore_errors=True)
    return cfg, state, tok


def has_chat_template(spec: str | os.PathLike) -> bool:
    """Whether a shipped name / GGUF / HF folder's tokenizer carries a chat template
    (GGUF metadata `tokenizer.chat_template`; HF `tokenizer_config.json` or
    `chat_template.jinja`): an instruction-tuned model. Reads only the tokenizer files
    (a GGUF is converted into its cache folder first, as `load_decoder` does)."""
    path = resolve(spec)
    if not path.is_dir():
        if path.suffix.lower() != ".gguf":
            raise GeckoError(f"{path}: expected a .gguf file or an HF folder")
        folder = gguf_cache_folder(path)
        if not (folder / "model.safetensors").exists():
            load_decoder(path)
        path = folder if (folder / "tokenizer_config.json").exists() else None
        if path is None:  # the cache could not be written: read the GGUF itself
            return bool(load_decoder(spec, cache=False)[2].chat_template)
    cfg_path = path / "tokenizer_config.json"
    tc = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    return bool(tc.get("chat_template")) or (path / "chat_template.jinja").exists()


def gguf_cache_folder(path: pathlib.Path) -> pathlib.Path:
    """Where the HF-folder form of a GGUF is cached (keyed by name, size and mtime)."""
    st = path.stat()
    root = pathlib.Path(os.environ.get("GECKO_CACHE", "~/.cache/gecko_jax")).expanduser()
    return root / "gguf" / f"{path.stem}-{st.st_size}-{st.st_mtime_ns}"


def read_hf_folder(folder: str | os.PathLike) -> tuple[DecoderConfig, dict[str, np.ndarray], LMTokenizer]:
    """An HF model folder: config.json, *.safetensors (sharded or not), tokenizer.json."""
    from safetensors.numpy import load_file

    folder = pathlib.Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise GeckoError(f"{folder}: no config.json (not an HF model folder)")
    hf_cfg = json.loads(cfg_path.read_text())
    try:
        cfg = DecoderConfig.from_hf_dict(hf_cfg)
    except (KeyError, ValueError) as err:
        raise GeckoError(f"{cfg_path}: {err}") from err
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise GeckoError(f"{folder}: no *.safetensors weights")
    state: dict[str, np.ndarray] = {}
    for f in files:
        for k, v in load_file(str(f)).items():
            state[k] = v.astype(np.float32) if v.dtype != np.float32 else v
    if not (folder / "tokenizer.json").exists():
        raise GeckoError(f"{folder}: no tokenizer.json")
    return cfg, state, LMTokenizer.from_folder(folder, hf_cfg)


def save_hf_folder(folder: str | os.PathLike, cfg: DecoderConfig, state: dict[str, np.ndarray],
                   tokenizer: LMTokenizer) -> pathlib.Path:
    """Write config.json, model.safetensors (float32) and the tokenizer files."""
    from safetensors.numpy import save_file

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=1))
    tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}
    if cfg.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(folder)
    return folder
