from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlad.cli.main import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["data", "check", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_prints_counts_table(tiny_mvtec, capsys):
    (tiny_mvtec / "README.md").write_text("about")
    code, out, err = _run(capsys, str(tiny_mvtec))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("tiny")
    assert lines[1].split() == ["split", "type", "images", "masks"]
    rows = [line.split() for line in lines[3:]]
    assert ["train", "good", "6", "0"] in rows
    assert ["test", "hole", "2", "2"] in rows
    assert ["total", "13", "4"] in rows
    assert "note: skipped 1 stray file(s): README.md" in out


def test_check_json(tiny_mvtec, capsys):
    code, out, err = _run(capsys, str(tiny_mvtec), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["valid"] is True and report["categories"] == ["tiny"]
    assert {"category": "tiny", "split": "test", "type": "scratch", "images": 2, "masks": 2} in report["counts"]
    assert report["notes"] == []


def test_check_several_categories(tmp_path, tiny_mvtec_factory, capsys):
    tiny_mvtec_factory(tmp_path / "bolt", n_train=2, n_test_good=1, defect_types=("bent",), n_per_type=1)
    tiny_mvtec_factory(tmp_path / "axle", n_train=3, n_test_good=2, defect_types=("chip",), n_per_type=2)
    code, out, _ = _run(capsys, str(tmp_path))
    assert code == 0
    assert out.index("axle") < out.index("bolt")
    assert out.count("split  type") == 2
    code, out, _ = _run(capsys, str(tmp_path), "--json")
    report = json.loads(out)
    assert report["categories"] == ["axle", "bolt"]
    assert {"category": "bolt", "split": "test", "type": "bent", "images": 1, "masks": 1} in report["counts"]


def test_check_several_categories_one_broken(tmp_path, tiny_mvtec_factory, capsys):
    tiny_mvtec_factory(tmp_path / "good_one")
    broken = tiny_mvtec_factory(tmp_path / "bad_one")
    (broken / "ground_truth/hole/000_mask.png").unlink()
    code, out, err = _run(capsys, str(tmp_path))
    assert code == 2 and out == ""
    assert "bad_one" in err and "test/hole/000.png: defect image without a mask" in err
    assert "good_one" not in err


def test_check_notes_soft_masks_once(tiny_mvtec, capsys):
    for kind in ("hole", "scratch"):
        for i in range(2):
            path = tiny_mvtec / f"ground_truth/{kind}/{i:03d}_mask.png"
            Image.fromarray((np.asarray(Image.open(path)) // 2 + 60).astype(np.uint8)).save(path)
    code, out, _ = _run(capsys, str(tiny_mvtec))
    assert code == 0
    assert out.count("non-binary") == 1 and "binarised 4 non-binary mask(s)" in out


# Every bad input: (name, how to break the tiny folder -> path to check, text the message must hold)
def _missing(root: Path) -> Path:
    return root.parent / "does_not_exist"


def _a_file(root: Path) -> Path:
    path = root.parent / "archive.zip"
    path.write_bytes(b"PK\x03\x04")
    return path


def _no_train_good(root: Path) -> Path:
    shutil.rmtree(root / "train")
    (root / "train").mkdir()
    return root


def _empty_train(root: Path) -> Path:
    for path in (root / "train/good").iterdir():
        path.unlink()
    return root


def _empty_test(root: Path) -> Path:
    shutil.rmtree(root / "test")
    shutil.rmtree(root / "ground_truth")
    (root / "test/good").mkdir(parents=True)
    return root


def _no_mask(root: Path) -> Path:
    (root / "ground_truth/scratch/000_mask.png").unlink()
    return root


def _wrong_mask_size(root: Path) -> Path:
    Image.new("L", (32, 48)).save(root / "ground_truth/hole/000_mask.png")
    return root


def _text_as_png(root: Path) -> Path:
    (root / "test/good/001.png").write_text("not really a picture")
    return root


def _cut_jpeg(root: Path) -> Path:
    path = root / "train/good/cut.jpg"
    Image.open(root / "train/good/000.png").convert("RGB").save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return root


def _cut_mask(root: Path) -> Path:
    path = root / "ground_truth/hole/001_mask.png"
    path.write_bytes(path.read_bytes()[:-40])
    return root


def _defects_in_train(root: Path) -> Path:
    shutil.copytree(root / "test/hole", root / "train/hole")
    return root


def _two_masks(root: Path) -> Path:
    shutil.copy(root / "ground_truth/hole/000_mask.png", root / "ground_truth/hole/000_mask.tif")
    return root


def _no_category(root: Path) -> Path:
    empty = root.parent / "nothing_here"
    (empty / "stuff").mkdir(parents=True)
    return empty


BAD_INPUTS = [
    (_missing, "does_not_exist: dataset folder not found"),
    (_a_file, "archive.zip: is a file, not a dataset folder"),
    (_no_train_good, "no train/good folder"),
    (_empty_train, "train/good: no images"),
    (_empty_test, "test/: no images"),
    (_no_mask, "test/scratch/000.png: defect image without a mask (expected ground_truth/scratch/000_mask.png)"),
    (
        _wrong_mask_size,
        "ground_truth/hole/000_mask.png: mask size 48x32 differs from its image test/hole/000.png size 48x64",
    ),
    (_text_as_png, "test/good/001.png: not an image"),
    (_cut_jpeg, "train/good/cut.jpg: corrupt or truncated image"),
    (_cut_mask, "ground_truth/hole/001_mask.png: corrupt or truncated image"),
    (_defects_in_train, "train/hole: only train/good is supported"),
    (_two_masks, "test/hole/000.png: several masks match"),
    (_no_category, "nothing_here: no train/good folder here or in any subfolder"),
]


@pytest.mark.parametrize("json_flag", [False, True])
@pytest.mark.parametrize("breaker, expected", BAD_INPUTS, ids=[b.__name__.strip("_") for b, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_message(tiny_mvtec, capsys, breaker, expected, json_flag):
    target = breaker(tiny_mvtec)
    code, out, err = _run(capsys, str(target), *(["--json"] if json_flag else []))
    assert code == 2
    assert out == ""
    assert err.startswith("rlad: error: ")
    assert expected in err
    assert "Traceback" not in err


def _console_command() -> list[str]:
    script = Path(sys.executable).with_name("rlad")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rlad"]


def test_console_script_exit_codes(tiny_mvtec):
    env = {**os.environ, "RLAD_PROGRESS": "0"}
    command = [*_console_command(), "data", "check", str(tiny_mvtec)]
    ok = subprocess.run(command, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "total" in ok.stdout
    _cut_jpeg(tiny_mvtec)
    _no_mask(tiny_mvtec)
    bad = subprocess.run(command, capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "defect image without a mask" in bad.stderr and "cut.jpg" in bad.stderr
    assert bad.stdout == ""


@pytest.mark.realdata
def test_check_real_folders_json(magnetic_tile, mpdd_metal_plate, capsys):
    code, out, _ = _run(capsys, str(magnetic_tile), "--json")
    assert code == 0
    report = json.loads(out)
    assert sum(r["images"] for r in report["counts"]) == 1340
    assert sum(r["masks"] for r in report["counts"]) == 388
    code, out, _ = _run(capsys, str(mpdd_metal_plate), "--json")
    assert code == 0
    counts = {(r["split"], r["type"]): r["images"] for r in json.loads(out)["counts"]}
    assert counts == {("train", "good"): 54, ("test", "good"): 26, ("test", "defect"): 71}
