"""`rlad predict` on very large photos (issue 16: an 8000 x 8000 image took 47 s and 5.9 GB): wall time,
CPU time and peak memory of one `predict` call per image, each in a fresh process, for a 256 px
reference image and 8000 x 8000 PNG and JPEG files.

    python benchmarks/predict_large.py                  # 8000 x 8000 (a minute or two on 2 cores)
    python benchmarks/predict_large.py --side 4000 --no-append
    python benchmarks/predict_large.py --from-results benchmarks/results/predict_large-DATE.jsonl

The run is a PatchCore (ImageNet MobileNetV2 from ../shared/weights, 256 px) fitted on a small generated
category; what is measured is predict's decoding, shrinking (maps at most MAX_OUTPUT_SIDE a side) and
outputs, which do not depend on the method.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402
from benchmarks._common import SHARED_WEIGHTS, failures_text, ok_rows, peak_rss_mb  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402


def _texture(height: int, width: int):
    """A smooth colour texture (compresses like a photo, unlike noise), as uint8 (H, W, 3)."""
    import numpy as np

    rows = np.linspace(0, 40, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 50, width, dtype=np.float32)[None, :]
    base = 128 + 60 * np.sin(cols) * np.cos(rows)
    return np.stack([base, base * 0.9, base * 0.8], axis=2).clip(0, 255).astype(np.uint8)


def own_peak_rss_mb() -> float:
    """This process's peak resident memory since it started (VmHWM, reset by exec). getrusage's maxrss
    is not: on Linux a child keeps its parent's peak across fork and exec, so a driver that fitted the
    run and wrote the large images would show its own peak in every row."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return peak_rss_mb()


def job_predict(spec: dict) -> dict:
    from rlad.workflows.predict import MAX_OUTPUT_SIDE, predict

    cpu = time.process_time()
    started = time.perf_counter()
    result = predict(spec["run"], [spec["image"]], spec["out"])
    wall = time.perf_counter() - started
    row = result.rows[0] if result.rows else {}
    return {"seconds": round(wall, 2), "cpu_s": round(time.process_time() - cpu, 2), "peak_rss_mb": own_peak_rss_mb(),
            "output_scale": row.get("output_scale"), "failed": len(result.failed), "max_output_side": MAX_OUTPUT_SIDE}


JOBS = {"predict": job_predict}


def prepare(work: Path, side: int) -> tuple[Path, list[tuple[str, Path]]]:
    """A fitted run and the images to score."""
    from PIL import Image

    sys.path.insert(0, str(_common.ROOT / "tests"))
    from conftest import write_tiny_mvtec  # the tests' generated category: 6 normal training images

    from rlad.workflows import detection

    data = write_tiny_mvtec(work / "data", size=(256, 256))
    run = work / "run"
    os.environ["RLAD_BACKBONE_WEIGHTS"] = str(SHARED_WEIGHTS)
    detection.fit("patchcore", data, run, detection.build_config("patchcore", None, []))
    images = [("256 x 256 png (reference)", data / "test" / "hole" / "000.png")]
    big = Image.fromarray(_texture(side, side))
    for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg")):
        path = work / f"large.{suffix}"
        big.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
        images.append((f"{side} x {side} {suffix}", path))
    return run, images


def render(results) -> str:
    rows = ok_rows(results.rows)
    intro = ("One `rlad predict RUN IMAGE --out DIR` per row, each in a fresh process (peak_rss_mb is that whole "
             "process: Python, torch, the model and the image). Before issue 16 an 8000 x 8000 image took 47 s and "
             "5.9 GB. Torch threads: default (2). load_1min: the machine's load average before-after the job "
             "(above ~2 the wall times are inflated by other work; cpu_s is the job's own).\n\n")
    table = markdown_table(rows, ["image", "file_mb", "seconds", "cpu_s", "peak_rss_mb", "output_scale", "load_1min"],
                           floatfmt="{:.2f}") if rows else ""
    return intro + table + failures_text(results.rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=8000, help="side of the large images (default 8000)")
    parser.add_argument("--work", help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-append", action="store_true", help="print, do not write to docs/benchmarks.md")
    parser.add_argument("--from-results", metavar="JSONL", help="render an earlier run's results file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _common.run_child(args.child, JOBS)
        return 0
    if args.no_append:  # a trial run leaves no results file in the repository either
        import tempfile

        _common.RESULTS_DIR = Path(tempfile.mkdtemp(prefix="rlad-predict-large-results-"))
    if args.from_results:
        results = _common.Results("predict_large", path=args.from_results)
    else:
        _common.hold_work(args.work)
        if not SHARED_WEIGHTS.is_file():
            print(f"needs {SHARED_WEIGHTS}", file=sys.stderr)
            return 2
        work, holder = _common.work_dir(args.work, "rlad-predict-large-")
        results = _common.Results("predict_large")
        results.note(side=args.side)
        run, images = prepare(work, args.side)
        for name, image in images:
            spec = {"kind": "predict", "run": str(run), "image": str(image), "out": str(work / f"out_{image.stem}")}
            row = _common.spawn(__file__, spec, threads=None, tag="predict_large")
            results.add({"image": name, "file_mb": round(image.stat().st_size / 1e6, 1), **row})
        if holder is not None:
            holder.cleanup()
    return _common.finish(f"rlad predict on large images ({results.meta.get('side', '?')} px)", render(results), results,
                          append=not args.no_append, fail_on_failed_rows=True)


if __name__ == "__main__":
    sys.exit(main())
