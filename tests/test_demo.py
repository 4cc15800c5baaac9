"""`make demo`'s runner end to end on a reduced budget: every stage runs and the report is written."""

from __future__ import annotations

import json

from rlad.demo import main


def test_quick_demo_runs_every_stage_and_ends_with_the_table_and_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--quick", "--methods", "pixelstats,nbs", "--random-weights"]) == 0
    stdout = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    pixel = {(row["method"], row["category"]) for row in summary["pixel"]}
    assert pixel == {("pixelstats", c) for c in ("brick", "grass", "gravel")} | {("nbs", "gravel")}
    assert [row["policy"] for row in summary["grounding"]] == ["warm start", "+ GRPO"]
    report = (out / "report.html").read_text()
    assert "Difference grounding" in report and "data:image/png;base64," in report
    assert "untrained backbones" in report  # --random-weights: the page says its figures are not the methods'
    assert "runs/nbs_gravel/report.html" in report  # links to each run's own report
    assert (out / "runs" / "nbs_gravel" / "report.html").is_file()
    # What a person sees last: the results table, then where to open the report.
    assert "pixel_auroc" in stdout and "acc_at_0_3" in stdout
    assert stdout.rstrip().splitlines()[-2].endswith(f"Open the report: {(out / 'report.html').resolve()}")


def test_the_demo_without_weights_offline_stops_at_once_with_the_one_line_error(tmp_path, capsys):
    # The tests' environment has no weight file and no network: the default demo must say where to
    # put the file right after building its data, not fail (or silently go random) minutes later.
    assert main(["--out", str(tmp_path / "demo"), "--quick", "--no-grounding"]) == 2
    err = capsys.readouterr().err
    assert "rlad demo: error: model.backbone.weights=imagenet" in err and "mobilenet_v2-b0353104.pth" in err
    assert not (tmp_path / "demo" / "runs").exists()

