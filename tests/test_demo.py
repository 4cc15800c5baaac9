"""`make demo`'s runner end to end on a reduced budget: every stage runs and the report is written."""

from __future__ import annotations

import json
import warnings

from rlad.demo import print_summary, run_demo


def test_quick_demo_runs_every_stage(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_demo(tmp_path / "demo", seed=0, methods=("pixelstats", "nbs"), quick=True)
    pixel = {(row["method"], row["category"]) for row in summary["pixel"]}
    assert {("nbs", c) for c in ("brick", "grass", "gravel")} <= pixel
    assert [row["policy"] for row in summary["grounding"]] == ["warm start", "+ GRPO"]
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "Difference grounding" in report and "data:image/png;base64," in report
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert len(saved["pixel"]) == len(summary["pixel"])
    print_summary(summary)
    assert "pixel_auroc" in capsys.readouterr().out
