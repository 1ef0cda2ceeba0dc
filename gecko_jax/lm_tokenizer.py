"""The teacher LLM's tokenizer: a `tokenizers.Tokenizer` plus BOS/EOS rules and a chat template.

Built from GGUF metadata (`models/gguf.py`) or read from an HF folder
(`tokenizer.json` + `tokenizer_config.json`); both give the same object, which can
write itself back as an HF folder.
"""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

import tokenizers

# Tokens that end an assistant turn in the chat formats we ship (ChatML, Gemma).
_TURN_END = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>")


class LMTokenizer:
    """Encode/decode text for a decoder LM.

    Args:
      tokenizer: the `tokenizers.Tokenizer` (no post-processor: BOS is added here).
      bos_id, eos_id, pad_id: special token ids (None where the model has none).
      add_bos: prepend BOS to every encoded prompt (Gemma: yes; SmolLM2: no).
      chat_template: a Jinja chat template (instruction models), or None.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer, *, bos_id: int | None,
                 eos_id: int | None, pad_id: int | None = None, add_bos: bool = False,
                 chat_template: str | None = None):
        self.tokenizer = tokenizer
        self.bos_id, self.eos_id = bos_id, eos_id
        self.pad_id = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
        self.add_bos = add_bos and bos_id is not None
        self.chat_template = chat_template
        self._jinja = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token(self, token_id: int) -> str | None:
        return self.tokenizer.id_to_token(token_id)

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end generation: EOS and the end-of-turn token of the chat format."""
        ids = [] if self.eos_id is None else [self.eos_id]
        for tok in _TURN_END:
            i = self.tokenizer.token_to_id(tok)
            if i is not None and i not in ids:
                ids.append(i)
        return ids

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            if not ids or ids[0] != self.bos_id:
                ids = [self.bos_id] + ids
        return ids

    def encode_batch(self, texts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]:
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        bos = self.add_bos if add_bos is None else add_bos
        out = []
        for e in encs:
            ids = e.ids
            if bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
                ids = [self.bos_id] + ids
            out.append(ids)
        return out

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    # ------------------------------------------------------------------ chat

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render chat messages as the model's prompt text (raises if it has no template)."""
        if not self.chat_template:
            raise ValueError("this model has no chat template; pass plain prompts")
        if self._jinja is None:
            import jinja2.sandbox

            env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

            def raise_exception(msg):
                raise ValueError(f"chat template: {msg}")

            env.globals["raise_exception"] = raise_exception
            self._jinja = env.from_string(self.chat_template)
        special = {"bos_token": self._tok_str(self.bos_id), "eos_token": self._tok_str(self.eos_id)}
        return self._jinja.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                  **special)

    def _tok_str(self, i):
        return "" if i is None else (self.tokenizer.id_to_token(i) or "")

    # --------------------------------------------------------------- HF folder

    def save(self, folder: str | pathlib.Path) -> None:
        """Write `tokenizer.json` and `tokenizer_config.json` (transformers reads both)."""
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(folder / "tokenizer.json"))
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": self.add_bos,
               "add_eos_token": False, "bos_token": self._tok_str(self.bos_id) or None,
               "eos_token": self._tok_str(self.eos_id) or None,
               "pad_token": self._tok_str(self.pad_id) or None}
        if self.chat_template:
            cfg["chat_template"] = self.chat_template
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))

    @classmethod
    def from_folder(cls, folder: str | pathlib.Path, config: dict | None = None) -> "LMTokenizer":
        """Read an HF folder's tokenizer; `config` (config.json) supplies missing token ids."""
        folder = pathlib.Path(folder)
        tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.post_processor = None  # BOS is ours to add, so it is never added twice
        tok.no_padding()
        tok.no_truncation()
        tc_path = folder / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text()) if tc_path.exists() else {}
        config = config or {}

        def tid(name):
            t = tc.get(name)
            if isinstance(t, dict):
                t = t.get("content")
            i = tok.token_to_id(t) if t else None
            if i is None:
                i = config.get(f"{name}_id")
                i = i[0] if isinstance(i, list) else i
            return i

        template = tc.get("chat_template")
        if template is None and (folder / "chat_template.jinja").exists():
            template = (folder / "chat_template.jinja").read_text()
        add_bos = tc.get("add_bos_token")
        if add_bos is None:
            add_bos = config.get("model_type", "").startswith("gemma")
        return cls(tok, bos_id=tid("bos_token"), eos_id=tid("eos_token"), pad_id=tid("pad_token"),
                   add_bos=bool(add_bos), chat_template=template)
