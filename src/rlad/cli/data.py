"""`rlad data check | demo | pairs`."""

from __future__ import annotations

import argparse

from rlad.cli.common import add_json_arg


def lazy(module, name):  # placeholder until the data-layer split lands
    def run(args):
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return run


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="dataset tools: check, demo, pairs")
    data.set_defaults(_group_parser=data)
    verbs = data.add_subparsers(dest="data_verb", metavar="VERB")

    check = verbs.add_parser("check", help="validate a dataset folder (MVTec AD layout) and print counts")
    check.add_argument("dir", metavar="DIR")
    add_json_arg(check)
    check.set_defaults(func=lazy("rlad.data.folder", "cli_check"))

    demo = verbs.add_parser("demo", help="write the embedded default dataset (textures + synthetic defects)")
    demo.add_argument("out", metavar="OUT")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=lazy("rlad.data.synth", "cli_demo"))

    pairs = verbs.add_parser("pairs", help="build reference/query pairs as JSONL")
    pairs.add_argument("dir", metavar="DIR")
    pairs.add_argument("--out", metavar="PAIRS.jsonl", required=True)
    pairs.add_argument("--synthetic", type=int, default=0, metavar="N", help="add N pasted-defect pairs")
    pairs.add_argument("--reference", choices=["random", "similar"], default="similar")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument(
        "--adapt",
        nargs=2,
        type=int,
        metavar=("PERLIN", "NORMAL"),
        help="instead of real pairs: adaptation pairs for a new product from train/good only (no test/ "
        "needed): PERLIN synthetic Perlin-defect pairs and NORMAL normal/normal pairs (docs/grounding.md)",
    )
    add_json_arg(pairs)
    pairs.set_defaults(func=lazy("rlad.data.pairs", "cli_pairs"))
