"""The prior refiner (`rlad fit refine`) through the harness and the CLI on the tiny generated dataset:
fit, test and predict, a resume that equals an uninterrupted run, a real kill and rerun, and the old
name `supervised` for runs made before the rename."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rlad.errors import ConfigError, DataError
from rlad.workflows import detection as api
from rlad.workflows.predict import predict

TINY = [
    "image_size=64",
    "model.predictor_grid=32",
    "model.steps=120",  # 6 rounds of reset_every = 20 steps
    "model.augment_copies=2",
    "model.predictor_buffer=8",
    "model.checkpoint_every=1",
    "model.context.backbone.stages=[1]",
    "model.context.prior_stages=[1,2]",
    "model.context.backbone.weights=random",
]


@pytest.fixture
def fit_tiny(quiet_fit):
    """`fit_tiny(data, out, extra=(), method="refine")`: a fit on TINY plus `extra`."""
    return lambda data, out, extra=(), method="refine": quiet_fit(method, data, out, TINY + list(extra))


def test_fit_test_predict_and_a_resume_that_equals_an_uninterrupted_run(tiny_mvtec, tmp_path, fit_tiny,
                                                                        interrupt_after_checkpoint):
    whole = fit_tiny(tiny_mvtec, tmp_path / "whole")
    history = json.loads((whole.path / "refine_history.json").read_text())
    assert [row["cycle"] for row in history] == list(range(6))
    metrics = api.test(whole.path, tiny_mvtec)
    assert metrics["method"] == "refine" and metrics["n_excluded_labeled"] == 2
    assert metrics["pixel_auroc"] > 0.8
    rows = predict(whole.path, [tiny_mvtec / "test" / "hole" / "000.png"], tmp_path / "pred").rows
    assert (tmp_path / "pred" / rows[0]["map"]).is_file()

    interrupt_after_checkpoint(lambda: fit_tiny(tiny_mvtec, tmp_path / "cut"), after=2)
    resumed = fit_tiny(tiny_mvtec, tmp_path / "cut")
    log = resumed.read_log()
    assert [row["round"] for row in log if row.get("event") == "resume"] == [2]
    assert sorted(row["cycle"] for row in log if row.get("event") == "round") == list(range(6))

    whole, cut = api.load_run(whole.path), api.load_run(resumed.path)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert np.allclose(whole.model.predict(images).maps, cut.model.predict(images).maps, atol=1e-6)


def test_a_killed_cli_fit_resumes_when_rerun(tiny_mvtec, tmp_path, killed_cli_fit_rerun):
    # Enough rounds that the process is still training when the first checkpoint appears.
    _, log = killed_cli_fit_rerun("refine", tiny_mvtec, tmp_path / "run", TINY, steps=1000, timeout=600)
    resume = [row for row in log if row.get("event") == "resume"]
    assert len(resume) == 1 and resume[0]["round"] >= 1
    # No round was skipped (those after the last checkpoint before the kill ran twice).
    assert sorted({row["cycle"] for row in log if row.get("event") == "round"}) == list(range(1000 // 20))


def test_old_supervised_runs_still_load_and_refine_refuses_bad_input(tiny_mvtec, tmp_path, fit_tiny):
    old = fit_tiny(tiny_mvtec, tmp_path / "old", method="supervised")  # what `rlad fit supervised` wrote
    assert api.test(old.path, tiny_mvtec)["method"] == "supervised"
    with pytest.raises(DataError, match="--labeled-per-type"):
        fit_tiny(tiny_mvtec, tmp_path / "none", ["protocol.labeled_per_type=0"])
    with pytest.raises(ConfigError, match="context.kind=none"):
        fit_tiny(tiny_mvtec, tmp_path / "nothing", ["model.context.kind=none"])


def test_the_refiners_default_batches_give_nbs_number_of_predictor_updates(monkeypatch):
    """RefineConfig halves the batch and the epochs: per round the same optimiser steps as NBS's
    predictor per cycle (the docs' claim), counted on the real training loop."""
    from rlad.models.nbs import predictor as predictor_module
    from rlad.models.nbs.config import NBSConfig, RefineConfig
    from rlad.models.nbs.refiner import PriorRefiner
    from rlad.models.nbs.refiner import train_rounds

    assert PriorRefiner.Config is RefineConfig

    def updates(cfg) -> int:
        net = predictor_module.Predictor(2, (4,), (1,))
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
        steps = []
        monkeypatch.setattr(optimizer, "step", lambda *a, **k: steps.append(1))
        examples = [(torch.randn(2, 8, 8), torch.zeros(1, 8, 8)) for _ in range(cfg.predictor_buffer + 5)]
        cfg.steps = cfg.reset_every  # one round
        train_rounds(cfg, net, optimizer, examples, seed=0)
        return len(steps)

    refine, nbs = RefineConfig(), NBSConfig()
    assert refine.predictor_batch < nbs.predictor_batch
    assert updates(refine) == updates(nbs) > 0
