"""Do two versions of the code give the same maps and metrics on a saved run? (issue 19: PatchCore
faster "at equal maps"; inference-only changes to NBS and the refiner checked on the same fitted run)

    .venv/bin/python benchmarks/maps_agree.py RUN --data DIR --baseline-src /path/to/old/src --split dev

Loads the run's model twice, once with this checkout's `src` and once with the other one first on
the path, each in its own process, predicts the same images (the run's `--split` of DIR, batch 8) and
reports: the largest absolute difference of the normalised maps (the run's own normalisation, as
`rlad predict` writes them) and of the raw maps over the run's normalisation span, the largest
image-score difference, and each version's pixel AUROC, AUPRO, F1_max and image AUROC on those images.
Appends a section to docs/benchmarks.md unless --no-append.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402
from benchmarks._common import append_section  # noqa: E402

METRICS = ["pixel_auroc", "aupro", "pixel_f1_max", "image_auroc"]


def job_predict(spec: dict) -> dict:
    import numpy as np

    from rlad.data.folder import discover
    from rlad.data.split import evaluation_samples
    from rlad.data.transforms import load_samples
    from rlad.metrics.pixel import evaluate
    from rlad.workflows import detection as api

    loaded = api.load_run(spec["run"])
    folder = discover(spec["data"])
    evaluation = evaluation_samples(loaded.split, folder, spec["split"], run_name=spec["run"])
    samples = evaluation.samples if hasattr(evaluation, "samples") else evaluation[0]  # older code: a tuple
    samples = samples[: spec["images"]] if spec["images"] else samples
    images, masks = load_samples(samples, loaded.cfg.image_size, desc="loading")
    started = time.perf_counter()
    pred = api.predict_arrays(loaded.model, images, 8)
    ms = (time.perf_counter() - started) * 1000 / len(images)
    metrics = evaluate(pred.scores, np.array([s.label for s in samples]), pred.maps, masks.astype(bool))
    np.savez(spec["out"], maps=pred.maps, scores=pred.scores)
    return {"n_images": len(images), "ms_per_image": round(ms, 2), **{k: metrics[k] for k in METRICS}}


JOBS = {"predict": job_predict}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--data")
    parser.add_argument("--baseline-src")
    parser.add_argument("--split", choices=("test", "dev"), default="dev")
    parser.add_argument("--images", type=int, default=0, help="first N images of the split (default: all)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _common.run_child(args.child, JOBS)
        return 0
    if not (args.run and args.data and args.baseline_src):
        parser.error("RUN, --data and --baseline-src are required")
    baseline = Path(args.baseline_src).resolve()
    if not (baseline / "rlad" / "__init__.py").is_file():
        parser.error(f"--baseline-src {baseline}: no rlad package there")

    import numpy as np

    from rlad.tables import markdown_table
    from rlad.workflows.detection import load_run

    post = load_run(args.run).post
    span = max(post.pixel_threshold - post.pixel_min, 1e-12) / 0.5  # raw units per unit of normalised map
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory(prefix="rlad_maps_") as work:
        for code, src in (("this", Path(__file__).resolve().parents[1] / "src"), ("baseline", baseline)):
            out = str(Path(work) / f"{code}.npz")
            spec = {"kind": "predict", "run": args.run, "data": args.data, "split": args.split, "images": args.images, "out": out}
            result = _common.spawn(__file__, spec, args.threads, tag=f"maps {code}", env={"PYTHONPATH": str(src)})
            if result is None:
                return 1
            rows.append({"code": code, **result})
            with np.load(out) as saved:
                outputs[code] = (saved["maps"], saved["scores"])
    (maps_a, scores_a), (maps_b, scores_b) = outputs["this"], outputs["baseline"]
    agreement = {
        "max_abs_diff_normalised_maps": float(np.abs(post.normalise_maps(maps_a) - post.normalise_maps(maps_b)).max()),
        "max_abs_diff_raw_maps_over_span": float(np.abs(maps_a - maps_b).max() / span),
        "max_abs_diff_scores": float(np.abs(scores_a - scores_b).max()),
        "max_abs_diff_metric": max(abs(rows[0][k] - rows[1][k]) for k in METRICS),
    }
    text = "\n".join([
        f"Run: {args.run}; {args.split} split of {Path(args.data).name} ({rows[0]['n_images']} images); this checkout vs "
        f"the baseline src {baseline}; each in its own process, batch 8. Normalised maps as `rlad predict` writes them "
        f"(the run's validation-fitted scale, clipped to [0, 1]); raw map differences over the same scale, unclipped.",
        "", markdown_table(rows, ["code", "n_images", "ms_per_image", *METRICS, "load_1min"]),
        "", markdown_table([agreement], floatfmt="{:.2e}"),
    ])
    print(text)
    if not args.no_append:
        append_section("Maps of a saved run: this code vs the baseline code (issue 19)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
