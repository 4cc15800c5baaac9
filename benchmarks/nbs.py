"""NBS (issue 3): learned sampler vs uniform sampler vs no autoencoder reset vs the prior refiner
(`rlad fit refine`, formerly "supervised control") vs unsupervised PatchCore and PaDiM, every row of a
seed scored on exactly the same test images, several seeds.

    .venv/bin/python benchmarks/nbs.py --set protocol.dev_fraction=0.3 --jobs 2 --threads 1
    .venv/bin/python benchmarks/nbs.py --variants "nbs learned sampler,refiner" --seeds 0,1 \
        --set protocol.dev_fraction=0.3 --eval-split dev              # choosing settings: dev split only
    .venv/bin/python benchmarks/nbs.py --quick                        # MPDD, one seed, 400 NBS steps (smoke run)
    .venv/bin/python benchmarks/nbs.py --from-results benchmarks/results/nbs-DATE.jsonl
    .venv/bin/python benchmarks/nbs.py --resume benchmarks/results/nbs-DATE.jsonl ...   # the same options: runs
        # the rows that file lacks (or that failed); with the same --work, nbs/refine runs that were killed
        # midway continue from their last checkpoint

Protocol (every row, baselines included): 256 px; `protocol.labeled_per_type=5` defective images per
type drawn with the run seed from test/ (outside the development split) are training data for the
semi-supervised rows and are removed from evaluation for every row (PatchCore and PaDiM ignore them);
with `--set protocol.dev_fraction=F` a development split drawn once per dataset with
`protocol.protocol_seed` (not the run seed) is left out of every seed's test split; 10% of train/good
held out for thresholds. `--set protocol.*` reaches every row, other `--set` overrides
only the nbs/refine rows; `--set DATASET:KEY=VALUE` only that dataset's rows (e.g.
`--set magnetic_tile:protocol.dev_fraction=0.3`), `--set METHOD:KEY=VALUE` only that method's rows
(e.g. `--set patchcore:model.coreset_ratio=0.05`). Each row records its overrides and a fingerprint of the images it was scored
on (`test_set`); the section says whether the rows of each seed share it. One fresh process per run
(its own peak memory); rows go to benchmarks/results/nbs-DATE.jsonl as they arrive, a failed run as a
failed row. Backbone weights: ../shared/weights/mobilenet_v2-b0353104.pth through $RLAD_BACKBONE_WEIGHTS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402
from benchmarks._common import SHARED_DATA, SHARED_WEIGHTS, peak_rss_mb  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402

DATASETS = ["magnetic_tile", "mpdd_metal_plate_512"]
VARIANTS = {  # name -> (method, overrides)
    "nbs learned sampler": ("nbs", []),
    "nbs uniform sampler": ("nbs", ["model.sampler=uniform"]),
    "nbs no reset": ("nbs", ["model.reset=false"]),
    "refiner": ("refine", []),  # the prior refiner (`rlad fit refine`): same labels, context and predictor, no profiles
    "nbs paper input (profile only)": ("nbs", ["model.context.kind=none", "model.predictor_project=0", "model.predictor_dropout=0"]),
    "patchcore (unsupervised)": ("patchcore", []),
    "padim (unsupervised)": ("padim", []),
}
DEFAULT_VARIANTS = ["patchcore (unsupervised)", "padim (unsupervised)", "refiner", "nbs learned sampler"]
OLD_NAMES = {"supervised control": "refiner"}  # results files written before the rename
UNSUPERVISED = {"patchcore", "padim"}
ALL_ROWS = ("protocol.",)  # overrides that must reach every row (the same images per seed)
GOALS = {  # the NBS goals (docs/nbs.md)
    "magnetic_tile": "pixel AUROC >= 0.97, pixel F1_max >= 0.60, F1_max and AUPRO above PatchCore's",
    "mpdd_metal_plate_512": "F1_max and AUPRO above PatchCore's (the anomalib peer: F1_max 0.881, AUPRO 0.951)",
}
METRICS = ["image_auroc", "pixel_auroc", "aupro", "pixel_f1_max"]


def test_set_fingerprint(run_path: Path) -> str:
    """Which test images a run was scored on: test/ minus its labelled and development images, so the
    relative names of those two lists identify the set."""
    record = json.loads((run_path / "split.json").read_text())
    key = json.dumps([sorted(record.get("labeled", [])), sorted(record.get("dev", []))])
    return hashlib.sha1(key.encode()).hexdigest()[:10]


def job_quality(spec: dict) -> dict:
    from rlad.workflows import detection as api

    cfg = api.build_config(spec["method"], None, list(spec["overrides"]))
    started = time.perf_counter()
    run = api.fit(spec["method"], spec["data"], spec["run"], cfg)
    wall = time.perf_counter() - started
    fit_metrics = json.loads(run.metrics_path.read_text())["fit"]
    metrics = api.test(run.path, spec["data"], split=spec.get("split", "test"), report=False)
    row = {k: metrics[k] for k in (*METRICS, "pixel_f1_at_val_threshold", "ms_per_image", "n_test", "split",
                                   "n_excluded_labeled", "n_excluded_dev")}
    row.update({"fit_s": fit_metrics["fit_seconds"], "fit_wall_s": round(wall, 1), "peak_rss_mb": peak_rss_mb(),
                "test_set": test_set_fingerprint(Path(run.path))})
    history_path = Path(run.path) / "nbs_history.json"
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


def _rows(results: _common.Results) -> list[dict]:
    """The quality rows; a failed row that a resumed run measured again is left out."""
    rows = [{**r, "variant": OLD_NAMES.get(r.get("variant"), r.get("variant"))} for r in results.rows]
    rows = [r for r in rows if r.get("kind", "quality") == "quality"]
    redone = {(r["dataset"], r["variant"], r["seed"]) for r in _common.ok_rows(rows)}
    return [r for r in rows if r.get("status") != "failed" or (r["dataset"], r["variant"], r["seed"]) not in redone]


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
            runs = [r for r in _common.ok_rows(results) if r["dataset"] == dataset and r["variant"] == variant]
            if not runs:
                continue
            row = {"dataset": dataset, "variant": variant, "seeds": ",".join(str(r["seed"]) for r in runs)}
            for key in (*METRICS, "pixel_f1_at_val_threshold"):
                row[key] = _mean_std([r[key] for r in runs])
            row["n_test"] = "/".join(sorted({str(r["n_test"]) for r in runs}))
            row["fit_s"] = f"{statistics.fmean(r['fit_s'] for r in runs):.0f}"
            row["ms_per_image"] = f"{statistics.fmean(r['ms_per_image'] for r in runs):.1f}"
            row["peak_rss_mb"] = f"{max(r['peak_rss_mb'] for r in runs):.0f}"
            row["load_1min"] = ", ".join(r.get("load_1min", "") for r in runs)
            rows.append(row)
    return rows


def same_images_lines(results: list[dict]) -> list[str]:
    """Per dataset and seed: do all rows share one test set? (fingerprint of the excluded images)"""
    lines = []
    for dataset in DATASETS:
        for seed in sorted({r["seed"] for r in results if r["dataset"] == dataset}):
            rows = [r for r in _common.ok_rows(results) if r["dataset"] == dataset and r["seed"] == seed]
            sets = {r.get("test_set") for r in rows}
            if not rows or None in sets:
                continue
            verdict = "the same test images" if len(sets) == 1 else f"**different test images** ({len(sets)} sets)"
            lines.append(f"{dataset} seed {seed}: {len(rows)} rows, {verdict} (n_test "
                         f"{'/'.join(sorted({str(r['n_test']) for r in rows}))}, test set {'/'.join(sorted(sets))})")
    return lines


def sampler_rows(results: list[dict]) -> list[dict]:
    return [{k: r.get(k) for k in ("dataset", "variant", "seed", "r_pred_first", "r_pred_last", "entropy_first",
                                    "entropy_last", "stop_share_first", "stop_share_last")}
            for r in _common.ok_rows(results) if "r_pred_first" in r]


def verdicts(results: list[dict]) -> list[str]:
    lines = []
    ok = _common.ok_rows(results)

    def mean(dataset, variant, key):
        values = [r[key] for r in ok if r["dataset"] == dataset and r["variant"] == variant]
        return statistics.fmean(values) if values else None

    for dataset in DATASETS:
        learned = {k: mean(dataset, "nbs learned sampler", k) for k in METRICS}
        if learned["pixel_f1_max"] is None:
            continue
        parts = [f"**{dataset}** (goal: {GOALS[dataset]}): learned sampler pixel AUROC {learned['pixel_auroc']:.3f}, "
                 f"AUPRO {learned['aupro']:.3f}, pixel F1_max {learned['pixel_f1_max']:.3f}"]
        for baseline in ("patchcore (unsupervised)", "padim (unsupervised)"):
            other = {k: mean(dataset, baseline, k) for k in METRICS}
            if other["aupro"] is not None:
                parts.append(f"vs {baseline.split()[0]} AUPRO {other['aupro']:.3f}, F1_max {other['pixel_f1_max']:.3f} "
                             f"({'above' if learned['aupro'] > other['aupro'] else 'NOT above'} on AUPRO, "
                             f"{'above' if learned['pixel_f1_max'] > other['pixel_f1_max'] else 'NOT above'} on F1_max)")
        for other in ("nbs uniform sampler", "nbs no reset", "refiner"):
            value, aupro = mean(dataset, other, "pixel_f1_max"), mean(dataset, other, "aupro")
            if value is not None:
                parts.append(f"learned - {other}: F1_max {learned['pixel_f1_max'] - value:+.3f}, AUPRO {learned['aupro'] - aupro:+.3f}")
        lines.append("- " + "; ".join(parts) + ".")
    return lines


def missing_rows(meta: dict, rows: list[dict]) -> list[str]:
    """The planned rows (datasets x variants x seeds of the run's metadata) with no row at all."""
    present = {(r["dataset"], r["variant"], r["seed"]) for r in rows}
    seeds = meta.get("seeds", [])
    missing = []
    for dataset in meta.get("datasets", DATASETS):
        for variant in meta.get("variants", []):
            for seed in seeds[:1] if variant == "nbs paper input (profile only)" else seeds:
                if (dataset, variant, seed) not in present:
                    missing.append(f"{dataset} / {variant} / seed {seed}")
    return missing


def render(results: _common.Results) -> str:
    meta, rows = results.meta, _rows(results)
    overrides = meta.get("overrides", [])
    header = (
        f"Protocol: 256 px, 5 labelled defects per type (drawn with the run seed from test/ outside the development "
        f"split, removed from evaluation for every row, PatchCore and PaDiM included), thresholds on a validation split "
        f"from train/good (+ the labelled images); metrics on the **{meta.get('eval_split', 'test')}** split. "
        f"Overrides: {'; '.join(overrides) or 'none'} (`protocol.*` on every row, the rest on nbs/refine "
        f"rows only; each row's full list is in the results file). Jobs side by side: {meta.get('jobs', 1)}, torch "
        f"threads per job: {meta.get('threads') or 'default'}. fit_s = model.fit only, ms_per_image = prediction at "
        f"batch 8 (timings depend on the host's load). load_1min = the machine's load average before-after each run."
    )
    columns = ["dataset", "variant", "seeds", *METRICS, "pixel_f1_at_val_threshold", "n_test", "fit_s", "ms_per_image",
               "peak_rss_mb", "load_1min"]
    body = [header, "", markdown_table(summarise(rows), columns)]
    same = same_images_lines(rows)
    if same:
        body += ["", "Test images per seed (fingerprint of the excluded labelled and development images):", "",
                 *[f"- {line}" for line in same]]
    sampler = sampler_rows(rows)
    if sampler:
        body += ["", "Did the sampler's task reward move? R_pred = -(predictor loss on the fixed reward images) and the "
                 "policy's entropy (max ln 9 = 2.197) and stop share, mean over the first and the last tenth of the cycles:",
                 "", markdown_table(sampler, floatfmt="{:.3f}")]
    body += ["", "Against the goals (means over seeds):", "", *verdicts(rows), _common.failures_text(rows)]
    missing = missing_rows(meta, rows)
    if missing:
        body += ["", f"**Not measured** ({len(missing)} of the run's rows: it stopped before them; `--resume "
                 f"{results.relative_path}` with the same options measures them): {'; '.join(missing)}."]
    wall = [r for r in results.rows if r.get("kind") == "wall"]
    if wall:
        body.append(f"Total benchmark wall time: {sum(w['minutes'] for w in wall):.1f} min ({sum(w['runs'] for w in wall)} runs"
                    f"{f', in {len(wall)} sessions' if len(wall) > 1 else ''}).")
    for resumed in meta.get("resumed", []):
        body.append(f"Resumed at commit `{resumed['commit']}`: `{resumed['command']}`.")
    return "\n".join(body)


# --- driver ----------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (each in its own process)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="MPDD, seed 0, 400 NBS steps: a smoke run, not a result")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override (repeatable): protocol.* for every row, anything else for nbs/refine rows; "
                             "DATASET:KEY=VALUE for one dataset only, METHOD:KEY=VALUE for one method only")
    parser.add_argument("--work", default=None, help="run directories here (default: a temp folder)")
    parser.add_argument("--keep-runs", action="store_true", help="keep each run directory (default: deleted after testing)")
    parser.add_argument("--from-results", default=None, help="render the section from a results file instead of running")
    parser.add_argument("--no-append", action="store_true", help="print instead of appending to docs/benchmarks.md")
    parser.add_argument("--resume", default=None, metavar="FILE",
                        help="add the missing or failed rows to an earlier results file (same options as that run)")
    parser.add_argument("--eval-split", choices=("test", "dev"), default="test",
                        help="score the test split (default) or the development split (choosing settings)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


METHODS = {method for method, _ in VARIANTS.values()}


def _prefixed(item: str) -> tuple[str, str] | None:
    """(prefix, KEY=VALUE) of a PREFIX:KEY=VALUE override, None for a plain one."""
    prefix, sep, rest = item.partition(":")
    return (prefix, rest) if sep and "=" not in prefix else None


def for_dataset(overrides: list[str], dataset: str) -> list[str]:
    """The overrides that apply to `dataset`: the unprefixed ones, those given as DATASET:KEY=VALUE
    (prefix dropped) and the METHOD:KEY=VALUE ones (kept for `row_overrides`)."""
    out = []
    for item in overrides:
        prefixed = _prefixed(item)
        if prefixed is None or prefixed[0] in METHODS:
            out.append(item)
        elif prefixed[0] == dataset:
            out.append(prefixed[1])
    return out


def row_overrides(method: str, variant_overrides: list[str], overrides: list[str], seed: int) -> list[str]:
    plain = [o for o in overrides if _prefixed(o) is None]
    shared = [o for o in plain if o.startswith(ALL_ROWS)]
    own = [] if method in UNSUPERVISED else [o for o in plain if not o.startswith(ALL_ROWS)]
    own += [p[1] for p in map(_prefixed, overrides) if p is not None and p[0] == method]
    return [*variant_overrides, *own, f"seed={seed}", "protocol.labeled_per_type=5", *shared]


def measure(args, results: _common.Results, variants: list[str]) -> None:
    datasets = ["mpdd_metal_plate_512"] if args.quick else [d.strip() for d in args.datasets.split(",") if d.strip()]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    overrides = list(args.overrides) + (["model.steps=400"] if args.quick else [])
    done = {(r["dataset"], r["variant"], r["seed"]) for r in _common.ok_rows(_rows(results))}
    if args.resume:
        mine = {"overrides": overrides, "eval_split": args.eval_split}
        theirs = {key: results.meta.get(key) for key in mine}
        if mine != theirs:
            raise SystemExit(f"[nbs] --resume {args.resume}: that run had {theirs}, this one {mine}; rows would not be "
                             "scored on the same images")
        results.note(resumed=[*results.meta.get("resumed", []), {"commit": _common.git_commit(),
                                                                  "command": _common.command_line()}])
    else:
        results.note(overrides=overrides, jobs=args.jobs, threads=args.threads, eval_split=args.eval_split,
                     variants=variants, seeds=seeds, datasets=datasets)
    work, holder = _common.work_dir(args.work, "rlad_nbs_")
    specs = []
    missing = [d for d in datasets if not (SHARED_DATA / d / "train").is_dir()]
    for dataset in missing:
        results.add(_common.failed_row({"dataset": dataset, "variant": "all", "seed": "all"}, "dataset not found"))
    for seed in seeds:  # seed first: each seed's rows (baselines included) come out together
        for dataset in [d for d in datasets if d not in missing]:
            for variant in variants:
                if variant == "nbs paper input (profile only)" and seed != seeds[0]:
                    continue  # for the record only: one seed
                if (dataset, variant, seed) in done:
                    continue
                method, variant_overrides = VARIANTS[variant]
                run = work / f"{dataset}__{variant.replace(' ', '_').replace('(', '').replace(')', '')}__{seed}"
                if not args.resume:  # resuming with the same --work: a run killed midway goes on from its checkpoint
                    shutil.rmtree(run, ignore_errors=True)
                specs.append({"kind": "quality", "dataset": dataset, "variant": variant, "method": method, "seed": seed,
                              "data": str(SHARED_DATA / dataset), "run": str(run), "keep": args.keep_runs,
                              "overrides": row_overrides(method, variant_overrides, for_dataset(overrides, dataset), seed),
                              "split": args.eval_split})
    started = time.time()

    def one(spec):
        result = _common.spawn(__file__, spec, args.threads, tag="nbs", env={"RLAD_BACKBONE_WEIGHTS": str(SHARED_WEIGHTS)})
        results.add({"dataset": spec["dataset"], "variant": spec["variant"], "seed": spec["seed"],
                     "method": spec["method"], "overrides": spec["overrides"], **result})

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, specs))
    if specs:
        results.add({"kind": "wall", "minutes": round((time.time() - started) / 60, 1), "runs": len(specs)})
    if holder is not None:
        holder.cleanup()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        _common.run_child(args.child, JOBS)
        return 0
    title = "NBS: learned sampler vs refiner vs PatchCore and PaDiM, same test images per seed (issues 3, 18)"
    if args.from_results:
        results = _common.Results("nbs", path=args.from_results)
    else:
        _common.hold_work(args.work)
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            print(f"[nbs] unknown variant(s) {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
            return 2
        if not SHARED_WEIGHTS.is_file():
            print(f"[nbs] skipped: ImageNet MobileNetV2 weights not found at {SHARED_WEIGHTS}", file=sys.stderr)
            return 0
        if args.resume:
            results = _common.Results("nbs", path=args.resume)
        else:
            results = _common.Results("nbs-quick" if args.quick else "nbs")
        measure(args, results, variants)
    return _common.finish(title, render(results), results, append=not args.no_append and not args.quick)


if __name__ == "__main__":
    sys.exit(main())
