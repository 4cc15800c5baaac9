"""`rlad fit`, `rlad test`, `rlad predict`: pixel-level anomaly models (NBS and baselines), plus the
grounding policies' warm starts (`rlad fit compact`, `rlad fit hf`)."""

from __future__ import annotations

import argparse
import json

from rlad.cli.common import add_config_args, add_json_arg, print_json, print_table
from rlad.errors import ConfigError

METRIC_ORDER = ["image_auroc", "pixel_auroc", "aupro", "pixel_f1_max", "image_f1_max", "pixel_ap",
                "pixel_f1_at_val_threshold", "image_f1_at_val_threshold", "ms_per_image", "n_test"]


def register(sub: argparse._SubParsersAction) -> None:
    fit = sub.add_parser("fit", help="train a model: nbs | patchcore | padim | ae | compact | hf")
    fit.add_argument("method", help="nbs | patchcore | padim | ae | compact (grounder) | hf (vision-language "
                     "grounder's warm start)")
    fit.add_argument("--data", metavar="DIR", help="dataset folder in MVTec AD layout")
    fit.add_argument("--pairs", metavar="PAIRS.jsonl", help="pair file (compact and hf grounders)")
    fit.add_argument("--model", metavar="PATH", help="hf: the Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint to start from")
    fit.add_argument("--out", metavar="RUN", required=True, help="run directory; an existing one resumes")
    fit.add_argument("--seed", type=int, default=None, help="random seed (default: the config's)")
    fit.add_argument(
        "--labeled-per-type",
        type=int,
        default=None,
        metavar="N",
        help="defective images per type taken from test/ as labelled training data and removed from "
        "evaluation (nbs default 5; unsupervised methods default 0)",
    )
    add_config_args(fit)
    add_json_arg(fit)
    fit.set_defaults(func=run_fit)

    test = sub.add_parser("test", help="evaluate a run on a dataset's test split")
    test.add_argument("run", metavar="RUN")
    test.add_argument("--data", metavar="DIR", required=True)
    test.add_argument(
        "--split", choices=("test", "dev"), default="test",
        help="test (default): the test split minus labelled and development images; dev: only the development "
        "split of a run fitted with protocol.dev_fraction > 0 (for choosing settings without touching test)",
    )
    add_json_arg(test)
    test.set_defaults(func=run_test)

    predict = sub.add_parser("predict", help="anomaly maps, masks, boxes and overlays for images")
    predict.add_argument("run", metavar="RUN")
    predict.add_argument("paths", metavar="PATH", nargs="+", help="images or folders of images")
    predict.add_argument("--out", metavar="DIR", required=True)
    add_json_arg(predict)
    predict.set_defaults(func=run_predict)


def _fit_summary(run) -> dict:
    return {"run": str(run.path), **json.loads(run.metrics_path.read_text()).get("fit", {})}


def run_fit(args) -> int:
    if args.method in GROUNDERS:
        return _fit_grounder(args)
    from rlad.workflows import detection

    if args.model:
        raise ConfigError(f"--model is for `rlad fit hf`, not {args.method}")
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
    if not args.pairs:
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
        run = grounding.fit_hf(args.pairs, args.out, grounding.build_hf_fit_config(args.config, overrides, args.seed))
    if args.json:
        print_json(_fit_summary(run))
    else:
        print(f"trained {method} grounder (warm start) -> {run.path}")
    return 0


def run_test(args) -> int:
    from rlad.workflows import detection

    metrics = detection.test(args.run, args.data, split=args.split)
    if args.json:
        print_json(metrics)
    else:
        print_table([{"metric": k, "value": metrics[k]} for k in METRIC_ORDER if k in metrics])
    return 0


def run_predict(args) -> int:
    from rlad.workflows import detection

    rows = detection.predict(args.run, args.paths, args.out)
    if args.json:
        print_json({"out": str(args.out), "predictions": rows})
    else:
        flagged = sum(r["anomalous"] for r in rows)
        print(f"{len(rows)} image(s), {flagged} flagged anomalous; results in {args.out}/predictions.jsonl")
    return 0
