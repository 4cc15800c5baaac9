"""`rlad data pairs` (rlad.cli.data.run_pairs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from rlad.data.pairs.records import load_pairs


def test_cli_pairs_and_its_errors(tiny_mvtec, tmp_path, capsys):
    from rlad.cli.main import main

    out = tmp_path / "p.jsonl"
    assert main(["data", "pairs", str(tiny_mvtec), "--out", str(out), "--synthetic", "2", "--seed", "1"]) == 0
    assert "wrote 9 pairs" in capsys.readouterr().out
    assert len(load_pairs(out)) == 9
    code = subprocess.run([sys.executable, "-m", "rlad", "data", "pairs", str(tmp_path / "nope"), "--out", str(out)],
                          capture_output=True, text=True)
    assert code.returncode == 2
    assert "not found" in code.stderr and "Traceback" not in code.stderr


def test_cli_adaptation_pairs_need_only_train_good(tiny_mvtec, tmp_path, capsys):
    from rlad.cli.main import main

    shutil.rmtree(tiny_mvtec / "test")
    shutil.rmtree(tiny_mvtec / "ground_truth")
    out = tmp_path / "adapt.jsonl"
    assert main(["data", "pairs", str(tiny_mvtec), "--out", str(out), "--adapt", "3", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["perlin"], summary["normal"]) == (3, 2)
    records = load_pairs(out)
    assert sorted(r.source for r in records) == ["normal", "normal", "perlin", "perlin", "perlin"]
    assert main(["data", "pairs", str(tiny_mvtec), "--out", str(out), "--adapt", "1", "1", "--synthetic", "2"]) == 2
    assert "--synthetic" in capsys.readouterr().err
