"""`make demo`: the main job, end to end, on the embedded default data (no download, no real data).

Steps: write the demo dataset (textures + synthetic defects), check it, fit and test the models on
each category, build grounding pairs and train the compact grounder (warm start + a short GRPO), then
write one HTML report. Each step's output lands under OUT so nothing is lost if a later step fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rlad.errors import RladError

PIXEL_METHODS = ("pixelstats", "patchcore", "nbs")


def _step(title: str) -> None:
    print(f"\n== {title}", file=sys.stderr, flush=True)


def run_demo(out: Path, seed: int = 0, methods: tuple[str, ...] = PIXEL_METHODS, quick: bool = False) -> dict:
    from rlad.data.folder import discover, discover_categories
    from rlad.data.synth import write_demo_dataset
    from rlad.models import api
    from rlad.models.registry import get_model_class

    out.mkdir(parents=True, exist_ok=True)
    data_root = out / "data"
    _step(f"1. demo dataset -> {data_root}")
    started = time.perf_counter()
    write_demo_dataset(data_root, seed=seed)
    print(f"   built in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    _step("2. check")
    categories = discover_categories(data_root)
    for category in categories:
        folder = discover(category, verify=True)
        counts = ", ".join(f"{r['split']}/{r['type']}: {r['images']}" for r in folder.counts())
        print(f"   {folder.category}: {counts}", file=sys.stderr)

    rows = []
    for method in methods:
        try:
            get_model_class(method)
        except RladError as exc:
            print(f"   skipping {method}: {exc}", file=sys.stderr)
            continue
        for category in categories:
            _step(f"3. fit + test {method} on {category.name}")
            overrides = ["image_size=128"] if quick else []
            cfg = api.build_config(method, None, overrides + [f"seed={seed}"])
            run_dir = out / "runs" / f"{method}_{category.name}"
            api.fit(method, category, run_dir, cfg)
            metrics = api.test(run_dir, category)
            rows.append({"method": method, "category": category.name, **metrics})

    summary = {"data": str(data_root), "pixel": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def print_summary(summary: dict) -> None:
    from rlad.cli.common import print_table

    columns = ["method", "category", "image_auroc", "pixel_auroc", "aupro", "pixel_f1_max", "ms_per_image"]
    print("\nPixel-level detection on the demo data (test split; thresholds never fitted on it):")
    print_table(summary["pixel"], columns, floatfmt="{:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlad.demo", description=__doc__)
    parser.add_argument("--out", default="demo_out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(PIXEL_METHODS))
    parser.add_argument("--quick", action="store_true", help="smaller images, for a smoke test")
    args = parser.parse_args(argv)
    try:
        summary = run_demo(args.out, args.seed, tuple(m for m in args.methods.split(",") if m), args.quick)
    except RladError as exc:
        print(f"rlad demo: error: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    print(f"\nEverything is under {args.out}/ (summary.json, runs/, data/).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
