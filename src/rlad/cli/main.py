"""The `rlad` console script. Each verb group lives in its own module and registers itself here;
modules hold no logic of their own beyond argument parsing (the library does the work)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from rlad import __version__
from rlad.errors import RladError

VERB_MODULES = ["data", "fit", "grounding", "questions", "export", "serve"]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="rlad",
        description="Industrial visual anomaly localization driven by reinforcement learning.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rlad {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        importlib.import_module(f"rlad.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage error (or --help): report its exit code
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        # A verb group without its sub-verb (e.g. `rlad data`) prints that group's help.
        (getattr(args, "_group_parser", None) or parser).print_help(sys.stderr)
        return 2
    plain_format = warnings.formatwarning
    # A warning reads like an error: one line, no source path or code excerpt.
    warnings.formatwarning = lambda message, *_, **__: f"rlad: warning: {message}\n"
    try:
        result = args.func(args)
    except RladError as exc:
        print(f"rlad: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rlad: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rlad ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        warnings.formatwarning = plain_format
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
