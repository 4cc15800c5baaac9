"""Discovering and validating MVTec-layout dataset folders (rlad.data.folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlad.data.folder import (
    MAX_LISTED_PROBLEMS,
    DatasetFolder,
    Sample,
    discover,
    discover_categories,
)
from rlad.data.images import load_mask
from rlad.errors import DataError, RladError


def _save(array: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _error(root: Path, verify: bool = False) -> str:
    with pytest.raises(DataError) as info:
        discover(root, verify=verify)
    assert isinstance(info.value, RladError) and info.value.exit_code == 2
    return str(info.value)


# --- a valid folder ---------------------------------------------------------------------------


def test_discovers_tiny_folder(tiny_mvtec):
    folder = discover(tiny_mvtec, verify=True)
    assert isinstance(folder, DatasetFolder)
    assert folder.category == "tiny"
    assert folder.defect_types == ["hole", "scratch"]
    assert [s.path.name for s in folder.train] == [f"{i:03d}.png" for i in range(6)]
    assert all(s.split == "train" and s.label == 0 and s.mask_path is None for s in folder.train)
    assert [(s.defect_type, s.path.name) for s in folder.test] == [
        ("good", "000.png"), ("good", "001.png"), ("good", "002.png"),
        ("hole", "000.png"), ("hole", "001.png"), ("scratch", "000.png"), ("scratch", "001.png"),
    ]  # fmt: skip
    for sample in folder.test:
        assert sample.label == (sample.defect_type != "good")
        assert sample.size == (48, 64)
        if sample.label:
            assert sample.mask_path == tiny_mvtec / "ground_truth" / sample.defect_type / f"{sample.path.stem}_mask.png"
    assert folder.notes == [] and folder.skipped == []
    assert folder.counts() == [
        {"split": "train", "type": "good", "images": 6, "masks": 0},
        {"split": "test", "type": "good", "images": 3, "masks": 0},
        {"split": "test", "type": "hole", "images": 2, "masks": 2},
        {"split": "test", "type": "scratch", "images": 2, "masks": 2},
    ]


def test_sample_is_frozen(tiny_mvtec):
    sample = discover(tiny_mvtec).train[0]
    assert isinstance(sample, Sample)
    with pytest.raises(AttributeError):
        sample.label = 1


def test_any_extension_in_any_case(tiny_mvtec):
    image = np.asarray(Image.open(tiny_mvtec / "train/good/000.png"))
    _save(image, tiny_mvtec / "train/good/upper.JPG")
    _save(image, tiny_mvtec / "train/good/mixed.Png")
    _save(image, tiny_mvtec / "train/good/bitmap.bmp")
    _save(image, tiny_mvtec / "train/good/tagged.TIFF")
    _save(image, tiny_mvtec / "train/good/short.jpeg")
    defect = np.asarray(Image.open(tiny_mvtec / "test/hole/000.png"))
    mask = np.asarray(Image.open(tiny_mvtec / "ground_truth/hole/000_mask.png"))
    _save(defect, tiny_mvtec / "test/hole/extra.Tif")
    _save(mask, tiny_mvtec / "ground_truth/hole/extra_mask.BMP")
    folder = discover(tiny_mvtec, verify=True)
    names = [s.path.name for s in folder.train]
    assert {"upper.JPG", "mixed.Png", "bitmap.bmp", "tagged.TIFF", "short.jpeg"} <= set(names)
    assert names == sorted(names)
    extra = next(s for s in folder.test if s.path.name == "extra.Tif")
    assert extra.mask_path.name == "extra_mask.BMP"


def test_mask_without_mask_suffix_is_accepted(tiny_mvtec):
    (tiny_mvtec / "ground_truth/hole/000_mask.png").rename(tiny_mvtec / "ground_truth/hole/000.png")
    sample = next(s for s in discover(tiny_mvtec).test if s.defect_type == "hole")
    assert sample.mask_path.name == "000.png"


def test_order_is_deterministic(tiny_mvtec):
    assert discover(tiny_mvtec) == discover(tiny_mvtec)


# --- bad folders ------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    message = _error(tmp_path / "nope")
    assert "nope" in message and "not found" in message


def test_path_is_a_file(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK")
    assert "is a file" in _error(tmp_path / "data.zip")


def test_no_train_good(tiny_mvtec):
    shutil.rmtree(tiny_mvtec / "train" / "good")
    message = _error(tiny_mvtec)
    assert "no train/good" in message and "MVTec" in message


def test_empty_train_good(tiny_mvtec):
    for path in (tiny_mvtec / "train" / "good").iterdir():
        path.unlink()
    (tiny_mvtec / "train" / "good" / "README.txt").write_text("nothing here")
    assert "train/good: no images" in _error(tiny_mvtec)


def test_test_without_images(tiny_mvtec):
    shutil.rmtree(tiny_mvtec / "test")
    (tiny_mvtec / "test" / "good").mkdir(parents=True)
    shutil.rmtree(tiny_mvtec / "ground_truth")
    assert "test/: no images" in _error(tiny_mvtec)
    shutil.rmtree(tiny_mvtec / "test")
    assert "test/: folder missing" in _error(tiny_mvtec)


def test_defect_without_mask_names_image_and_expected_mask(tiny_mvtec):
    (tiny_mvtec / "ground_truth/scratch/001_mask.png").unlink()
    message = _error(tiny_mvtec)
    assert "test/scratch/001.png: defect image without a mask (expected ground_truth/scratch/001_mask.png)" in message


def test_mask_size_mismatch_names_both_sizes(tiny_mvtec):
    _save(np.zeros((40, 64), np.uint8), tiny_mvtec / "ground_truth/hole/001_mask.png")
    message = _error(tiny_mvtec)
    expected = "ground_truth/hole/001_mask.png: mask size 40x64 differs from its image test/hole/001.png size 48x64"
    assert expected in message


def test_text_saved_as_png(tiny_mvtec):
    (tiny_mvtec / "train/good/003.png").write_text("hello")
    assert "train/good/003.png: not an image" in _error(tiny_mvtec)


def test_truncated_jpeg_is_caught_by_verify(tiny_mvtec):
    path = tiny_mvtec / "test/good/cut.jpg"
    _save(np.asarray(Image.open(tiny_mvtec / "test/good/000.png")), path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    discover(tiny_mvtec)  # the header is intact: only full decoding sees the cut
    assert "test/good/cut.jpg: corrupt or truncated image" in _error(tiny_mvtec, verify=True)


def test_truncated_mask_is_caught_by_verify(tiny_mvtec):
    path = tiny_mvtec / "ground_truth/scratch/000_mask.png"
    path.write_bytes(path.read_bytes()[:-40])
    assert "ground_truth/scratch/000_mask.png: corrupt or truncated image" in _error(tiny_mvtec, verify=True)


def test_training_defects_are_refused(tiny_mvtec):
    shutil.copytree(tiny_mvtec / "test" / "hole", tiny_mvtec / "train" / "hole")
    assert "train/hole: only train/good is supported" in _error(tiny_mvtec)


def test_several_masks_for_one_image(tiny_mvtec):
    shutil.copy(tiny_mvtec / "ground_truth/hole/000_mask.png", tiny_mvtec / "ground_truth/hole/000_mask.bmp")
    assert "test/hole/000.png: several masks match" in _error(tiny_mvtec)


def test_all_problems_in_one_error_capped(tiny_mvtec):
    for i in range(30):
        (tiny_mvtec / f"test/hole/broken_{i:02d}.png").write_text("x")
    message = _error(tiny_mvtec)
    lines = message.splitlines()
    assert lines[0].startswith(f"invalid dataset folder {tiny_mvtec} (30 problems)")
    assert len([line for line in lines if line.startswith("  - ")]) == MAX_LISTED_PROBLEMS
    assert lines[-1] == f"  ... and {30 - MAX_LISTED_PROBLEMS} more"


# --- notes ------------------------------------------------------------------------------------


def test_soft_masks_binarised_with_one_note(tiny_mvtec):
    for kind in ("hole", "scratch"):
        for i in range(2):
            path = tiny_mvtec / f"ground_truth/{kind}/{i:03d}_mask.png"
            soft = (np.asarray(Image.open(path)) * 0.6).astype(np.uint8)  # 255 -> 153
            soft[0, :3] = 90  # an anti-aliased edge that must fall below the threshold
            _save(soft, path)
    folder = discover(tiny_mvtec, verify=True)
    soft_notes = [n for n in folder.notes if "non-binary" in n]
    assert len(soft_notes) == 1 and soft_notes[0].startswith("binarised 4 non-binary mask(s) at >= 128")
    mask = load_mask(tiny_mvtec / "ground_truth/hole/000_mask.png")
    assert mask.any() and not mask[0, :3].any()


def test_empty_mask_noted(tiny_mvtec):
    _save(np.zeros((48, 64), np.uint8), tiny_mvtec / "ground_truth/scratch/001_mask.png")
    folder = discover(tiny_mvtec, verify=True)
    assert any(n.startswith("1 mask(s) are all zero") and "scratch/001_mask.png" in n for n in folder.notes)
    assert next(s for s in folder.test if s.path.name == "001.png" and s.defect_type == "scratch").label == 1


def test_stray_files_skipped_and_counted(tiny_mvtec):
    strays = [
        tiny_mvtec / "README.md",
        tiny_mvtec / "split.csv",
        tiny_mvtec / "train/good/.DS_Store",
        tiny_mvtec / "test/hole/Thumbs.db",
        tiny_mvtec / "test/hole/._000.png",  # macOS AppleDouble file with an image suffix
        tiny_mvtec / "ground_truth/hole/notes.txt",
    ]
    for path in strays:
        path.write_bytes(b"\x00\x05junk")
    folder = discover(tiny_mvtec, verify=True)
    assert sorted(folder.skipped) == sorted(strays)
    assert sum(len(s) for s in (folder.train, folder.test)) == 13
    assert any(n.startswith("skipped 6 stray file(s)") for n in folder.notes)


def test_orphan_masks_and_unexpected_folders_noted(tiny_mvtec):
    _save(np.zeros((48, 64), np.uint8), tiny_mvtec / "ground_truth/hole/zzz_mask.png")
    (tiny_mvtec / "validation").mkdir()
    folder = discover(tiny_mvtec)
    orphan_note = "ignored 1 mask(s) that match no defect image: ground_truth/hole/zzz_mask.png"
    assert orphan_note in folder.notes
    assert any("unexpected folder(s): validation" in n for n in folder.notes)


def test_empty_defect_folder_noted_not_counted(tiny_mvtec):
    (tiny_mvtec / "test" / "stain").mkdir()
    folder = discover(tiny_mvtec)
    assert "stain" not in folder.defect_types
    assert any("empty test folder(s): test/stain" in n for n in folder.notes)


# --- categories -------------------------------------------------------------------------------


def test_discover_categories(tmp_path, tiny_mvtec_factory):
    single = tiny_mvtec_factory(tmp_path / "single")
    assert discover_categories(single) == [single]
    many = tmp_path / "many"
    for name in ("zeta", "alpha"):
        tiny_mvtec_factory(many / name, n_train=2, n_test_good=1, n_per_type=1)
    (many / "docs").mkdir()
    assert discover_categories(many) == [many / "alpha", many / "zeta"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train/good folder here or in any subfolder"):
        discover_categories(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        discover_categories(tmp_path / "absent")


# --- real data --------------------------------------------------------------------------------


@pytest.mark.realdata
def test_magnetic_tile_counts(magnetic_tile):
    folder = discover(magnetic_tile, verify=True)
    counts = {(r["split"], r["type"]): (r["images"], r["masks"]) for r in folder.counts()}
    assert counts == {
        ("train", "good"): (762, 0),
        ("test", "good"): (190, 0),
        ("test", "blowhole"): (115, 115),
        ("test", "break"): (85, 85),
        ("test", "crack"): (57, 57),
        ("test", "fray"): (32, 32),
        ("test", "uneven"): (99, 99),
    }
    assert sum(m for _, m in counts.values()) == 388
    assert {p.name for p in folder.skipped} == {"README.md", "split.csv"}
    assert all(s.path.suffix == ".jpg" for s in folder.train)


@pytest.mark.realdata
def test_mpdd_metal_plate_counts(mpdd_metal_plate):
    folder = discover(mpdd_metal_plate, verify=True)
    assert folder.counts() == [
        {"split": "train", "type": "good", "images": 54, "masks": 0},
        {"split": "test", "type": "good", "images": 26, "masks": 0},
        {"split": "test", "type": "defect", "images": 71, "masks": 71},
    ]
    assert {s.size for s in folder.train + folder.test} == {(512, 512)}
