"""Baselines on the shared harness (issue 4): quality, fit time, inference speed and peak memory.

    .venv/bin/python benchmarks/baselines.py                 # full run (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/baselines.py --quick         # MPDD only, short AE, small scaling sweep
    .venv/bin/python benchmarks/baselines.py --methods patchcore,padim --no-scaling

    .venv/bin/python benchmarks/baselines.py --from-results benchmarks/results/baselines-DATE.jsonl

Everything goes through the library a user runs (`rlad.workflows.detection.build_config/fit/test`), one
subprocess per measurement so each peak RSS is that job's own. Raw rows go to
benchmarks/results/baselines-DATE.jsonl as they are measured; the tables are appended to
docs/benchmarks.md (unless --no-append). Needs ../shared/weights/mobilenet_v2-b0353104.pth and the
datasets under ../shared/data; an absent dataset or a job that fails is listed as failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402
from benchmarks._common import SHARED_DATA, SHARED_WEIGHTS, peak_rss_mb  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402

DATASETS = ["mpdd_metal_plate_512", "magnetic_tile"]
PEER = {  # anomalib 2.7.0, same weights, 256 px, 2 cores, MPDD metal_plate (measured on this kind of machine; docs/benchmarks.md)
    "patchcore": {"image_auroc": 1.000, "pixel_auroc": 0.992, "aupro": 0.951, "pixel_f1_max": 0.881, "fit_s": 136, "ms_per_image": 51},
    "padim": {"image_auroc": 0.476, "pixel_auroc": 0.945, "aupro": 0.809, "pixel_f1_max": 0.702, "fit_s": 7, "ms_per_image": 65},
}


# --- child jobs (run in their own process) --------------------------------------------------------


def _weights_override() -> str:
    return f"model.backbone.weights={SHARED_WEIGHTS}"


def job_quality(spec: dict) -> dict:
    from rlad.workflows import detection as api

    overrides = list(spec.get("overrides", []))
    if spec["method"] in ("patchcore", "padim"):
        overrides.append(_weights_override())
    cfg = api.build_config(spec["method"], None, overrides)
    started = time.perf_counter()
    run = api.fit(spec["method"], spec["data"], spec["run"], cfg)
    wall = time.perf_counter() - started
    fit_metrics = json.loads(run.metrics_path.read_text())["fit"]
    metrics = api.test(run.path, spec["data"], report=False)
    return {
        **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_f1_max", "ms_per_image", "n_test")},
        "fit_s": fit_metrics["fit_seconds"],
        "fit_wall_s": round(wall, 1),
        "peak_rss_mb": peak_rss_mb(),
    }


def job_batch_timing(spec: dict) -> dict:
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.workflows import detection as api

    loaded = api.load_run(spec["run"])
    samples = discover(spec["data"]).test
    images, _ = load_samples(samples[: spec["n_images"]], loaded.cfg.image_size, desc="loading")
    out = {}
    for batch_size in spec["batch_sizes"]:
        api.predict_arrays(loaded.model, images[:batch_size], batch_size)  # warm-up (allocations, caches)
        started = time.perf_counter()
        api.predict_arrays(loaded.model, images, batch_size)
        out[f"batch_{batch_size}"] = round((time.perf_counter() - started) * 1000 / len(images), 2)
    out["n_images"] = int(len(images))
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _training_images(data: str, count: int, size: int):
    """`count` train/good images at `size`; beyond the folder's count, horizontally flipped copies."""
    import numpy as np

    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples

    samples = discover(data).train
    base, _ = load_samples(samples[:count], size, desc="loading train")
    missing = count - len(base)
    if missing > len(base):
        raise SystemExit(f"{data}: {len(base)} images, even with flips fewer than {count}")
    if missing > 0:
        base = np.concatenate([base, base[:missing, :, :, ::-1]])
    return np.ascontiguousarray(base)


def job_fit_scaling(spec: dict) -> dict:
    import numpy as np

    from rlad.workflows import detection as api
    from rlad.models.base import FitData
    from rlad.models.registry import get_model_class

    cfg = api.build_config("patchcore", None, [_weights_override(), *spec.get("overrides", [])])
    images = _training_images(spec["data"], spec["n_images"], cfg.image_size)
    before = peak_rss_mb()
    model = get_model_class("patchcore")(cfg.model)
    empty = np.zeros((0, 3, cfg.image_size, cfg.image_size), np.uint8)
    started = time.perf_counter()
    model.fit(FitData(images, empty, empty[:, 0], seed=cfg.seed))
    return {
        "n_images": spec["n_images"],
        "fit_s": round(time.perf_counter() - started, 2),
        **model.fit_info,
        "rss_before_fit_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "images_mb": round(images.nbytes / 2**20, 1),
    }


def job_all_train(spec: dict) -> dict:
    """PatchCore fitted on every train/good image (no validation hold-out), evaluated on test."""
    import numpy as np

    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.metrics.pixel import evaluate
    from rlad.workflows import detection as api
    from rlad.models.base import FitData
    from rlad.models.registry import get_model_class

    cfg = api.build_config(spec["method"], None, [_weights_override(), *spec.get("overrides", [])])
    folder = discover(spec["data"])
    train, _ = load_samples(folder.train, cfg.image_size, desc="loading train")
    model = get_model_class(spec["method"])(cfg.model)
    empty = np.zeros((0, 3, cfg.image_size, cfg.image_size), np.uint8)
    started = time.perf_counter()
    model.fit(FitData(train, empty, empty[:, 0], seed=cfg.seed))
    fit_s = time.perf_counter() - started
    images, masks = load_samples(folder.test, cfg.image_size, desc="loading test")
    pred = api.predict_arrays(model, images, cfg.batch_size)
    labels = np.array([s.label for s in folder.test])
    metrics = evaluate(pred.scores, labels, pred.maps, masks.astype(bool))
    return {
        **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro", "pixel_f1_max")},
        "n_train": int(len(train)),
        "fit_s": round(fit_s, 2),
    }


JOBS = {"quality": job_quality, "batch": job_batch_timing, "scaling": job_fit_scaling, "all_train": job_all_train}


def run_child(spec_json: str) -> None:
    _common.run_child(spec_json, JOBS)


def spawn(spec: dict, threads: int | None) -> dict:
    # nbs/supervised find the backbone through the environment (their key is model.context.backbone.weights).
    return _common.spawn(__file__, spec, threads, tag="baselines", env={"RLAD_BACKBONE_WEIGHTS": str(SHARED_WEIGHTS)})


# --- the driver -----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="patchcore,padim,ae", help="comma-separated (any registered method, e.g. nbs)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="folders under ../shared/data")
    parser.add_argument("--quick", action="store_true", help="MPDD only, AE 150 steps, scaling at 50/200, fewer timing images")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per job (default: torch's own)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the PatchCore batch-size and fit-size sweeps")
    parser.add_argument("--work", default=None, help="keep run directories here (default: a temporary folder)")
    parser.add_argument("--no-append", action="store_true", help="print the tables instead of appending to docs/benchmarks.md")
    parser.add_argument("--from-results", metavar="FILE", help="render the section again from a results file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="extra override for one method, e.g. --set ae:model.steps=500 (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _peer_rows(methods: list[str]) -> list[dict]:
    return [{"dataset": "mpdd_metal_plate_512", "method": f"{m} (anomalib peer)", **PEER[m],
             "fit_s": float(PEER[m]["fit_s"]), "ms_per_image": float(PEER[m]["ms_per_image"])} for m in methods if m in PEER]


def measure(args, results: _common.Results) -> None:
    """Every measurement of the run, each recorded as soon as it is made (`kind` tells which table)."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    datasets = ["mpdd_metal_plate_512"] if args.quick else [d.strip() for d in args.datasets.split(",") if d.strip()]
    present = []
    for name in datasets:
        if (SHARED_DATA / name / "train").is_dir():
            present.append(name)
        else:
            results.add(_common.failed_row({"kind": "quality", "dataset": name}, f"{SHARED_DATA / name} not found"))
    per_method: dict[str, list[str]] = {}
    for item in args.overrides:
        method, _, override = item.partition(":")
        per_method.setdefault(method, []).append(override)
    if args.quick:
        per_method.setdefault("ae", []).append("model.steps=150")
    results.note(methods=methods, threads=args.threads)

    work, work_holder = _common.work_dir(args.work, "rlad_baselines_")
    for dataset in present:
        for method in methods:
            run = work / f"{dataset}_{method}"
            if run.exists():
                import shutil

                shutil.rmtree(run)
            row = spawn({"kind": "quality", "method": method, "data": str(SHARED_DATA / dataset), "run": str(run),
                         "overrides": per_method.get(method, [])}, args.threads)
            results.add({"kind": "quality", "dataset": dataset, "method": method, **row})

    mpdd = SHARED_DATA / "mpdd_metal_plate_512"
    if "patchcore" in methods and "mpdd_metal_plate_512" in present:
        row = spawn({"kind": "all_train", "method": "patchcore", "data": str(mpdd),
                     "overrides": per_method.get("patchcore", [])}, args.threads)
        results.add({"kind": "all_train", "dataset": "mpdd_metal_plate_512", **row})
    if "patchcore" in methods and not args.no_scaling:
        run = work / "mpdd_metal_plate_512_patchcore"
        if (run / "model.pt").is_file():
            row = spawn({"kind": "batch", "run": str(run), "data": str(mpdd), "batch_sizes": [1, 8, 32],
                         "n_images": 32 if args.quick else 96}, args.threads)
            results.add({"kind": "batch", **row})
        tile = SHARED_DATA / "magnetic_tile"
        if (tile / "train").is_dir():
            for n in [50, 200] if args.quick else [50, 200, 800]:
                row = spawn({"kind": "scaling", "data": str(tile), "n_images": n,
                             "overrides": per_method.get("patchcore", [])}, args.threads)
                results.add({"kind": "scaling", "n_images": n, **row})
    if work_holder is not None:
        work_holder.cleanup()


def render(results: _common.Results) -> str:
    rows = results.rows
    of = lambda kind: [r for r in rows if r.get("kind") == kind]  # noqa: E731
    methods = results.meta.get("methods", sorted({r["method"] for r in of("quality") if "method" in r}))
    quality = of("quality")
    columns = ["dataset", "method", "image_auroc", "pixel_auroc", "aupro", "pixel_f1_max", "fit_s", "ms_per_image",
               "peak_rss_mb", "n_test", "load_1min"]
    peers = _peer_rows(methods) if any(r.get("dataset") == "mpdd_metal_plate_512" for r in quality) else []
    body = [
        "Protocol: the harness default (10% of train/good held out for thresholds, unsupervised, 256 px, seed 0); "
        "fit_s = model.fit only (features + coreset/statistics/training), ms_per_image = test-split prediction "
        "at batch 8 (no image decoding), peak_rss_mb = the whole job's peak (fit + test), one process per row. "
        f"Threads per job: {results.meta.get('threads') or 'torch default'}. load_1min = the machine's 1-minute "
        "load average before-after the job (other work was running on the shared 2 cores when it is above ~0.5).",
        "",
        markdown_table(_common.ok_rows(quality) + peers, columns, floatfmt="{:.3f}"),
    ]
    if _common.ok_rows(of("all_train")):
        body += ["", "PatchCore on MPDD fitted on all train/good images (no threshold hold-out; metrics are "
                 "threshold-free so none is needed), to separate the hold-out's cost from the method's:", "",
                 markdown_table(_common.ok_rows(of("all_train")), floatfmt="{:.3f}")]
    if _common.ok_rows(of("batch")):
        body += ["", "PatchCore inference (MPDD run above, ms/image by batch size, test images preloaded):", "",
                 markdown_table(_common.ok_rows(of("batch")), floatfmt="{:.2f}")]
    if _common.ok_rows(of("scaling")):
        body += ["", "PatchCore fit time by training-set size (magnetic_tile train/good; 800 = the 762 images "
                 "plus horizontally flipped copies). pooled_patches is capped by model.max_patches, so the "
                 "coreset time stops growing; peak_rss_mb includes the decoded images (images_mb):", "",
                 markdown_table(_common.ok_rows(of("scaling")), ["n_images", "fit_s", "training_patches", "pooled_patches",
                                                                  "memory_bank", "images_mb", "rss_before_fit_mb",
                                                                  "peak_rss_mb", "load_1min"], floatfmt="{:.2f}")]
    body.append(_common.failures_text(rows))
    return "\n".join(body)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args.child)
        return 0
    if args.from_results:
        results = _common.Results("baselines", path=args.from_results)
    else:
        _common.hold_work(args.work)
        if not SHARED_WEIGHTS.is_file():
            print(f"[baselines] skipped: ImageNet MobileNetV2 weights not found at {SHARED_WEIGHTS}", file=sys.stderr)
            return 0
        results = _common.Results("baselines")
        started = time.time()
        measure(args, results)
        results.add({"kind": "wall", "minutes": round((time.time() - started) / 60, 1)})
    text = render(results)
    wall = [r for r in results.rows if r.get("kind") == "wall"]
    if wall:
        text += f"\nTotal benchmark wall time: {wall[-1]['minutes']} min.\n"
    return _common.finish("Baselines: PatchCore, PaDiM, AE", text, results, append=not args.no_append)


if __name__ == "__main__":
    sys.exit(main())
