"""`rlad data check | demo | pairs | questions`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlad.cli.common import add_json_arg, print_json, print_table

# Each handler imports its library module when it runs, so `rlad --help` stays fast.


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="dataset tools: check, demo, pairs, questions")
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

    questions = verbs.add_parser(
        "questions", help="build multiple-choice inspection questions (AnomalyR1 / MMAD style) as JSONL",
        description="Questions about the test/ images of every category under DIR, of the types its labels "
        "answer truthfully; one template image from train/good each (docs/questions.md).")
    questions.add_argument("dir", metavar="DIR")
    questions.add_argument("--out", metavar="Q.jsonl", required=True)
    questions.add_argument(
        "--split", choices=("test", "train", "dev"), default="test",
        help="which images of test/ to ask about: test (default: what is left after dev and train), train "
        "(--train-per-type images of each group, for GRPO), dev (--dev-fraction of each group, for choosing "
        "settings); the three are disjoint for the same --train-per-type, --dev-fraction and --protocol-seed")
    questions.add_argument("--train-per-type", type=int, default=0, metavar="N",
                           help="images of each group (normal, each defect type) set aside for training questions")
    questions.add_argument("--dev-fraction", type=float, default=0.0, metavar="F",
                           help="share of each group set aside as a development split (drawn as `rlad fit` draws it)")
    questions.add_argument("--protocol-seed", type=int, default=0, help="seed of the split of test/ (fixed per dataset)")
    questions.add_argument("--seed", type=int, default=0, help="seed of the option order, distractors and templates")
    questions.add_argument("--reference", choices=["random", "similar"], default="random",
                           help="template image: a random train/good image (MMAD's default) or the most similar one")
    questions.add_argument("--types", nargs="+", metavar="TYPE",
                           help="question types to build (default: all four); quote names with spaces")
    questions.add_argument("--unbalanced", action="store_true",
                           help="ask every image the anomaly-detection question (default: as many normal as defective)")
    questions.add_argument("--max-options", type=int, default=4, metavar="K", help="options per question at most")
    add_json_arg(questions)
    questions.set_defaults(func=run_questions)


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


def run_questions(args) -> int:
    """`rlad data questions DIR --out Q.jsonl [--split] [--train-per-type] [--dev-fraction] [--seed] ...`."""
    from dataclasses import asdict

    from rlad.data.questions.builder import build_questions

    _, summary = build_questions(
        args.dir, args.out, split=args.split, train_per_type=args.train_per_type, dev_fraction=args.dev_fraction,
        protocol_seed=args.protocol_seed, seed=args.seed, reference=args.reference, balance=not args.unbalanced,
        types=args.types, max_options=args.max_options)
    if getattr(args, "json", False):
        print_json(asdict(summary))
        return 0
    print_table(summary.rows())
    skipped = (f"; {summary.skipped_localization} defect(s) touch every region and got no localization question"
               if summary.skipped_localization else "")
    print(f"wrote {summary.n_questions} questions about {summary.images} {summary.split}-split images to "
          f"{summary.out}{skipped}")
    return 0
