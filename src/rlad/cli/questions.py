"""`rlad test-questions`: multiple-choice inspection questions (AnomalyR1's task, MMAD's protocol)."""

from __future__ import annotations

import argparse

from rlad.cli.common import add_json_arg, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    test = sub.add_parser(
        "test-questions", help="accuracy of a policy, or of fitted pixel models, on multiple-choice questions",
        description="Answers a question file (rlad JSONL from `rlad data questions`, or MMAD's mmad.json) with "
        "one policy run (rlad grpo --task mcq) or with fitted pixel runs, one per category (rlad fit METHOD: the "
        "training-free answerer), and reports MMAD-averaged accuracy, per type and category, balanced anomaly "
        "detection, the parse-failure and abstention rates and the random-choice floor (docs/questions.md).")
    test.add_argument("runs", metavar="RUN", nargs="+", help="one policy run, or one pixel run per category")
    test.add_argument("--questions", metavar="Q.jsonl", required=True, help="rlad question file or MMAD's mmad.json")
    test.add_argument("--shots", type=int, nargs="+", choices=(0, 1), default=[1],
                      help="policy runs: with the template image (1, MMAD's protocol) and/or without (0)")
    test.add_argument("--templates", choices=("random", "similar"), default="random",
                      help="which of MMAD's template lists to use (mmad.json only)")
    test.add_argument("--answers", metavar="OUT.jsonl", help="also write every answer, one JSON line each")
    test.add_argument("--prototypes", metavar="Q.jsonl",
                      help="pixel runs: a question file (e.g. the training split) whose defective images are the "
                      "labelled examples of each defect type (added to the runs' own labelled images)")
    test.add_argument("--allow-overlap", action="store_true",
                      help="score a policy on questions about images it was trained on (refused by default)")
    add_json_arg(test)
    test.set_defaults(func=run_test_questions)


def run_test_questions(args) -> int:
    from rlad.workflows.questions import test_questions

    report = test_questions(args.runs, args.questions, shots=args.shots, templates=args.templates,
                            allow_overlap=args.allow_overlap, answers_out=args.answers, prototypes=args.prototypes)
    if args.json:
        print_json(report)
        return 0
    print(f"{report['answerer']} on {report['questions']}")
    for setting, result in report["results"].items():
        rows = [{"type": kind, "n": v["n"], "answered": v["answered"], "accuracy": v["accuracy"],
                 "random floor": v["random_floor"]} for kind, v in result["per_type"].items()]
        rows.append({"type": "MMAD average", "n": result["n"], "answered": result["n"] - round(result["abstain_rate"] * result["n"]),
                     "accuracy": result["accuracy"], "random floor": result["random_floor"]})
        print(f"\n{setting}: parse failures {result['parse_failure_rate']:.1%}, abstained {result['abstain_rate']:.1%}")
        print_table(rows, ["type", "n", "answered", "accuracy", "random floor"])
    if report.get("n_excluded_protocol"):
        print(f"left out {report['n_excluded_protocol']} question(s) about the runs' labelled/development images")
    return 0
