import json

import pytest
import torch

from rlad.engine import RunDir, atomic_torch_save
from rlad.errors import ConfigError


def test_checkpoints_keep_the_newest_and_skip_corrupt(tmp_path):
    run = RunDir(tmp_path / "run").create()
    for step in (1, 2, 3):
        run.save_checkpoint({"step": step}, step, keep=2)
    assert [p.name for p in run.checkpoints()] == ["step_00000002.pt", "step_00000003.pt"]
    # A checkpoint cut short (e.g. by a full disk) must not stop a resume: fall back to the previous one.
    run.checkpoints()[-1].write_bytes(b"truncated")
    assert run.latest_checkpoint() == {"step": 2}


def test_atomic_save_leaves_no_temp_files(tmp_path):
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "m.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    assert torch.equal(torch.load(tmp_path / "m.pt")["w"], torch.ones(2))


def test_log_and_metrics_merge(tmp_path):
    run = RunDir(tmp_path).create()
    run.log({"step": 1, "loss": 0.5})
    with open(run.log_path, "a") as handle:
        handle.write('{"step": 2, "lo')  # a line cut by a kill
    run.log({"step": 3})
    assert [r["step"] for r in run.read_log()] == [1, 3]
    run.save_metrics({"a": 1})
    run.save_metrics({"b": 2}, key="test:x")
    assert json.loads(run.metrics_path.read_text()) == {"a": 1, "test:x": {"b": 2}}


def test_require_model_messages(tmp_path):
    with pytest.raises(ConfigError, match="run directory not found"):
        RunDir(tmp_path / "nope").require_model()
    with pytest.raises(ConfigError, match="not an rlad run directory"):
        RunDir(tmp_path).require_model()
    run = RunDir(tmp_path)
    run.save_config({"method": "x"})
    with pytest.raises(ConfigError, match="did not finish"):
        run.require_model()


def test_undefined_metrics_are_written_as_null(tmp_path):
    import numpy as np

    run = RunDir(tmp_path).create()
    run.save_metrics({"image_auroc": float("nan"), "x": np.float32(np.inf), "ok": 0.5})
    assert json.loads(run.metrics_path.read_text()) == {"image_auroc": None, "x": None, "ok": 0.5}


def test_run_files_hold_arrays_as_tensors_and_load_without_unpickling_code(tmp_path):
    import numpy as np

    from rlad.engine.run import load_torch_file

    state = {
        "float": np.arange(6, dtype=np.float32).reshape(2, 3), "bool": np.array([True, False]),
        "int": np.array([[1, -2]], dtype=np.int64), "half": np.ones(3, np.float16), "empty": np.zeros((0, 4), np.uint8),
        "scalar": np.float64(2.5), "nested": [{"x": np.int16(3)}, (np.zeros(1),)], "tensor": torch.ones(2),
        "generator": np.random.default_rng(0).bit_generator.state,
    }
    atomic_torch_save(state, tmp_path / "state.pt")
    raw = torch.load(tmp_path / "state.pt", weights_only=True)  # plain torch can read it safely
    assert isinstance(raw["float"]["__ndarray__"], torch.Tensor)
    back = load_torch_file(tmp_path / "state.pt")
    for key in ("float", "bool", "int", "half", "empty"):
        assert back[key].dtype == state[key].dtype and np.array_equal(back[key], state[key])
    assert back["scalar"] == 2.5 and back["nested"][0]["x"] == 3 and isinstance(back["nested"][1], tuple)
    assert back["generator"] == state["generator"]
    with pytest.raises(TypeError, match=r"state.obj: a Namespace cannot be stored"):
        import argparse

        atomic_torch_save({"obj": argparse.Namespace()}, tmp_path / "bad.pt")


def test_files_of_older_versions_with_pickled_arrays_still_load(tmp_path):
    import numpy as np

    from rlad.engine.run import load_torch_file

    torch.save({"bank": np.ones((2, 2), np.float32), "n": np.int64(4)}, tmp_path / "old.pt")
    old = load_torch_file(tmp_path / "old.pt")
    assert np.array_equal(old["bank"], np.ones((2, 2), np.float32)) and old["n"] == 4


def test_files_written_atomically_get_the_usual_permissions_not_private_ones(tmp_path):
    # A run folder is shared: model.pt, config.yaml and report.html must be readable by whoever may read
    # any other file the user writes there (mkstemp alone would leave them 0600).
    import os

    from rlad.engine.run import atomic_write_bytes

    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "report.html", b"<html>")
        atomic_torch_save({"w": torch.ones(1)}, tmp_path / "model.pt")
    finally:
        os.umask(previous)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"report.html": 0o644, "model.pt": 0o644}
