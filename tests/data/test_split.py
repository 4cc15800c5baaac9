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


def test_dev_split_is_disjoint_stratified_and_keeps_the_labelled_draw(tiny_mvtec_factory, tmp_path):
    folder = discover(tiny_mvtec_factory(tmp_path / "d", n_test_good=6, n_per_type=5))
    without = make_split(folder, _protocol(labeled_per_type=2), seed=3)
    with_dev = make_split(folder, _protocol(labeled_per_type=2, dev_fraction=0.4), seed=3)

    assert [s.path for s in with_dev.labeled] == [s.path for s in without.labeled]
    labeled, dev, test = ({s.path for s in part} for part in (with_dev.labeled, with_dev.dev, with_dev.test))
    assert not (labeled & dev) and not (dev & test) and not (labeled & test)
    assert labeled | dev | test == {s.path for s in folder.test}
    # 40% of each group: good 6 -> 2; each type has 5 - 2 labelled = 3 left -> 1.
    groups = {}
    for s in with_dev.dev:
        groups[s.defect_type if s.label else "good"] = groups.get(s.defect_type if s.label else "good", 0) + 1
    assert groups == {"good": 2, "hole": 1, "scratch": 1}
    assert make_split(folder, _protocol(labeled_per_type=2), seed=3).dev == []
    with pytest.raises(ConfigError, match="dev_fraction"):
        make_split(folder, _protocol(dev_fraction=1.0), seed=0)


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
