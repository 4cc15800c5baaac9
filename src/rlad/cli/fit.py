"""`rlad fit`, `rlad test`, `rlad predict`: pixel-level anomaly models (NBS and baselines), plus the
grounding policies' warm starts (`rlad fit compact`, `rlad fit hf`)."""

from __future__ import annotations

import argparse
import json

from rlad.cli.common import add_config_args, add_json_arg, print_json, print_table
from rlad.errors import ConfigError

METRIC_ORDER = ["image_auroc", "pixel_auroc", "aupro", "pixel_f1_max", "image_f1_max", "pixel_ap",
                "pixel_f1_at_val_threshold", "image_f1_at_val_threshold", "ms_per_image", "n_test"]


FIT_EXAMPLES = """examples:
  rlad fit patchcore --data path/to/category --out runs/patchcore
  rlad fit padim --data path/to/category --out runs/padim --set model.backbone.arch=resnet18 --set model.backbone.stages=[1,2,3]
  rlad fit nbs --data path/to/category --out runs/nbs --set model.steps=500 --set protocol.dev_fraction=0.3
  rlad fit ae --data path/to/category --out runs/ae --set model.steps=200 --set image_size=128

Backbones load torchvision's ImageNet weights: from $RLAD_BACKBONE_WEIGHTS (a file or a folder), the
torch hub cache ($TORCH_HOME/hub/checkpoints), or a download into it; --set model.backbone.weights=PATH
uses a file, =random an untrained network (tests). docs/methods.md lists every method's keys."""

TEST_EXAMPLES = """examples:
  rlad test runs/patchcore                      # the dataset the run was fitted on; report in the run
  rlad test runs/patchcore --data other/category --report out/report.html --json"""

PREDICT_EXAMPLES = """examples:
  rlad predict runs/patchcore photos/ --out predictions
  rlad predict runs/patchcore a.png b.png --out predictions --threshold 0.6 --raw

Scores and thresholds are on the run's 0-1 scale, where 0.5 is the threshold fitted on its validation
split. Output files and every field of predictions.jsonl: docs/predict.md. Exit status 1 when some
inputs could not be read (listed, and in summary.json), 2 on a usage error."""


def register(sub: argparse._SubParsersAction) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    fit = sub.add_parser("fit", help="train a model: refine | nbs | patchcore | padim | ae | pixelstats | compact | hf",
                         epilog=FIT_EXAMPLES, formatter_class=formatter)
    fit.add_argument(
        "method",
        help="refine (few labelled defects correct a PatchCore prior; fast, for production) | nbs (the NBS paper's "
        "loss profiles + RL sampler on top of it) | patchcore | padim | ae | pixelstats (unsupervised) | compact (grounder) "
        "| hf (vision-language grounder's warm start)",
    )
    fit.add_argument("--data", metavar="DIR", help="dataset folder in MVTec AD layout")
    fit.add_argument("--pairs", metavar="PAIRS.jsonl", help="pair file (compact and hf grounders)")
    fit.add_argument("--model", metavar="PATH", help="hf: the Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint to start from")
    fit.add_argument("--questions", metavar="Q.jsonl",
                     help="hf: question file instead of --pairs: a warm start on multiple-choice answers (then "
                     "`rlad grpo --task mcq --init RUN`)")
    fit.add_argument("--out", metavar="RUN", required=True, help="run directory; an existing one resumes")
    fit.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
    fit.add_argument(
        "--labeled-per-type",
        type=int,
        default=None,
        metavar="N",
        help="defective images per type taken from test/ as labelled training data and removed from "
        "evaluation (refine and nbs default 5; unsupervised methods default 0)",
    )
    add_config_args(fit)
    add_json_arg(fit)
    fit.set_defaults(func=run_fit)

    test = sub.add_parser("test", help="evaluate a run on a dataset's test split; writes report.html",
                          epilog=TEST_EXAMPLES, formatter_class=formatter)
    test.add_argument("run", metavar="RUN")
    test.add_argument("--data", metavar="DIR", help="dataset folder (default: the one the run was fitted on)")
    test.add_argument(
        "--split", choices=("test", "dev"), default="test",
        help="test (default): the test split minus labelled and development images; dev: only the development "
        "split of a run fitted with protocol.dev_fraction > 0 (for choosing settings without touching test)",
    )
    test.add_argument(
        "--allow-missing-labelled", action="store_true",
        help="score a dataset that holds none of the labelled images the run was trained on (another "
        "category, or a copy without them); by default that is refused, since it is not the run's protocol",
    )
    report = test.add_mutually_exclusive_group()
    report.add_argument("--report", metavar="HTML", help="where to write the HTML report (default: RUN/report.html)")
    report.add_argument("--no-report", action="store_true", help="write no HTML report")
    add_json_arg(test)
    test.set_defaults(func=run_test)

    predict = sub.add_parser("predict", help="anomaly maps, masks, boxes and overlays for images",
                             epilog=PREDICT_EXAMPLES, formatter_class=formatter)
    predict.add_argument("run", metavar="RUN")
    predict.add_argument("paths", metavar="PATH", nargs="+",
                         help="images, or folders searched recursively (hidden entries and --out skipped)")
    predict.add_argument("--out", metavar="DIR", required=True, help="folder for the outputs (created)")
    predict.add_argument("--threshold", type=float, metavar="S",
                         help="image score at or above which an image is anomalous (default 0.5: the run's)")
    predict.add_argument("--pixel-threshold", type=float, metavar="S",
                         help="map score at or above which a pixel is defect (default 0.5: the run's)")
    predict.add_argument("--raw", action="store_true", help="also write each raw map as NAME_map.npy (float32)")
    add_json_arg(predict)
    predict.set_defaults(func=run_predict)


def _fit_summary(run) -> dict:
    return {"run": str(run.path), **json.loads(run.metrics_path.read_text()).get("fit", {})}


def run_fit(args) -> int:
    if args.method in GROUNDERS:
        return _fit_grounder(args)
    from rlad.workflows import detection

    if args.model or args.questions:
        raise ConfigError(f"{'--model' if args.model else '--questions'} is for `rlad fit hf`, not {args.method}")
    if not args.data:
        raise ConfigError(f"rlad fit {args.method} needs --data DIR")
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.labeled_per_type is not None:
        overrides.append(f"protocol.labeled_per_type={args.labeled_per_type}")
    cfg = detection.build_config(args.method, args.config, overrides)
    run = detection.fit(args.method, args.data, args.out, cfg)
    if args.json:
        print_json(_fit_summary(run))
    else:
        print(f"trained {args.method} -> {run.path}")
    return 0


GROUNDERS = ("compact", "hf")


def _fit_grounder(args) -> int:
    from rlad.workflows import grounding

    method = args.method
    if args.questions and (method != "hf" or args.pairs):
        raise ConfigError("--questions is for `rlad fit hf`, instead of --pairs" if method == "hf"
                          else f"--questions is for `rlad fit hf`, not {method}")
    if not args.pairs and not args.questions:
        raise ConfigError(f"rlad fit {method} needs --pairs PAIRS.jsonl (build one with `rlad data pairs`)")
    if args.data:
        raise ConfigError(f"rlad fit {method} trains on --pairs, not --data (build pairs with `rlad data pairs DIR`)")
    if method == "compact":
        if args.model:
            raise ConfigError("--model is for `rlad fit hf`; the compact grounder is built from its config")
        run = grounding.fit_compact(args.pairs, args.out, grounding.build_fit_config(args.config, args.overrides,
                                                                                      args.seed))
    else:
        overrides = list(args.overrides) + ([f"policy.model={args.model}"] if args.model else [])
        run = grounding.fit_hf(args.questions or args.pairs, args.out,
                               grounding.build_hf_fit_config(args.config, overrides, args.seed),
                               task_name="mcq" if args.questions else "grounding")
    if args.json:
        print_json(_fit_summary(run))
    else:
        print(f"trained {method} grounder (warm start) -> {run.path}")
    return 0


def run_test(args) -> int:
    from rlad.workflows import detection

    report = False if args.no_report else args.report
    metrics = detection.test(args.run, args.data, split=args.split, report=report,
                             allow_missing_labelled=args.allow_missing_labelled)
    if args.json:
        print_json(metrics)
    else:
        print_table([{"metric": k, "value": metrics[k]} for k in METRIC_ORDER if k in metrics])
        if metrics.get("report"):
            print(f"report: {metrics['report']}")
    return 0


def run_predict(args) -> int:
    import sys

    from rlad.workflows.predict import PREDICTIONS, SUMMARY, predict

    result = predict(args.run, args.paths, args.out, threshold=args.threshold,
                     pixel_threshold=args.pixel_threshold, raw=args.raw)
    for failure in result.failed:
        print(f"rlad: skipped {failure['path']}: {failure['error']}", file=sys.stderr)
    if args.json:
        print_json({"out": str(result.out), "thresholds": vars(result.thresholds), "predictions": result.rows,
                    "failed": result.failed})
    else:
        flagged = sum(r["anomalous"] for r in result.rows)
        print(f"{len(result.rows)} image(s) in {result.seconds:.1f} s ({result.images_per_second:.1f} images/s), "
              f"{flagged} anomalous, {len(result.failed)} failed")
        print(f"thresholds: {result.thresholds.describe()}")
        print(f"results: {result.out / PREDICTIONS} and {result.out / SUMMARY}")
    return 1 if result.failed else 0
