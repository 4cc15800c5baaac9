"""How long `make demo` takes (issue 16's goal: at most 5 minutes on 2 cores, from an installed venv).

Runs `python -m rlad.demo` in a fresh interpreter on a fresh output folder (so nothing is reused), with
the backbone weights from ../shared/weights when that folder exists (as `make demo` does), and records
the wall time of every step it prints, the total, the machine's load before and after, and the
results table. Raw results go to benchmarks/results/demo_time-<stamp>.json and a section is appended
to docs/benchmarks.md. Only a run on a quiet machine is a benchmark figure: the load is recorded so a
reader can tell.

    python benchmarks/demo_time.py                 # make demo
    python benchmarks/demo_time.py --full          # make demo-full
    python benchmarks/demo_time.py --quick --no-append   # smoke test of this script (seconds, no record)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, append_section  # noqa: E402

GOAL_S = 300.0
STEP = re.compile(r"^== (\d+)\. (.+)$")
TOOK = re.compile(r"^\s+\((\d+(?:\.\d+)?) s\)$")


def parse_steps(stderr: str) -> list[dict]:
    steps, current = [], None
    for line in stderr.replace("\r", "\n").splitlines():
        if match := STEP.match(line):
            current = {"step": int(match.group(1)), "title": match.group(2)}
        elif (match := TOOK.match(line)) and current:
            steps.append({**current, "seconds": float(match.group(1))})
            current = None
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="time make demo-full instead")
    parser.add_argument("--quick", action="store_true", help="the demo's smoke profile with random weights")
    parser.add_argument("--no-append", action="store_true", help="do not write results (smoke test)")
    args = parser.parse_args()

    env = {**os.environ, "RLAD_PROGRESS": "0"}
    shared = ROOT.parent / "shared" / "weights"
    if shared.is_dir():
        env.setdefault("RLAD_BACKBONE_WEIGHTS", str(shared))
    extra = ["--full"] if args.full else ["--quick", "--random-weights"] if args.quick else []
    with tempfile.TemporaryDirectory(prefix="rlad-demo-time-") as tmp:
        command = [sys.executable, "-m", "rlad.demo", "--out", str(Path(tmp) / "demo"), *extra]
        load_before = os.getloadavg()
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
        total = time.perf_counter() - started
        load_after = os.getloadavg()
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return done.returncode
    steps = parse_steps(done.stderr)
    table = done.stdout.split("\nDone in")[0].strip()
    result = {
        "profile": "full" if args.full else "smoke" if args.quick else "demo",
        "total_s": round(total, 1),
        "goal_s": GOAL_S,
        "cores": os.cpu_count(),
        "load_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "steps": steps,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
    }
    print(json.dumps(result, indent=2))
    if args.no_append:
        return 0
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M")
    raw = ROOT / "benchmarks" / "results" / f"demo_time-{stamp}.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({**result, "stdout": done.stdout}, indent=2) + "\n")
    rows = "\n".join(f"| {s['step']}. {s['title']} | {s['seconds']:.1f} |" for s in steps)
    verdict = "within" if total <= GOAL_S else "OVER"
    body = (
        f"`{' '.join(['python -m rlad.demo', *extra])}` at {result['commit']}: **{total:.0f} s** in all "
        f"({verdict} the {GOAL_S:.0f} s goal), load average {load_before[0]:.1f} before and {load_after[0]:.1f} after "
        f"(a benchmark only when both are near 0). Raw: `{raw.relative_to(ROOT)}`.\n\n"
        f"| step | seconds |\n|---|---|\n{rows}\n\n```\n{table}\n```\n"
    )
    append_section(f"make demo wall time ({result['profile']} profile)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
