"""Read a GGUF (llama.cpp's format) into a decoder config, float weights and a tokenizer.

Weights are dequantised with `gguf.quants.dequantize` and returned under Hugging Face
names and layouts, so the GGUF route and the safetensors route meet in
`decoder.hf_to_params`. Two llama.cpp conventions are undone here:
  * Llama Q/K projection rows are permuted so that rotary pairs are adjacent
    (llama.cpp's "normal" RoPE); we put them back in HF's rotate-half order.
  * Gemma norm weights are stored with the +1 already added; HF stores w for
    x * (1 + w), so 1 is subtracted (as transformers does).
The tokenizer is rebuilt with the `tokenizers` library from the vocabulary in the
metadata: byte-level BPE with the file's merges (`tokenizer.ggml.model == "gpt2"`,
SmolLM2), or SentencePiece-style BPE with byte fallback whose merges are recovered
from the vocabulary (`"llama"`, Gemma-3).
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

import numpy as np

from gecko_jax.errors import GeckoError
from gecko_jax.lm_tokenizer import LMTokenizer
from gecko_jax.models.decoder import GEMMA3, LLAMA, DecoderConfig

log = logging.getLogger(__name__)

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def _field(reader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def read_config(reader) -> DecoderConfig:
    """DecoderConfig from GGUF metadata (`{arch}.*` keys)."""
    arch = _field(reader, "general.architecture")
    if arch not in (LLAMA, GEMMA3):
        raise GeckoError(f"GGUF architecture {arch!r} is not supported (llama, gemma3)")

    def a(key, default=None):
        return _field(reader, f"{arch}.{key}", default)

    heads = int(a("attention.head_count"))
    hidden = int(a("embedding_length"))
    tensor_names = {t.name for t in reader.tensors}
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    common = dict(
        vocab_size=int(a("vocab_size", vocab)), hidden_size=hidden,
        intermediate_size=int(a("feed_forward_length")), num_layers=int(a("block_count")),
        num_heads=heads, num_kv_heads=int(a("attention.head_count_kv", heads)),
        head_dim=int(a("attention.key_length", hidden // heads)),
        rms_norm_eps=float(a("attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="output.weight" not in tensor_names,
        max_position_embeddings=int(a("context_length", 8192)),
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=_field(reader, "tokenizer.ggml.padding_token_id"))
    if arch == LLAMA:
        if a("rope.scaling.type") not in (None, "none"):
            raise GeckoError("GGUF Llama with RoPE scaling is not supported")
        return DecoderConfig(architecture=LLAMA, rope_theta=float(a("rope.freq_base", 1e4)),
                             **common)
    # Gemma-3: llama.cpp hard-codes the local base (1e4) and the 5:1 local/global pattern.
    hd = common["head_dim"]
    return DecoderConfig(
        architecture=GEMMA3, rope_theta=float(a("rope.freq_base", 1e6)),
        rope_local_theta=float(a("rope.freq_base_swa", 1e4)),
        sliding_window=int(a("attention.sliding_window", 512)), sliding_window_pattern=6,
        query_pre_attn_scalar=float(hd), **common)


def _unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K permutation: rows (head, j, pair) -> (head, pair, j).

    llama.cpp's converter applies w.reshape(h, 2, hd/2, ...).swapaxes(1, 2) so that
    rotary pairs are adjacent; this is its inverse, giving HF's rotate-half layout.
    """
    out, rest = w.shape[0], w.shape[1:]
    hd = out // n_head
    return w.reshape(n_head, hd // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
}
_LLAMA_NORMS = {"ffn_norm": "post_attention_layernorm"}
_GEMMA_NORMS = {"post_attention_norm": "post_attention_layernorm",
                "ffn_norm": "pre_feedforward_layernorm",
                "post_ffw_norm": "post_feedforward_layernorm"}


def read_weights(reader, cfg: DecoderConfig) -> dict[str, np.ndarray]:
    """All tensors, dequantised to float32, under HF names (LlamaForCausalLM layout)."""
    import gguf

    layer_names = dict(_LAYER_NAMES, **(_GEMMA_NORMS if cfg.is_gemma else _LLAMA_NORMS))
    out = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        name = t.name
        if name == "token_embd.weight":
            hf = "model.embed_tokens.weight"
        elif name == "output_norm.weight":
            hf = "model.norm.weight"
        elif name == "output.weight":
            hf = "lm_head.weight"
        elif name.startswith("blk."):
            _, idx, kind, suffix = name.split(".", 3)
            if kind not in layer_names:
                raise GeckoError(f"unexpected GGUF tensor {name!r}")
            hf = f"model.layers.{idx}.{layer_names[kind]}.{suffix}"
            if not cfg.is_gemma and kind == "attn_q":
                w = _unpermute_rope_rows(w, cfg.num_heads)
            elif not cfg.is_gemma and kind == "attn_k":
                w = _unpermute_rope_rows(w, cfg.num_kv_heads)
        else:
            log.debug("skipping GGUF tensor %s", name)
            continue
        if cfg.is_gemma and name.endswith("norm.weight"):
            w = w - 1.0
        out[hf] = w
    return out


# ----------------------------------------------------------------------- tokenizer

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _spm_merges(tokens: list[str]) -> list[tuple[str, str]]:
    """Merges implied by a SentencePiece BPE vocabulary.

    A piece that splits into two in-vocabulary pieces yields that merge; merges are
    ranked by the merged piece's position in the vocabulary (Gemma's scores do not
    follow its merge order, its vocabulary order does), then longer left part first.
    """
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for rank, piece in enumerate(tokens):
        local = [(piece[:k], piece[k:]) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges.extend((rank, -len(l), -len(r), n, l, r) for n, (l, r) in enumerate(local))
    merges.sort(key=lambda m: m[:4])
    return [(m[4], m[5]) for m in merges]


def read_tokenizer(reader) -> LMTokenizer:
    """Build the tokenizer described by the GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

    kind = _field(reader, "tokenizer.ggml.model")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    if kind == "gpt2":
        alphabet = set(_bytes_to_unicode().values())
        vocab = {t: i for i, t in enumerate(tokens)}
        merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        pre = _field(reader, "tokenizer.ggml.pre", "default")
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if pre in ("smollm", "codeshell"):
            # llama.cpp splits every digit on its own before the GPT-2 regex for these.
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level])
        else:
            tok.pre_tokenizer = byte_level
        tok.decoder = decoders.ByteLevel()
        spelled_ok = lambda t: set(t) <= alphabet  # noqa: E731
    elif kind == "llama":
        # Multi-space pieces are stored as real spaces; the normalizer turns spaces into
        # U+2581 before the model sees them, so spell those pieces the same way.
        tokens = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in tokens]
        vocab = {t: i for i, t in enumerate(tokens)}
        unk_id = _field(reader, "tokenizer.ggml.unknown_token_id", 0)
        tok = Tokenizer(models.BPE(vocab=vocab, merges=_spm_merges(tokens), fuse_unk=True,
                                   unk_token=tokens[unk_id], byte_fallback=True))
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        tok.decoder = decoders.Sequence(
            [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
        if _field(reader, "tokenizer.ggml.add_space_prefix", False):
            tok.normalizer = normalizers.Sequence(
                [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        spelled_ok = lambda t: True  # noqa: E731
    else:
        raise GeckoError(f"GGUF tokenizer model {kind!r} is not supported (gpt2, llama)")
    # Control tokens (<|im_start|>, <start_of_turn>, ...) must match whole, as llama.cpp does.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == _CONTROL and spelled_ok(t)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, ty in zip(tokens, types) if ty == _USER_DEFINED])
    add_bos = _field(reader, "tokenizer.ggml.add_bos_token", kind == "llama")
    return LMTokenizer(
        tok, bos_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_id=_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_id=_field(reader, "tokenizer.ggml.padding_token_id"), add_bos=bool(add_bos),
        chat_template=_field(reader, "tokenizer.chat_template"))


def load_gguf(path: str | os.PathLike) -> tuple[DecoderConfig, dict[str, np.ndarray], LMTokenizer]:
    """(config, HF-named float32 weights, tokenizer) of a Llama or Gemma-3 GGUF."""
    import gguf

    path = pathlib.Path(path)
    if not path.exists():
        raise GeckoError(f"{path}: no such GGUF file")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # noqa: BLE001 - gguf raises bare ValueErrors on bad files
        raise GeckoError(f"{path}: not a readable GGUF file ({err})") from err
    cfg = read_config(reader)
    return cfg, read_weights(reader, cfg), read_tokenizer(reader)
