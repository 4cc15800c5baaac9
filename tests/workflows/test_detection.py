"""The baselines through the shared harness and the CLI: fit -> test --json -> predict."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from rlad.cli.main import main
from rlad.errors import ConfigError
from rlad.workflows import detection

SMALL = {
    "patchcore": ["image_size=64", "model.backbone.weights=random"],
    "padim": ["image_size=64", "model.n_features=24", "model.backbone.weights=random"],
    "ae": ["image_size=64", "model.steps=3", "model.batch_size=2", "model.channels=[8,8,8,8,8]"],
}


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _set_args(method: str, extra: list[str] = ()) -> list[str]:
    args = []
    for item in [*SMALL[method], *extra]:
        args += ["--set", item]
    return args


def test_cli_fit_test_predict_patchcore(tiny_mvtec, tmp_path, capsys, metrics_recomputed):
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "fit", "patchcore", "--data", str(tiny_mvtec), "--out", str(run), *_set_args("patchcore"))
    assert code == 0, err
    assert (run / "model.pt").is_file() and (run / "config.yaml").is_file()
    assert "backbone: mobilenet_v2, RANDOM weights" in err

    with pytest.warns(UserWarning, match="RANDOM weights"):  # the run says it is not for real use
        code, out, err = _cli(capsys, "test", str(run), "--data", str(tiny_mvtec), "--json")
    assert code == 0, err
    metrics = json.loads(out)  # stdout holds the JSON object and nothing else
    assert metrics["method"] == "patchcore" and metrics["n_test"] == 7
    reference = metrics_recomputed(run, tiny_mvtec)  # what the run's maps are worth, computed apart
    assert metrics["n_test"] == reference["n_test"]
    for key in ("image_auroc", "pixel_auroc"):
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6)
    # The tiny dataset's dark discs and lines are easy even for random features.
    assert metrics["pixel_auroc"] > 0.8

    with pytest.warns(UserWarning, match="RANDOM weights"):
        code, out, err = _cli(capsys, "predict", str(run), str(tiny_mvtec / "test" / "hole"), "--out", str(tmp_path / "pred"))
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert all((tmp_path / "pred" / row["map"]).is_file() for row in rows)


@pytest.mark.parametrize("method", ["padim", "ae"])
def test_library_fit_and_test_other_baselines(method, tiny_mvtec, tmp_path, metrics_recomputed):
    cfg = detection.build_config(method, None, SMALL[method])
    run = detection.fit(method, tiny_mvtec, tmp_path / method, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # padim: random backbone
        metrics = detection.test(run.path, tiny_mvtec, report=False)
    assert metrics["method"] == method and metrics["n_test"] == 7
    reference = metrics_recomputed(run.path, tiny_mvtec)
    assert metrics["pixel_auroc"] == pytest.approx(reference["pixel_auroc"], abs=1e-6)
    assert metrics["image_auroc"] == pytest.approx(reference["image_auroc"], abs=1e-6)
    # The saved run predicts again after a reload (maps at the configured size).
    loaded = detection.load_run(run.path)
    assert loaded.cfg.model.image_size == 64


def test_ae_checkpoints_land_in_the_run_directory(tiny_mvtec, tmp_path):
    cfg = detection.build_config("ae", None, SMALL["ae"] + ["model.checkpoint_every=2"])
    run = detection.fit("ae", tiny_mvtec, tmp_path / "ae", cfg)
    assert [p.name for p in run.checkpoints()] == ["step_00000002.pt", "step_00000003.pt"]
    assert any(row.get("event") == "ae_step" for row in run.read_log())


def test_missing_weight_file_exits_2_naming_the_path_and_leaves_no_run(tiny_mvtec, tmp_path, capsys):
    missing = tmp_path / "no_such_weights.pth"
    code, out, err = _cli(
        capsys, "fit", "padim", "--data", str(tiny_mvtec), "--out", str(tmp_path / "run"),
        *_set_args("padim", [f"model.backbone.weights={missing}"]),
    )
    assert code == 2
    assert str(missing) in err and "Traceback" not in err
    assert out == ""
    # The failed attempt removed the folder it had made: no half-made run for `test` to misread.
    assert not (tmp_path / "run").exists()


def test_bad_stage_override_exits_2(tiny_mvtec, tmp_path, capsys):
    code, _, err = _cli(
        capsys, "fit", "patchcore", "--data", str(tiny_mvtec), "--out", str(tmp_path / "run"),
        *_set_args("patchcore", ["model.backbone.stages=[2,9]"]),
    )
    assert code == 2 and "model.backbone.stages" in err


def test_patchcore_with_imagenet_weights(tiny_mvtec, tmp_path, imagenet_mobilenet, monkeypatch):
    # The default weights=imagenet, found through the variable (a folder holding torchvision's file).
    monkeypatch.setenv("RLAD_BACKBONE_WEIGHTS", str(imagenet_mobilenet.parent))
    cfg = detection.build_config("patchcore", None, ["image_size=64"])
    run = detection.fit("patchcore", tiny_mvtec, tmp_path / "pc", cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pretrained run: no warning
        metrics = detection.test(run.path, tiny_mvtec, report=False)
    [backbone] = detection.load_run(run.path).backbones
    assert backbone["pretrained"] and backbone["source"] == "env" and backbone["file"] == str(imagenet_mobilenet)
    assert metrics["image_auroc"] == 1.0  # dark discs/lines on a smooth texture: trivially separable
    assert metrics["pixel_auroc"] > 0.9


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.realdata
def test_patchcore_on_mpdd_matches_the_peer(mpdd_metal_plate, tmp_path, imagenet_mobilenet):
    """Slow (about a minute on 2 quiet cores; `make test-slow`): PatchCore on MPDD metal_plate at least
    as good as the anomalib peer measured on the same weights (docs/benchmarks.md)."""
    cfg = detection.build_config("patchcore", None, [f"model.backbone.weights={imagenet_mobilenet}"])
    run = detection.fit("patchcore", mpdd_metal_plate, tmp_path / "pc", cfg)
    metrics = detection.test(run.path, mpdd_metal_plate, report=False)
    assert metrics["image_auroc"] >= 0.995
    assert metrics["pixel_auroc"] >= 0.987
    assert metrics["aupro"] >= 0.946


@pytest.mark.parametrize("method, overrides", [
    ("padim", ["model.backbone.arch=resnet18", "model.backbone.stages=[1,2,3]"]),  # PaDiM's paper backbone
    ("patchcore", ["model.backbone.arch=wide_resnet50_2", "model.backbone.stages=[2,3]"]),  # PatchCore's
])
def test_the_papers_backbones_by_name(method, overrides, tiny_mvtec, tmp_path):
    cfg = detection.build_config(method, None, SMALL[method] + overrides)
    run = detection.fit(method, tiny_mvtec, tmp_path / "run", cfg)
    loaded = detection.load_run(run.path)  # the saved backbone is recognised as the right network
    assert loaded.model.extractor.arch == cfg.model.backbone.arch
    assert loaded.backbones[0]["arch"] == cfg.model.backbone.arch
    metrics = detection.test(run.path, tiny_mvtec, report=False)
    assert metrics["pixel_auroc"] > 0.8  # dark discs and lines: found even by random features


def test_a_backbone_unknown_or_with_stages_it_lacks_is_refused_before_any_work(tiny_mvtec, tmp_path, capsys):
    code, _, err = _cli(capsys, "fit", "patchcore", "--data", str(tiny_mvtec), "--out", str(tmp_path / "run"),
                        *_set_args("patchcore", ["model.backbone.arch=vgg16"]))
    assert code == 2 and "model.backbone.arch='vgg16': choose one of mobilenet_v2, resnet18, wide_resnet50_2" in err
    code, _, err = _cli(capsys, "fit", "nbs", "--data", str(tiny_mvtec), "--out", str(tmp_path / "run"),
                        "--set", "model.context.backbone.arch=resnet18", "--set", "model.context.backbone.stages=[1,6]")
    assert code == 2 and "model.context.backbone.stages=[1, 6]: give distinct stage numbers of resnet18" in err
    assert not (tmp_path / "run").exists()


def test_load_run_overrides_change_the_search_block_not_the_maps(tiny_patchcore_run):
    saved = detection.load_run(tiny_patchcore_run)
    tiny = detection.load_run(tiny_patchcore_run, ["model.knn_chunk_mb=0.001"])
    assert tiny.cfg.model.knn_chunk_mb == 0.001 and tiny.model.search.chunk_mb == 0.001
    assert saved.model.search.chunk_mb != 0.001
    images = torch.rand(2, 3, saved.cfg.image_size, saved.cfg.image_size)
    np.testing.assert_array_equal(tiny.model.predict(images).maps, saved.model.predict(images).maps)
    with pytest.raises(ConfigError, match="knn_chunk_mb"):
        detection.load_run(tiny_patchcore_run, ["model.knn_chunk_mb=-1"])
