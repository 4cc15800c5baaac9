"""`rlad grpo`, `rlad ground`, `rlad test-grounding`: difference grounding policies."""

from __future__ import annotations

import argparse

from rlad.cli.common import add_config_args, add_json_arg, lazy


def register(sub: argparse._SubParsersAction) -> None:
    grpo = sub.add_parser("grpo", help="train a grounding policy with GRPO")
    grpo.add_argument("--policy", choices=["compact", "hf"], default="compact")
    grpo.add_argument("--pairs", metavar="PAIRS.jsonl", required=True)
    grpo.add_argument("--out", metavar="RUN", required=True)
    grpo.add_argument("--init", metavar="RUN", help="start from this run's policy (e.g. a warm start)")
    grpo.add_argument("--model", metavar="PATH", help="local VLM weights (--policy hf)")
    grpo.add_argument("--seed", type=int, default=None)
    add_config_args(grpo)
    add_json_arg(grpo)
    grpo.set_defaults(func=lazy("rlad.policies.api", "cli_grpo"))

    ground = sub.add_parser("ground", help="box the difference between a reference and a query image")
    ground.add_argument("run", metavar="RUN")
    ground.add_argument("--reference", metavar="IMG", required=True)
    ground.add_argument("--query", metavar="IMG", required=True)
    add_json_arg(ground)
    ground.set_defaults(func=lazy("rlad.policies.api", "cli_ground"))

    test = sub.add_parser("test-grounding", help="mIoU, Acc@0.3 and F1 of a policy on a pair file")
    test.add_argument("run", metavar="RUN")
    test.add_argument("--pairs", metavar="PAIRS.jsonl", required=True)
    add_json_arg(test)
    test.set_defaults(func=lazy("rlad.policies.api", "cli_test_grounding"))
