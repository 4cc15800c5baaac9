"""Tests for rlad.data.synth: noise, masks, Poisson blending, cut-paste, defects and the demo dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from rlad.data import synth
from rlad.data.synth import (
    DEFECT_KINDS,
    MIN_CHANGE,
    README_MARKER,
    add_defect,
    paste_defect,
    perlin_mask,
    perlin_noise,
    seamless_blend,
    texture_tile,
    write_demo_dataset,
    write_tiny_dataset,
)
from rlad.errors import DataError, RladError


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("RLAD_PROGRESS", "0")


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- Perlin noise and masks


def test_perlin_noise_is_bounded_deterministic_and_seed_dependent():
    a = perlin_noise((70, 90), 16, _rng(1))
    b = perlin_noise((70, 90), 16, _rng(1))
    c = perlin_noise((70, 90), 16, _rng(2))
    assert a.shape == (70, 90)
    assert np.abs(a).max() <= 1.0
    assert a.std() > 0.05  # not flat
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_perlin_noise_larger_scale_is_smoother():
    def roughness(scale: int) -> float:
        noise = perlin_noise((128, 128), scale, _rng(3))
        return float(np.abs(np.diff(noise, axis=1)).mean() / noise.std())

    assert roughness(64) < roughness(16) < roughness(4)


def test_perlin_noise_octaves_stay_bounded():
    noise = perlin_noise((64, 64), 32, _rng(0), octaves=4)
    assert np.abs(noise).max() <= 1.0


@pytest.mark.parametrize("bad", [dict(scale=0), dict(octaves=0)])
def test_perlin_noise_rejects_bad_arguments(bad):
    kwargs = dict(scale=8, octaves=1) | bad
    with pytest.raises(ValueError):
        perlin_noise((16, 16), kwargs["scale"], _rng(), octaves=kwargs["octaves"])


@pytest.mark.parametrize("single", [False, True])
def test_perlin_mask_area_in_range_and_never_empty(single):
    for seed in range(25):
        mask = perlin_mask((64, 80), _rng(seed), min_area_fraction=0.02, max_area_fraction=0.1,
                           single_component=single)
        assert mask.dtype == bool and mask.shape == (64, 80)
        assert mask.any()
        assert 0.02 <= mask.mean() <= 0.1
        if single:
            assert ndi.label(mask, structure=np.ones((3, 3)))[1] == 1


def test_perlin_mask_rejects_inverted_area_bounds():
    with pytest.raises(ValueError):
        perlin_mask((32, 32), _rng(), min_area_fraction=0.5, max_area_fraction=0.1)


# ---------------------------------------------------------------- Poisson blending


def _disk(shape, centre, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _interior_gradients_match(result, source, mask, offset, atol):
    """Forward differences between pairs of masked pixels equal the source's."""
    r0, c0 = offset
    h, w = mask.shape
    region = result[r0 : r0 + h, c0 : c0 + w]
    pairs_y = mask[1:, :] & mask[:-1, :]
    pairs_x = mask[:, 1:] & mask[:, :-1]
    dy_res, dy_src = np.diff(region, axis=0)[pairs_y], np.diff(source, axis=0)[pairs_y]
    dx_res, dx_src = np.diff(region, axis=1)[pairs_x], np.diff(source, axis=1)[pairs_x]
    np.testing.assert_allclose(dy_res, dy_src, atol=atol)
    np.testing.assert_allclose(dx_res, dx_src, atol=atol)


def test_seamless_blend_reproduces_source_gradients_and_leaves_outside_untouched():
    rng = _rng(0)
    target = rng.uniform(0.2, 0.6, size=(48, 56, 3))
    shape = (30, 30)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    # Source = the target underneath + a bump that vanishes well before the mask edge, + a constant
    # brightness offset: the exact Poisson solution is target + bump (the offset disappears).
    offset = (9, 14)
    under = target[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]]
    distance = np.hypot(rows - 15, cols - 15)
    bump = 0.25 * np.where(distance < 8, np.cos(distance / 8 * np.pi / 2) ** 4, 0.0)
    source = under + bump[:, :, None] + 0.1
    mask = _disk(shape, (15, 15), 12)

    result = seamless_blend(target, source, mask, offset)

    assert result.shape == target.shape and result.dtype == target.dtype
    outside = np.ones(target.shape[:2], bool)
    outside[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]] &= ~mask
    np.testing.assert_array_equal(result[outside], target[outside])
    _interior_gradients_match(result, source, mask, offset, atol=1e-8)
    inside = result[offset[0] : offset[0] + shape[0], offset[1] : offset[1] + shape[1]][mask]
    np.testing.assert_allclose(inside, (under + bump[:, :, None])[mask], atol=1e-8)


def test_seamless_blend_matches_boundary_not_source_brightness():
    target = np.full((40, 40, 3), 0.3)
    source = np.full((20, 20, 3), 0.9)
    mask = np.zeros((20, 20), bool)
    mask[3:17, 3:17] = True
    result = seamless_blend(target, source, mask, (10, 10))
    # A flat source has no gradient: the solution is the boundary value everywhere.
    np.testing.assert_allclose(result, target, atol=1e-10)


def test_seamless_blend_clips_and_accepts_grey_and_overhanging_source():
    target = np.full((20, 20), 0.95)
    rows = np.arange(12)[:, None] * np.ones((1, 12))
    source = rows * 0.2  # steep ramp: an unclipped solution would exceed 1
    mask = np.zeros((12, 12), bool)
    mask[2:10, 2:10] = True
    result = seamless_blend(target, source, mask, (-2, 10))  # source hangs over top and right edges
    assert result.shape == target.shape
    assert result.min() >= 0.0 and result.max() <= 1.0
    assert not np.array_equal(result, target)


def test_seamless_blend_whole_image_mask_keeps_gradients_and_target_mean():
    rng = _rng(1)
    target = rng.uniform(0, 1, size=(16, 16, 1))
    source = 0.3 + 0.02 * rng.standard_normal((16, 16, 1))
    result = seamless_blend(target, source, np.ones((16, 16), bool), (0, 0))
    np.testing.assert_allclose(result - source, (target - source).mean(), atol=1e-4)


def test_seamless_blend_rejects_mask_outside_target():
    with pytest.raises(ValueError):
        seamless_blend(np.zeros((10, 10, 3)), np.zeros((4, 4, 3)), np.ones((4, 4), bool), (8, 8))


# ---------------------------------------------------------------- cut-paste


def _defect_source():
    rng = _rng(5)
    image = rng.uniform(0, 1, size=(60, 60, 3))
    mask = np.zeros((60, 60), bool)
    mask[10:30, 15:31] = _disk((20, 16), (10, 8), 8)  # the big component
    mask[45:48, 45:48] = True  # a small one that must be ignored
    return image, mask


def test_paste_defect_uses_largest_component_and_keeps_outside_unchanged():
    image, mask = _defect_source()
    big_area = ndi.label(mask)[0]
    big_area = int((big_area == 1).sum())
    normal = np.full((64, 64, 3), 0.5)
    for seed in range(10):
        pasted, out_mask = paste_defect(normal, image, mask, _rng(seed))
        assert out_mask.shape == (64, 64) and out_mask.dtype == bool
        assert out_mask.any()
        assert ndi.label(out_mask, structure=np.ones((3, 3)))[1] == 1
        np.testing.assert_array_equal(pasted[~out_mask], normal[~out_mask])
        # Area scales with the square of a factor in 0.6 .. 1.4 (slack for the resize threshold).
        ratio = out_mask.sum() / big_area
        assert 0.6**2 * 0.8 <= ratio <= 1.4**2 * 1.2


def test_paste_defect_scale_stays_in_range():
    image, mask = _defect_source()
    ys, xs = np.nonzero(ndi.label(mask)[0] == 1)
    size = np.array([np.ptp(ys) + 1, np.ptp(xs) + 1])
    for seed in range(15):
        _, out_mask = paste_defect(np.zeros((80, 80, 3)), image, mask, _rng(seed), scale_range=(0.6, 1.4))
        oy, ox = np.nonzero(out_mask)
        factor = np.array([np.ptp(oy) + 1, np.ptp(ox) + 1]) / size
        assert np.all(factor >= 0.6 - 2 / size) and np.all(factor <= 1.4 + 2 / size)


def test_paste_defect_copy_at_scale_one_copies_the_defect_pixels():
    image, mask = _defect_source()
    component = ndi.label(mask)[0] == 1
    normal = np.zeros((50, 50, 3))
    pasted, out_mask = paste_defect(normal, image, mask, _rng(2), scale_range=(1.0, 1.0), blend="copy")
    assert out_mask.sum() == component.sum()
    np.testing.assert_allclose(np.sort(pasted[out_mask], axis=0), np.sort(image[component], axis=0), atol=1e-9)


def test_paste_defect_shrinks_a_defect_larger_than_the_normal_image():
    image = np.full((100, 100, 3), 0.8)
    mask = np.ones((100, 100), bool)
    _, out_mask = paste_defect(np.zeros((40, 40, 3)), image, mask, _rng(0), scale_range=(1.0, 1.4))
    assert out_mask.any() and out_mask.shape == (40, 40)


def test_paste_defect_rejects_empty_mask_and_unknown_blend():
    image, mask = _defect_source()
    with pytest.raises(DataError):
        paste_defect(np.zeros((40, 40, 3)), image, np.zeros_like(mask), _rng())
    with pytest.raises(ValueError):
        paste_defect(np.zeros((40, 40, 3)), image, mask, _rng(), blend="magic")


# ---------------------------------------------------------------- defects


@pytest.fixture(scope="module")
def tile() -> np.ndarray:
    return texture_tile("gravel", 96, _rng(11))


def test_texture_tile_is_rgb_float_in_range_and_tinted(tile):
    assert tile.shape == (96, 96, 3) and tile.dtype == np.float32
    assert 0.0 <= tile.min() and tile.max() <= 1.0
    brick = texture_tile("brick", 64, _rng(0))
    assert brick[..., 0].mean() > brick[..., 2].mean()  # brick is tinted warm


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_add_defect_mask_is_exact(kind, tile):
    source = texture_tile("brick", 96, _rng(99))
    for seed in range(6):
        out, mask = add_defect(tile, kind, _rng(seed), source=source if seed % 2 else None)
        assert out.shape == tile.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert mask.shape == tile.shape[:2] and mask.dtype == bool and mask.any()
        change = np.abs(out.astype(np.float64) - tile.astype(np.float64)).max(axis=2)
        # Every masked pixel visibly changed...
        assert change[mask].min() >= MIN_CHANGE - 1e-6
        # ...and nothing changed beyond the mask's 1-pixel anti-aliased fringe (none at all for patch).
        allowed = mask if kind == "patch" else ndi.binary_dilation(mask, structure=np.ones((3, 3)))
        assert not np.any((change > 1e-6) & ~allowed)
        # The fringe is faint compared with the defect itself.
        fringe = (change > 1e-6) & ~mask
        if fringe.any():
            assert change[fringe].mean() < change[mask].mean()


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_add_defect_is_deterministic_per_seed(kind, tile):
    a, mask_a = add_defect(tile, kind, _rng(4))
    b, mask_b = add_defect(tile, kind, _rng(4))
    c, mask_c = add_defect(tile, kind, _rng(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert not np.array_equal(mask_a, mask_c)


def test_add_defect_varies_size_across_seeds(tile):
    areas = {kind: [add_defect(tile, kind, _rng(s))[1].sum() for s in range(8)] for kind in DEFECT_KINDS}
    for kind, values in areas.items():
        assert max(values) > 1.5 * min(values), (kind, values)
        assert max(values) < 0.35 * tile.shape[0] * tile.shape[1], (kind, values)


def test_add_defect_rejects_unknown_kind_and_grey_images(tile):
    with pytest.raises(ValueError, match="unknown kind"):
        add_defect(tile, "dent", _rng())
    with pytest.raises(ValueError):
        add_defect(tile[..., 0], "hole", _rng())


# ---------------------------------------------------------------- demo dataset


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


def test_cli_demo_prints_a_summary(tmp_path, monkeypatch, capsys):
    from rlad.cli.main import main

    real = synth.write_demo_dataset
    # Keep the CLI test fast: same code path, fewer and smaller images.
    monkeypatch.setattr(synth, "write_demo_dataset",
                        lambda out, seed=0: real(out, seed, image_size=48, n_train=1, n_test_good=1, n_per_defect=1))
    assert main(["data", "demo", str(tmp_path / "d"), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "seed 3" in printed and "3 categories" in printed and str(tmp_path / "d") in printed
    assert (tmp_path / "d" / "gravel" / "ground_truth" / "patch" / "000_mask.png").exists()


def test_cli_demo_refusal_is_one_line_exit_2(tmp_path, capsys):
    from rlad.cli.main import main

    (tmp_path / "notes.txt").write_text("x")
    assert main(["data", "demo", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to overwrite" in err[0]
