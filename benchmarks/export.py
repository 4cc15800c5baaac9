"""ONNX Runtime against PyTorch for every pixel model (issue 17): ms/image at batch 1 and 8, side by
side in one process with the same thread count, and the export's own parity check on real images.

    .venv/bin/python benchmarks/export.py                        # magnetic tile, 2 threads, 200 training images
    .venv/bin/python benchmarks/export.py --quick --no-append    # smoke run (tiny fits, 64 px); not a result
    .venv/bin/python benchmarks/export.py --from-results benchmarks/results/export-DATE.jsonl

Each method is one fresh process: it fits with the library a user runs (`detection.build_config` +
`fit`, ImageNet weights from $RLAD_BACKBONE_WEIGHTS, default ../shared/weights) on the first
`--train-images` normal training images (the rest of the dataset linked unchanged), exports with
`workflows.export.export` (which runs the parity check: 8 real images, batch 1 at their own size and
one batch of 8), then times `model.predict` (PyTorch) and the ONNX Runtime session on the same
decoded test images, already at the model's size, alternating the two after one warm-up call each:
the median over `--repeats` calls, per image. Goals: ONNX Runtime not slower than PyTorch for any
model, PatchCore at most 25 ms/image on 2 cores. The 1-minute load average is recorded per row:
figures taken while other work runs on the machine are noise, the ratio less so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks._common import (  # noqa: E402
    SHARED_DATA, SHARED_WEIGHTS, Results, failed_row, failures_text, finish, ok_rows, peak_rss_mb,
    run_child, spawn, work_dir,
)

TITLE = "ONNX export: ONNX Runtime vs PyTorch"
METHODS = ["patchcore", "padim", "ae", "nbs", "refine"]
PATCHCORE_GOAL_MS = 25.0
# What each method is fitted with here (besides the defaults): NBS and the autoencoder train for fewer
# steps than a real run, which changes their weights, not their inference cost.
SETTINGS = {
    "patchcore": [],
    "padim": [],
    "ae": ["model.steps=200"],
    "nbs": ["model.steps=100"],
    "refine": ["model.steps=100"],
}
QUICK = {
    "patchcore": ["image_size=64", "model.backbone.stages=[1,2]"],
    "padim": ["image_size=64", "model.backbone.stages=[0,1]"],
    "ae": ["image_size=64", "model.steps=3", "model.channels=[8,8]", "model.train_crop=32"],
    "nbs": ["image_size=64", "model.profile_size=32", "model.patch_size=128", "model.predictor_grid=16",
            "model.predictor_crop=0", "model.steps=10", "model.reset_every=5", "model.window=2", "model.sampler=uniform",
            "model.sampler_update_from=3", "model.sampler_update_to=4", "model.labeled_per_cycle=1",
            "model.reward_images=1", "model.normals_per_cycle=1", "model.predictor_buffer=4",
            "model.context.backbone.stages=[1]", "model.context.prior_stages=[1]", "protocol.labeled_per_type=1"],
    "refine": ["image_size=64", "model.predictor_grid=16", "model.steps=40", "model.predictor_buffer=4",
               "model.context.backbone.stages=[1]", "model.context.prior_stages=[1]", "protocol.labeled_per_type=1"],
}


def subset_folder(source: Path, target: Path, train_images: int) -> Path:
    """`source` with only its first `train_images` normal training images (links, nothing copied)."""
    if target.exists():
        return target
    (target / "train" / "good").mkdir(parents=True)
    for image in sorted((source / "train" / "good").iterdir())[:train_images]:
        (target / "train" / "good" / image.name).symlink_to(image)
    for name in ("test", "ground_truth"):
        (target / name).symlink_to(source / name)
    return target


def _median_ms(call, batch, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call(batch)
        times.append((time.perf_counter() - started) * 1000 / len(batch))
    return statistics.median(times)


def fp32_model(run_dir: Path):
    """The run's model as PyTorch runs it on a CPU without bf16 units: the "auto" routes (PatchCore's
    and NBS's prior's bf16 screen, NBS's bf16 loss profile) resolved to fp32, the arithmetic of the
    exported graph. Where the CPU has bf16 units it shows how much of PyTorch's lead is theirs."""
    from rlad.models import nearest
    from rlad.workflows import detection

    has_units = nearest.cpu_has_bf16_units
    nearest.cpu_has_bf16_units = lambda: False  # read when a search is built, i.e. at load
    try:
        model = detection.load_run(run_dir).model
    finally:
        nearest.cpu_has_bf16_units = has_units
    if hasattr(model.config, "profile_precision"):
        model.config.profile_precision = "fp32"
    return model


def job_method(spec: dict) -> dict:
    import numpy as np
    import torch

    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.workflows import detection
    from rlad.workflows.export import export, onnx_session

    method, threads = spec["method"], spec["threads"] or 2
    data = Path(spec["data"])
    run_dir = Path(spec["work"]) / method
    cfg = detection.build_config(method, None, spec["settings"])
    started = time.perf_counter()
    detection.fit(method, data, run_dir, cfg)
    fit_s = time.perf_counter() - started
    result = export(run_dir, Path(spec["work"]) / f"{method}.onnx")
    loaded = detection.load_run(run_dir)
    fp32 = fp32_model(run_dir)
    # Without spinning (stated, not left to the default): ORT's threads otherwise busy-wait after each
    # call and slow the PyTorch call after it (PatchCore batch 1: 124.6 vs 70.3 ms for the same
    # arithmetic, archived section of 2026-12-04 15:30), flattering ORT's ratio in earlier sections.
    session = onnx_session(result.path, threads, spinning=False)
    test = discover(data).test
    picked = [test[i] for i in np.linspace(0, len(test) - 1, 8).round().astype(int)]
    images, _ = load_samples(picked, loaded.cfg.image_size, desc="images")
    floats = images.astype(np.float32) / 255.0

    def run_torch(batch):
        with torch.inference_mode():
            loaded.model.predict(torch.from_numpy(batch))

    def run_torch_fp32(batch):
        with torch.inference_mode():
            fp32.predict(torch.from_numpy(batch))

    def run_onnx(batch):
        session.run(["maps", "scores"], {"images": batch})

    rows = []
    for batch_size in (1, 8):
        batch = floats[:batch_size]
        run_torch(batch), run_torch_fp32(batch), run_onnx(batch)  # warm-up (allocations, caches)
        torch_ms, fp32_ms, onnx_ms = [], [], []
        for _ in range(spec["repeats"]):  # alternating, so a burst of load hits all three
            torch_ms.append(_median_ms(run_torch, batch, 1))
            fp32_ms.append(_median_ms(run_torch_fp32, batch, 1))
            onnx_ms.append(_median_ms(run_onnx, batch, 1))
        rows.append({"batch": batch_size, "torch_ms": round(statistics.median(torch_ms), 2),
                     "torch_fp32_ms": round(statistics.median(fp32_ms), 2),
                     "onnx_ms": round(statistics.median(onnx_ms), 2)})
    parity = result.parity
    return {"method": method, "image_size": loaded.cfg.image_size, "fit_s": round(fit_s, 1),
            "export_s": round(result.seconds, 1), "onnx_mb": round(result.bytes / 2**20, 2),
            "parity_max_map_diff": parity.max_abs_map_diff, "parity_labels_agree": parity.labels_agree,
            "parity_images": parity.images, "parity_anomalous": parity.anomalous, "timings": rows,
            "threads": threads, "peak_rss_mb": peak_rss_mb(), "settings": spec["settings"]}


def render(results: Results) -> str:
    from rlad.tables import markdown_table

    table = []
    for row in ok_rows(results.rows):
        for timing in row["timings"]:
            ratio = timing["onnx_ms"] / max(timing["torch_ms"], 1e-9)
            goal = "not slower: " + ("yes" if ratio <= 1.0 else "NO")
            if row["method"] == "patchcore":
                goal += f"; <= {PATCHCORE_GOAL_MS:g} ms: " + ("yes" if timing["onnx_ms"] <= PATCHCORE_GOAL_MS else "NO")
            fp32_ms = timing.get("torch_fp32_ms")
            table.append({"method": row["method"], "batch": timing["batch"], "PyTorch ms/img": timing["torch_ms"],
                          "ONNX Runtime ms/img": timing["onnx_ms"], "ORT / PyTorch": round(ratio, 3), "goal": goal,
                          "PyTorch fp32 ms/img": fp32_ms if fp32_ms is not None else "",
                          "ORT / PyTorch fp32": round(timing["onnx_ms"] / max(fp32_ms, 1e-9), 3) if fp32_ms else "",
                          "parity max |map diff|": f"{row['parity_max_map_diff']:.1e}",
                          "labels": "identical" if row["parity_labels_agree"] else "DIFFER",
                          "load (1 min)": row.get("load_1min", "")})
    meta = results.meta
    body = (f"Each method fitted on {meta.get('data')} with its first {meta.get('train_images')} training images "
            f"({meta.get('threads')} threads, image size as in the table's runs: "
            f"{', '.join(sorted({str(r['image_size']) for r in ok_rows(results.rows)}))} px), exported with `rlad export` "
            "(parity on 8 real images, batch 1 at their own size and one batch of 8: normalised maps within 1e-4 and "
            "identical labels, else no file), then timed side by side in the same process: median of "
            f"{meta.get('repeats')} alternating calls per batch size, per image. PyTorch = the run as `rlad predict` "
            "runs it (on CPUs with bf16 units, bf16 screens and profiles); PyTorch fp32 = the same run with those "
            "routes in fp32, as on a CPU without bf16 units and as in the exported graph. "
            + ("ONNX Runtime without spinning (its idle threads sleep, as `rlad serve` runs it).\n\n"
               if meta.get("ort_spinning") is False else
               "ONNX Runtime with spinning: its threads busy-waited after each call and slowed the PyTorch call "
               "that followed, so the PyTorch column is high (fixed 2026-12-04).\n\n"))
    body += markdown_table(table) + "\n" + failures_text(results.rows)
    extra = [f"- {r['method']}: fit {r['fit_s']} s, export {r['export_s']} s (tracing and parity), {r['onnx_mb']} MiB, "
             f"peak RSS {r['peak_rss_mb']} MiB, settings {' '.join(r['settings']) or 'defaults'}" for r in ok_rows(results.rows)]
    body += "\n" + "\n".join(extra) + "\n"
    if meta.get("busy_note"):
        body += f"\n{meta['busy_note']}\n"
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child")
    parser.add_argument("--data", default=str(SHARED_DATA / "magnetic_tile"))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--train-images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--work", help="scratch folder (kept; default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="tiny fits at 64 px: checks the script, not a result")
    parser.add_argument("--no-append", action="store_true", help="do not write a section in docs/benchmarks.md")
    parser.add_argument("--from-results", help="render docs/benchmarks.md's section from an earlier results file")
    args = parser.parse_args()
    if args.child:
        run_child(args.child, {"method": job_method})
        return
    if args.from_results:
        results = Results("export", args.from_results)
        finish(TITLE, render(results), results, append=not args.no_append)
        return
    os.environ.setdefault("RLAD_BACKBONE_WEIGHTS", str(SHARED_WEIGHTS.parent))
    work, holder = work_dir(args.work, "rlad-bench-export-")
    train_images = 12 if args.quick else args.train_images
    data = subset_folder(Path(args.data), work / "data", train_images)
    results = Results("export")
    load = os.getloadavg()[0]
    results.note(data=Path(args.data).name, train_images=train_images, threads=args.threads, repeats=args.repeats,
                 quick=args.quick, load_at_start=round(load, 1), ort_spinning=False,
                 busy_note=(f"The host was busy (1-minute load {load:.1f} on {os.cpu_count()} cores at the start; "
                            "each row has its own): absolute times are inflated and noisy; the ORT/PyTorch ratio, "
                            "measured side by side, is the comparable figure.") if load > 1.5 else "")
    for method in args.methods:
        settings = (QUICK if args.quick else SETTINGS)[method]
        spec = {"kind": "method", "method": method, "data": str(data), "work": str(work), "settings": settings,
                "repeats": 3 if args.quick else args.repeats}
        row = spawn(__file__, spec, args.threads, tag="export")
        results.add(row if row.get("status") != "failed" else failed_row({"method": method}, row["error"]))
    finish(TITLE, render(results), results, append=not args.no_append)
    if holder is not None:
        holder.cleanup()


if __name__ == "__main__":
    main()
