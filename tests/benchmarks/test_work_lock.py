"""Two benchmark runs given the same --work folder: while the first holds it, the second is refused at
once (one line naming the folder, exit 2, nothing written), instead of deleting the first's run
folders under it; once the first has ended, however it ended, the folder is free again.

The scripts run from a copy of benchmarks/ in a temporary folder, so whatever they would write (results
files, docs/benchmarks.md) lands there, and without ../shared they find no data or weights to start a
real measurement with."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every script with --work, and options that stop it soon after the lock even if the lock were missing.
SCRIPTS = {
    "nbs.py": ["--variants", "no-such-variant"],
    "speed.py": ["--methods", "no-such-method"],
    "baselines.py": ["--datasets", "no-such-dataset", "--no-scaling", "--no-append"],
    "export.py": ["--data", "no-such-folder", "--no-append"],
    "serve.py": ["--run", "no-such-run", "--data", "no-such-folder", "--no-append"],
    "predict_large.py": ["--side", "8", "--no-append"],
    "vlm.py": ["--shapes", "tiny", "--steps", "0", "--no-docs"],
    "grounding.py": ["--no-write"],
    "questions.py": ["--no-write"],
}
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "ignore", "RLAD_PROGRESS": "0"}


@pytest.fixture
def sandbox(tmp_path) -> Path:
    """A checkout-like folder holding a copy of the benchmark scripts (not their results)."""
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "benchmarks", root / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__"))
    return root


def hold(sandbox: Path, folder: Path) -> subprocess.Popen:
    """A process that holds `folder` as a benchmark run does (`hold_work`) until its stdin closes or it is killed."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from benchmarks import _common; "
            "_common.hold_work(sys.argv[2]); print('held', flush=True); sys.stdin.read()")
    process = subprocess.Popen([sys.executable, "-c", code, str(sandbox), str(folder)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=ENV)
    assert process.stdout.readline().strip() == "held"
    return process


def run_script(sandbox: Path, script: str, folder: Path) -> subprocess.CompletedProcess:
    """`script --work folder`; one that has not ended within a minute is killed with its workers, and fails."""
    command = [sys.executable, str(sandbox / "benchmarks" / script), "--work", str(folder), *SCRIPTS[script]]
    process = subprocess.Popen(command, cwd=sandbox, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{script} was still running after 60 s: it did not stop at the held folder")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_a_second_run_on_a_held_work_folder_is_refused_at_once(script, sandbox, tmp_path):
    folder = tmp_path / "work"
    first = hold(sandbox, folder)
    try:
        second = run_script(sandbox, script, folder)
        assert first.poll() is None  # the first run was left alone
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr[-2000:]  # one line, no traceback
    assert str(folder.resolve()) in lines[0] and "in use by another run" in lines[0]
    assert f"pid {first.pid}" in lines[0]
    assert not (sandbox / "benchmarks" / "results").exists() and not (sandbox / "docs").exists()
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing of the second run's in it


def test_the_folder_is_free_again_once_the_first_run_has_ended(sandbox, tmp_path):
    folder = tmp_path / "work"
    first = hold(sandbox, folder)
    first.send_signal(signal.SIGKILL)  # as a crashed or killed run: no clean-up of its own
    first.wait()
    second = run_script(sandbox, "nbs.py", folder)
    # It got past the lock to its own checks: the variant it was given does not exist.
    assert second.returncode == 2 and "unknown variant" in second.stderr, second.stderr[-2000:]
    assert "in use by another run" not in second.stderr
    third = hold(sandbox, folder)
    third.stdin.close()  # a run that ends normally lets go too
    assert third.wait(timeout=30) == 0
    fourth = hold(sandbox, folder)
    fourth.kill()
    fourth.wait()
