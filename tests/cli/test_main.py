import subprocess
import sys

import pytest

from rlad.cli.main import main

VERBS = ["data", "fit", "test", "predict", "grpo", "ground", "test-grounding", "export", "serve"]
NOT_YET = [("export", "openvino")]  # (verb, option) not offered until it works (docs/deploy.md)


def test_help_lists_every_verb_and_nothing_that_does_not_work(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert f"    {verb}" in out
    for verb, option in NOT_YET:
        assert main([verb, "--help"]) == 0
        assert option not in capsys.readouterr().out


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    assert main([verb, "--help"]) == 0
    assert "usage: rlad" in capsys.readouterr().out


def test_a_usage_error_exits_2(capsys):
    assert main(["fit"]) == 2
    assert "required" in capsys.readouterr().err


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
