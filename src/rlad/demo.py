"""`make demo`: the main job, end to end, on the embedded default data (no download, no real data).

Steps: write the demo dataset (CC0 textures + synthetic defects), check it; fit and test the pixel
models on each category (the trivial per-pixel reference, PatchCore, and NBS with 5 labelled defects
per type on a demo-sized budget); build grounding pairs, train the compact grounder on two
categories (warm start, then a short GRPO) and evaluate it on the third, unseen one; write one HTML
report. Every step's output lands under OUT, so nothing is lost if a later step fails, and a rerun
reuses finished runs.

Backbones: the repository ships no ImageNet weights, so PatchCore's and NBS's MobileNetV2 is randomly
initialised unless $RLAD_BACKBONE_WEIGHTS names torchvision's `mobilenet_v2-b0353104.pth` (then the
figures are the real ones).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from rlad.errors import RladError

PIXEL_METHODS = ("pixelstats", "patchcore", "nbs")
# A demo-sized budget: the defaults (2000 NBS steps) take ~10 minutes per category on 2 cores.
DEMO_OVERRIDES = {"nbs": ["model.steps=300"]}
GROUNDING_EVAL_CATEGORY = "gravel"


def _step(title: str) -> None:
    print(f"\n== {title}", file=sys.stderr, flush=True)


def run_pixel_models(data_root: Path, out: Path, seed: int, methods: tuple[str, ...], quick: bool) -> list[dict]:
    from rlad.data.folder import discover_categories
    from rlad.models.registry import get_model_class
    from rlad.workflows import detection

    rows = []
    categories = discover_categories(data_root)
    for method in methods:
        try:
            get_model_class(method)
        except RladError as exc:
            print(f"   skipping {method}: {exc}", file=sys.stderr)
            continue
        for category in categories:
            _step(f"3. fit + test {method} on {category.name}")
            overrides = list(DEMO_OVERRIDES.get(method, [])) + [f"seed={seed}"]
            if quick:
                overrides += ["image_size=128"] + (["model.steps=60", "model.profile_size=64"] if method == "nbs" else [])
            cfg = detection.build_config(method, None, overrides)
            run_dir = out / "runs" / f"{method}_{category.name}"
            detection.fit(method, category, run_dir, cfg)
            metrics = detection.test(run_dir, category)
            rows.append({"method": method, "category": category.name, **metrics})
    return rows


def run_grounding(data_root: Path, out: Path, seed: int, quick: bool) -> list[dict]:
    """Pairs from every category; the compact grounder learns on all but one and is tested on it."""
    from rlad.data.pairs.builders import build_pairs
    from rlad.data.pairs.records import load_pairs, split_by_category, write_pairs
    from rlad.workflows import grounding

    work = out / "grounding"
    work.mkdir(parents=True, exist_ok=True)
    all_pairs = work / "pairs.jsonl"
    _step("4. grounding pairs (real + synthetic)")
    if not all_pairs.is_file():
        build_pairs(data_root, all_pairs, synthetic=60 if quick else 150, seed=seed)
    records = load_pairs(all_pairs)
    train, test = split_by_category(records, [GROUNDING_EVAL_CATEGORY])
    test = [r for r in test if r.source == "real"]
    write_pairs(train, work / "train.jsonl")
    write_pairs(test, work / "test.jsonl")
    print(f"   {len(train)} training pairs, {len(test)} test pairs on the unseen category {GROUNDING_EVAL_CATEGORY}", file=sys.stderr)

    weights = os.environ.get("RLAD_BACKBONE_WEIGHTS", "")
    policy_set = [f"policy.weights={weights}"] if weights else []
    warm, tuned = out / "runs" / "grounder_warm", out / "runs" / "grounder_grpo"
    _step("5. compact grounder: supervised warm start")
    fit_cfg = grounding.build_fit_config(None, [f"train.epochs={3 if quick else 8}", *policy_set], seed)
    grounding.fit_compact(work / "train.jsonl", warm, fit_cfg)
    _step("6. compact grounder: GRPO (format + DCLR rewards, difficulty weights, group resampling)")
    grpo_cfg = grounding.build_grpo_config(None, [f"grpo.steps={10 if quick else 60}"], seed)
    grounding.grpo(work / "train.jsonl", tuned, grpo_cfg, init=warm)
    rows = []
    for name, run in (("warm start", warm), ("+ GRPO", tuned)):
        metrics = grounding.evaluate(run, work / "test.jsonl")
        rows.append({"policy": name, **metrics})
    return rows


def write_demo_report(out: Path, pixel_rows: list[dict], grounding_rows: list[dict], data_root: Path) -> Path:
    from rlad.tables import html_table
    from rlad.viz import png_data_uri, write_report
    from rlad.workflows import detection

    sections = [
        ("Pixel-level detection (test split; thresholds fitted on a validation split, never on test)",
         html_table(pixel_rows, ["method", "category", "image_auroc", "pixel_auroc", "aupro", "pixel_f1_max", "pixel_f1_at_val_threshold", "ms_per_image"])),
    ]
    if grounding_rows:
        sections.append((f"Difference grounding on the unseen category {GROUNDING_EVAL_CATEGORY!r}",
                         html_table(grounding_rows, ["policy", "acc_at_0_3", "miou", "f1", "whole_image_rate", "far_box_rate"])))
    nbs_run = out / "runs" / f"nbs_{GROUNDING_EVAL_CATEGORY}"
    if (nbs_run / "model.pt").is_file():
        category = data_root / GROUNDING_EVAL_CATEGORY
        examples = sorted(p for p in (category / "test").rglob("*.png") if p.parent.name != "good")[::8][:6]
        rows = detection.predict(nbs_run, examples, out / "predictions" / GROUNDING_EVAL_CATEGORY)
        figures = "".join(
            f"<figure><img src='{png_data_uri(out / 'predictions' / GROUNDING_EVAL_CATEGORY / r['overlay'])}'>"
            f"<figcaption>{Path(r['path']).parent.name}/{Path(r['path']).name}: score {r['score']:.2f}</figcaption></figure>"
            for r in rows
        )
        sections.append((f"NBS on {GROUNDING_EVAL_CATEGORY}: overlays (red outline = predicted mask)", f"<div class='grid'>{figures}</div>"))
    path = out / "report.html"
    write_report(path, "rlad demo", sections)
    return path


def run_demo(out: Path, seed: int = 0, methods: tuple[str, ...] = PIXEL_METHODS, quick: bool = False,
             grounding: bool = True) -> dict:
    from rlad.data.folder import discover, discover_categories
    from rlad.data.synth.demo import write_demo_dataset

    out.mkdir(parents=True, exist_ok=True)
    data_root = out / "data"
    _step(f"1. demo dataset -> {data_root}")
    started = time.perf_counter()
    write_demo_dataset(data_root, seed=seed)
    print(f"   built in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    _step("2. check")
    for category in discover_categories(data_root):
        folder = discover(category, verify=True)
        counts = ", ".join(f"{r['split']}/{r['type']}: {r['images']}" for r in folder.counts())
        print(f"   {folder.category}: {counts}", file=sys.stderr)

    if not os.environ.get("RLAD_BACKBONE_WEIGHTS"):
        print("   note: RLAD_BACKBONE_WEIGHTS is not set, so MobileNetV2 backbones are randomly initialised "
              "(set it to torchvision's mobilenet_v2-b0353104.pth for real figures)", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOMLY initialised.*")
        pixel_rows = run_pixel_models(data_root, out, seed, methods, quick)
        grounding_rows = run_grounding(data_root, out, seed, quick) if grounding else []
    summary = {"data": str(data_root), "pixel": pixel_rows, "grounding": grounding_rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _step("7. report")
    summary["report"] = str(write_demo_report(out, pixel_rows, grounding_rows, data_root))
    return summary


def print_summary(summary: dict) -> None:
    from rlad.tables import text_table

    columns = ["method", "category", "image_auroc", "pixel_auroc", "aupro", "pixel_f1_max", "ms_per_image"]
    print("\nPixel-level detection on the demo data (test split; thresholds never fitted on it):")
    print(text_table(summary["pixel"], columns, floatfmt="{:.3f}"), end="")
    if summary.get("grounding"):
        print(f"\nDifference grounding on the unseen category {GROUNDING_EVAL_CATEGORY!r} (compact grounder):")
        print(text_table(summary["grounding"], ["policy", "acc_at_0_3", "miou", "f1", "whole_image_rate"],
                         floatfmt="{:.3f}"), end="")
        print("whole_image_rate: share of defective queries answered with a box over (nearly) the whole image. DCLR "
              "pays for such boxes, so a policy unsure of an unseen category learns to give them: the exploit measured "
              "in docs/grounding.md. With random backbones and a demo budget these figures show the pipeline, not the "
              "method's quality (docs/benchmarks.md has the real-data results).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlad.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(PIXEL_METHODS))
    parser.add_argument("--no-grounding", action="store_true", help="skip the pairs / compact grounder / GRPO part")
    parser.add_argument("--quick", action="store_true", help="smaller images and budgets, for a smoke test")
    args = parser.parse_args(argv)
    try:
        summary = run_demo(args.out, args.seed, tuple(m for m in args.methods.split(",") if m), args.quick,
                           grounding=not args.no_grounding)
    except RladError as exc:
        print(f"rlad demo: error: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    print(f"\nEverything is under {args.out}/ (report.html, summary.json, runs/, data/).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
