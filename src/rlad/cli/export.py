"""`rlad export`: ONNX export with a parity check against PyTorch."""

from __future__ import annotations

import argparse

from rlad.cli.common import lazy


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="export a run's model (ONNX)")
    export.add_argument("run", metavar="RUN")
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--out", metavar="FILE.onnx", required=True)
    export.set_defaults(func=lazy("rlad.export", "cli_export"))
