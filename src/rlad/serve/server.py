"""Run the app with uvicorn: one process, bound to loopback unless told otherwise; the address it
listens on is printed on stdout (port 0 picks a free one) once it accepts connections."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from rlad.serve.config import ServeConfig


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def serve(run_path: str | Path, cfg: ServeConfig) -> None:
    import torch
    import uvicorn

    from rlad.engine import status
    from rlad.serve.app import create_app
    from rlad.serve.inspect import open_inspector

    threads = cfg.compute_threads()
    torch.set_num_threads(threads)
    inspector = open_inspector(run_path, threads)
    app = create_app(inspector, cfg)
    port = cfg.port or free_port(cfg.host)
    url = f"http://{'[' + cfg.host + ']' if ':' in cfg.host else cfg.host}:{port}/"

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                print(f"serving {run_path} ({inspector.kind}) at {url}", flush=True)

    status(f"serve: {cfg.workers} worker(s) x {threads} thread(s), queue {cfg.queue}, timeout {cfg.timeout_s:g} s, "
           f"uploads up to {cfg.max_upload_mb:g} MiB / {cfg.max_pixels} pixels")
    config = uvicorn.Config(app, host=cfg.host, port=port, log_level="warning", access_log=False,
                            timeout_keep_alive=5)
    try:
        AnnouncingServer(config).run()
    finally:
        app.state.pool.shutdown(wait=False, cancel_futures=True)
    sys.stdout.flush()
