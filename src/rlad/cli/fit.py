"""`rlad fit`, `rlad test`, `rlad predict`: pixel-level anomaly models (NBS and baselines)."""

from __future__ import annotations

import argparse

from rlad.cli.common import add_config_args, add_json_arg, lazy


def register(sub: argparse._SubParsersAction) -> None:
    fit = sub.add_parser("fit", help="train a model: nbs | patchcore | padim | ae | compact")
    fit.add_argument("method", help="nbs | patchcore | padim | ae | compact (grounder)")
    fit.add_argument("--data", metavar="DIR", help="dataset folder in MVTec AD layout")
    fit.add_argument("--pairs", metavar="PAIRS.jsonl", help="pair file (compact grounder only)")
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
    fit.set_defaults(func=lazy("rlad.models.api", "cli_fit"))

    test = sub.add_parser("test", help="evaluate a run on a dataset's test split")
    test.add_argument("run", metavar="RUN")
    test.add_argument("--data", metavar="DIR", required=True)
    test.add_argument(
        "--split", choices=("test", "dev"), default="test",
        help="test (default): the test split minus labelled and development images; dev: only the development "
        "split of a run fitted with protocol.dev_fraction > 0 (for choosing settings without touching test)",
    )
    add_json_arg(test)
    test.set_defaults(func=lazy("rlad.models.api", "cli_test"))

    predict = sub.add_parser("predict", help="anomaly maps, masks, boxes and overlays for images")
    predict.add_argument("run", metavar="RUN")
    predict.add_argument("paths", metavar="PATH", nargs="+", help="images or folders of images")
    predict.add_argument("--out", metavar="DIR", required=True)
    add_json_arg(predict)
    predict.set_defaults(func=lazy("rlad.models.api", "cli_predict"))
