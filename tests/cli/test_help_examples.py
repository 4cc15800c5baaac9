"""Every example in every command's `--help` runs (issue 16: `--set trainer.steps=200` failed for every
method). The examples are read from the parser itself, so an edited or a new example is checked too,
and they run in the order printed (fit, then test and predict on the runs fit made) in a folder laid
out as the examples assume: `path/to/category` and `other/category` are tiny datasets, `photos/`
holds images, `a.png` and `b.png` are images. Backbones load "ImageNet" files from
$RLAD_BACKBONE_WEIGHTS, as a user's would; here they are seeded random state dicts under
torchvision's file names (nothing is downloaded). The only change to an example is a few settings
appended so it runs in seconds on 48 x 64 images (`SPEED`), after the example's own, so every key an
example sets is still parsed and validated."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from rlad.cli.main import build_parser, main
from rlad.models.backbones import MobileNetV2
from rlad.models.resnet import resnet18
from rlad.models.weights import PRETRAINED

# Appended to each fit example (later --set wins): smaller images and shorter training, nothing else.
SPEED = {
    "patchcore": ["image_size=64"],
    "padim": ["image_size=64"],
    "nbs": ["image_size=64", "model.profile_size=64", "model.predictor_grid=32", "model.predictor_crop=16",
            "model.steps=20", "model.reset_every=10", "model.window=4", "model.sampler_update_from=6",
            "model.sampler_update_to=9"],
    "ae": ["image_size=64", "model.steps=10"],
}
# The verbs whose --help has examples; one that gains examples must be added here (and made runnable).
VERBS_WITH_EXAMPLES = {"fit", "test", "predict", "export", "serve"}
# Verbs whose examples run until stopped: parsed, not run (tests/serve runs real servers).
SERVING = {"serve"}


def help_examples(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], list[str]]]:
    """(command path, argv) of every `rlad ...` line in the epilogs of `parser` and its sub-commands,
    in the order `--help` prints them."""
    found = []
    for line in (parser.epilog or "").splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("rlad "):
            found.append((prefix, shlex.split(line)[1:]))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += help_examples(sub, (*prefix, name))
    return found


def _weights_folder(folder: Path) -> Path:
    """Seeded random state dicts under torchvision's file names, standing in for the ImageNet files."""
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(MobileNetV2().state_dict(), folder / PRETRAINED["mobilenet_v2"].filename)
    torch.save(resnet18().state_dict(), folder / PRETRAINED["resnet18"].filename)
    return folder


@pytest.fixture
def example_folder(tmp_path, monkeypatch, tiny_mvtec_factory) -> Path:
    data = tiny_mvtec_factory(tmp_path / "path" / "to" / "category", n_per_type=8, n_test_good=6)
    tiny_mvtec_factory(tmp_path / "other" / "category", seed=5)
    shutil.copytree(data / "test" / "hole", tmp_path / "photos")
    shutil.copytree(data / "test" / "good", tmp_path / "more" / "photos")
    shutil.copy(data / "test" / "scratch" / "000.png", tmp_path / "a.png")
    shutil.copy(data / "test" / "good" / "000.png", tmp_path / "b.png")
    monkeypatch.setenv("RLAD_BACKBONE_WEIGHTS", str(_weights_folder(tmp_path / "weights")))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_examples_are_found():
    examples = help_examples(build_parser())
    assert {path[0] for path, _ in examples} == VERBS_WITH_EXAMPLES
    fitted = {argv[1] for path, argv in examples if path == ("fit",)}
    assert fitted == set(SPEED), "a fit example for a method without SPEED settings (add them above)"


def test_every_help_example_runs_as_written(example_folder, capsys):
    parser = build_parser()
    for path, argv in help_examples(parser):
        if path[0] in SERVING:
            parser.parse_args(argv)  # exits (SystemExit) on an option the parser does not know
            continue
        command = list(argv)
        if path == ("fit",):
            command += [item for setting in SPEED[argv[1]] for item in ("--set", setting)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "testing it on another category": the example means it
            code = main(command)
        captured = capsys.readouterr()
        assert code == 0, f"`rlad {shlex.join(argv)}` exited {code}: {captured.err[-1500:]}"
        assert "Traceback" not in captured.err
        if "--json" in argv:
            json.loads(captured.out)  # --json prints one JSON object and nothing else
    folder = example_folder
    for method in SPEED:
        assert (folder / "runs" / method / "model.pt").is_file()
    assert (folder / "runs" / "patchcore" / "report.html").is_file() and (folder / "out" / "report.html").is_file()
    rows = [json.loads(line) for line in (folder / "predictions" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in rows) == ["a.png", "b.png"]  # the last predict example's
    assert all(r["image_threshold"] == 0.6 and r["raw_map"] for r in rows)
    assert (folder / "patchcore.onnx").is_file() and (folder / "padim.onnx").is_file()
    onnx_rows = (folder / "onnx_predictions" / "predictions.jsonl").read_text().splitlines()
    assert len(onnx_rows) == len(list((folder / "photos").iterdir()))
