"""NBS (issue 3): learned sampler vs uniform sampler vs no autoencoder reset vs the supervised control
vs unsupervised PatchCore, on the same semi-supervised split, several seeds.

    .venv/bin/python benchmarks/nbs.py                         # both folders, seeds 0,1,2 (hours on 2 cores)
    .venv/bin/python benchmarks/nbs.py --jobs 2 --threads 1    # two jobs side by side, one core each
    .venv/bin/python benchmarks/nbs.py --quick                 # MPDD, one seed, 400 NBS steps (smoke run)
    .venv/bin/python benchmarks/nbs.py --from-results R.jsonl  # re-render tables from saved results

Protocol (every row): 256 px; `protocol.labeled_per_type=5` defective images per type drawn with the
seed from test/ are training data for the semi-supervised rows and are removed from evaluation for
every row (PatchCore included, which ignores them); 10% of train/good held out for thresholds. One
fresh process per run (its own peak memory). Results are written as JSON lines to
WORK/results.jsonl as they arrive, so an interrupted benchmark loses nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402
from benchmarks._common import SHARED_DATA, SHARED_WEIGHTS, append_section, peak_rss_mb  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402

DATASETS = ["magnetic_tile", "mpdd_metal_plate_512"]
VARIANTS = {  # name -> (method, overrides)
    "nbs learned sampler": ("nbs", []),
    "nbs uniform sampler": ("nbs", ["model.sampler=uniform"]),
    "nbs no reset": ("nbs", ["model.reset=false"]),
    "supervised control": ("refine", []),  # the prior refiner (`rlad fit refine`); the name keeps old results comparable
    "nbs paper input (profile only)": ("nbs", ["model.context.kind=none", "model.predictor_project=0", "model.predictor_dropout=0"]),
    "patchcore (unsupervised)": ("patchcore", []),
}
ONE_SEED = {"nbs paper input (profile only)", "patchcore (unsupervised)"}  # deterministic or for the record only
GOALS = {  # the NBS goals (docs/nbs.md)
    "magnetic_tile": "pixel AUROC >= 0.97, pixel F1_max >= 0.60, F1_max and AUPRO above PatchCore's",
    "mpdd_metal_plate_512": "F1_max and AUPRO above PatchCore's (the anomalib peer: F1_max 0.881, AUPRO 0.951)",
}
METRICS = ["image_auroc", "pixel_auroc", "aupro", "pixel_f1_max"]


def job_quality(spec: dict) -> dict:
    from rlad.workflows import detection as api

    overrides = list(spec["overrides"]) + [f"seed={spec['seed']}", "protocol.labeled_per_type=5",
                                           f"protocol.dev_fraction={spec.get('dev_fraction', 0.0)}"]
    weights_key = "model.backbone.weights" if spec["method"] == "patchcore" else "model.context.backbone.weights"
    overrides.append(f"{weights_key}={SHARED_WEIGHTS}")
    cfg = api.build_config(spec["method"], None, overrides)
    started = time.perf_counter()
    run = api.fit(spec["method"], spec["data"], spec["run"], cfg)
    wall = time.perf_counter() - started
    fit_metrics = json.loads(run.metrics_path.read_text())["fit"]
    metrics = api.test(run.path, spec["data"], split=spec.get("split", "test"), report=False)
    row = {k: metrics[k] for k in (*METRICS, "pixel_f1_at_val_threshold", "ms_per_image", "n_test", "split")}
    row.update({"fit_s": fit_metrics["fit_seconds"], "fit_wall_s": round(wall, 1), "peak_rss_mb": peak_rss_mb(),
                "dev_fraction": spec.get("dev_fraction", 0.0)})
    history_path = run.path / "nbs_history.json"
    if history_path.is_file():  # did the sampler learn? first vs last tenth of the cycles
        history = json.loads(history_path.read_text())
        tenth = max(1, len(history) // 10)
        for key in ("r_pred", "entropy", "stop_share"):
            values = [h[key] for h in history if key in h]
            if values:
                row[f"{key}_first"] = round(statistics.fmean(values[:tenth]), 4)
                row[f"{key}_last"] = round(statistics.fmean(values[-tenth:]), 4)
    if spec.get("keep") is False:
        shutil.rmtree(spec["run"], ignore_errors=True)
    return row


JOBS = {"quality": job_quality}


# --- tables ----------------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def summarise(results: list[dict]) -> list[dict]:
    rows = []
    for dataset in DATASETS:
        for variant in VARIANTS:
            runs = [r for r in results if r["dataset"] == dataset and r["variant"] == variant]
            if not runs:
                continue
            row = {"dataset": dataset, "variant": variant, "seeds": len(runs)}
            for key in (*METRICS, "pixel_f1_at_val_threshold"):
                row[key] = _mean_std([r[key] for r in runs])
            row["fit_s"] = f"{statistics.fmean(r['fit_s'] for r in runs):.0f}"
            row["ms_per_image"] = f"{statistics.fmean(r['ms_per_image'] for r in runs):.1f}"
            row["peak_rss_mb"] = f"{max(r['peak_rss_mb'] for r in runs):.0f}"
            row["load_1min"] = ", ".join(r.get("load_1min", "") for r in runs)
            rows.append(row)
    return rows


def sampler_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        if "r_pred_first" not in r:
            continue
        rows.append({k: r.get(k) for k in ("dataset", "variant", "seed", "r_pred_first", "r_pred_last", "entropy_first",
                                           "entropy_last", "stop_share_first", "stop_share_last")})
    return rows


def verdicts(results: list[dict]) -> list[str]:
    lines = []

    def mean(dataset, variant, key):
        values = [r[key] for r in results if r["dataset"] == dataset and r["variant"] == variant]
        return statistics.fmean(values) if values else None

    for dataset in DATASETS:
        learned = {k: mean(dataset, "nbs learned sampler", k) for k in METRICS}
        if learned["pixel_f1_max"] is None:
            continue
        patchcore = {k: mean(dataset, "patchcore (unsupervised)", k) for k in METRICS}
        parts = [f"**{dataset}** (goal: {GOALS[dataset]}): learned sampler pixel AUROC {learned['pixel_auroc']:.3f}, "
                 f"AUPRO {learned['aupro']:.3f}, pixel F1_max {learned['pixel_f1_max']:.3f}"]
        if patchcore["aupro"] is not None:
            parts.append(f"vs PatchCore AUPRO {patchcore['aupro']:.3f}, F1_max {patchcore['pixel_f1_max']:.3f} "
                         f"({'above' if learned['aupro'] > patchcore['aupro'] else 'NOT above'} on AUPRO, "
                         f"{'above' if learned['pixel_f1_max'] > patchcore['pixel_f1_max'] else 'NOT above'} on F1_max)")
        for other in ("nbs uniform sampler", "nbs no reset", "supervised control"):
            value = mean(dataset, other, "pixel_f1_max")
            aupro = mean(dataset, other, "aupro")
            if value is not None:
                parts.append(f"learned - {other}: F1_max {learned['pixel_f1_max'] - value:+.3f}, AUPRO {learned['aupro'] - aupro:+.3f}")
        lines.append("- " + "; ".join(parts) + ".")
    return lines


def render(results: list[dict], header: str) -> str:
    columns = ["dataset", "variant", "seeds", *METRICS, "pixel_f1_at_val_threshold", "fit_s", "ms_per_image", "peak_rss_mb", "load_1min"]
    body = [header, "", markdown_table(summarise(results), columns)]
    sampler = sampler_rows(results)
    if sampler:
        body += ["", "Did the sampler's task reward move? R_pred = -(predictor loss on the fixed reward images) and the "
                 "policy's entropy (max ln 9 = 2.197) and stop share, mean over the first and the last tenth of the cycles:",
                 "", markdown_table(sampler, floatfmt="{:.3f}")]
    body += ["", "Against the goals (means over seeds):", "", *verdicts(results)]
    return "\n".join(body)


# --- driver ----------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names from the table")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (each in its own process)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="MPDD, seed 0, 400 NBS steps: a smoke run, not a result")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every nbs/refine run (repeatable)")
    parser.add_argument("--work", default=None, help="run directories and results.jsonl here (default: a temp folder)")
    parser.add_argument("--keep-runs", action="store_true", help="keep each run directory (default: deleted after testing)")
    parser.add_argument("--from-results", default=None, help="render the tables from a results.jsonl instead of running")
    parser.add_argument("--no-append", action="store_true", help="print instead of appending to docs/benchmarks.md")
    parser.add_argument("--dev-fraction", type=float, default=0.0,
                        help="hold this share of the test split out as a development split, for every row (PatchCore too)")
    parser.add_argument("--eval-split", choices=("test", "dev"), default="test",
                        help="score the test split (default) or the development split (choosing settings)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        _common.run_child(args.child, JOBS)
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"[nbs] unknown variant(s) {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    header = (
        f"Protocol: 256 px, 5 labelled defects per type (seeded draw from test/, removed from evaluation for every row, "
        f"PatchCore included), thresholds on a validation split from train/good (+ the labelled images); metrics on the "
        f"remaining test split. NBS defaults unless stated ({'; '.join(args.overrides) or 'no extra overrides'}); "
        f"jobs side by side: {args.jobs}, torch threads per job: {args.threads or 'default'}. fit_s = model.fit only, "
        f"ms_per_image = test-split prediction at batch 8. load_1min = the machine's load average before-after each run."
    )
    if args.dev_fraction:
        header += (f" Development split: {args.dev_fraction:.0%} of the test split (per group, seeded) held out for every "
                   f"row; metrics on the **{args.eval_split}** split.")
    if args.from_results:
        results = [json.loads(line) for line in Path(args.from_results).read_text().splitlines() if line.strip()]
        text = render(results, header + f" (rendered from {args.from_results})")
        print(text)
        if not args.no_append:
            append_section("NBS: learned vs uniform sampler vs no reset vs supervised control vs PatchCore (issue 3)", text)
        return 0
    if not SHARED_WEIGHTS.is_file():
        print(f"[nbs] skipped: ImageNet MobileNetV2 weights not found at {SHARED_WEIGHTS}", file=sys.stderr)
        return 0
    datasets = ["mpdd_metal_plate_512"] if args.quick else [d.strip() for d in args.datasets.split(",") if d.strip()]
    datasets = [d for d in datasets if (SHARED_DATA / d / "train").is_dir() or print(f"[nbs] skipping {d}: not found", file=sys.stderr)]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    overrides = list(args.overrides) + (["model.steps=400"] if args.quick else [])

    work, holder = _common.work_dir(args.work, "rlad_nbs_")
    results_path = work / "results.jsonl"
    done = [json.loads(line) for line in results_path.read_text().splitlines()] if results_path.is_file() else []
    finished = {(r["dataset"], r["variant"], r["seed"]) for r in done}

    specs = []
    for dataset in datasets:
        for variant in variants:
            method, variant_overrides = VARIANTS[variant]
            for seed in seeds[:1] if variant in ONE_SEED else seeds:
                if (dataset, variant, seed) in finished:
                    continue
                extra = variant_overrides + (overrides if method != "patchcore" else [])
                run = work / f"{dataset}__{variant.replace(' ', '_').replace('(', '').replace(')', '')}__{seed}"
                shutil.rmtree(run, ignore_errors=True)
                specs.append({"kind": "quality", "dataset": dataset, "variant": variant, "method": method, "seed": seed,
                              "data": str(SHARED_DATA / dataset), "run": str(run), "overrides": extra, "keep": args.keep_runs,
                              "dev_fraction": args.dev_fraction, "split": args.eval_split})
    started = time.time()
    results = list(done)

    def one(spec):
        result = _common.spawn(__file__, spec, args.threads, tag="nbs")
        if result:
            row = {"dataset": spec["dataset"], "variant": spec["variant"], "seed": spec["seed"], **result}
            with open(results_path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            results.append(row)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, specs))
    text = render(results, header) + f"\n\nTotal benchmark wall time: {(time.time() - started) / 60:.1f} min ({len(specs)} runs)."
    print(text)
    if not args.no_append and not args.quick:
        append_section("NBS: learned vs uniform sampler vs no reset vs supervised control vs PatchCore (issue 3)", text)
    if holder is not None:
        holder.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
