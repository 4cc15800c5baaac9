"""Run folders that are safe to share and describe themselves (issue 16): no unpickling of code, a
one-line error for a damaged model.pt, the backbone's provenance recorded and warned about, `rlad test`
defaulting to the run's dataset, no half-made run after a failed fit (the `--help` examples:
tests/cli/test_help_examples.py)."""

from __future__ import annotations

import json
import pathlib
import warnings

import pytest
import torch

from rlad.cli.main import main
from rlad.workflows import detection

RANDOM = ["image_size=64", "model.backbone.weights=random"]


@pytest.fixture
def run(tiny_patchcore_run):
    return tiny_patchcore_run


def _cli(capsys, *argv) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _copy_run(run, target):
    target.mkdir()
    for path in run.iterdir():
        if path.is_file():
            (target / path.name).write_bytes(path.read_bytes())
    return target


class _RunsCode:
    """Unpickling this creates a file: proof that loading executed code from the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_loading_a_run_never_runs_pickled_code(run, tmp_path, capsys):
    shared = _copy_run(run, tmp_path / "shared")
    marker = tmp_path / "code_ran"
    payload = torch.load(shared / "model.pt", weights_only=True)
    payload["state"] = _RunsCode(marker)
    torch.save(payload, shared / "model.pt")
    for verb in (["test", shared], ["predict", shared, run.parent / "tiny" / "test", "--out", tmp_path / "p"]):
        code, out, err = _cli(capsys, *verb)
        assert code == 2 and "Traceback" not in err
        assert f"{shared / 'model.pt'}: not loaded: it holds a " in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_damaged_model_file_is_a_one_line_error(run, tmp_path, capsys):
    damaged = _copy_run(run, tmp_path / "damaged")
    data = (damaged / "model.pt").read_bytes()
    (damaged / "model.pt").write_bytes(data[: len(data) // 3])
    code, out, err = _cli(capsys, "test", damaged)
    assert code == 2 and "Traceback" not in err
    assert err.strip() == f"rlad: error: {damaged / 'model.pt'}: damaged or not an rlad file (RuntimeError); rerun the command that wrote it"


def test_the_run_records_its_backbone_and_warns_when_it_was_random(run, tmp_path, capsys):
    loaded = detection.load_run(run)
    [backbone] = loaded.backbones
    assert backbone == {"arch": "mobilenet_v2", "weights": "random", "pretrained": False, "source": "random",
                        "file": None, "sha256": None}
    assert loaded.train_size == {"median_hw": [48, 64], "min_hw": [48, 64], "max_hw": [48, 64]}
    assert json.loads((run / "metrics.json").read_text())["fit"]["backbones"] == [backbone]
    with pytest.warns(UserWarning, match="mobilenet_v2 backbone has RANDOM weights"):
        main(["test", str(run), "--no-report", "--json"])
    with pytest.warns(UserWarning, match="mobilenet_v2 backbone has RANDOM weights"):
        main(["predict", str(run), str(run.parent / "tiny" / "test" / "hole"), "--out", str(tmp_path / "p")])
    # A model without a backbone records none and warns about nothing.
    other = run.parent / "pixelstats"
    detection.fit("pixelstats", run.parent / "tiny", other, detection.build_config("pixelstats", None, ["image_size=64"]))
    assert detection.load_run(other).backbones == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detection.test(other, report=False)


def test_test_defaults_to_the_runs_dataset_and_warns_on_another_category(run, tmp_path, capsys, tiny_mvtec_factory):
    code, out, err = _cli(capsys, "test", run, "--json", "--no-report")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["data"] == str((run.parent / "tiny").resolve()) and metrics["n_test"] == 7
    other = tiny_mvtec_factory(tmp_path / "other", seed=3)
    with pytest.warns(UserWarning, match="was fitted on 'tiny' .* testing it on 'other'"):
        detection.test(run, other, report=False)


def test_a_failed_fit_leaves_no_stub(tiny_mvtec, tmp_path, monkeypatch):
    from rlad.models.patchcore import PatchCore

    def broken_fit(self, data, run=None):
        raise RuntimeError("killed mid-fit")

    monkeypatch.setattr(PatchCore, "fit", broken_fit)
    cfg = detection.build_config("patchcore", None, RANDOM)
    with pytest.raises(RuntimeError):
        detection.fit("patchcore", tiny_mvtec, tmp_path / "new", cfg)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep")
    with pytest.raises(RuntimeError):
        detection.fit("patchcore", tiny_mvtec, existing, cfg)
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]  # only what was there before
    with pytest.raises(RuntimeError):  # and a rerun with other options is not refused by a leftover
        detection.fit("patchcore", tiny_mvtec, existing, detection.build_config("patchcore", None, RANDOM + ["seed=3"]))
