"""How long `make demo` takes (issue 16's goal: at most 5 minutes on 2 cores, from an installed venv).

Runs `python -m rlad.demo` in a fresh interpreter on a fresh output folder (nothing is reused), with
the backbone weights from ../shared/weights when that folder exists (as `make demo` does), and
records one row per step as the demo finishes it: its wall time, the CPU time the demo process used
in it, and the machine's 1-minute load average at its end; then a total row (wall, CPU, load before
and after, the results table the demo printed and the report path). The machine is shared: on a busy
host the wall time is inflated by others' work, while the CPU seconds are the demo's own; the
section says which (a wall time is a benchmark figure only when the load stayed near 0).

    python benchmarks/demo_time.py                 # make demo
    python benchmarks/demo_time.py --full          # make demo-full
    python benchmarks/demo_time.py --quick --no-append   # smoke test of this script (seconds, no section)
    python benchmarks/demo_time.py --from-results benchmarks/results/demo_time-DATE.jsonl   # re-render

Raw rows: benchmarks/results/demo_time-DATE.jsonl; the section goes to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common  # noqa: E402
from benchmarks._common import ROOT, Results, failed_row, failures_text, finish, ok_rows, portable  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402

GOAL_S = 300.0
STEP = re.compile(r"^== (\d+)\. (.+)$")
TOOK = re.compile(r"^\s+\((\d+(?:\.\d+)?) s\)$")
REPORT = re.compile(r"Open the report: (\S+)")


def parse_steps(stderr: str) -> list[dict]:
    """(step, title, seconds) of every step the demo closed, from its stderr."""
    steps, current = [], None
    for line in stderr.replace("\r", "\n").splitlines():
        if match := STEP.match(line):
            current = {"step": int(match.group(1)), "title": match.group(2)}
        elif (match := TOOK.match(line)) and current:
            steps.append({**current, "seconds": float(match.group(1))})
            current = None
    return steps


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` and its waited-for children (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(v) for v in fields[11:15]) / ticks  # utime, stime, cutime, cstime


def load_1min() -> float:
    return round(os.getloadavg()[0], 2)


def measure(results: Results, extra: list[str], env: dict) -> None:
    """Run the demo once, adding a row per step as it closes and a total row (or a failed row)."""
    with tempfile.TemporaryDirectory(prefix="rlad-demo-time-") as tmp:
        command = [sys.executable, "-m", "rlad.demo", "--out", str(Path(tmp) / "demo"), *extra]
        load_before = load_1min()
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, bufsize=1)
        stdout_parts: list[str] = []
        reader = threading.Thread(target=lambda: stdout_parts.append(process.stdout.read()), daemon=True)
        reader.start()
        stderr_lines, current, cpu_at_start = [], None, 0.0
        for line in process.stderr:
            stderr_lines.append(line)
            for piece in line.replace("\r", "\n").splitlines():
                if match := STEP.match(piece):
                    current, cpu_at_start = {"step": int(match.group(1)), "title": match.group(2)}, cpu_seconds(process.pid)
                elif (match := TOOK.match(piece)) and current:
                    cpu_now = cpu_seconds(process.pid)
                    results.add({**current, "seconds": float(match.group(1)), "cpu_s": round(cpu_now - cpu_at_start, 1),
                                 "load_1min": load_1min()})
                    current = None
        cpu_total = cpu_seconds(process.pid)
        process.wait()
        reader.join()
        total = time.perf_counter() - started
    stdout, stderr = "".join(stdout_parts), "".join(stderr_lines)
    keys = {"step": "total", "title": "python -m rlad.demo " + " ".join(extra)}
    if process.returncode != 0:
        results.add(failed_row(keys, stderr or f"exit {process.returncode}"))
        print(stderr[-3000:], file=sys.stderr)
        return
    report = REPORT.search(stdout)
    results.add({**keys, "seconds": round(total, 1), "cpu_s": round(cpu_total, 1), "load_1min": load_1min(),
                 "load_before": load_before, "table": stdout.split("\nDone in")[0].strip(),
                 "report": Path(report.group(1)).name if report else None})


def render(results: Results) -> str:
    meta, rows = results.meta, results.rows
    steps = [{**r, "title": portable(r["title"])} for r in ok_rows(rows) if r["step"] != "total"]
    totals = [r for r in ok_rows(rows) if r["step"] == "total"]
    lines = [
        f"Profile `{meta.get('profile')}`; goal: at most {GOAL_S:.0f} s on 2 cores from an installed venv "
        f"(this machine: {meta.get('cores')} cores, shared with other developers' jobs); demo threads: "
        f"{meta.get('threads', 'torch default')}. seconds = wall time of the step as the demo printed it; cpu_s = CPU "
        "time the demo process used in it; load_1min = the machine's 1-minute load average at the step's end (above ~2 "
        "other work was competing for the 2 cores, and the wall times are inflated). With 1 thread, cpu_s is about "
        "the wall time the step would take alone on one core, so the total cpu_s bounds a quiet 2-core run from above; "
        "with 2 threads on a busy host cpu_s also counts the spinning of a thread whose partner was descheduled.",
        "",
    ]
    if steps:
        lines.append(markdown_table(steps, ["step", "title", "seconds", "cpu_s", "load_1min"], floatfmt="{:.1f}"))
    if totals:
        total = totals[-1]
        verdict = "within" if total["seconds"] <= GOAL_S else "OVER"
        lines += ["", f"**Total: {total['seconds']:.0f} s wall ({verdict} the {GOAL_S:.0f} s goal), {total['cpu_s']:.0f} s "
                      f"CPU**; load average {total['load_before']:.1f} before, {total['load_1min']:.1f} after. The demo "
                      f"ended with this table and the path of its report ({total.get('report')}):",
                  "", "```", total["table"], "```"]
    if not rows or rows[-1]["step"] != "total":
        lines += ["", "**The demo did not finish in this run** (stopped before its end); the rows above are the steps it "
                      "completed."]
    return "\n".join(lines) + "\n" + failures_text(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="time make demo-full instead")
    parser.add_argument("--quick", action="store_true", help="the demo's smoke profile with random weights")
    parser.add_argument("--no-append", action="store_true", help="do not write a section to docs/benchmarks.md")
    parser.add_argument("--from-results", metavar="JSONL", help="render the section of an earlier run's results file")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch/OpenMP threads of the demo (default: torch's own, one per core). On a busy host, "
                             "1 makes cpu_s the demo's real work: with 2 threads, a thread waiting for its "
                             "descheduled partner spins and its CPU seconds count too")
    args = parser.parse_args()

    if args.no_append:  # a smoke test of this script leaves no results file in the repository either
        _common.RESULTS_DIR = Path(tempfile.mkdtemp(prefix="rlad-demo-time-results-"))
    if args.from_results:
        results = Results("demo_time", args.from_results)
    else:
        env = {**os.environ, "RLAD_PROGRESS": "0"}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        shared = ROOT.parent / "shared" / "weights"
        if shared.is_dir():
            env.setdefault("RLAD_BACKBONE_WEIGHTS", str(shared))
        extra = ["--full"] if args.full else ["--quick", "--random-weights"] if args.quick else []
        results = Results("demo_time")
        results.note(profile="full" if args.full else "smoke" if args.quick else "demo", cores=os.cpu_count(),
                     goal_s=GOAL_S, threads=args.threads or "torch default")
        measure(results, extra, env)
    return finish(f"make demo wall time ({results.meta.get('profile')} profile)", render(results), results,
                  append=not args.no_append, fail_on_failed_rows=True)


if __name__ == "__main__":
    sys.exit(main())
