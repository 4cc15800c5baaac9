"""`rlad serve`: an HTTP server with one HTML page for a trained run."""

from __future__ import annotations

import argparse

from rlad.cli.common import lazy


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="serve a run over HTTP (FastAPI) with a browser page")
    serve.add_argument("run", metavar="RUN")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=lazy("rlad.serve.app", "cli_serve"))
