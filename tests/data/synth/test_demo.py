"""The demo dataset writer (rlad.data.synth.demo); `rlad data demo` itself is tested in
tests/cli/test_data_demo.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlad.data.synth.defects import DEFECT_KINDS
from rlad.data.synth.demo import README_MARKER, write_demo_dataset
from rlad.errors import RladError


def write_tiny_dataset(
    out: Path | str,
    seed: int = 0,
    image_size: int = 64,
    n_train: int = 8,
    n_test_good: int = 4,
    n_per_defect: int = 2,
    categories: tuple[str, ...] = ("brick",),
    defect_kinds: tuple[str, ...] | None = ("scratch", "hole", "stain", "patch"),
) -> dict:
    """A small demo dataset (well under a second): one category, 64x64, a few images."""
    return write_demo_dataset(out, seed, image_size, n_train, n_test_good, n_per_defect, categories, defect_kinds)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_tiny_dataset_layout_counts_and_masks(tmp_path):
    out = tmp_path / "demo"
    summary = write_tiny_dataset(out, seed=0, n_train=3, n_test_good=2, n_per_defect=2,
                                 categories=("brick", "grass"), defect_kinds=("hole", "scratch"))
    assert summary["categories"]["brick"] == {"train/good": 3, "test/good": 2, "test/hole": 2, "test/scratch": 2}
    assert summary["total_images"] == 2 * (3 + 2 + 2 * 2)
    assert (out / "README.md").read_text().splitlines()[0] == README_MARKER
    for category in ("brick", "grass"):
        assert sorted(p.name for p in (out / category / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
        assert len(list((out / category / "test" / "good").glob("*.png"))) == 2
        assert sorted(p.name for p in (out / category / "test").iterdir()) == ["good", "hole", "scratch"]
        for kind in ("hole", "scratch"):
            images = sorted((out / category / "test" / kind).glob("*.png"))
            assert len(images) == 2
            for image_path in images:
                image = Image.open(image_path)
                mask = Image.open(out / category / "ground_truth" / kind / f"{image_path.stem}_mask.png")
                assert image.mode == "RGB" and image.size == (64, 64)
                assert mask.mode == "L" and mask.size == image.size
                values = set(np.unique(np.asarray(mask)).tolist())
                assert values == {0, 255}
    train = {hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*/train/good/*.png")}
    test = {hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*/test/good/*.png")}
    assert len(train) == 6 and not train & test
    assert not list(tmp_path.glob(".demo.rlad-*"))  # no temp folder left behind


def test_demo_dataset_is_byte_identical_per_seed_and_differs_across_seeds(tmp_path):
    kwargs = dict(n_train=2, n_test_good=1, n_per_defect=1, defect_kinds=DEFECT_KINDS)
    write_tiny_dataset(tmp_path / "a", seed=7, **kwargs)
    write_tiny_dataset(tmp_path / "b", seed=7, **kwargs)
    write_tiny_dataset(tmp_path / "c", seed=8, **kwargs)
    a, b, c = (_hashes(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    differing = [k for k in a if k.endswith(".png") and a[k] != c[k]]
    assert len(differing) == len([k for k in a if k.endswith(".png")])


def test_test_images_do_not_depend_on_train_count(tmp_path):
    write_tiny_dataset(tmp_path / "a", seed=1, n_train=2, n_test_good=1, n_per_defect=1)
    write_tiny_dataset(tmp_path / "b", seed=1, n_train=5, n_test_good=1, n_per_defect=1)
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    shared = [k for k in a if "/test/" in k or "ground_truth" in k]
    assert shared and all(a[k] == b[k] for k in shared)


def test_rewrites_an_earlier_demo_dataset(tmp_path):
    out = tmp_path / "demo"
    write_tiny_dataset(out, seed=0, n_train=4, n_test_good=1, n_per_defect=1)
    write_tiny_dataset(out, seed=1, n_train=2, n_test_good=1, n_per_defect=1)
    assert len(list((out / "brick" / "train" / "good").glob("*.png"))) == 2  # old files are gone
    assert "seed: 1" in (out / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_writes_into_an_empty_existing_folder(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    write_tiny_dataset(out, n_train=1, n_test_good=1, n_per_defect=1)
    assert (out / "README.md").exists()


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    (out / "README.md").write_text("# my own readme\n")
    with pytest.raises(RladError, match="not an rlad demo dataset"):
        write_tiny_dataset(out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "thesis.txt"]
    assert (out / "thesis.txt").read_text() == "precious"
    afile = tmp_path / "file.png"
    afile.write_bytes(b"x")
    with pytest.raises(RladError, match="not a folder"):
        write_tiny_dataset(afile)


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(RladError, match="unknown demo category"):
        write_demo_dataset(tmp_path / "x", categories=("carpet",))
    with pytest.raises(RladError, match="unknown defect kind"):
        write_demo_dataset(tmp_path / "x", defect_kinds=("dent",))
    with pytest.raises(RladError, match="image_size"):
        write_demo_dataset(tmp_path / "x", image_size=8)
    assert not (tmp_path / "x").exists()
