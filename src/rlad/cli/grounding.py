"""`rlad grpo`, `rlad ground`, `rlad test-grounding`: difference grounding policies."""

from __future__ import annotations

import argparse
import json

from rlad.cli.common import add_config_args, add_json_arg, print_json, print_table
from rlad.errors import ConfigError
from rlad.policies.registry import POLICY_NAMES
from rlad.tasks.registry import TASK_NAMES

ENGINES = ("rlad", "trl")

REPORT_ORDER = ["miou", "acc_at_0_3", "f1", "precision", "recall", "miou_defective", "miou_normal", "mean_dclr",
                "whole_image_rate", "far_box_rate", "mean_area_fraction", "n", "n_defective", "n_normal",
                "n_invalid", "ms_per_pair"]


def register(sub: argparse._SubParsersAction) -> None:
    grpo = sub.add_parser("grpo", help="train a policy with GRPO (grounding, or multiple-choice questions)")
    grpo.add_argument("--policy", choices=POLICY_NAMES, default="compact",
                      help="compact (CPU grounder) or hf (a Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint; the vlm extra)")
    grpo.add_argument("--model", metavar="PATH", help="--policy hf: the checkpoint folder or hub id to start from")
    grpo.add_argument("--engine", choices=ENGINES, default="rlad",
                      help="rlad (default): rlad's own loop on one device; trl: TRL's GRPOTrainer (--policy hf; "
                      "many GPUs under accelerate launch)")
    grpo.add_argument("--task", choices=TASK_NAMES, default="grounding",
                      help="grounding (pair file, --pairs) or mcq (question file, --questions; needs a VLM policy)")
    records = grpo.add_mutually_exclusive_group(required=True)
    records.add_argument("--pairs", metavar="PAIRS.jsonl", help="pair file (--task grounding)")
    records.add_argument("--questions", metavar="Q.jsonl", help="question file or mmad.json (--task mcq)")
    grpo.add_argument("--out", metavar="RUN", required=True)
    grpo.add_argument("--init", metavar="RUN", help="start from this run's policy (e.g. a warm start)")
    grpo.add_argument("--seed", type=int, default=None)
    add_config_args(grpo)
    add_json_arg(grpo)
    grpo.set_defaults(func=run_grpo)

    ground = sub.add_parser("ground", help="box the difference between a reference and a query image")
    ground.add_argument("run", metavar="RUN")
    ground.add_argument("--reference", metavar="IMG", required=True)
    ground.add_argument("--query", metavar="IMG", required=True)
    ground.add_argument("--mask", metavar="PIXEL_RUN",
                        help="turn the box into a mask: this fitted pixel run's map inside the box, thresholded")
    ground.add_argument("--mask-out", metavar="MASK.png", help="where --mask writes the mask (query size)")
    add_json_arg(ground)
    ground.set_defaults(func=run_ground)

    test = sub.add_parser("test-grounding", help="mIoU, Acc@0.3 and F1 of a policy on a pair file")
    test.add_argument("run", metavar="RUN")
    test.add_argument("--pairs", metavar="PAIRS.jsonl", required=True)
    test.add_argument("--mask", metavar="PIXEL_RUN", nargs="+",
                      help="also score the boxes turned into masks with these fitted pixel runs (one per category): "
                      "pixel F1 / IoU against the ground truth, next to the map's own mask")
    add_json_arg(test)
    test.set_defaults(func=run_test_grounding)


def run_grpo(args) -> int:
    from rlad.workflows import grounding

    records = _task_records(args)
    overrides = list(args.overrides)
    if args.init and any(o.strip().startswith("policy.") for o in overrides):
        raise ConfigError(f"--init {args.init}: the policy's settings come from that run; set policy.* when "
                          f"training it (rlad fit), not here")
    if args.model:
        if args.policy != "hf":
            raise ConfigError("--model is for --policy hf (a vision-language checkpoint)")
        if args.init:
            raise ConfigError("give --model (a fresh policy) or --init (a warm start, which names its model), not both")
        overrides.append(f"policy.model={args.model}")
    elif args.policy == "hf" and not args.init:
        raise ConfigError("--policy hf needs --model PATH (a Qwen-VL checkpoint) or --init RUN (an `rlad fit hf` run)")
    cfg = grounding.build_grpo_config(args.config, overrides, args.seed, policy_name=args.policy, task_name=args.task,
                                      engine=args.engine, init=args.init)
    run = grounding.grpo(records, args.out, cfg, init=args.init, policy_name=args.policy, task_name=args.task,
                         engine=args.engine)
    if run is None:  # a non-main process of a multi-process TRL run
        return 0
    if args.json:
        print_json({"run": str(run.path), **json.loads(run.metrics_path.read_text()).get("grpo", {})})
    else:
        print(f"GRPO-trained {args.policy} policy -> {run.path}")
    return 0


def _task_records(args) -> str:
    """The record file of the chosen task: --pairs for grounding, --questions for mcq."""
    from rlad.errors import ConfigError

    wanted = "--questions" if args.task == "mcq" else "--pairs"
    given = args.questions if args.task == "mcq" else args.pairs
    if not given:
        raise ConfigError(f"--task {args.task} reads its records from {wanted}")
    return given


def run_ground(args) -> int:
    from rlad.workflows import grounding

    result = grounding.ground(args.run, args.reference, args.query, mask_run=args.mask, mask_out=args.mask_out)
    if args.json:
        print_json(result)
    elif not result["anomalous"]:
        print("no difference found (zero box)" if result["box"] is not None else "no valid box in the answer")
    else:
        x1, y1, x2, y2 = result["box"]
        print(f"box (pixels of the query): ({x1:g},{y1:g}),({x2:g},{y2:g})")
    if not args.json and "mask" in result:
        print(f"mask: {result['mask']} ({result['mask_pixels']} pixels; the map alone: {result['map_pixels']})")
    return 0


def run_test_grounding(args) -> int:
    from rlad.workflows import grounding

    metrics = grounding.evaluate(args.run, args.pairs, mask_runs=args.mask or ())
    if args.json:
        print_json(metrics)
    else:
        print_table([{"metric": k, "value": metrics[k]} for k in REPORT_ORDER if metrics.get(k) is not None])
        if "box_masks" in metrics:
            masks = metrics["box_masks"]
            print(f"\nboxes as masks ({masks['n_scored']} real pairs with ground-truth masks):")
            print_table([{"mask": name, **masks[name]} for name in ("box_restricted", "map_only", "box_only")],
                        ["mask", "pixel_f1", "pixel_iou", "precision", "recall"])
    return 0
