"""The bounded worker pool and the per-request timeout, with a deliberately slow inspector in a real
uvicorn server on loopback (in this process, so the slowness is ours to choose)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rlad.serve.config import ServeConfig


class SlowInspector:
    kind = "pixel"
    fields = ("image",)

    def __init__(self, seconds: float):
        self.seconds = seconds

    def describe(self) -> dict:
        return {"kind": self.kind}

    def handle(self, files, cfg, overlay=False) -> dict:
        time.sleep(self.seconds)
        return {"bytes": len(files["image"][0])}


def _serve(cfg: ServeConfig, seconds: float):
    import uvicorn

    from rlad.serve.app import create_app
    from rlad.serve.server import free_port

    port = free_port("127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(create_app(SlowInspector(seconds), cfg), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}/"


@pytest.fixture
def slow_server(request):
    cfg, seconds = request.param
    server, thread, url = _serve(cfg, seconds)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def _post(url: str) -> httpx.Response:
    return httpx.post(f"{url}v1/predict", files={"image": ("a.png", b"x", "image/png")}, timeout=30)


@pytest.mark.parametrize("slow_server", [(ServeConfig(workers=1, queue=1), 3.0)], indirect=True)
def test_requests_beyond_the_workers_and_the_queue_are_refused_at_once(slow_server):
    """Margins wide enough for a busy 2-core host: each request holds the worker 4 s."""
    with ThreadPoolExecutor(4) as pool:
        first = [pool.submit(_post, slow_server) for _ in range(2)]
        time.sleep(0.5)  # both admitted: one computing, one waiting
        refused = _post(slow_server)
        # Refused without waiting for a worker: the admitted ones (3 s of work each) are still running.
        pending = sum(not f.done() for f in first)
        statuses = sorted(f.result().status_code for f in first)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1" and "busy" in refused.json()["error"]
    assert pending == 2
    assert statuses == [200, 200]


@pytest.mark.parametrize("slow_server", [(ServeConfig(timeout_s=0.3), 1.0)], indirect=True)
def test_a_request_past_the_timeout_gets_504_and_the_next_one_is_served(slow_server):
    response = _post(slow_server)
    assert response.status_code == 504 and "0.3 s" in response.json()["error"]
    health = httpx.get(f"{slow_server}healthz", timeout=30)
    assert health.status_code == 200
