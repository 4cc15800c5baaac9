import subprocess
import sys

import pytest

from rlad.cli.main import main

DESIGN_VERBS = ["data", "fit", "test", "predict", "grpo", "ground", "test-grounding", "export", "serve"]


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for verb in DESIGN_VERBS:
        assert f"    {verb}" in out


@pytest.mark.parametrize("verb", DESIGN_VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "usage: rlad" in capsys.readouterr().out


def test_group_without_subverb_prints_help_and_exits_2(capsys):
    assert main(["data"]) == 2
    assert "check" in capsys.readouterr().err


def test_unknown_run_is_one_line_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "rlad", "test", "/nonexistent/run", "--data", "/nonexistent/data"],
        capture_output=True,
        text=True,
        env={"RLAD_PROGRESS": "0", "PATH": ""},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert result.stdout == ""
