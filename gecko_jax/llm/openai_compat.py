"""A teacher LLM behind any OpenAI-compatible HTTP server.

vLLM, llama.cpp's server (`python -m llama_cpp.server`), TGI and Gemini's
OpenAI-compatible endpoint all speak this API. `generate` uses /completions for
plain prompts and /chat/completions for message lists; `score` uses /completions
with `echo` + `logprobs` (prompt log-probs), which chat-only endpoints lack: build
the client with `supports_logprobs=False` there and `score` says so.

Known server quirk: llama-cpp-python 0.3.36 aligns echoed prompt log-probs one
position late when the model adds no BOS token (SmolLM2): it reports, for token i,
log p(token_i) under the distribution computed *at* token i rather than before it.
Token counts and offsets are right; the values are only meaningful for models that
prepend BOS (Gemma, Llama-2/3). vLLM follows the OpenAI semantics.

Every request is independent and its result lands at its own index, so a retried
request can neither be lost nor counted twice. Retries back off exponentially (with
jitter, honouring Retry-After) on 429, 5xx, timeouts and connection errors. The API
key comes from an environment variable and never appears in logs or reprs.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import threading
import time
from typing import Any, Sequence

import requests

from gecko_jax.errors import GeckoError
from gecko_jax.llm.base import LLM, Capabilities, UnsupportedError, check_pairs, cut_at_stop

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class ServerError(GeckoError):
    """The server failed a request for good (after retries, or with a 4xx)."""


class OpenAICompatLLM(LLM):
    """Client for an OpenAI-compatible server.

    Args:
      base_url: the API root holding `completions` (e.g. http://127.0.0.1:8000/v1);
        a bare http://host:port gets `/v1` appended.
      model: model name sent with each request; None asks the server's /models.
      api_key_env: environment variable holding the key (unset: no Authorization).
      max_concurrency: requests in flight at once.
      timeout: seconds per request (connect and read).
      max_retries: retries per request after the first try.
      backoff, max_backoff: first and largest wait between tries, in seconds.
      supports_logprobs: whether /completions honours echo + logprobs.
    """

    def __init__(self, base_url: str, model: str | None = None, *,
                 api_key_env: str = "OPENAI_API_KEY", max_concurrency: int = 4,
                 timeout: float = 120.0, max_retries: int = 8, backoff: float = 0.5,
                 max_backoff: float = 30.0, supports_logprobs: bool = True):
        url = base_url.rstrip("/")
        if url.count("/") == 2:  # scheme://host[:port] only
            url += "/v1"
        self.base_url = url
        self._model = model
        self._key = os.environ.get(api_key_env) or None
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.name = f"openai-compat:{url}"
        self.capabilities = Capabilities(generate=True, score=supports_logprobs, chat=True,
                                         seeded=True)
        self._local = threading.local()
        self.stats = {"requests": 0, "retries": 0}
        self._stats_lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatLLM({self.base_url!r}, model={self._model!r})"

    # ------------------------------------------------------------------- HTTP

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            if self._key:
                s.headers["Authorization"] = f"Bearer {self._key}"
            self._local.session = s
        return s

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def request(self, method: str, path: str, payload: dict | None = None) -> dict:
        """One API call with retries; returns the decoded JSON body."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        wait = self.backoff
        for attempt in range(self.max_retries + 1):
            self._count("requests")
            reason = None
            try:
                resp = self._session().request(method, url, json=payload, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as err:
                reason, retry_after = type(err).__name__, None
                self._local.session = None  # drop pooled connections to a dead server
            else:
                if resp.status_code < 300:
                    try:
                        return resp.json()
                    except ValueError as err:
                        raise ServerError(f"{path}: response is not JSON") from err
                if resp.status_code not in RETRY_STATUS:
                    raise ServerError(f"{path}: HTTP {resp.status_code}: {resp.text[:300]}")
                reason, retry_after = f"HTTP {resp.status_code}", resp.headers.get("Retry-After")
            if attempt == self.max_retries:
                raise ServerError(f"{path}: gave up after {attempt + 1} tries ({reason})")
            self._count("retries")
            delay = min(self.max_backoff, wait) * (0.5 + random.random())
            if retry_after and retry_after.replace(".", "", 1).isdigit():
                delay = max(delay, float(retry_after))
            log.info("%s %s: %s; retry %d in %.1fs", method, path, reason, attempt + 1, delay)
            time.sleep(delay)
            wait *= 2
        raise AssertionError("unreachable")

    def _map(self, fn, items: Sequence[Any]) -> list:
        """fn over items with at most max_concurrency in flight; results in input order."""
        if len(items) <= 1 or self.max_concurrency == 1:
            return [fn(i, x) for i, x in enumerate(items)]
        with concurrent.futures.ThreadPoolExecutor(self.max_concurrency) as pool:
            futures = [pool.submit(fn, i, x) for i, x in enumerate(items)]
            return [f.result() for f in futures]

    @property
    def model(self) -> str:
        if self._model is None:
            data = self.request("GET", "models").get("data") or []
            if not data:
                raise ServerError(f"{self.base_url}/models lists no model; pass model=")
            self._model = data[0]["id"]
        return self._model

    # --------------------------------------------------------------- generate

    def generate(self, prompts, max_new_tokens=64, temperature=0.0, top_p=1.0, stop=None,
                 seed=0) -> list[str]:
        model = self.model
        stop = list(stop or [])

        def one(i, prompt):
            body = {"model": model, "max_tokens": max_new_tokens, "temperature": temperature,
                    "top_p": top_p, "seed": seed + i}
            if stop:
                body["stop"] = stop
            if isinstance(prompt, str):
                out = self.request("POST", "completions", dict(body, prompt=prompt))
                text = out["choices"][0]["text"]
            else:
                out = self.request("POST", "chat/completions", dict(body, messages=list(prompt)))
                text = out["choices"][0]["message"]["content"] or ""
            return cut_at_stop(text, stop)[0]

        return self._map(one, list(prompts))

    # ------------------------------------------------------------------ score

    def score(self, prefixes, continuations, per_token=False) -> list:
        """Prompt log-probs of the continuation tokens via /completions echo + logprobs.

        The server tokenizes prefix + continuation as one text; tokens from the
        first one that ends after the prefix are counted (character offsets).
        """
        check_pairs(prefixes, continuations)
        if not self.capabilities.score:
            raise UnsupportedError(f"{self.name}: this endpoint has no prompt log-probs "
                                   "(needs /completions with echo + logprobs)")
        model = self.model

        def one(i, pair):
            prefix, cont = pair
            text = prefix + cont
            body = {"model": model, "prompt": text, "max_tokens": 1, "echo": True,
                    "logprobs": 1, "temperature": 0.0}
            lp = self.request("POST", "completions", body)["choices"][0].get("logprobs")
            if not lp or lp.get("token_logprobs") is None:
                raise UnsupportedError(f"{self.name}: no prompt log-probs in the response")
            vals = []
            for tok, off, val in zip(lp["tokens"], lp["text_offset"], lp["token_logprobs"]):
                if off >= len(text):
                    break  # the generated token after the echo
                if off + len(tok) > len(prefix) or off >= len(prefix):
                    if val is None:
                        raise ServerError("the first token of the text has no log-prob: "
                                          "score needs a non-empty prefix")
                    vals.append(float(val))
            return vals if per_token else float(sum(vals))

        return self._map(one, list(zip(prefixes, continuations)))
