"""The report `rlad test` writes: one self-contained page with every section, and (in headless
Chromium, Debian's `chromium`) a page that renders: every embedded picture decodes and the screenshot
shows a page, not a blank or an error. CI installs Chromium (.ci/run) and sets RLAD_REQUIRE_CHROMIUM=1,
so there the rendering test cannot skip."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlad.cli.main import main

# Two curve plots and the histogram, then the worst errors: the tiny data's 3 normal and (up to 4) of its
# 4 defective test images.
PICTURES = 2 + 1 + 3 + 4
SECTIONS = ["Metrics", "ROC and precision-recall curves", "Per defect type", "Image scores of normal and defective images",
            "Worst false positives", "Worst false negatives"]


def _test(capsys, *argv) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        code = main(["test", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def report(tiny_patchcore_run, tmp_path, capsys) -> Path:
    target = tmp_path / "report.html"
    code, out, err = _test(capsys, tiny_patchcore_run, "--report", target)
    assert code == 0, err
    assert f"report: {target}" in out
    return target


def test_the_report_holds_every_section_and_nothing_external(report):
    page = report.read_text()
    for heading in SECTIONS:
        assert f"<h2>{heading}" in page
    for metric in ("image_auroc", "pixel_auroc", "aupro", "pixel_f1_at_val_threshold"):
        assert f"<td>{metric}</td>" in page
    for kind in ("good", "hole", "scratch"):
        assert f"<td>{kind}</td>" in page  # one row per defect type
    sources = re.findall(r"""(?:src|href)=['"]([^'"]*)['"]""", page)
    assert len(sources) == PICTURES
    assert all(s.startswith("data:image/png;base64,") for s in sources)  # self-contained
    assert "RANDOM weights" in page  # the run's backbone is random: the page says so
    # How many errors there are, since the panels show the worst images whether or not they are errors.
    assert re.search(r"\d+ of 3 normal images are flagged \(false positives\)", page)
    assert re.search(r"\d+ of 4 defective images are missed \(false negatives\)", page)


def test_test_writes_the_report_into_the_run_by_default_and_not_with_no_report(tiny_patchcore_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_patchcore_run, run)
    code, out, _ = _test(capsys, run, "--no-report")
    assert code == 0 and not (run / "report.html").exists() and "report:" not in out
    code, out, _ = _test(capsys, run)
    assert code == 0 and (run / "report.html").is_file() and f"report: {run / 'report.html'}" in out




def _run_chromium(chromium: list[str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    profile.mkdir()
    command = [*chromium, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_report_renders_in_headless_chromium(report, tmp_path, headless_chromium):
    url = report.resolve().as_uri()
    dom = _run_chromium(headless_chromium, tmp_path, "--virtual-time-budget=10000", "--dump-dom", url)
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stderr[-2000:]
    counts = {key: int(value) for key, value in re.findall(r'data-(images|decoded|narrowest)="(\d+)"', body.group(1))}
    assert counts["images"] == counts["decoded"] == PICTURES  # the page's own check: every picture decoded
    # ... and none is shown as a thumbnail: the tiny data's 48 x 64 error panels are scaled up to be read.
    assert counts["narrowest"] >= 400
    assert len(re.findall(r"<h2>", dom.stdout)) == len(SECTIONS)

    shot = tmp_path / "report.png"
    result = _run_chromium(headless_chromium, tmp_path, "--window-size=1200,2400", f"--screenshot={shot}", "--virtual-time-budget=10000", url)
    assert shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert pixels.shape == (2400, 1200, 3)
    ink = (pixels < 235).any(axis=2)
    assert ink.mean() > 0.05  # not a blank page
    assert ink[:80].any()  # the title at the top
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    assert colourful.mean() > 0.01  # plots and heat maps, not only text
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # photographs, not an error page
