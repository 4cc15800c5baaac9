"""Speed, memory and agreement of `rlad.metrics.pixel.evaluate` against the straightforward reference.

    python -m benchmarks.metrics_speed [--data ../shared/data/magnetic_tile] [--size 256]

1. Loads the magnetic tile test split at SIZE x SIZE and scores it with a trivial, learning-free
   reference scorer: |image - per-pixel median of 50 train/good images|, Gaussian-blurred; the image
   score is the map's maximum. (Metrics only need plausible maps with ties and small defects.)
2. Times `evaluate` (median of --repeats) and the reference (scikit-learn roc_auc_score,
   average_precision_score, precision_recall_curve F1 max, and the MVTec-style reference AUPRO of
   benchmarks/reference_metrics.py), asserts both agree to 1e-6, and measures each one's peak extra
   memory with tracemalloc in a separate run (numpy reports its buffers to tracemalloc).
3. Times `evaluate` on --memory-maps synthetic SIZE x SIZE maps and measures its peak extra memory.
Prints the tables and appends them to docs/benchmarks.md (unless --no-append).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `rlad` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
from scipy import ndimage

from benchmarks._common import SHARED_DATA, Results, finish
from rlad.tables import markdown_table
from benchmarks.reference_metrics import reference_aupro, sklearn_f1_max
from rlad.metrics.pixel import evaluate

METRICS = ["image_auroc", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"]
TOLERANCE = 1e-6
MB = 1024 * 1024


def reference_scorer_maps(data: Path, size: int, n_reference: int = 50, sigma: float = 4.0):
    """(image scores, image labels, maps float32 (N,S,S), masks bool (N,S,S)) of the test split."""
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples

    folder = discover(data)
    picks = np.linspace(0, len(folder.train) - 1, n_reference).round().astype(int)
    train_images, _ = load_samples([folder.train[i] for i in picks], size, desc="loading train")
    test_images, test_masks = load_samples(folder.test, size, desc="loading test")
    median = np.median(train_images.mean(axis=1, dtype=np.float32), axis=0)
    gray = test_images.mean(axis=1, dtype=np.float32)
    maps = ndimage.gaussian_filter(np.abs(gray - median) / 255.0, sigma=(0, sigma, sigma)).astype(np.float32)
    labels = np.array([sample.label for sample in folder.test])
    return maps.max(axis=(1, 2)), labels, maps, test_masks.astype(bool)


def reference_metrics_timed(scores, labels, maps, masks, max_fpr: float) -> tuple[dict, dict]:
    """The reference metric set and the seconds each part took."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    pixel_scores, pixel_labels = maps.ravel(), masks.ravel()
    parts = {
        "image_auroc": lambda: roc_auc_score(labels, scores),
        "image_f1_max": lambda: sklearn_f1_max(scores, labels),
        "pixel_auroc": lambda: roc_auc_score(pixel_labels, pixel_scores),
        "pixel_ap": lambda: average_precision_score(pixel_labels, pixel_scores),
        "pixel_f1_max": lambda: sklearn_f1_max(pixel_scores, pixel_labels),
        "aupro": lambda: reference_aupro(maps, masks, max_fpr),
    }
    values, seconds = {}, {}
    for name, compute in parts.items():
        started = time.perf_counter()
        values[name] = float(compute())
        seconds[name] = time.perf_counter() - started
    return values, seconds


def peak_extra_mb(function) -> float:
    """Peak memory allocated while `function` runs, above what was allocated before it."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    baseline = tracemalloc.get_traced_memory()[0]
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - baseline) / MB


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def synthetic_case(n_maps: int, size: int, seed: int = 0):
    """Random float32 maps (almost all scores distinct: the hardest case for ties-aware metrics),
    rectangular defects in 40% of the images, defects scoring higher on average."""
    rng = np.random.default_rng(seed)
    maps = rng.random((n_maps, size, size), dtype=np.float32)
    masks = np.zeros((n_maps, size, size), dtype=bool)
    for index in np.flatnonzero(rng.random(n_maps) < 0.4):
        top, left = rng.integers(0, size - size // 8, 2)
        height, width = rng.integers(2, size // 8, 2)
        masks[index, top : top + height, left : left + width] = True
    maps[masks] += 0.5
    return maps.max(axis=(1, 2)), masks.any(axis=(1, 2)), maps, masks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "magnetic_tile")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-fpr", type=float, default=0.3)
    parser.add_argument("--memory-maps", type=int, default=1000, help="synthetic maps for the memory run (0: skip)")
    parser.add_argument("--no-append", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"metrics_speed: {args.data} not found (the magnetic tile dataset is needed)", file=sys.stderr)
        return 2

    scores, labels, maps, masks = reference_scorer_maps(args.data, args.size)
    n_pixels = maps.size
    print(f"{len(maps)} test images, {n_pixels:,} pixels, {masks.sum():,} defect pixels", file=sys.stderr)

    ours = evaluate(scores, labels, maps, masks, max_fpr=args.max_fpr)
    ours_seconds = median_seconds(lambda: evaluate(scores, labels, maps, masks, max_fpr=args.max_fpr), args.repeats)
    ours_peak = peak_extra_mb(lambda: evaluate(scores, labels, maps, masks, max_fpr=args.max_fpr))
    print(f"rlad evaluate: {ours_seconds:.3f} s, peak +{ours_peak:.0f} MB", file=sys.stderr)

    theirs, parts = reference_metrics_timed(scores, labels, maps, masks, args.max_fpr)
    theirs_seconds = sum(parts.values())
    theirs_peak = peak_extra_mb(lambda: reference_metrics_timed(scores, labels, maps, masks, args.max_fpr))
    print(f"reference: {theirs_seconds:.3f} s, peak +{theirs_peak:.0f} MB", file=sys.stderr)

    value_rows = [
        {
            "metric": name,
            "rlad": ours[name],
            "reference": theirs[name],
            "abs diff": f"{abs(ours[name] - theirs[name]):.1e}",
            "reference time (s)": f"{parts[name]:.3f}",
        }
        for name in METRICS
    ]
    disagreements = [row["metric"] for row in value_rows if not abs(row["rlad"] - row["reference"]) <= TOLERANCE]
    speed_rows = [
        {
            "implementation": f"rlad.metrics.pixel.evaluate (median of {args.repeats})",
            "time (s)": f"{ours_seconds:.3f}",
            "peak extra memory (MB)": f"{ours_peak:.0f}",
            "speed-up": f"{theirs_seconds / ours_seconds:.1f}x",
        },
        {
            "implementation": "scikit-learn + MVTec-style reference AUPRO (1 run)",
            "time (s)": f"{theirs_seconds:.3f}",
            "peak extra memory (MB)": f"{theirs_peak:.0f}",
            "speed-up": "1.0x",
        },
    ]
    body = (
        f"Magnetic tile test split at {args.size}x{args.size}: {len(maps)} images, {n_pixels:,} pixels "
        f"({int(masks.sum()):,} defect pixels, {int(labels.sum())} defective images). Maps: |image - "
        "per-pixel median of 50 train/good images|, Gaussian-blurred (no learning). Agreement "
        f"tolerance {TOLERANCE:g}: {'all metrics agree' if not disagreements else 'DISAGREE: ' + ', '.join(disagreements)}."
        "\n\n" + markdown_table(value_rows, floatfmt="{:.6f}") + "\n" + markdown_table(speed_rows)
    )

    if args.memory_maps:
        syn_scores, syn_labels, syn_maps, syn_masks = synthetic_case(args.memory_maps, args.size)
        syn_seconds = median_seconds(lambda: evaluate(syn_scores, syn_labels, syn_maps, syn_masks), 1)
        syn_peak = peak_extra_mb(lambda: evaluate(syn_scores, syn_labels, syn_maps, syn_masks))
        input_mb = (syn_maps.nbytes + syn_masks.nbytes) / MB
        print(f"synthetic {args.memory_maps} maps: {syn_seconds:.3f} s, peak +{syn_peak:.0f} MB", file=sys.stderr)
        body += "\n" + markdown_table(
            [
                {
                    "case": f"{args.memory_maps} synthetic {args.size}x{args.size} float32 maps "
                    f"({syn_maps.size:,} pixels, all scores nearly distinct)",
                    "rlad time (s)": f"{syn_seconds:.3f}",
                    "peak extra memory (MB)": f"{syn_peak:.0f}",
                    "inputs (MB)": f"{input_mb:.0f}",
                }
            ]
        )

    results = Results("metrics_speed")
    for row in value_rows + speed_rows:
        results.add(row)
    finish("Pixel metrics: speed, memory and agreement with the reference", body, results, append=not args.no_append)
    assert not disagreements, f"rlad and the reference disagree on {disagreements}"
    return 0


if __name__ == "__main__":
    sys.exit(main())
