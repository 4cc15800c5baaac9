"""A real `rlad serve` process on loopback (`server(run, *set_args) -> base URL`), stopped after the
module; it serves `tiny_patchcore_run` (a random-weight PatchCore run on 64 px images)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def start_server(run: Path, *settings: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "RLAD_PROGRESS": "0", "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "rlad", "serve", str(run), "--port", "0"]
    for item in settings:
        command += ["--set", item]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    started = time.monotonic()
    line = process.stdout.readline()  # "serving RUN (kind) at URL", printed once it accepts connections
    if "serving" not in line:
        process.kill()
        raise AssertionError(f"the server did not start within {time.monotonic() - started:.0f} s: {line!r} "
                             f"{process.stderr.read()[-2000:]}")
    return process, line.rsplit(" at ", 1)[1].strip()


@pytest.fixture(scope="session", name="start_server")
def start_server_fixture():
    """`start_server(run, *set_args) -> (process, URL)` for a module's own server."""
    return start_server


@pytest.fixture(scope="module")
def server(tiny_patchcore_run):
    """The base URL of a server on `tiny_patchcore_run` with small limits (1 MiB uploads, 1 Mpx images)."""
    process, url = start_server(tiny_patchcore_run, "max_upload_mb=1", "max_pixels=1000000")
    yield url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
