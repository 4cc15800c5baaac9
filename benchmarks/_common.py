"""Shared by every benchmark script: raw results as JSONL under benchmarks/results/, sections in
docs/benchmarks.md that name the commit, the exact command and the results file they were rendered
from, and one process per measurement.

A script records each measurement as soon as it is made (`Results.add`, so a crash keeps what was
done), records a job that failed as a row with `status: failed` and its error (never dropped), and
renders its section from the results file, so `--from-results FILE` can render it again. A script given
a scratch folder (--work) holds it for its whole run (`hold_work`): a second run given the same folder
is refused at once."""

from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import json
import os
import resource
import subprocess
import time
import tempfile
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
RESULTS_DIR = ROOT / "benchmarks" / "results"
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
        f"{platform.processor() or platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, torch {torch_version} "
        f"({threads} threads), Python {platform.python_version()}"
    )


def cpu_model() -> str:
    """The CPU's name and whether it has bf16 units: hosts differ between sessions, and with them
    which arithmetic `auto` picks (rlad.models.nearest.cpu_has_bf16_units), so timings say which."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU unknown"
    from rlad.models.nearest import cpu_has_bf16_units

    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    bf16 = cpu_has_bf16_units()
    return f"{names[0] if names else 'CPU unknown'} ({'with' if bf16 else 'no'} bf16 units)"

def portable(text: str) -> str:
    """`text` without this machine's paths: the repository as ".", the shared data as "../shared",
    any other absolute path as $WORK/<last part> (a scratch folder of the reader's choice)."""
    import re

    text = text.replace(str(ROOT.parent / "shared"), "../shared").replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    return re.sub(r"(?<![\w.$])/(?:[\w.+-]+/)*([\w.+-]+)", r"$WORK/\1", text)


def command_line() -> str:
    return portable(" ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]))


def git_commit() -> str:
    """The commit the code ran at, marked when the working tree had uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks")
    return commit + (" (with uncommitted changes to src/ or benchmarks/)" if dirty else "")


class Results:
    """One benchmark run's raw rows: benchmarks/results/<name>-<date>.jsonl, one JSON object per line,
    the first holding the run's metadata (commit, command, machine)."""

    def __init__(self, name: str, path: Path | str | None = None):
        if path is not None:  # an earlier run's file (--from-results)
            self.path = Path(path)
            lines = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.meta, self.rows = lines[0].get("meta", {}), lines[1:]
            return
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.meta = {"commit": git_commit(), "command": command_line(), "machine": machine_line(),
                     "started": _dt.datetime.now().isoformat(timespec="seconds")}
        self.rows = []
        for suffix in range(1, 1000):  # two runs started in the same second must not share a file
            self.path = RESULTS_DIR / f"{name}-{stamp}{'' if suffix == 1 else f'-{suffix}'}.jsonl"
            try:
                with open(self.path, "x") as handle:
                    handle.write(json.dumps({"meta": self.meta}) + "\n")
                break
            except FileExistsError:
                continue

    def note(self, **meta) -> None:
        """Add to the run's metadata (the file's first line), e.g. the options a renderer needs."""
        self.meta.update(meta)
        lines = self.path.read_text().splitlines()
        lines[0] = json.dumps({"meta": self.meta}, default=str)
        self.path.write_text("\n".join(lines) + "\n")

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row, default=str) + "\n")
        return row

    @property
    def relative_path(self) -> str:
        try:
            return self.path.resolve().relative_to(ROOT).as_posix()
        except ValueError:
            return portable(str(self.path))


def failed_row(keys: dict, error: str) -> dict:
    """A measurement that did not come back: shown in the tables as failed, with its error."""
    last = error.strip().splitlines()[-1][:300] if error.strip() else "failed"
    return {**keys, "status": "failed", "error": last}


def ok_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") != "failed"]


def failures_text(rows: list[dict]) -> str:
    """The failed measurements as a list under the tables ("" when none failed)."""
    failed = [r for r in rows if r.get("status") == "failed"]
    if not failed:
        return ""
    lines = ["", "**Failed measurements** (no figures; the error as reported):", ""]
    lines += [f"- {', '.join(f'{k}={v}' for k, v in r.items() if k not in ('status', 'error'))}: {r['error']}"
              for r in failed]
    return "\n".join(lines) + "\n"


def append_section(title: str, body: str, results: "Results | None" = None, command: str | None = None) -> None:
    """Append one dated section (title, commit, exact command, results file, machine, body) to
    docs/benchmarks.md."""
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    if not BENCHMARKS_MD.exists():
        BENCHMARKS_MD.write_text(
            "# Benchmarks\n\nEvery section below was appended by a script in `benchmarks/`: it names the commit, the "
            "exact command with every override, and the raw results file under `benchmarks/results/` it was rendered "
            "from. A measurement that failed is listed as failed with its error. Newer sections come last.\n"
        )
    meta = results.meta if results is not None else {"commit": git_commit(), "command": command_line(),
                                                     "machine": machine_line()}
    stamp = meta.get("started", _dt.datetime.now().isoformat(timespec="minutes")).replace("T", " ")[:16]
    lines = [f"\n## {title} ({stamp})\n", f"Commit: `{meta['commit']}`  ", f"Command: `{command or meta['command']}`  "]
    if results is not None:
        lines.append(f"Results: `{results.relative_path}`  ")
    lines.append(f"Machine: {meta['machine']}\n")
    with open(BENCHMARKS_MD, "a") as handle:
        handle.write("\n".join(lines) + f"\n{body.rstrip()}\n")


def finish(title: str, text: str, results: Results, append: bool = True, fail_on_failed_rows: bool = False,
           command: str | None = None) -> int:
    """The end of a benchmark run: print the rendered section `text`, append it to docs/benchmarks.md
    under `title` unless `append` is false (`command`: as `append_section`), and return the exit code:
    0, or 1 when `fail_on_failed_rows` and a measurement failed."""
    print(text)
    if append:
        append_section(title, text, results=results, command=command)
    return 1 if fail_on_failed_rows and len(ok_rows(results.rows)) < len(results.rows) else 0


def int_list(text: str) -> list[int]:
    """argparse type of options like `--batches 1,8`: whole numbers, comma-separated."""
    try:
        return [int(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers separated by commas, like 1,8") from None


def fastest_alternating(predictors: dict, batches: list, rounds: int) -> dict[str, tuple[float, float]]:
    """Each predictor (name -> model with `.predict`) over every batch in turn, `rounds` times after
    one warm-up batch each, in this one process: the fastest round's (CPU seconds, wall seconds) per
    name. Alternating gives both the same load, so their ratio holds on a host whose speed moves."""
    import torch

    best = {name: (float("inf"), float("inf")) for name in predictors}
    with torch.no_grad():
        for model in predictors.values():
            model.predict(batches[0])  # warm-up: allocations, primitive caches, traced copies
        for _ in range(rounds):
            for name, model in predictors.items():
                started, started_cpu = time.perf_counter(), time.process_time()
                for batch in batches:
                    model.predict(batch)
                wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
                best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    return best


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

def spawn(script: str, spec: dict, threads: int | None, tag: str = "bench", env: dict | None = None) -> dict:
    """Driver side: run `script --child SPEC` in a fresh interpreter; its last 'RESULT {...}' line is the
    answer, or a failed row (`failed_row`) with the end of its error output when the job failed."""
    spec = {**spec, "threads": threads}
    child_env = {**os.environ, "RLAD_PROGRESS": os.environ.get("RLAD_PROGRESS", "0"), "PYTHONWARNINGS": "ignore", **(env or {})}
    if threads:
        child_env["OMP_NUM_THREADS"] = str(threads)
    shown = {k: v for k, v in spec.items() if k not in ("kind", "threads")}
    print(f"[{tag}] {spec['kind']}: {json.dumps(shown)}", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=child_env)
    sys.stderr.write(proc.stderr[-4000:])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"[{tag}] job failed (exit {proc.returncode}); continuing", file=sys.stderr)
        return failed_row({}, proc.stderr or f"exit {proc.returncode}")
    result = json.loads(lines[-1][len("RESULT ") :])
    print(f"[{tag}]   -> {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


_HELD_WORK: dict[Path, int] = {}  # folder -> the open lock file's descriptor, kept until the process ends


def hold_work(path: str | Path | None) -> None:
    """Hold the scratch folder `path` (given as --work) for the rest of this process: an exclusive
    lock on its file `.lock`, so that a second run given the same folder is refused at once (one line
    naming the folder, exit 2) instead of deleting this one's run folders under it. The operating system
    releases the lock when the process ends, however it ends. No-op for None (no --work: a temporary
    folder of this run's own) and for a folder this process already holds."""
    if not path:
        return
    folder = Path(path).resolve()
    if folder in _HELD_WORK:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        print(f"{Path(sys.argv[0]).name}: --work {folder} is in use by another run (pid {holder or '?'}); wait for it "
              "to end or give another folder", file=sys.stderr)
        raise SystemExit(2)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD_WORK[folder] = fd


def work_dir(path: str | None, prefix: str) -> tuple[Path, "tempfile.TemporaryDirectory | None"]:
    """The benchmark's scratch folder: `path` (kept, and held: `hold_work`) or a temporary one (the
    holder cleans it up)."""
    if path:
        hold_work(path)
        work = Path(path)
        return work, None
    holder = tempfile.TemporaryDirectory(prefix=prefix)
    return Path(holder.name), holder
