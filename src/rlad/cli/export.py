"""`rlad export RUN --format onnx --out FILE.onnx`: a fitted pixel run as one ONNX graph, checked
against PyTorch on real images before it is written (`workflows.export`)."""

from __future__ import annotations

import argparse

from rlad.cli.common import add_json_arg, print_json

EXAMPLES = """examples:
  rlad export runs/patchcore --out patchcore.onnx
  rlad export runs/padim --out padim.onnx --images more/photos/ --images-max 16
  rlad predict patchcore.onnx photos/ --out onnx_predictions  # the exported file works as RUN

The graph takes float32 images (batch, 3, height, width) in [0, 1] of any size and batch, and holds
the resize, normalisation, backbone, scoring and smoothing; its outputs are the raw maps and scores and
the same on the run's 0-1 scale (0.5 = the run's thresholds, also written as metadata "rlad").
The export fails and writes nothing unless ONNX Runtime and PyTorch agree on real images (the run's
validation and test images, or --images): normalised maps within 1e-4 and identical labels.
Methods: patchcore, padim, ae, nbs, refine. docs/deploy.md has the details."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export a fitted pixel run to ONNX (with a parity check)",
                            epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN", help="a run folder from rlad fit")
    parser.add_argument("--out", metavar="FILE.onnx", required=True, help="the file to write")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="output format (default: onnx)")
    parser.add_argument("--images", metavar="PATH", nargs="+",
                        help="real images (files or folders) for the parity check (default: the run's "
                             "validation images and some of its test images)")
    parser.add_argument("--images-max", type=int, default=8, metavar="N",
                        help="at most this many parity images (default: 8)")
    add_json_arg(parser)
    parser.set_defaults(func=run_export)


def run_export(args) -> int:
    from dataclasses import asdict

    from rlad.workflows.export import export

    result = export(args.run, args.out, fmt=args.format, images=args.images, max_images=args.images_max)
    if args.json:
        print_json({"out": str(result.path), "method": result.method, "bytes": result.bytes,
                    "seconds": round(result.seconds, 2), "parity": asdict(result.parity)})
    else:
        print(f"exported {result.method} -> {result.path} ({result.bytes / 2**20:.1f} MiB, {result.seconds:.1f} s)")
        print(result.parity.describe())
    return 0
