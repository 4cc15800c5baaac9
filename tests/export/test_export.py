"""`rlad export`: every pixel model's graph agrees with PyTorch (the export's own parity check, and an
independent one here on other batch sizes and image sizes), refuses to write a graph that disagrees,
and the file works as RUN for `rlad predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlad.cli.main import main
from rlad.data.images import load_image
from rlad.data.transforms import resize_image
from rlad.workflows import detection

METHODS = ["patchcore", "padim", "ae", "nbs", "refine"]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _images(data: Path) -> list[Path]:
    return sorted((data / "test").rglob("*.png"))


@pytest.mark.parametrize("method", METHODS)
def test_the_graph_agrees_with_pytorch_at_any_batch_and_size(method, exported, tiny_data):
    from rlad.workflows.export import onnx_session, read_metadata

    run, result = exported(method)
    assert result.parity.passed and result.parity.images == 8 and result.parity.batch_sizes == [1, 8]
    assert 0 < result.parity.anomalous < 8  # both labels were exercised
    loaded = detection.load_run(run)
    meta = read_metadata(result.path)
    assert meta["method"] == method and meta["postprocess"] == loaded.post.to_dict()
    assert meta["parity"]["max_abs_map_diff"] < 1e-4

    session = onnx_session(result.path)
    originals = [load_image(p) for p in _images(tiny_data)]  # 48 x 64: resized inside the graph
    size = loaded.cfg.image_size
    batch = np.stack([resize_image(i, size).transpose(2, 0, 1) for i in originals]).astype(np.float32)
    with torch.inference_mode():
        reference = loaded.model.predict(torch.from_numpy(batch))
    ref_maps = loaded.post.normalise_maps(reference.maps)
    ref_scores = loaded.post.normalise_scores(reference.scores)
    for lo, hi in ((0, 3), (3, 7)):  # batch sizes 3 and 4, neither traced nor checked by the export
        maps, scores, score_maps, image_scores = session.run(None, {"images": batch[lo:hi]})
        np.testing.assert_allclose(maps, reference.maps[lo:hi], rtol=1e-4, atol=1e-5)
        assert np.abs(score_maps - ref_maps[lo:hi]).max() < 1e-4
        assert ((image_scores >= 0.5) == (ref_scores[lo:hi] >= 0.5)).all()
    single = session.run(None, {"images": originals[-1].transpose(2, 0, 1)[None].copy()})
    assert single[2].shape == (1, size, size)
    assert np.abs(single[2][0] - ref_maps[-1]).max() < 1e-4


class _Traced:
    """Stands in for a fresh trace of the same run (tracing is the slow part of an export)."""

    def __init__(self, path: Path):
        self.path = path

    def save(self, target: str) -> None:
        import shutil

        shutil.copyfile(self.path, target)


def _reuse_trace(monkeypatch, onnx_path: Path) -> None:
    monkeypatch.setattr("rlad.workflows.export._to_onnx", lambda graph, size: _Traced(onnx_path))


def test_a_graph_that_disagrees_is_refused_and_nothing_is_written(exported, tmp_path, capsys, monkeypatch):
    from rlad.models.postprocess import PostProcessor

    run, result = exported("ae")
    _reuse_trace(monkeypatch, result.path)
    honest = PostProcessor.normalise_maps
    # PyTorch's side moved by 2e-4 (twice the tolerance): the ONNX graph now disagrees with it.
    monkeypatch.setattr(PostProcessor, "normalise_maps", lambda self, maps: honest(self, maps) + 2e-4)
    out = tmp_path / "out" / "ae.onnx"
    code, stdout, err = _cli(capsys, "export", run, "--out", out)
    assert code == 2 and stdout == ""
    errors = [line for line in err.splitlines() if line.startswith("rlad: error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("rlad: error: the exported graph disagrees with PyTorch, nothing written")
    assert "max |map diff| 2.00e-04" in errors[0]
    assert list((tmp_path / "out").iterdir()) == []  # no file, no temporary left behind


def test_usage_errors_are_one_line(exported, tmp_path, capsys):
    run, result = exported("ae")
    for argv, message in [
        (["export", run, "--out", tmp_path / "model.pt"], "give a file name ending in .onnx"),
        (["export", tmp_path / "nothing", "--out", tmp_path / "m.onnx"], "run directory not found"),
        (["export", run, "--out", tmp_path / "m.onnx", "--images", tmp_path / "missing"], "no such file or folder"),
        (["predict", tmp_path / "bogus.onnx", run, "--out", tmp_path / "p"], "bogus.onnx: no such file"),
    ]:
        code, _, err = _cli(capsys, *argv)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
    not_rlad = tmp_path / "other.onnx"
    not_rlad.write_bytes(b"not a model at all")
    code, _, err = _cli(capsys, "predict", not_rlad, run, "--out", tmp_path / "p")
    assert code == 2 and "not a readable ONNX file" in err


def test_a_moved_dataset_needs_images_for_parity(exported, tiny_data, tmp_path, capsys, monkeypatch):
    import shutil

    run, result = exported("ae")
    _reuse_trace(monkeypatch, result.path)
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    payload = torch.load(moved / "model.pt", weights_only=True)
    payload["split"]["data"] = str(tmp_path / "gone")
    torch.save(payload, moved / "model.pt")
    code, _, err = _cli(capsys, "export", moved, "--out", tmp_path / "a.onnx")
    assert code == 2 and "give real images with --images" in err
    code, out, _ = _cli(capsys, "export", moved, "--out", tmp_path / "a.onnx", "--images", tiny_data / "test",
                        "--images-max", "3", "--json")
    assert code == 0 and json.loads(out)["parity"]["images"] == 3


def test_predict_takes_the_exported_file_as_run(exported, tiny_data, tmp_path, capsys):
    run, result = exported("patchcore")
    rows = {}
    for name, source in (("torch", run), ("onnx", result.path)):
        code, _, err = _cli(capsys, "predict", source, tiny_data / "test", "--out", tmp_path / name)
        assert code == 0, err
        rows[name] = [json.loads(line) for line in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
    assert len(rows["onnx"]) == len(_images(tiny_data))
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert abs(a["score"] - b["score"]) < 1e-4
        assert (a["anomalous"], a["boxes"], a["mask_rule"]) == (b["anomalous"], b["boxes"], b["mask_rule"])
    summary = json.loads((tmp_path / "onnx" / "summary.json").read_text())
    torch_summary = json.loads((tmp_path / "torch" / "summary.json").read_text())
    assert summary["run"] == str(result.path) and summary["thresholds"] == torch_summary["thresholds"]
