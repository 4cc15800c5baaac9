"""`make demo`: the main job, end to end, on the embedded default data, in a few minutes on 2 cores.

Steps: write the demo dataset (CC0 textures + synthetic defects) and check it; fit and test the pixel
models (the trivial per-pixel reference and PatchCore on every category, NBS with 5 labelled defects
per type on one); build grounding pairs, train the compact grounder on two categories (warm start,
then GRPO) and evaluate it on the third, unseen one; print a results table and write one HTML report
(each pixel run also has its own `rlad test` report). Every step's output lands under OUT, so
nothing is lost if a later step fails, and a rerun reuses finished runs.

`make demo-full` (`--full`) runs the longer budget: NBS on every category, more pairs, a longer warm
start and GRPO. Backbones use torchvision's ImageNet weights, resolved as everywhere in rlad
(`rlad.models.weights`: $RLAD_BACKBONE_WEIGHTS, the torch hub cache, a download); `make demo` points
the variable at ../shared/weights when that folder exists. `--random-weights` (tests only) runs the
pipeline on untrained backbones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from rlad.errors import RladError

GROUNDING_EVAL_CATEGORY = "gravel"


@dataclass(frozen=True)
class Budget:
    """What one demo profile runs."""

    pixel: dict[str, tuple[str, ...]]
    """Method -> `--set` overrides; every method runs on every category unless listed in `only`."""
    only: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Method -> the categories it runs on (the rest: all)."""
    synthetic_pairs: int = 60
    warm_epochs: int = 4
    grpo_steps: int = 20
    dataset: dict = field(default_factory=dict)
    """`write_demo_dataset` arguments (image counts, image size)."""


PROFILES = {
    # `make demo`: at most 5 minutes on 2 cores. NBS runs a short budget on the grounding category.
    "demo": Budget(
        pixel={"pixelstats": (), "patchcore": (), "nbs": ("model.steps=60", "model.predictor_epochs=2")},
        only={"nbs": (GROUNDING_EVAL_CATEGORY,)},
        synthetic_pairs=60, warm_epochs=4, grpo_steps=20,
    ),
    # `make demo-full`: the budget of the earlier demo (NBS 300 steps on every category).
    "full": Budget(
        pixel={"pixelstats": (), "patchcore": (), "nbs": ("model.steps=300",)},
        synthetic_pairs=150, warm_epochs=8, grpo_steps=60,
    ),
    # Tests: every stage on tiny budgets and small images.
    "smoke": Budget(
        pixel={"pixelstats": ("image_size=128",), "patchcore": ("image_size=128",),
               "nbs": ("image_size=128", "model.steps=60", "model.profile_size=64")},
        only={"nbs": (GROUNDING_EVAL_CATEGORY,)},
        synthetic_pairs=60, warm_epochs=3, grpo_steps=10,
        dataset={"n_train": 20, "n_test_good": 8, "n_per_defect": 3},
    ),
}
RANDOM_WEIGHTS = {"patchcore": "model.backbone.weights=random", "padim": "model.backbone.weights=random",
                  "nbs": "model.context.backbone.weights=random", "refine": "model.context.backbone.weights=random"}


class _Steps:
    """Numbered step headers on stderr, each closing with the time it took."""

    def __init__(self):
        self.number, self.started, self.title = 0, None, ""
        self.first = time.perf_counter()

    def __call__(self, title: str) -> None:
        self.close()
        self.number += 1
        self.title, self.started = title, time.perf_counter()
        print(f"\n== {self.number}. {title}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.started is not None:
            print(f"   ({time.perf_counter() - self.started:.1f} s)", file=sys.stderr, flush=True)
            self.started = None

    def total(self) -> float:
        return time.perf_counter() - self.first


def check_weights(random_weights: bool) -> str:
    """Resolve the ImageNet weights once, before anything long (a download happens here, and an
    offline machine without the file stops at once with the one-line error); returns what the
    backbones are, for the log and the report."""
    if random_weights:
        text = "RANDOM weights (--random-weights): the figures show the pipeline, not the methods"
    else:
        from rlad.models.weights import IMAGENET, resolve

        resolved = resolve("mobilenet_v2", IMAGENET)
        text = f"ImageNet MobileNetV2 from {resolved.path} ({resolved.source})"
    print(f"   backbones: {text}", file=sys.stderr)
    return text


def run_pixel_models(data_root: Path, out: Path, seed: int, budget: Budget, methods: tuple[str, ...],
                     random_weights: bool, step: _Steps) -> list[dict]:
    from rlad.data.folder import discover_categories
    from rlad.workflows import detection

    rows = []
    categories = discover_categories(data_root)
    for method in methods:
        for category in categories:
            if method in budget.only and category.name not in budget.only[method]:
                continue
            step(f"fit + test {method} on {category.name}")
            overrides = list(budget.pixel.get(method, ())) + [f"seed={seed}"]
            if random_weights and method in RANDOM_WEIGHTS:
                overrides.append(RANDOM_WEIGHTS[method])
            cfg = detection.build_config(method, None, overrides)
            run_dir = out / "runs" / f"{method}_{category.name}"
            detection.fit(method, category, run_dir, cfg)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*RANDOM weights.*")  # said once, above
                metrics = detection.test(run_dir, category)
            rows.append({"method": method, "category": category.name, **metrics})
    return rows


def run_grounding(data_root: Path, out: Path, seed: int, budget: Budget, random_weights: bool,
                  step: _Steps) -> list[dict]:
    """Pairs from every category; the compact grounder learns on all but one and is tested on it."""
    from rlad.data.pairs.builders import build_pairs
    from rlad.data.pairs.records import load_pairs, split_by_category, write_pairs
    from rlad.workflows import grounding

    work = out / "grounding"
    work.mkdir(parents=True, exist_ok=True)
    all_pairs = work / "pairs.jsonl"
    step("grounding pairs (real + synthetic)")
    if not all_pairs.is_file():
        build_pairs(data_root, all_pairs, synthetic=budget.synthetic_pairs, seed=seed)
    records = load_pairs(all_pairs)
    train, test = split_by_category(records, [GROUNDING_EVAL_CATEGORY])
    test = [r for r in test if r.source == "real"]
    write_pairs(train, work / "train.jsonl")
    write_pairs(test, work / "test.jsonl")
    print(f"   {len(train)} training pairs, {len(test)} test pairs on the unseen category {GROUNDING_EVAL_CATEGORY}",
          file=sys.stderr)

    policy_set = ["policy.weights=random"] if random_weights else []
    warm, tuned = out / "runs" / "grounder_warm", out / "runs" / "grounder_grpo"
    step("compact grounder: supervised warm start")
    fit_cfg = grounding.build_fit_config(None, [f"train.epochs={budget.warm_epochs}", *policy_set], seed)
    grounding.fit_compact(work / "train.jsonl", warm, fit_cfg)
    step("compact grounder: GRPO (format + DCLR rewards, difficulty weights, group resampling)")
    grpo_cfg = grounding.build_grpo_config(None, [f"grpo.steps={budget.grpo_steps}"], seed)
    grounding.grpo(work / "train.jsonl", tuned, grpo_cfg, init=warm)
    rows = []
    for name, run in (("warm start", warm), ("+ GRPO", tuned)):
        metrics = grounding.evaluate(run, work / "test.jsonl")
        rows.append({"policy": name, **metrics})
    return rows


PIXEL_COLUMNS = ["method", "category", "image_auroc", "pixel_auroc", "aupro", "pixel_f1_max",
                 "pixel_f1_at_val_threshold", "ms_per_image"]
GROUNDING_COLUMNS = ["policy", "acc_at_0_3", "miou", "f1", "whole_image_rate", "far_box_rate"]


def write_demo_report(out: Path, pixel_rows: list[dict], grounding_rows: list[dict], data_root: Path,
                      backbones: str = "") -> Path:
    from html import escape

    from rlad.tables import html_table
    from rlad.viz import png_data_uri, write_report
    from rlad.workflows.predict import predict

    reports = [(r, Path(r["report"]).resolve()) for r in pixel_rows if r.get("report")]
    links = "".join(f"<li><a href='{escape(str(path.relative_to(out.resolve())))}'>"
                    f"{escape(r['method'])} on {escape(r['category'])}</a></li>"
                    for r, path in reports if path.is_relative_to(out.resolve()))
    sections = [
        ("Pixel-level detection (test split; thresholds fitted on a validation split, never on test)",
         html_table(pixel_rows, PIXEL_COLUMNS)
         + (f"<p>Each run's own report (curves, per defect type, worst errors):</p><ul>{links}</ul>" if links else "")),
    ]
    if grounding_rows:
        sections.append((f"Difference grounding on the unseen category {GROUNDING_EVAL_CATEGORY!r}",
                         html_table(grounding_rows, GROUNDING_COLUMNS)))
    nbs_run = out / "runs" / f"nbs_{GROUNDING_EVAL_CATEGORY}"
    if (nbs_run / "model.pt").is_file():
        category = data_root / GROUNDING_EVAL_CATEGORY
        examples = sorted(p for p in (category / "test").rglob("*.png") if p.parent.name != "good")[::8][:6]
        predictions_dir = out / "predictions" / GROUNDING_EVAL_CATEGORY
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
            result = predict(nbs_run, examples, predictions_dir)
        figures = "".join(
            f"<figure><img src='{png_data_uri(predictions_dir / r['overlay'])}' alt='{escape(r['overlay'])}'>"
            f"<figcaption>{escape(Path(r['path']).parent.name)}/{escape(Path(r['path']).name)}</figcaption></figure>"
            for r in result.rows
        )
        sections.append((f"rlad predict with NBS on {GROUNDING_EVAL_CATEGORY}: image | heat map, boxes with scores",
                         f"<div>{figures}</div>"))
    intro = (f"<p>Data: {escape(str(data_root))} (the embedded demo dataset: CC0 textures with synthetic defects). "
             f"Backbones: {escape(backbones)}.</p>")
    if backbones.startswith("RANDOM"):
        intro = "<p class='warn'>These runs use untrained backbones: the figures show the pipeline, not the methods.</p>" + intro
    return write_report(out / "report.html", "rlad demo", sections, intro=intro)


def run_demo(out: Path, seed: int = 0, profile: str = "demo", methods: tuple[str, ...] | None = None,
             grounding: bool = True, random_weights: bool = False) -> dict:
    from rlad.data.folder import discover, discover_categories
    from rlad.data.synth.demo import write_demo_dataset

    budget = PROFILES[profile]
    methods = tuple(methods or budget.pixel)
    step = _Steps()
    out.mkdir(parents=True, exist_ok=True)
    data_root = out / "data"
    step(f"demo dataset -> {data_root}")
    write_demo_dataset(data_root, seed=seed, **budget.dataset)
    for category in discover_categories(data_root):
        folder = discover(category, verify=True)
        counts = ", ".join(f"{r['split']}/{r['type']}: {r['images']}" for r in folder.counts())
        print(f"   {folder.category}: {counts}", file=sys.stderr)
    backbones = check_weights(random_weights)

    pixel_rows = run_pixel_models(data_root, out, seed, budget, methods, random_weights, step)
    grounding_rows = run_grounding(data_root, out, seed, budget, random_weights, step) if grounding else []
    summary = {"data": str(data_root), "profile": profile, "pixel": pixel_rows, "grounding": grounding_rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    step("report")
    summary["report"] = str(write_demo_report(out, pixel_rows, grounding_rows, data_root, backbones))
    step.close()
    summary["seconds"] = round(step.total(), 1)
    return summary


def print_summary(summary: dict) -> None:
    from rlad.tables import text_table

    print("\nPixel-level detection on the demo data (test split; thresholds never fitted on it):")
    print(text_table(summary["pixel"], PIXEL_COLUMNS[:-2] + ["ms_per_image"], floatfmt="{:.3f}"), end="")
    if summary.get("grounding"):
        print(f"\nDifference grounding on the unseen category {GROUNDING_EVAL_CATEGORY!r} (compact grounder):")
        print(text_table(summary["grounding"], GROUNDING_COLUMNS[:-1], floatfmt="{:.3f}"), end="")
        print("whole_image_rate: share of defective queries answered with a box over (nearly) the whole image. DCLR "
              "pays for such boxes, so a policy unsure of an unseen category learns to give them: the exploit measured "
              "in docs/grounding.md. On a demo budget these figures show the pipeline, not the methods' quality "
              "(docs/benchmarks.md has the real-data results).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlad.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="the longer budget (make demo-full)")
    parser.add_argument("--methods", default=None, help="comma-separated pixel methods (default: the profile's)")
    parser.add_argument("--no-grounding", action="store_true", help="skip the pairs / compact grounder / GRPO part")
    parser.add_argument("--quick", action="store_true", help="tiny budgets and images, for a smoke test")
    parser.add_argument("--random-weights", action="store_true", help="untrained backbones (tests; poor figures)")
    args = parser.parse_args(argv)
    profile = "smoke" if args.quick else "full" if args.full else "demo"
    methods = tuple(m for m in args.methods.split(",") if m) if args.methods else None
    try:
        summary = run_demo(args.out, args.seed, profile, methods, grounding=not args.no_grounding,
                           random_weights=args.random_weights)
    except RladError as exc:
        print(f"rlad demo: error: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    print(f"\nDone in {summary['seconds'] / 60:.1f} min. Open the report: {Path(summary['report']).resolve()}")
    print(f"Everything is under {args.out}/ (report.html, summary.json, runs/<method>_<category>/report.html, data/).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
