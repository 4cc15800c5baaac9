"""`rlad data check | demo | pairs`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlad.cli.common import add_json_arg, print_json, print_table

# Each handler imports its library module when it runs, so `rlad --help` stays fast.


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="dataset tools: check, demo, pairs")
    data.set_defaults(_group_parser=data)
    verbs = data.add_subparsers(dest="data_verb", metavar="VERB")

    check = verbs.add_parser("check", help="validate a dataset folder (MVTec AD layout) and print counts")
    check.add_argument("dir", metavar="DIR")
    add_json_arg(check)
    check.set_defaults(func=run_check)

    demo = verbs.add_parser("demo", help="write the embedded default dataset (textures + synthetic defects)")
    demo.add_argument("out", metavar="OUT")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=run_demo)

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
    pairs.set_defaults(func=run_pairs)


def run_check(args) -> int:
    """`rlad data check DIR [--json]`."""
    from rlad.data.folder import check_report

    report = check_report(Path(args.dir))
    if getattr(args, "json", False):
        print_json(report.to_json())
        return 0
    for index, folder in enumerate(report.folders):
        if index:
            print()
        print(f"{folder.category}  ({folder.root})")
        print_table(folder.counts(with_total=True), ["split", "type", "images", "masks"])
        for note in folder.notes:
            print(f"note: {note}")
    sys.stdout.flush()
    return 0


def run_demo(args) -> int:
    """`rlad data demo OUT [--seed N]`."""
    from rlad.data.synth.demo import write_demo_dataset

    summary = write_demo_dataset(Path(args.out), seed=int(getattr(args, "seed", 0) or 0))
    per_category = next(iter(summary["categories"].values()))
    print(
        f"wrote demo dataset to {summary['out']} (seed {summary['seed']}): {len(summary['categories'])} "
        f"categories ({', '.join(summary['categories'])}), {summary['total_images']} images of "
        f"{summary['image_size']}x{summary['image_size']} in {summary['seconds']:.1f} s"
    )
    print("per category: " + ", ".join(f"{split} {n}" for split, n in per_category.items()))
    return 0


def run_pairs(args) -> int:
    """`rlad data pairs DIR --out PAIRS.jsonl [--synthetic N | --adapt PERLIN NORMAL] [--reference] [--seed]`."""
    from dataclasses import asdict

    from rlad.data.pairs.builders import build_adaptation_pairs, build_pairs
    from rlad.errors import DataError

    if getattr(args, "adapt", None):
        if args.synthetic:
            raise DataError("--adapt builds its own synthetic pairs; drop --synthetic")
        perlin, normal = args.adapt
        summary = build_adaptation_pairs(args.dir, args.out, perlin=perlin, normal=normal, seed=args.seed,
                                         reference=args.reference)
        if getattr(args, "json", False):
            print_json(summary)
        else:
            print(f"wrote {summary['n_pairs']} adaptation pairs ({summary['perlin']} Perlin, "
                  f"{summary['normal']} normal) to {summary['out']}")
        return 0
    _, summary = build_pairs(args.dir, args.out, synthetic=args.synthetic, reference=args.reference, seed=args.seed)
    if getattr(args, "json", False):
        print_json(asdict(summary))
        return 0
    print_table(summary.rows(), ["category", "normal", "defective", "synthetic"])
    where = f"; synthetic images in {summary.images_dir}" if summary.images_dir else ""
    print(f"wrote {summary.n_pairs} pairs to {summary.out}{where}")
    return 0
