"""Argument helpers shared by every verb: config files, `--set` overrides, `--json`, errors."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from rlad.engine.run import dumps


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="config file; --set overrides are applied on top")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config field, e.g. --set trainer.steps=200 (repeatable)",
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
    if not rows:
        return
    columns = columns or list(rows[0])

    def fmt(value):
        if isinstance(value, float):
            return floatfmt.format(value)
        return "" if value is None else str(value)

    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def lazy(module: str, name: str) -> Callable:
    """Import a command's implementation only when it runs, so `rlad --help` stays fast."""

    def run(args):
        import importlib

        from rlad.errors import RladError

        try:
            target = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
                raise RladError(f"this command is not implemented in rlad yet ({module} is missing)") from None
            raise RladError(
                f"this command needs the optional package {exc.name!r}; install the matching extra, "
                f"e.g. pip install 'rlad[export,serve,vlm]'"
            ) from None
        return getattr(target, name)(args)

    return run
