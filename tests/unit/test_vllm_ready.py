"""vllm_ready's smoke checks on recorded vLLM responses (tests/fixtures/vllm/README.md), and its waiting logic
against a tiny local HTTP server that behaves like vLLM starting up."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from helpers import FIXTURES, ROOT, load_library_module, run_module

vllm_ready = load_library_module("vllm_ready")
MODULE = ROOT / "plugins" / "modules" / "vllm_ready.py"


def recorded(name):
    return json.loads((FIXTURES / "vllm" / name).read_text())


def test_recorded_completion_passes_and_a_short_one_fails():
    body = recorded("completion-tiny-llama.json")
    ok, details = vllm_ready.check_smoke("generate", 200, body, {"max_tokens": 8})
    assert ok and details == {"completion_tokens": 8, "finish_reason": "length"}
    ok, reason = vllm_ready.check_smoke("generate", 200, body, {"max_tokens": 16})
    assert not ok and "8 token(s), asked 16" in reason


def test_recorded_embeddings_have_minilm_width():
    body = recorded("embeddings-minilm.json")
    ok, details = vllm_ready.check_smoke("embed", 200, body, {"embedding_dim": 384})
    assert ok and details == {"vectors": 3, "dimension": 384}
    ok, reason = vllm_ready.check_smoke("embed", 200, body, {"embedding_dim": 768})
    assert not ok and "width [384]" in reason


def test_recorded_rerank_scores_every_document():
    ok, details = vllm_ready.check_smoke("rerank", 200, recorded("rerank-tiny-reranker.json"), {})
    assert ok and len(details["scores"]) == 3
    partial = recorded("rerank-tiny-reranker.json")
    partial["results"] = partial["results"][:2]
    assert vllm_ready.check_smoke("rerank", 200, partial, {})[0] is False


def test_a_dead_engine_fails_the_smoke_check():
    ok, reason = vllm_ready.check_smoke("generate", 500, recorded("error-engine-dead.json"), {"max_tokens": 8})
    assert not ok and "500" in reason and "EngineCore" in reason


class FakeVllm(BaseHTTPRequestHandler):
    """Refuses /health with 503 until `ready_at`, then serves models and completions like vLLM."""
    ready_at = 0.0
    refused = 0  # 503s served: proof that the module polled before the server was ready

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        if time.time() < self.ready_at:
            FakeVllm.refused += 1
            self._send(503, {"error": "starting"})
        elif self.path == "/health":
            self._send(200, {})
        else:
            self._send(200, recorded("models-tiny-llama.json"))

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(200, recorded("completion-tiny-llama.json"))

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    server = HTTPServer(("127.0.0.1", 0), FakeVllm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def instance(port, **extra):
    return {"name": "tiny-llama", "port": port, "startup_timeout": 10, "container": {"name": ""},
            "smoke": {"task": "generate", "served_model_name": "tiny-llama"}, **extra}


def test_waits_for_health_then_proves_the_server(fake_server, monkeypatch):
    # No wall-clock bounds on the module's own figures: a loaded machine (CI, vLLM servers starting beside it)
    # delays the module's start by a varying amount. What must hold is the order of events.
    FakeVllm.refused = 0
    FakeVllm.ready_at = time.time() + 1.0
    started = time.time()
    result = run_module(MODULE, {"instances": [instance(fake_server.server_port)]})
    elapsed = time.time() - started
    assert result["failed_instances"] == []
    ready = result["instances"][0]
    assert ready["ready"] is True and ready["smoke"]["completion_tokens"] == 8
    assert FakeVllm.refused >= 1, "the module never saw the server starting"
    assert started + elapsed >= FakeVllm.ready_at
    assert 0 <= ready["health_to_ready"] <= ready["seconds"] <= elapsed


def test_probe_once_reports_without_waiting(fake_server):
    FakeVllm.ready_at = time.time() + 60
    started = time.time()
    result = run_module(MODULE, {"instances": [instance(fake_server.server_port)], "wait": False})
    assert time.time() - started < 5
    assert result["instances"][0]["ready"] is False and "503" in result["instances"][0]["error"]


def test_a_refused_port_with_no_container_fails_fast_with_the_reason():
    result = run_module(MODULE, {"instances": [instance(1, startup_timeout=30, container={"name": "no-such"})]})
    assert result["failed"] is True
    assert "not running" in result["msg"] and "tiny-llama" in result["msg"]
