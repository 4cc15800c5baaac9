"""A killed training command resumes where its last checkpoint left it and ends exactly where an
uninterrupted run ends (issue 16: "every training command that runs for minutes checkpoints and
resumes"). The other commands have theirs beside their code: nbs and refine (a real SIGKILL through the
CLI, tests/models/test_nbs.py, tests/models/nbs/test_refiner.py), ae (tests/models/test_ae.py), grpo
(tests/rl/test_loop.py, tests/cli/test_grounding.py), fit hf (tests/policies/hf_vlm/test_warm_start.py).
PatchCore and PaDiM have no training loop to checkpoint: docs/methods.md gives their fit times."""

from __future__ import annotations

import pytest
import torch

from rlad.data.pairs.builders import build_pairs
from rlad.engine import RunDir
from rlad.workflows import grounding

SMALL = ["policy.image_size=64", "policy.width=16", "policy.bins=16", "policy.weights=random", "train.epochs=4",
         "train.checkpoint_every=1"]


def _states_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not (isinstance(y, dict) and _states_equal(x, y)):
                return False
        elif isinstance(x, torch.Tensor):
            if not (isinstance(y, torch.Tensor) and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


def test_a_killed_compact_warm_start_resumes_to_the_uninterrupted_result(tiny_mvtec, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    build_pairs(tiny_mvtec, pairs, synthetic=4, reference="random")
    cfg = grounding.build_fit_config(None, SMALL, 0)
    whole = grounding.fit_compact(pairs, tmp_path / "whole", cfg)

    cut = grounding.fit_compact(pairs, tmp_path / "cut", grounding.build_fit_config(None, SMALL, 0))
    # As if killed during epoch 4 after the checkpoint of epoch 3 was lost too: only epoch 2's is left.
    cut.model_path.unlink()
    [last] = [p for p in cut.checkpoints() if p.name.endswith("00000003.pt")]
    last.unlink()
    resumed = grounding.fit_compact(pairs, tmp_path / "cut", grounding.build_fit_config(None, SMALL, 0))
    epochs = [row["epoch"] for row in RunDir(resumed.path).read_log() if "epoch" in row]
    assert epochs == [1, 2, 3, 4, 3, 4]  # epochs 3 and 4 ran again from epoch 2's checkpoint, nothing more
    assert _states_equal(RunDir(whole.path).load_model()["state"], RunDir(resumed.path).load_model()["state"])


def test_a_warm_start_that_fails_before_its_first_checkpoint_leaves_no_run(tiny_mvtec, tmp_path, monkeypatch):
    pairs = tmp_path / "pairs.jsonl"
    build_pairs(tiny_mvtec, pairs, synthetic=2, reference="random")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grounding, "fit_supervised", killed)
    with pytest.raises(KeyboardInterrupt):
        grounding.fit_compact(pairs, tmp_path / "run", grounding.build_fit_config(None, SMALL, 0))
    assert not (tmp_path / "run").exists()  # nothing half-made for `rlad ground` to misread
