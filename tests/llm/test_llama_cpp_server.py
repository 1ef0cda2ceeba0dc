"""OpenAICompatLLM against a real llama.cpp server (llama-cpp-python[server]) on 127.0.0.1.

Needs the wheel built by scripts/build_llama_cpp.sh (CI: .ci/run does it first).
Run: pytest -m integration tests/llm/test_llama_cpp_server.py
"""

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

pytestmark = pytest.mark.integration

llama_cpp = pytest.importorskip("llama_cpp", reason="run scripts/build_llama_cpp.sh first")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m llama_cpp.server` serving the SmolLM2 GGUF; start/kill/restart."""

    def __init__(self, model, port):
        self.model, self.port, self.proc = model, port, None
        self.url = f"http://127.0.0.1:{port}/v1"

    def start(self, timeout=120):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048",
             "--model_alias", "smollm2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("llama.cpp server exited at start-up")
            try:
                if requests.get(self.url + "/models", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        raise RuntimeError("llama.cpp server did not come up")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def server():
    from gecko_jax import assets

    srv = Server(assets.smollm2_gguf(), _free_port())
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture()
def client(server):
    from gecko_jax.llm.openai_compat import OpenAICompatLLM

    return OpenAICompatLLM(server.url, max_concurrency=3, timeout=60, max_retries=10,
                           backoff=0.3, max_backoff=4.0)


def test_generate_completion_and_chat(client):
    assert client.model == "smollm2"
    texts = client.generate(["The capital of France is",
                             [{"role": "user", "content": "Name a fruit."}]], max_new_tokens=16)
    assert "Paris" in texts[0]
    assert texts[1].strip()
    again = client.generate(["The capital of France is"], max_new_tokens=16)
    assert again[0] == texts[0]  # greedy is deterministic
    cut = client.generate(["The capital of France is"], max_new_tokens=16, stop=["."])[0]
    assert "." not in cut and texts[0].startswith(cut)


def test_score_returns_continuation_token_logprobs(client, smollm2_engine):
    prefixes = ["The capital of France is", "Tea is"]
    conts = [" Paris.", " a drink made from leaves"]
    per_tok = client.score(prefixes, conts, per_token=True)
    summed = client.score(prefixes, conts)
    for c, vals, s in zip(conts, per_tok, summed):
        # One value per continuation token (the server tokenizes the same way we do).
        assert len(vals) == len(smollm2_engine.tokenizer.encode(c, add_bos=False))
        assert all(v <= 0 and math.isfinite(v) for v in vals)
        assert s == pytest.approx(sum(vals))


def test_retries_survive_server_kill_and_restart(server, client):
    prompts = [f"Write one sentence about the number {i}." for i in range(12)]
    reference = client.generate(prompts, max_new_tokens=24)
    box = {}

    def run():
        box["out"] = client.generate(prompts, max_new_tokens=24)

    retries_before = client.stats["retries"]
    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.0)  # some requests done, some in flight
    server.kill()
    time.sleep(2.0)  # requests now fail with connection errors and back off
    server.start()
    t.join(timeout=300)
    assert not t.is_alive()
    assert client.stats["retries"] > retries_before  # the outage was really hit
    assert box["out"] == reference  # nothing lost, duplicated or out of order
