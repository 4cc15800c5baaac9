"""Argument helpers shared by every verb: config files, `--set` overrides, `--json`, printing."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rlad.engine.run import dumps
from rlad.tables import text_table


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="config file; --set overrides are applied on top")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config field, e.g. --set seed=1 (repeatable)",
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout and nothing else there"
    )


def print_json(obj: Any) -> None:
    sys.stdout.write(dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def print_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.4f}") -> None:
    """A plain aligned text table on stdout."""
    sys.stdout.write(text_table(rows, columns, floatfmt))
