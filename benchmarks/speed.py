"""Few-label detection at PatchCore's speed (issue 19): PatchCore, PaDiM, NBS and the prior refiner
fitted and timed in one benchmark, on the same images, with the same thread count: fit seconds,
ms/image at batch 1 and 8, peak memory, and each as a ratio to PatchCore.

    .venv/bin/python benchmarks/speed.py                                    # magnetic tile, 2 threads
    .venv/bin/python benchmarks/speed.py --baseline-src /path/to/old/src    # plus every method from another checkout
    .venv/bin/python benchmarks/speed.py --quick --no-append                # smoke run (tiny schedule); not a result
    .venv/bin/python benchmarks/speed.py --from-results benchmarks/results/speed-DATE.jsonl   # render again
    .venv/bin/python benchmarks/speed.py --work DIR --resume FILE --retime --alternate      # time the runs again, in turn

Every row is one fresh process (its peak RSS is its own) that fits with the library a user runs
(`rlad.workflows.detection.build_config` + `fit`; 5 labelled defects per type for every method, the
same seeded split), then times `predict_arrays` on the same test images, already decoded, after one
warm-up batch. fit_s is `model.fit` alone, as `rlad fit` reports it. `--baseline-src` runs the same
rows with another checkout's `src` first on the path (the code before a change: "today"), so speed-ups
are measured side by side in one run; the refiner is `supervised` there if that code has no `refine`.
The backbone weights come from $RLAD_BACKBONE_WEIGHTS (default: ../shared/weights), which every
version reads. Raw rows go to benchmarks/results/speed-<time>.jsonl as they are measured (a row that
failed is kept, with its error), the tables to docs/benchmarks.md.
Timings taken while other work runs on the machine are noise: the load average is recorded per row.
A host's speed can also drift by a third within minutes with nothing else running (the EPYC host of
2026-12-04); `--retime --alternate` then times every run of this code again in one process, taking
turns, so that the ratios to PatchCore see the same phases.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402
from benchmarks._common import SHARED_DATA, SHARED_WEIGHTS, peak_rss_mb  # noqa: E402

METHODS = ["patchcore", "padim", "refine", "nbs"]
PEER = {  # anomalib 2.7.0 on MPDD metal_plate, 256 px, 2 cores, same weights (METHODS.md section 5; docs/benchmarks.md)
    "patchcore": {"fit_s": 136, "ms_per_image": 51},
    "padim": {"fit_s": 7, "ms_per_image": 65},
}
GOALS = [  # (row, column, comparison, limit, text); per-image costs in CPU time (robust on a busy host)
    ("nbs", "cpu_ms_b8_vs_patchcore", "<=", 1.5, "NBS within 1.5x of PatchCore's ms/image (batch 8, CPU time)"),
    ("nbs", "cpu_ms_b1_vs_patchcore", "<=", 1.5, "NBS within 1.5x of PatchCore's ms/image (batch 1, CPU time)"),
    ("refine", "cpu_ms_b8_vs_patchcore", "<=", 1.5, "refiner within 1.5x of PatchCore's ms/image (batch 8, CPU time)"),
    ("refine", "cpu_ms_b1_vs_patchcore", "<=", 1.5, "refiner within 1.5x of PatchCore's ms/image (batch 1, CPU time)"),
    ("patchcore", "fit_s", "<", 15.0, "PatchCore fit under 15 s (wall; meaningful on a quiet host only)"),
    ("nbs", "fit_s", "<=", 600.0, "NBS fit at most 10 minutes (wall, the paper's schedule, quiet host)"),
    ("refine", "fit_s", "<=", 180.0, "refiner fit at most 3 minutes (wall, default schedule, quiet host)"),
    ("patchcore", "cpu_ms_b8_speedup_vs_baseline", ">=", 2.0, "PatchCore at least 2x faster per image than the baseline code (batch 8, CPU time)"),
    ("patchcore", "cpu_ms_b1_speedup_vs_baseline", ">=", 2.0, "PatchCore at least 2x faster per image than the baseline code (batch 1, CPU time)"),
]


# --- the child job --------------------------------------------------------------------------------


def timing_samples(data: str, count: int) -> list:
    """`count` test images spread over the folder's defect types and good images (every method and
    every code version times the same ones)."""
    from rlad.data.folder import discover

    samples = list(discover(data).test)
    step = max(1, len(samples) // count)
    return samples[::step][:count]


TIMED = ("ms_b1", "ms_b8", "cpu_ms_b1", "cpu_ms_b8")


def time_predict(model, images, batch_sizes: list[int], repeats: int) -> dict:
    """ms/image of `predict_arrays` per batch size: wall clock (ms_bN) and the process's CPU time
    (cpu_ms_bN; with one thread, the work itself, whatever else the machine runs), the fastest of
    `repeats` passes after a warm-up batch."""
    return time_in_turn({"model": model}, images, batch_sizes, repeats)["model"]


def time_in_turn(models: dict, images, batch_sizes: list[int], repeats: int) -> dict:
    """`time_predict` of several models in one process, taking turns: at each batch size every model
    predicts all the images once per round, `repeats` rounds, the fastest kept per model. The models
    see the same phases of a host whose speed drifts (by a third within minutes on the EPYC host),
    so their ratios hold where separate processes' do not."""
    from rlad.workflows import detection as api

    rows = {name: {"n_images": int(len(images))} for name in models}
    for batch in batch_sizes:
        wall = {name: [] for name in models}
        cpu = {name: [] for name in models}
        for model in models.values():
            api.predict_arrays(model, images[:batch], batch)  # warm-up: allocations, primitive caches
        for _ in range(repeats):
            for name, model in models.items():
                started, started_cpu = time.perf_counter(), time.process_time()
                api.predict_arrays(model, images, batch)
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - started_cpu)
        for name in models:
            rows[name][f"ms_b{batch}"] = round(min(wall[name]) * 1000 / len(images), 2)
            rows[name][f"cpu_ms_b{batch}"] = round(min(cpu[name]) * 1000 / len(images), 2)
    return rows


def job_speed(spec: dict) -> dict:
    from rlad.data.transforms import load_samples
    from rlad.workflows import detection as api

    overrides = [f"seed={spec['seed']}", "protocol.labeled_per_type=5", *spec["overrides"]]
    cfg = api.build_config(spec["method"], None, overrides)
    started = time.perf_counter()
    run = api.fit(spec["method"], spec["data"], spec["run"], cfg)
    fit_wall = time.perf_counter() - started
    fit_s = json.loads(run.metrics_path.read_text())["fit"]["fit_seconds"]
    model = api.load_run(run.path).model
    images, _ = load_samples(timing_samples(spec["data"], spec["n_images"]), cfg.image_size, desc="loading")
    row = {"fit_s": fit_s, "fit_wall_s": round(fit_wall, 1),
           **time_predict(model, images, spec["batch_sizes"], spec.get("repeats", 1)), "peak_rss_mb": peak_rss_mb()}
    if not spec.get("keep"):
        shutil.rmtree(spec["run"], ignore_errors=True)
    return row


def job_time(spec: dict) -> dict:
    """Inference timing alone, of a run fitted earlier (--retime)."""
    from rlad.data.transforms import load_samples
    from rlad.workflows import detection as api

    loaded = api.load_run(spec["run"])
    images, _ = load_samples(timing_samples(spec["data"], spec["n_images"]), loaded.cfg.image_size, desc="loading")
    return {**time_predict(loaded.model, images, spec["batch_sizes"], spec.get("repeats", 1)), "peak_rss_mb": peak_rss_mb()}


def job_time_in_turn(spec: dict) -> dict:
    """Inference timing of several runs fitted earlier, in one process, taking turns (--retime --alternate)."""
    from rlad.data.transforms import load_samples
    from rlad.workflows import detection as api

    loaded = {method: api.load_run(run) for method, run in spec["runs"].items()}
    size = {run.cfg.image_size for run in loaded.values()}
    if len(size) != 1:
        raise SystemExit(f"--alternate: the runs work at different image sizes {sorted(size)}")
    images, _ = load_samples(timing_samples(spec["data"], spec["n_images"]), size.pop(), desc="loading")
    models = {method: run.model for method, run in loaded.items()}
    return {"rows": time_in_turn(models, images, spec["batch_sizes"], spec.get("repeats", 1))}


JOBS = {"speed": job_speed, "time": job_time, "time_in_turn": job_time_in_turn}


# --- tables -----------------------------------------------------------------------------------------


def merged_rows(rows: list[dict]) -> list[dict]:
    """The fit rows with the timings of a later --retime of the same run in place of their own."""
    timings = {(r["code"], r["method"]): r for r in _common.ok_rows(rows) if r.get("kind") == "timing"}
    out = []
    for row in _common.ok_rows(rows):
        if row.get("kind") == "timing":
            continue
        later = timings.get((row["code"], row["method"]))
        if later:
            row = {**row, **{k: later[k] for k in (*TIMED, "n_images", "in_turn") if k in later}, "retimed": True,
                   "load_1min": f"{row.get('load_1min')} (timing: {later.get('load_1min')})"}
        out.append(row)
    return out


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's figures over PatchCore's of the same code, and this code's over the baseline's."""
    by_key = {(r["code"], r["method"]): r for r in rows}
    out = []
    for row in rows:
        row = dict(row)
        reference = by_key.get((row["code"], "patchcore"))
        for column in ("fit_s", *TIMED, "peak_rss_mb"):
            if reference and row.get(column) and reference.get(column):
                name = "fit_vs_patchcore" if column == "fit_s" else f"{column.replace('_mb', '')}_vs_patchcore"
                row[name] = round(row[column] / reference[column], 2)
        before = by_key.get(("baseline", row["method"]))
        if row["code"] == "this" and before:
            for column in (*TIMED, "fit_s"):
                if row.get(column) and before.get(column):
                    name = "fit_speedup_vs_baseline" if column == "fit_s" else f"{column}_speedup_vs_baseline"
                    row[name] = round(before[column] / row[column], 2)
        out.append(row)
    return out


def goal_lines(rows: list[dict]) -> list[str]:
    this = {r["method"]: r for r in rows if r["code"] == "this"}
    lines = []
    for method, column, op, limit, text in GOALS:
        value = this.get(method, {}).get(column)
        if value is None:
            lines.append(f"- {text}: not measured in this run")
            continue
        settings = this[method].get("settings", "")
        if column == "fit_s" and "model.steps" in settings:
            lines.append(f"- {text}: not measured (this row was fitted with {settings}; fit_s {value})")
            continue
        met = value <= limit if op == "<=" else value < limit if op == "<" else value >= limit
        lines.append(f"- {text}: {value} ({'met' if met else 'MISSED'}; goal {op} {limit})")
    return lines


def header_text(meta: dict) -> str:
    settings = meta["overrides"]
    baseline = meta.get("baseline_src")
    return (
        f"Data: {Path(meta['data']).name}; {meta['n_images']} test images timed per row (decoded beforehand), batch 1 and 8, "
        f"{meta['threads']} torch threads per row, one process per row, "
        f"{'the two code versions of a method side by side (at the same time), methods one after another' if meta.get('pairs') else 'rows one after another'}; 5 labelled defects per type "
        f"for every method (seed {meta['seed']}); defaults{' + --set ' + ', '.join(settings) + ' (rules: `--help`)' if settings else ''}. "
        f"code = this checkout{f' or the baseline src ({baseline})' if baseline else ''}. "
        "load_1min = the machine's load average before-after each row (2 cores; other work ran on the host, so "
        "absolute times are noisy and the ratios within one run are the figures to compare)."
        + (" Rows added later to the same results file (`--resume`): "
           + "; ".join(f"`{command}`" for command in meta["resumed"]) + "." if meta.get("resumed") else "")
        + (" in_turn = the row's timings were taken with every run of this code in one process, taking turns "
           "(`--retime --alternate`): the ratios to PatchCore then see the same phases of the host." if meta.get("resumed") and any(
               "--alternate" in command for command in meta["resumed"]) else "")
        + " settings = each row's own --set values."
    )


def render(results: _common.Results) -> str:
    from rlad.tables import markdown_table

    columns = ["method", "code", "settings", "fit_s", "ms_b1", "ms_b8", "cpu_ms_b1", "cpu_ms_b8", "peak_rss_mb", "fit_vs_patchcore",
               "cpu_ms_b1_vs_patchcore", "cpu_ms_b8_vs_patchcore", "ms_b1_vs_patchcore", "ms_b8_vs_patchcore", "peak_rss_vs_patchcore",
               "cpu_ms_b1_speedup_vs_baseline", "cpu_ms_b8_speedup_vs_baseline", "ms_b1_speedup_vs_baseline",
               "ms_b8_speedup_vs_baseline", "fit_speedup_vs_baseline", "retimed", "in_turn", "load_1min"]
    rows = with_ratios(merged_rows(results.rows))
    present = [c for c in columns if any(c in r for r in rows)]
    peer = [{"method": f"{m} (anomalib peer, MPDD)", "fit_s": v["fit_s"], "ms_per_image": v["ms_per_image"]} for m, v in PEER.items()]
    return "\n".join([
        header_text(results.meta), "", markdown_table(rows, present, floatfmt="{:.2f}"), _common.failures_text(results.rows),
        "For reference, the anomalib peer measured here on MPDD metal_plate (METHODS.md section 5, another dataset and "
        "a busier library, so not a ratio of this run):", "", markdown_table(peer, ["method", "fit_s", "ms_per_image"]), "",
        "Against the goals (this code):", "", *goal_lines(rows),
    ])


# --- driver -----------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "magnetic_tile"), help="dataset folder (default: magnetic tile)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every row (default 2)")
    parser.add_argument("--images", type=int, default=64, help="test images timed per row (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-src", default=None, metavar="SRC",
                        help="also run every method with this `src` folder first on the path (the code before a change)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[METHOD:]KEY=VALUE",
                        help="extra override (repeatable): protocol.* for every row, other keys for the nbs and refine "
                             "rows, METHOD:KEY=VALUE for that method's rows only")
    parser.add_argument("--pairs", action="store_true",
                        help="run each method's row of this code and of --baseline-src at the same time (on a busy "
                             "host both then share the same load; each still gets --threads)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 NBS steps, 16 images; not a result")
    parser.add_argument("--work", default=None, help="run directories here, kept (default: a temporary folder, deleted)")
    parser.add_argument("--no-append", action="store_true", help="print instead of appending to docs/benchmarks.md")
    parser.add_argument("--resume", metavar="FILE", help="continue an earlier run's results file: measure only the rows it "
                        "lacks (same settings), appending to it")
    parser.add_argument("--retime", action="store_true", help="with --resume and --work: time the runs fitted earlier "
                        "again (inference only); their figures replace the fit rows' in the tables")
    parser.add_argument("--alternate", action="store_true", help="with --retime: time this code's runs in one process, "
                        "taking turns (`time_in_turn`), so that their ratios see the same phase of the host")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per batch size, the fastest kept (default 2)")
    parser.add_argument("--from-results", metavar="FILE", help="render an earlier run's results file again (no measuring)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def overrides_for(method: str, settings: list[str]) -> list[str]:
    """The --set values a method's rows take: protocol.* (the split) for every method, METHOD:KEY=VALUE
    for that method, any other KEY=VALUE for the few-label methods (nbs, refine)."""
    out = []
    for setting in settings:
        target, _, rest = setting.partition(":") if ":" in setting.split("=", 1)[0] else ("", "", setting)
        if target:
            if target == method:
                out.append(rest)
        elif rest.startswith("protocol.") or method in ("nbs", "refine"):
            out.append(rest)
    return out


def measure(args, methods: list[str], weights: str, baseline: Path | None, results: _common.Results) -> None:
    quick = ["model.steps=100"] if args.quick else []
    n_images = 16 if args.quick else args.images
    overrides = quick + args.overrides
    if results.rows:  # --resume: the rows must stay comparable (each row records its own --set values)
        kept = {k: results.meta[k] for k in ("n_images", "threads", "seed", "pairs", "quick") if k in results.meta}
        wanted = {"n_images": n_images, "threads": args.threads, "seed": args.seed, "pairs": args.pairs, "quick": args.quick}
        if kept != {k: wanted[k] for k in kept}:
            raise SystemExit(f"[speed] --resume: {results.path} was measured with {kept}, not {wanted}")
        overrides = list(dict.fromkeys(results.meta.get("overrides", []) + overrides))
        results.note(resumed=results.meta.get("resumed", []) + [_common.command_line()])
    results.note(quick=args.quick, pairs=args.pairs, data=_common.portable(str(Path(args.data).resolve())), n_images=n_images,
                 threads=args.threads, seed=args.seed, overrides=overrides,
                 baseline_src=_common.portable(str(baseline)) if baseline else results.meta.get("baseline_src"),
                 methods=list(dict.fromkeys(results.meta.get("methods", []) + methods)))
    work, holder = _common.work_dir(args.work, "rlad_speed_")
    codes_all = [("this", Path(__file__).resolve().parents[1] / "src")] + ([("baseline", baseline)] if baseline else [])

    def one(code: str, src: Path, method: str) -> dict:
        # The refiner's name before issue 19 was `supervised` (still accepted as an alias).
        name = "supervised" if code == "baseline" and method == "refine" and not (src / "rlad" / "models" / "nbs" / "refiner.py").is_file() else method
        spec = {"kind": "speed", "method": name, "data": args.data, "run": str(work / f"{code}_{method}"), "seed": args.seed,
                "overrides": overrides_for(method, quick + args.overrides), "n_images": n_images, "batch_sizes": [1, 8],
                "keep": bool(args.work), "repeats": args.repeats}
        shutil.rmtree(spec["run"], ignore_errors=True)
        env = {"RLAD_BACKBONE_WEIGHTS": weights, "PYTHONPATH": str(src)}
        return {"method": method, "code": code, "settings": "; ".join(spec["overrides"]) or "defaults",
                **_common.spawn(__file__, spec, args.threads, tag=f"speed {code}", env=env)}

    def timing(code: str, src: Path, method: str) -> dict:
        spec = {"kind": "time", "run": str(work / f"{code}_{method}"), "data": args.data, "n_images": n_images,
                "batch_sizes": [1, 8], "repeats": args.repeats}
        env = {"RLAD_BACKBONE_WEIGHTS": weights, "PYTHONPATH": str(src)}
        return {"kind": "timing", "method": method, "code": code,
                **_common.spawn(__file__, spec, args.threads, tag=f"time {code}", env=env)}

    fitted = {(r["code"], r["method"]) for r in _common.ok_rows(results.rows) if r.get("kind") != "timing"}
    if args.retime and args.alternate:  # this code's runs, one process, taking turns
        runs = {method: str(work / f"this_{method}") for method in methods
                if ("this", method) in fitted and (work / f"this_{method}").is_dir()}
        spec = {"kind": "time_in_turn", "runs": runs, "data": args.data, "n_images": n_images, "batch_sizes": [1, 8],
                "repeats": args.repeats}
        env = {"RLAD_BACKBONE_WEIGHTS": weights, "PYTHONPATH": str(codes_all[0][1])}
        answer = _common.spawn(__file__, spec, args.threads, tag="time in turn", env=env)
        for method, row in answer.get("rows", {}).items():
            results.add({"kind": "timing", "method": method, "code": "this", "in_turn": True, **row,
                         "load_1min": answer.get("load_1min")})
        if "rows" not in answer:
            results.add({"kind": "timing", "method": ",".join(runs), "code": "this", **answer})
        methods = []
    for method in methods:
        if args.retime:  # the runs fitted earlier, timed again
            job = timing
            codes = [(code, src) for code, src in codes_all if (code, method) in fitted and (work / f"{code}_{method}").is_dir()]
        else:
            job = one
            codes = [(code, src) for code, src in codes_all if (code, method) not in fitted]  # --resume: only what is missing
        if not codes:
            continue
        if args.pairs:  # this code and the baseline's row of one method at once: both under the same load
            with ThreadPoolExecutor(len(codes)) as pool:
                rows = list(pool.map(lambda code_src: job(*code_src, method), codes))
        else:
            rows = [job(code, src, method) for code, src in codes]
        for row in rows:
            results.add(row)
    if holder is not None:
        holder.cleanup()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        _common.run_child(args.child, JOBS)
        return 0
    if args.from_results:
        results = _common.Results("speed", path=args.from_results)
    else:
        _common.hold_work(args.work)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            print(f"[speed] unknown method(s) {unknown}; choose from {METHODS}", file=sys.stderr)
            return 2
        weights = os.environ.get("RLAD_BACKBONE_WEIGHTS") or str(SHARED_WEIGHTS)
        if not Path(weights).is_file():
            print(f"[speed] skipped: ImageNet MobileNetV2 weights not found at {weights}", file=sys.stderr)
            return 0
        if not (Path(args.data) / "train").is_dir():
            print(f"[speed] skipped: {args.data} is not a dataset folder", file=sys.stderr)
            return 0
        baseline = Path(args.baseline_src).resolve() if args.baseline_src else None
        if baseline is not None and not (baseline / "rlad" / "__init__.py").is_file():
            print(f"[speed] --baseline-src {baseline}: no rlad package there", file=sys.stderr)
            return 2
        if args.retime and not (args.resume and args.work):
            print("[speed] --retime needs --resume FILE and --work DIR (the runs to time)", file=sys.stderr)
            return 2
        if args.alternate and not args.retime:
            print("[speed] --alternate times runs fitted earlier: use it with --retime", file=sys.stderr)
            return 2
        if args.alternate and baseline is not None:
            print("[speed] --alternate times this code's runs only (one process imports one rlad); "
                  "the baseline's keep their own timings", file=sys.stderr)
        if args.resume:
            results = _common.Results("speed", path=args.resume)
        else:
            results = _common.Results("speed-quick" if args.quick else "speed")
        measure(args, methods, weights, baseline, results)
    return _common.finish("Speed: few-label detection next to PatchCore (issue 19)", render(results), results,
                          append=not args.no_append and not results.meta.get("quick"))


if __name__ == "__main__":
    sys.exit(main())
