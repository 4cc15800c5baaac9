"""`rlad predict` as a new user runs it: every problem listed in issue 16 has a test here that shows it
fixed (one unreadable image, --out on a file or inside the input, hidden folders, saturated scores,
image and pixel decisions that disagree, thresholds, documented fields, odd sizes, outputs)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlad.cli.main import main
from rlad.workflows import detection
from rlad.workflows import predict as predict_mod

DOCS = Path(__file__).resolve().parents[2] / "docs" / "predict.md"


@pytest.fixture
def run(tiny_patchcore_run) -> Path:
    return tiny_patchcore_run


@pytest.fixture
def data(tiny_patchcore_run) -> Path:
    return tiny_patchcore_run.parent / "tiny"


def _predict(capsys, *argv: str) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")  # this run's backbone is random on purpose
        code = main(["predict", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def _copy_images(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.png")):
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_an_unreadable_image_is_listed_and_skipped_and_the_rest_succeed(run, data, tmp_path, capsys):
    folder = _copy_images(data / "test" / "hole", tmp_path / "in")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = (folder / "000.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    code, stdout, stderr = _predict(capsys, run, folder, "--out", out)
    assert code == 1  # some inputs failed: not a silent success
    assert "Traceback" not in stderr
    assert "broken.png" in stderr and "truncated.png" in stderr
    rows = _rows(out)
    assert sorted(Path(r["path"]).name for r in rows) == ["000.png", "001.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(Path(f["path"]).name for f in summary["failed"]) == ["broken.png", "truncated.png"]
    # No temporary file and no orphan outputs of the failed images.
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if n.endswith(".tmp") or "broken" in n or "truncated" in n]
    assert names == {"predictions.jsonl", "summary.json"} | {r[k] for r in rows for k in ("map", "mask", "overlay")}


def test_out_naming_a_file_is_a_one_line_error(run, data, tmp_path, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("mine")
    code, stdout, stderr = _predict(capsys, run, data / "test" / "hole", "--out", target)
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [f"rlad: error: --out {target}: is a file; give a folder for the predictions"]
    assert target.read_text() == "mine"


def test_out_inside_the_input_and_hidden_folders_are_never_read(run, data, tmp_path, capsys):
    folder = _copy_images(data / "test" / "hole", tmp_path / "in")
    _copy_images(data / "test" / "scratch", folder / ".ipynb_checkpoints")
    (folder / "._000.png").write_bytes(b"AppleDouble")
    out = folder / "predictions"
    for _ in range(2):  # the second pass would see the first pass's PNGs if the output folder were read
        code, _, stderr = _predict(capsys, run, folder, "--out", out)
        assert code == 0, stderr
        assert sorted(Path(r["path"]).name for r in _rows(out)) == ["000.png", "001.png"]
    assert not any(".ipynb_checkpoints" in r["path"] for r in _rows(out))


def test_scores_keep_their_order_and_decisions_agree(run, data, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, stderr = _predict(capsys, run, data / "test", "--out", out)
    assert code == 0, stderr
    rows = _rows(out)
    assert len(rows) == 7
    for row in rows:
        assert 0.0 <= row["score"] < 1.0
        assert row["anomalous"] == (row["score"] >= row["image_threshold"])
        assert bool(row["boxes"]) == row["anomalous"]  # never "normal" with boxes, never anomalous without
        mask = np.asarray(Image.open(out / row["mask"]))
        assert mask.any() == row["anomalous"]
    # Higher raw score, higher score: nothing saturates into a tie at 1.0.
    by_raw = sorted(rows, key=lambda r: r["raw_score"])
    assert [r["score"] for r in by_raw] == sorted(r["score"] for r in rows)
    assert len({r["score"] for r in rows}) == len({r["raw_score"] for r in rows})
    assert any(r["anomalous"] for r in rows) and not all(r["anomalous"] for r in rows)


def test_threshold_overrides_are_used_and_shown(run, data, tmp_path, capsys):
    code, stdout, _ = _predict(capsys, run, data / "test", "--out", tmp_path / "default")
    assert code == 0
    assert re.search(r"thresholds: image score >= 0\.5 \(raw [-\d.e]+\), pixel >= 0\.5 \(raw [-\d.e]+\)", stdout)
    default = _rows(tmp_path / "default")
    strict = tmp_path / "strict"
    code, stdout, _ = _predict(capsys, run, data / "test", "--out", strict, "--threshold", "0.999999",
                               "--pixel-threshold", "0.7")
    assert code == 0 and "image score >= 0.999999" in stdout and "set by the user" in stdout
    rows = _rows(strict)
    assert sum(r["anomalous"] for r in rows) < sum(r["anomalous"] for r in default)
    assert all(r["image_threshold"] == 0.999999 and r["pixel_threshold"] == 0.7 for r in rows)
    summary = json.loads((strict / "summary.json").read_text())
    loaded = detection.load_run(run)
    assert summary["thresholds"]["image_raw"] == pytest.approx(loaded.post.raw_from_score(0.999999))
    assert summary["thresholds"]["pixel_raw"] > loaded.post.pixel_threshold
    code, _, stderr = _predict(capsys, run, data / "test", "--out", tmp_path / "bad", "--threshold", "1.5")
    assert code == 2 and "--threshold 1.5" in stderr


def test_every_output_field_is_documented(run, data, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict(capsys, run, data / "test" / "hole", "--out", out, "--raw")[0] == 0
    documented = set(re.findall(r"`(\w+)`", DOCS.read_text()))
    row = _rows(out)[0]
    assert set(row) <= documented, set(row) - documented
    assert set(json.loads((out / "summary.json").read_text())) <= documented


def test_output_files_a_person_and_a_program_can_use(run, data, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = _predict(capsys, run, data / "test" / "hole", "--out", out, "--raw")
    assert code == 0 and "images/s" in stdout
    row = next(r for r in _rows(out) if r["anomalous"])
    score_map = Image.open(out / row["map"])
    assert score_map.mode.startswith("I;16") and score_map.size == (row["width"], row["height"])
    values = np.asarray(score_map).astype(np.float64) / 65535
    x0, y0, x1, y1 = row["boxes"][0]["box"]
    assert values[y0:y1, x0:x1].max() == pytest.approx(row["boxes"][0]["score"], abs=1e-4)
    raw = np.load(out / row["raw_map"])
    assert raw.shape == (row["height"], row["width"]) and raw.dtype == np.float32
    overlay = Image.open(out / row["overlay"])
    assert overlay.width > 2 * row["width"] and overlay.height > row["height"]  # image | heat map, title strip
    # The title strip is the decision's colour (red for anomalous).
    assert np.asarray(overlay.convert("RGB"))[2, 2].tolist() == [220, 30, 30]


def test_odd_sizes_are_refused_or_warned_and_huge_images_stay_bounded(run, data, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (1, 1), (128, 128, 128)).save(folder / "dot.png")
    base = np.asarray(Image.open(data / "test" / "hole" / "000.png"))
    Image.fromarray(np.tile(base, (1, 6, 1))).save(folder / "wide.png")  # 48 x 384: 6x the aspect ratio
    Image.fromarray(np.tile(base, (6, 5, 1))).save(folder / "large.png")  # 288 x 320
    monkeypatch.setattr(predict_mod, "MAX_OUTPUT_SIDE", 100)  # stands in for 2048 against an 8000 px photo
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="2 image.* far from the training images"):
        code = main(["predict", str(run), str(folder), "--out", str(out)])
    stderr = capsys.readouterr().err
    assert code == 1 and "dot.png" in stderr and "too small" in stderr
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert set(rows) == {"wide.png", "large.png"}
    assert rows["wide.png"]["warnings"] and "48x384" in rows["wide.png"]["warnings"][0]
    large = rows["large.png"]
    assert large["output_scale"] == pytest.approx(80 / 320)  # shrunk by 4, the first whole factor to <= 100
    assert Image.open(out / large["map"]).size == (80, 72)
    for item in large["boxes"]:  # boxes stay in the original image's pixels
        x0, y0, x1, y1 = item["box"]
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 288
