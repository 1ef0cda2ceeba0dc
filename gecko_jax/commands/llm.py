"""`gecko llm generate|score`: run the teacher LLM from the command line.

  gecko llm generate --model smollm2 --prompt "Write a question about tea:" --chat
  gecko llm score --model gemma3 --prefix "Tea is" --continuation " a drink."
--model takes a shipped name (smollm2, gemma3), a .gguf file, an HF folder, or the
URL of an OpenAI-compatible server (http://127.0.0.1:8000/v1).
"""

from __future__ import annotations

import argparse
import json


def open_llm(model: str, server_model: str | None = None, max_batch: int = 16):
    """An LLM backend for a --model value."""
    if model.startswith(("http://", "https://")):
        from gecko_jax.llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM(model, model=server_model)
    from gecko_jax.llm.jax_engine import JaxEngine

    return JaxEngine.load(model, max_batch=max_batch)


def register(subparsers) -> None:
    p = subparsers.add_parser("llm", help="generate with or score by a teacher LLM",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="llm_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", required=True,
                        help="smollm2 | gemma3 | FILE.gguf | HF folder | http(s):// server URL")
    common.add_argument("--server-model", default=None,
                        help="model name to request from a server (default: its first)")
    g = sub.add_parser("generate", parents=[common], help="complete prompts")
    g.add_argument("--prompt", action="append", required=True,
                   help="prompt text (repeat for a batch)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--chat", action="store_true",
                   help="send each prompt as a user message (chat template)")
    g.set_defaults(func=run_generate)
    s = sub.add_parser("score", parents=[common],
                       help="log P(continuation | prefix), summed over tokens")
    s.add_argument("--prefix", action="append", required=True)
    s.add_argument("--continuation", action="append", required=True)
    s.add_argument("--per-token", action="store_true")
    s.set_defaults(func=run_score)


def run_generate(args) -> int:
    llm = open_llm(args.model, args.server_model)
    prompts = args.prompt
    if args.chat:
        llm.require("chat")
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    texts = llm.generate(prompts, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, stop=args.stop,
                         seed=args.seed)
    for t in texts:
        print(json.dumps({"text": t}, ensure_ascii=False))
    return 0


def run_score(args) -> int:
    from gecko_jax.errors import GeckoError

    prefixes, conts = args.prefix, args.continuation
    if len(prefixes) == 1 and len(conts) > 1:
        prefixes = prefixes * len(conts)
    if len(prefixes) != len(conts):
        raise GeckoError(f"{len(prefixes)} --prefix but {len(conts)} --continuation")
    llm = open_llm(args.model, args.server_model)
    llm.require("score")
    scores = llm.score(prefixes, conts, per_token=args.per_token)
    for p, c, s in zip(prefixes, conts, scores):
        s = [float(x) for x in s] if args.per_token else float(s)
        print(json.dumps({"prefix": p, "continuation": c, "logprob": s}, ensure_ascii=False))
    return 0
