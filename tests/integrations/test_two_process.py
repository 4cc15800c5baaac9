"""The TRL route in two CPU processes (torch.distributed, gloo): data-parallel GRPO ends with the same
parameters in both processes, and they moved."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from rlad.data.pairs.records import write_pairs
from rlad.engine import RunDir

SCRIPT = Path(__file__).with_name("two_process_trl.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_end_with_identical_parameters(warm_run, square_pairs, tmp_path):
    from rlad.workflows.grounding import load_policy

    records = [dataclasses.replace(r, box=(4, 4, 28, 28), defect_type="square") for r in square_pairs[:4]]
    pairs = write_pairs(records, tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "RLAD_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                           str(SCRIPT), str(warm_run), str(pairs), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(out / f"params_rank{r}.pt") for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    start = {n: p.detach() for n, p in load_policy(warm_run).model.named_parameters() if p.requires_grad}
    assert ranks[0]["params"].keys() == ranks[1]["params"].keys() == start.keys()
    for name in start:
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
    assert any(not torch.equal(ranks[0]["params"][n], start[n]) for n in start)
    steps = [line for line in RunDir(out).read_log() if "loss" in line]
    assert [line["step"] for line in steps] == [1, 2]  # the main process alone writes the log
    assert sum(line["rlad/groups_resampled"] for line in steps) > 0  # regenerated in lock-step on both
