"""Shared by every benchmark script: markdown tables and appending results to docs/benchmarks.md."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
SHARED_DATA = ROOT.parent / "shared" / "data"
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v2-b0353104.pth"


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.4f}") -> str:
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])

    def fmt(value):
        if isinstance(value, float):
            return floatfmt.format(value)
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine_line() -> str:
    try:
        import torch

        torch_version = torch.__version__
        threads = torch.get_num_threads()
    except ImportError:
        torch_version, threads = "n/a", 0
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch_version} "
        f"({threads} threads), Python {platform.python_version()}"
    )


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def append_section(title: str, body: str, command: str | None = None) -> None:
    """Append one dated section (title, exact command, machine, body) to docs/benchmarks.md."""
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    if not BENCHMARKS_MD.exists():
        BENCHMARKS_MD.write_text(
            "# Benchmarks\n\nEvery section below was appended by a script in `benchmarks/`; the exact "
            "command is written with it. Newer sections come last.\n"
        )
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    text = (
        f"\n## {title} ({stamp})\n\n"
        f"Command: `{command or command_line()}`  \n"
        f"Machine: {machine_line()}\n\n{body.rstrip()}\n"
    )
    with open(BENCHMARKS_MD, "a") as handle:
        handle.write(text)
