"""`rlad data demo` (rlad.cli.data.run_demo)."""

from __future__ import annotations

from rlad.data.synth import demo as demo_dataset


def test_cli_demo_prints_a_summary(tmp_path, monkeypatch, capsys):
    from rlad.cli.main import main

    real = demo_dataset.write_demo_dataset
    # Keep the CLI test fast: same code path, fewer and smaller images.
    monkeypatch.setattr(demo_dataset, "write_demo_dataset",
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
