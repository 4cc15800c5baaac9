"""Shared by every benchmark script: appending results to docs/benchmarks.md, one process per measurement."""

from __future__ import annotations

import datetime as _dt
import json
import os
import resource
import subprocess
import tempfile
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
SHARED_DATA = ROOT.parent / "shared" / "data"
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v2-b0353104.pth"

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

# --- one measurement per fresh interpreter ---------------------------------------------------------
# Each job runs in its own process so that its peak RSS and timings are its own. A script calls
# `spawn(script, spec)` in the driver and `run_child(spec_json, jobs)` when invoked with --child.

def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

def run_child(spec_json: str, jobs: dict) -> None:
    """Child side: set threads, run `jobs[spec['kind']]`, print one 'RESULT {...}' line."""
    spec = json.loads(spec_json)
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    load_before = os.getloadavg()[0]
    result = jobs[spec["kind"]](spec)
    result["load_1min"] = f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"
    print("RESULT " + json.dumps(result), flush=True)

def spawn(script: str, spec: dict, threads: int | None, tag: str = "bench", env: dict | None = None) -> dict | None:
    """Driver side: run `script --child SPEC` in a fresh interpreter; its last 'RESULT {...}' line
    is the answer (None, with a message, when the job failed)."""
    spec = {**spec, "threads": threads}
    child_env = {**os.environ, "RLAD_PROGRESS": os.environ.get("RLAD_PROGRESS", "0"), "PYTHONWARNINGS": "ignore", **(env or {})}
    if threads:
        child_env["OMP_NUM_THREADS"] = str(threads)
    shown = {k: v for k, v in spec.items() if k not in ("kind", "threads")}
    print(f"[{tag}] {spec['kind']}: {json.dumps(shown)}", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], stdout=subprocess.PIPE, text=True, env=child_env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"[{tag}] job failed (exit {proc.returncode}); continuing", file=sys.stderr)
        return None
    result = json.loads(lines[-1][len("RESULT ") :])
    print(f"[{tag}]   -> {json.dumps(result)}", file=sys.stderr, flush=True)
    return result

def work_dir(path: str | None, prefix: str) -> tuple[Path, "tempfile.TemporaryDirectory | None"]:
    """The benchmark's scratch folder: `path` (kept) or a temporary one (the holder cleans it up)."""
    if path:
        work = Path(path)
        work.mkdir(parents=True, exist_ok=True)
        return work, None
    holder = tempfile.TemporaryDirectory(prefix=prefix)
    return Path(holder.name), holder
