"""Shared by the NBS-family tests (test_nbs.py, nbs/): one copy of what they all build.

`nbs_short_cycles` (session): `--set` items for a few short NBS cycles on 64 px images, the base
test_nbs.py and nbs/test_learning.py add their own steps and predictor input to.
`quiet_fit(method, data, out, settings) -> RunDir`: the config from `settings` (`--set` items), fitted
through the harness without the random-weight backbone warning.
`interrupt_after_checkpoint(fit, after=2)`: calls `fit()` as if the user pressed Ctrl-C right after its
`after`-th checkpoint was saved (asserts it stopped there); checkpoints save normally afterwards.
`killed_cli_fit_rerun(method, data, run, settings, steps, timeout) -> (killed_log, final_log)`: `rlad fit
METHOD` with `settings` and `model.steps=STEPS`, SIGKILLed at its first checkpoint (`killed_cli_fit`),
then the same command again, which must exit 0, say it is resuming and write model.pt; the rows of
run/log.jsonl when it was killed and when the rerun ended.
"""

from __future__ import annotations

import json
import subprocess
import warnings

import pytest


@pytest.fixture(scope="session")
def nbs_short_cycles() -> list[str]:
    return [
        "image_size=64",
        "model.profile_size=64",
        "model.predictor_grid=32",
        "model.reset_every=10",
        "model.window=4",
        "model.sampler_update_from=6",
        "model.sampler_update_to=9",
        "model.batch_patches=8",
        "model.ae_width=8",
        "model.bottleneck=16",
        "model.augment_copies=2",
        "model.labeled_per_cycle=2",
        "model.predictor_buffer=8",
    ]


@pytest.fixture(scope="session")
def quiet_fit():
    from rlad.workflows import detection as api

    def fit(method: str, data, out, settings: list[str]):
        cfg = api.build_config(method, None, list(settings))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random-weight backbone warning
            return api.fit(method, data, out, cfg)

    return fit


@pytest.fixture
def interrupt_after_checkpoint(monkeypatch):
    from rlad.engine.run import RunDir

    def interrupt(fit, after: int = 2) -> None:
        original = RunDir.save_checkpoint
        calls = {"n": 0}

        def save_then_crash(self, state, step, keep=2):
            path = original(self, state, step, keep)
            calls["n"] += 1
            if calls["n"] == after:
                raise KeyboardInterrupt
            return path

        monkeypatch.setattr(RunDir, "save_checkpoint", save_then_crash)
        try:
            with pytest.raises(KeyboardInterrupt):
                fit()
        finally:
            monkeypatch.setattr(RunDir, "save_checkpoint", original)

    return interrupt


@pytest.fixture
def killed_cli_fit_rerun(killed_cli_fit):
    def log_rows(run) -> list[dict]:
        return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]

    def kill_and_rerun(method: str, data, run, settings: list[str], steps: int, timeout: float):
        argv = ["fit", method, "--data", str(data), "--out", str(run)]
        for item in [s for s in settings if not s.startswith("model.steps=")] + [f"model.steps={steps}"]:
            argv += ["--set", item]
        command, env = killed_cli_fit(argv, run)
        killed = log_rows(run)
        finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        assert finished.returncode == 0, finished.stderr[-2000:]
        assert "resuming" in finished.stderr
        assert (run / "model.pt").is_file()
        return killed, log_rows(run)

    return kill_and_rerun
