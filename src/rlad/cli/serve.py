"""`rlad serve RUN`: the inspection server (`rlad.serve`) for a pixel run, an exported .onnx file or
a grounding run."""

from __future__ import annotations

import argparse

from rlad.cli.common import add_config_args

EXAMPLES = """examples:
  rlad serve runs/patchcore                       # http://127.0.0.1:8000/ : drop an image on the page
  rlad serve patchcore.onnx --port 9000 --set workers=2 --set max_upload_mb=5
  curl -F image=@photo.png http://127.0.0.1:8000/v1/predict
  rlad serve runs/compact                         # a grounding run: POST /v1/ground (reference, query)

Endpoints: POST /v1/predict (multipart field "image"; ?overlay=true adds the overlay panel),
POST /v1/ground (fields "reference", "query"), GET /healthz, GET / (the page). Limits (--set):
max_upload_mb, max_pixels, allowed_types, timeout_s, workers, queue, threads. Bad uploads get a 4xx
with {"error": ...}. Bound to 127.0.0.1 unless --host says otherwise. docs/deploy.md has the details."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="serve a run over HTTP: JSON API and a page to drop images on",
                            epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN", help="a pixel run folder, an exported .onnx file or a grounding run")
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000; 0 picks a free one)")
    add_config_args(parser)
    parser.set_defaults(func=run_serve)


def run_serve(args) -> int:
    from rlad.serve.config import build_config
    from rlad.serve.server import serve

    overrides = list(args.overrides)
    if args.host is not None:
        overrides.append(f"host={args.host}")
    if args.port is not None:
        overrides.append(f"port={args.port}")
    serve(args.run, build_config(args.config, overrides))
    return 0
