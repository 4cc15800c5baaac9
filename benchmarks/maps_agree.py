"""Do two versions of the code give the same maps and metrics on a saved run? (issue 19: PatchCore
faster "at equal maps"; NBS and the refiner within 0.003 of the base code's metrics)

    .venv/bin/python benchmarks/maps_agree.py RUN --data DIR --baseline-src /path/to/old/src --split dev
    .venv/bin/python benchmarks/maps_agree.py RUN --data DIR --baseline-src OLD/src --baseline-run RUN_OLD --split dev
    .venv/bin/python benchmarks/maps_agree.py --from-results benchmarks/results/maps_agree-DATE.jsonl

Loads the run's model twice, once with this checkout's `src` and once with the other one first on
the path, each in its own process, predicts the same images (the run's `--split` of DIR, batch 8) and
reports: the largest absolute difference of the normalised maps (the run's own normalisation, as
`rlad predict` writes them) and of the raw maps over the run's normalisation span, the largest
image-score difference, and each version's pixel AUROC, AUPRO, F1_max and image AUROC on those images.
With `--baseline-run`, the baseline code loads that run instead (one it fitted itself, with the
same settings and seed): for changes to fitting, where the same saved run cannot tell; the maps then
differ by the fit and the metrics are the comparison (on the development split: `--split dev`).
Raw rows go to benchmarks/results/maps_agree-DATE.jsonl; a section to docs/benchmarks.md unless
--no-append.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common  # noqa: E402

METRICS = ["pixel_auroc", "aupro", "pixel_f1_max", "image_auroc"]


def job_predict(spec: dict) -> dict:
    import numpy as np

    from rlad.data.folder import discover
    from rlad.data.split import evaluation_samples
    from rlad.data.transforms import load_samples
    from rlad.metrics.pixel import evaluate
    from rlad.workflows import detection as api

    edited = spec.get("drop_keys") or spec.get("set_keys")
    loaded = api.load_run(older_copy(spec["run"], spec.get("drop_keys", []), spec.get("set_keys", []), spec["out"] + ".run")
                          if edited else spec["run"])
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


def older_copy(run: str, keys: list[str], settings: list[str], where: str) -> str:
    """A copy of `run` whose config (config.yaml and the copy in model.pt) lacks `keys` (dotted:
    settings recorded since the baseline code was written, which it refuses as unknown) and has
    `settings` (KEY=VALUE, e.g. a method's earlier name); the model and split are the run's own."""
    import shutil

    import torch
    import yaml

    def edit(config: dict) -> dict:
        for key in keys:
            *parents, last = key.split(".")
            node = config
            for part in parents:
                node = node.get(part, {})
            node.pop(last, None)
        for setting in settings:
            key, _, value = setting.partition("=")
            *parents, last = key.split(".")
            node = config
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = yaml.safe_load(value)
        return config

    shutil.copytree(run, where)
    config_path = Path(where) / "config.yaml"
    config_path.write_text(yaml.safe_dump(edit(yaml.safe_load(config_path.read_text())), sort_keys=False))
    model_path = Path(where) / "model.pt"
    payload = torch.load(model_path, weights_only=False)  # our own run, written by this benchmark's fit
    payload["config"] = edit(payload["config"])
    if "method" in payload and any(s.startswith("method=") for s in settings):
        payload["method"] = payload["config"]["method"]
    torch.save(payload, model_path)
    return where


JOBS = {"predict": job_predict}


def measure(args, baseline: Path, results: _common.Results) -> None:
    import numpy as np

    from rlad.workflows.detection import load_run

    baseline_run = args.baseline_run or args.run
    results.note(run=_common.portable(str(Path(args.run).resolve())), baseline_run=_common.portable(str(Path(baseline_run).resolve())),
                 baseline_drop_keys=args.baseline_drop_key, baseline_set=args.baseline_set,
                 data=Path(args.data).name, split=args.split, baseline_src=_common.portable(str(baseline)))
    outputs = {}
    with tempfile.TemporaryDirectory(prefix="rlad_maps_") as work:
        for code, src, run in (("this", Path(__file__).resolve().parents[1] / "src", args.run), ("baseline", baseline, baseline_run)):
            out = str(Path(work) / f"{code}.npz")
            spec = {"kind": "predict", "run": run, "data": args.data, "split": args.split, "images": args.images, "out": out,
                    "drop_keys": args.baseline_drop_key if code == "baseline" and not args.baseline_run else [],
                    "set_keys": args.baseline_set if code == "baseline" and not args.baseline_run else []}
            result = results.add({"kind": "predict", "code": code,
                                  **_common.spawn(__file__, spec, args.threads, tag=f"maps {code}", env={"PYTHONPATH": str(src)})})
            if result.get("status") == "failed":
                return
            with np.load(out) as saved:
                outputs[code] = (saved["maps"], saved["scores"])
    post = load_run(args.run).post
    span = max(post.pixel_threshold - post.pixel_min, 1e-12) / 0.5  # raw units per unit of normalised map
    (maps_a, scores_a), (maps_b, scores_b) = outputs["this"], outputs["baseline"]
    if args.baseline_run:  # each map in its own run's normalisation
        post_b = load_run(baseline_run).post
        normalised_b = post_b.normalise_maps(maps_b)
    else:
        normalised_b = post.normalise_maps(maps_b)
    this, base = results.rows[0], results.rows[1]
    results.add({
        "kind": "agreement",
        "max_abs_diff_normalised_maps": float(np.abs(post.normalise_maps(maps_a) - normalised_b).max()),
        "max_abs_diff_raw_maps_over_span": float(np.abs(maps_a - maps_b).max() / span),
        "max_abs_diff_scores": float(np.abs(scores_a - scores_b).max()),
        **{f"diff_{k}": round(this[k] - base[k], 4) for k in METRICS},
    })


def render(results: _common.Results) -> str:
    from rlad.tables import markdown_table

    meta = results.meta
    predicted = [r for r in _common.ok_rows(results.rows) if r.get("kind") == "predict"]
    agreement = [r for r in results.rows if r.get("kind") == "agreement"]
    same_run = meta["baseline_run"] == meta["run"]
    lines = [
        f"Run: {meta['run']}" + ("" if same_run else f" (this code) and {meta['baseline_run']} (fitted by the baseline code, "
                                                     "same settings and seed)")
        + f"; {meta['split']} split of {meta['data']}"
        + (f" ({predicted[0]['n_images']} images)" if predicted else "")
        + f"; this checkout vs the baseline src {meta['baseline_src']}, each in its own process, batch 8"
        + (f" (the baseline loads a copy of the run whose config.yaml lacks the keys it does not know "
           f"({', '.join(meta['baseline_drop_keys']) or 'none'}) and has {', '.join(meta.get('baseline_set', [])) or 'nothing else'})"
           if (meta.get("baseline_drop_keys") or meta.get("baseline_set")) and same_run else "")
        + ". Normalised maps as "
        "`rlad predict` writes them (each run's validation-fitted scale, clipped to [0, 1]); raw map differences over "
        "this run's scale, unclipped." + ("" if same_run else " Two fits: the maps differ by the fit, the metrics are the comparison."),
        "", markdown_table(predicted, ["code", "n_images", "ms_per_image", *METRICS, "load_1min"]) if predicted else "",
    ]
    if agreement:
        columns = [c for c in agreement[0] if c != "kind"]
        lines += ["", markdown_table(agreement, columns, floatfmt="{:.2e}")]
    return "\n".join(lines) + _common.failures_text(results.rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--data")
    parser.add_argument("--baseline-src")
    parser.add_argument("--baseline-run", help="a run the baseline code fitted (same settings and seed) for it to load instead of RUN")
    parser.add_argument("--baseline-drop-key", action="append", default=[], metavar="KEY",
                        help="a config key (e.g. protocol.protocol_seed) the baseline code does not know: it loads a copy "
                        "of RUN without it (repeatable)")
    parser.add_argument("--baseline-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config value the baseline code needs in its copy of RUN (e.g. method=supervised, the "
                        "refiner's earlier name; repeatable)")
    parser.add_argument("--split", choices=("test", "dev"), default="dev")
    parser.add_argument("--images", type=int, default=0, help="first N images of the split (default: all)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--from-results", metavar="FILE", help="render an earlier run's results file again (no measuring)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _common.run_child(args.child, JOBS)
        return 0
    if args.from_results:
        results = _common.Results("maps_agree", path=args.from_results)
    else:
        if not (args.run and args.data and args.baseline_src):
            parser.error("RUN, --data and --baseline-src are required")
        baseline = Path(args.baseline_src).resolve()
        if not (baseline / "rlad" / "__init__.py").is_file():
            parser.error(f"--baseline-src {baseline}: no rlad package there")
        results = _common.Results("maps_agree")
        measure(args, baseline, results)
    return _common.finish("Maps of a saved run: this code vs the baseline code (issue 19)", render(results), results,
                          append=not args.no_append)


if __name__ == "__main__":
    sys.exit(main())
