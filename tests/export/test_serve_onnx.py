"""`rlad serve`'s per-request work on an exported file (what benchmarks/serve.py serves): the same
decision as on the run folder, with ONNX Runtime's threads told not to busy-wait."""

from __future__ import annotations


def test_the_exported_file_is_served_as_its_run_with_idle_threads_asleep(exported, tiny_data):
    from rlad.serve.config import ServeConfig
    from rlad.serve.inspect import PixelInspector

    run, result = exported("patchcore")
    onnx, eager, cfg = PixelInspector(result.path, 1), PixelInspector(run, 1), ServeConfig()
    options = onnx.loaded.model.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1
    for path in sorted((tiny_data / "test").rglob("*.png"))[:4]:
        files = {"image": (path.read_bytes(), "image/png")}
        served, reference = onnx.handle(files, cfg), eager.handle(files, cfg)
        assert abs(served["score"] - reference["score"]) < 1e-4, path
        assert served["label"] == reference["label"] and served["boxes"] == reference["boxes"], path


def test_an_exported_file_opened_for_predict_lets_its_idle_threads_sleep(exported):
    from rlad.workflows.predict import load_predictor

    _, result = exported("patchcore")
    options = load_predictor(result.path).model.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = load_predictor(result.path, spinning=True).model.session.get_session_options()
    try:  # ONNX Runtime's default (spin) leaves the entry unset
        assert spinning.get_session_config_entry("session.intra_op.allow_spinning") != "0"
    except RuntimeError:
        pass
