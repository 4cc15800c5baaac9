"""The data protocol (rlad.data.split): labelled draw, validation split and the development split
(protocol.dev_fraction), and how `rlad test` scores the test and development splits apart."""

from __future__ import annotations

import json
import warnings

import pytest

from rlad.cli.main import main
from rlad.data.folder import discover
from rlad.errors import ConfigError
from rlad.data.split import ProtocolConfig, make_split


def _protocol(**kwargs) -> ProtocolConfig:
    return ProtocolConfig(**kwargs)


def test_dev_split_is_disjoint_stratified_and_labelled_images_come_from_outside_it(tiny_mvtec_factory, tmp_path):
    folder = discover(tiny_mvtec_factory(tmp_path / "d", n_test_good=6, n_per_type=5))
    with_dev = make_split(folder, _protocol(labeled_per_type=2, dev_fraction=0.4), seed=3)

    labeled, dev, test = ({s.path for s in part} for part in (with_dev.labeled, with_dev.dev, with_dev.test))
    assert not (labeled & dev) and not (dev & test) and not (labeled & test)
    assert labeled | dev | test == {s.path for s in folder.test}
    assert len(with_dev.labeled) == 2 * 2  # two per type, drawn from what the development split left
    # 40% of each group of test/: good 6 -> 2; each type 5 -> 2.
    groups = {}
    for s in with_dev.dev:
        groups[s.defect_type if s.label else "good"] = groups.get(s.defect_type if s.label else "good", 0) + 1
    assert groups == {"good": 2, "hole": 2, "scratch": 2}
    assert make_split(folder, _protocol(labeled_per_type=2), seed=3).dev == []
    with pytest.raises(ConfigError, match="dev_fraction"):
        make_split(folder, _protocol(dev_fraction=1.0), seed=0)


def test_one_development_split_for_every_seed_and_no_seed_tests_on_it(tiny_mvtec_factory, tmp_path):
    folder = discover(tiny_mvtec_factory(tmp_path / "d", n_test_good=8, n_per_type=8))
    protocol = _protocol(labeled_per_type=2, dev_fraction=0.3, protocol_seed=11)
    splits = [make_split(folder, protocol, seed=seed) for seed in range(6)]
    dev = {s.path for s in splits[0].dev}
    assert dev and all({s.path for s in split.dev} == dev for split in splits)
    for split in splits:
        assert not ({s.path for s in split.test} & dev)
        assert not ({s.path for s in split.labeled} & dev)
    # The run seed still changes the labelled draw (and so the test split), the protocol seed the dev split.
    assert len({tuple(s.path for s in split.labeled) for split in splits}) > 1
    other = make_split(folder, _protocol(labeled_per_type=2, dev_fraction=0.3, protocol_seed=12), seed=0)
    assert {s.path for s in other.dev} != dev


def test_without_a_dev_split_the_labelled_draw_is_the_one_runs_always_had(tiny_mvtec_factory, tmp_path):
    # Run seeds and labelled draws of runs made before the protocol seed existed stay valid.
    import numpy as np

    folder = discover(tiny_mvtec_factory(tmp_path / "d", n_test_good=6, n_per_type=5))
    split = make_split(folder, _protocol(labeled_per_type=2), seed=3)
    rng = np.random.default_rng(3)
    rng.permutation(len(folder.train))
    expected = []
    for defect_type in folder.defect_types:
        candidates = [s for s in folder.test if s.defect_type == defect_type]
        expected += [candidates[i] for i in sorted(rng.choice(len(candidates), size=2, replace=False))]
    assert [s.path for s in split.labeled] == [s.path for s in expected]


def _cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_test_scores_test_and_dev_splits_apart(tiny_mvtec_factory, tmp_path, capsys):
    data = tiny_mvtec_factory(tmp_path / "d", n_test_good=4, n_per_type=4)
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = _cli(capsys, "fit", "patchcore", "--data", str(data), "--out", str(run),
                            "--set", "image_size=64", "--set", "protocol.dev_fraction=0.5",
                            "--set", "model.backbone.weights=random")
    assert code == 0, err
    recorded = json.loads((run / "split.json").read_text())
    assert len(recorded["dev"]) == 2 + 2 + 2  # half of good (4) and of each type (4)

    code, out, err = _cli(capsys, "test", str(run), "--data", str(data), "--json")
    assert code == 0, err
    on_test = json.loads(out)
    code, out, err = _cli(capsys, "test", str(run), "--data", str(data), "--json", "--split", "dev")
    assert code == 0, err
    on_dev = json.loads(out)
    assert (on_test["split"], on_dev["split"]) == ("test", "dev")
    assert on_dev["n_test"] == 6 and on_test["n_test"] == 12 - 6 and on_test["n_excluded_dev"] == 6


def test_cli_dev_split_errors_are_clear(tiny_mvtec, tmp_path, capsys):
    code, out, err = _cli(capsys, "fit", "patchcore", "--data", str(tiny_mvtec), "--out", str(tmp_path / "bad"),
                          "--set", "protocol.dev_fraction=1.5")
    assert code == 2 and "protocol.dev_fraction" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()  # rejected before a run directory is made

    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _cli(capsys, "fit", "patchcore", "--data", str(tiny_mvtec), "--out", str(run), "--set", "image_size=64",
                    "--set", "model.backbone.weights=random")[0] == 0
    code, out, err = _cli(capsys, "test", str(run), "--data", str(tiny_mvtec), "--split", "dev")
    assert code == 2 and "no development split" in err and "protocol.dev_fraction" in err


def _fit_with_labels(data, run, capsys, *extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = _cli(capsys, "fit", "patchcore", "--data", str(data), "--out", str(run), "--set", "image_size=64",
                            "--set", "model.backbone.weights=random", "--labeled-per-type", "1", *extra)
    assert code == 0, err


def test_a_copied_dataset_still_excludes_the_labelled_and_development_images(tiny_mvtec_factory, tmp_path, capsys):
    import shutil

    data = tiny_mvtec_factory(tmp_path / "d", n_test_good=4, n_per_type=4)
    run = tmp_path / "run"
    _fit_with_labels(data, run, capsys, "--set", "protocol.dev_fraction=0.25")
    code, out, err = _cli(capsys, "test", str(run), "--data", str(data), "--json")
    assert code == 0, err
    original = json.loads(out)
    copy = tmp_path / "elsewhere" / "d"
    shutil.copytree(data, copy)
    code, out, err = _cli(capsys, "test", str(run), "--data", str(copy), "--json")
    assert code == 0, err
    moved = json.loads(out)
    assert moved["n_excluded_labeled"] == original["n_excluded_labeled"] == 2  # one per type, found by content
    assert moved["n_excluded_dev"] == original["n_excluded_dev"] > 0
    assert moved["n_test"] == original["n_test"] and moved["pixel_auroc"] == original["pixel_auroc"]
    assert "left out: 2 labelled" in err


def test_a_dataset_without_the_labelled_images_is_refused_unless_allowed(tiny_mvtec_factory, tmp_path, capsys):
    data = tiny_mvtec_factory(tmp_path / "d", n_test_good=4, n_per_type=4)
    run = tmp_path / "run"
    _fit_with_labels(data, run, capsys)
    recorded = json.loads((run / "split.json").read_text())
    for name in recorded["labeled"]:
        (data / name).unlink()  # a copy without the labelled images: every other test image is still there
    code, out, err = _cli(capsys, "test", str(run), "--data", str(data))
    assert code == 2 and "none of the 2 labelled images" in err and "--allow-missing-labelled" in err
    assert "Traceback" not in err
    code, out, err = _cli(capsys, "test", str(run), "--data", str(data), "--json", "--allow-missing-labelled")
    assert code == 0, err
    scored = json.loads(out)
    assert scored["n_excluded_labeled"] == 0 and scored["n_missing_labeled"] == 2
