"""Building real, synthetic, normal/normal and adaptation pairs (rlad.data.pairs.builders); `rlad data
pairs` itself is tested in tests/cli/test_data_pairs.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlad.boxes import mask_to_box
from rlad.data.folder import discover
from rlad.data.images import load_image, load_mask
from rlad.data.pairs.builders import (adaptation_pairs, build_pairs, images_dir_for, normal_pairs, real_pairs,
                                      synthetic_pairs)
from rlad.data.pairs.records import filter_pairs, load_pairs, split_by_category
from rlad.errors import DataError


def test_real_pairs_have_one_pair_per_test_image_with_exact_boxes(tiny_mvtec, tmp_path):
    records, summary = build_pairs(tiny_mvtec, tmp_path / "pairs.jsonl", reference="random", seed=1)
    folder = discover(tiny_mvtec)
    assert len(records) == len(folder.test) == summary.n_pairs
    train_paths = {str(s.path) for s in folder.train}
    by_query = {r.query: r for r in records}
    for sample in folder.test:
        record = by_query[str(sample.path)]
        assert record.reference in train_paths
        assert record.query_size == sample.size
        if sample.label == 0:
            assert record.box == (0, 0, 0, 0) and record.label == 0
        else:
            expected = mask_to_box(load_mask(sample.mask_path))
            assert record.box == tuple(expected) and record.label == 1
            assert record.defect_type == sample.defect_type


def test_synthetic_pairs_change_only_pixels_inside_their_box(tiny_mvtec, tmp_path):
    folder = discover(tiny_mvtec)
    records = synthetic_pairs(folder, 6, tmp_path / "images", seed=0, synthetic_reference="same")
    assert {r.source for r in records} == {"paste", "perlin"}
    for r in records:
        assert r.label == 1 and r.reference != r.query
        h, w = r.query_size
        x1, y1, x2, y2 = r.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        diff = np.abs(load_image(r.query) - load_image(r.reference)).max(axis=2) > 1.5 / 255
        assert diff.any(), "a synthetic defect must change the image"
        # Perlin blends have a 1-pixel anti-aliasing fringe around their mask (rlad.data.synth.defects).
        fringe = 1 if r.source == "perlin" else 0
        inside = np.zeros_like(diff)
        inside[max(0, y1 - fringe):y2 + fringe, max(0, x1 - fringe):x2 + fringe] = True
        assert not (diff & ~inside).any(), f"{r.id}: pixels changed outside the box {r.box}"
        if r.source == "paste":
            assert Path(r.origin).is_file()


def test_adaptation_pairs_read_nothing_but_train_good(tiny_mvtec, tmp_path):
    # The unseen category's test split (images, masks, labels) must not be needed at all: remove it.
    shutil.rmtree(tiny_mvtec / "test")
    shutil.rmtree(tiny_mvtec / "ground_truth")
    train_paths = {str(p.resolve()) for p in (tiny_mvtec / "train" / "good").iterdir()}
    out = tmp_path / "adapt.jsonl"
    records = adaptation_pairs(tiny_mvtec, out, perlin=3, normal=2, seed=0)
    assert load_pairs(out) == records
    normals = [r for r in records if r.source == "normal"]
    perlins = [r for r in records if r.source == "perlin"]
    assert len(normals) == 2 and len(perlins) == 3 and len(records) == 5
    for r in normals:
        assert r.box == (0, 0, 0, 0) and r.defect_type == "good"
        assert r.query in train_paths and r.reference in train_paths and r.query != r.reference
    assert len({r.query for r in normals}) == 2  # distinct queries
    for r in perlins:
        assert r.label == 1 and r.reference in train_paths and r.query not in train_paths
        base = load_image(r.query)
        assert base.shape[:2] == r.query_size


def test_perlin_only_synthetic_pairs_ignore_defect_donors(tiny_mvtec, tmp_path):
    records = synthetic_pairs(discover(tiny_mvtec), 4, tmp_path / "images", kinds=("perlin",))
    assert {r.source for r in records} == {"perlin"} and not any(r.origin for r in records)
    with pytest.raises(DataError, match="kinds"):
        synthetic_pairs(discover(tiny_mvtec), 1, tmp_path / "images", kinds=("scratch",))


def test_normal_pairs_need_two_normal_images(tiny_mvtec):
    folder = discover(tiny_mvtec)
    many = normal_pairs(folder, 1000, reference="random")
    assert len(many) == len(folder.train)  # at most one pair per train/good image
    lonely = type(folder)(root=folder.root, category=folder.category, train=folder.train[:1], test=[])
    with pytest.raises(DataError, match="at least 2"):
        normal_pairs(lonely, 1)


def test_synthetic_pairs_are_deterministic(tiny_mvtec, tmp_path):
    a, _ = build_pairs(tiny_mvtec, tmp_path / "a.jsonl", synthetic=3, seed=5)
    b, _ = build_pairs(tiny_mvtec, tmp_path / "b.jsonl", synthetic=3, seed=5)
    assert [r.box for r in a] == [r.box for r in b]
    for ra, rb in zip(a[-3:], b[-3:]):
        assert np.array_equal(load_image(ra.query), load_image(rb.query))


def test_root_of_several_categories_and_category_splits(tiny_mvtec_factory, tmp_path):
    root = tmp_path / "root"
    tiny_mvtec_factory(root / "alpha", seed=1)
    tiny_mvtec_factory(root / "beta", seed=2, defect_types=("hole",))
    records, summary = build_pairs(root, tmp_path / "p.jsonl", synthetic=4, reference="random")
    assert set(summary.per_category) == {"alpha", "beta"}
    assert sum(r.source != "real" for r in records if r.category == "alpha") == 2
    train, evaluation = split_by_category(records, ["beta"])
    assert {r.category for r in train} == {"alpha"} and {r.category for r in evaluation} == {"beta"}
    assert len(train) + len(evaluation) == len(records)
    with pytest.raises(DataError, match="gamma"):
        filter_pairs(records, include=["gamma"])
    assert all(r.source == "real" for r in filter_pairs(records, sources=["real"]))


def test_a_foreign_images_folder_is_never_overwritten(tiny_mvtec, tmp_path):
    out = tmp_path / "p.jsonl"
    foreign = images_dir_for(out)
    foreign.mkdir()
    (foreign / "precious.txt").write_text("mine")
    with pytest.raises(DataError, match="not written by"):
        build_pairs(tiny_mvtec, out, synthetic=2)
    assert (foreign / "precious.txt").read_text() == "mine"
    shutil.rmtree(foreign)
    build_pairs(tiny_mvtec, out, synthetic=2)
    build_pairs(tiny_mvtec, out, synthetic=1)  # our own folder: rewritten
    assert len(list(foreign.rglob("*.png"))) == 1


@pytest.mark.realdata
def test_real_datasets_give_one_pair_per_test_image(magnetic_tile, mpdd_metal_plate, tmp_path):
    records, summary = build_pairs(mpdd_metal_plate, tmp_path / "mp.jsonl", reference="random")
    assert summary.per_category["mpdd_metal_plate_512"] == {"normal": 26, "defective": 71, "synthetic": 0}
    tile_folder = discover(magnetic_tile)
    assert sum(1 for s in tile_folder.test if s.label) == 388
    sample = next(s for s in tile_folder.test if s.defect_type == "blowhole")
    (record,) = [r for r in real_pairs(_one_query(tile_folder, sample), reference="random")]
    h, w = sample.size
    assert 0 < record.box[2] <= w and 0 < record.box[3] <= h
    assert Image.open(record.query).size == (w, h)


def _one_query(folder, sample):
    from dataclasses import replace

    return replace(folder, test=[sample])
