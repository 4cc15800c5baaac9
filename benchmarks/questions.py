"""Multiple-choice inspection questions (AnomalyR1's task) and boxes turned into masks, on the shared
data: magnetic tile (../shared/data/magnetic_tile), MPDD metal_plate (../shared/data/mpdd_metal_plate_512)
and the demo textures (brick, grass, gravel; written into the work folder).

Questions (`rlad data questions`): per domain, `--train-per-type N` images of each group of test/
(normal, each defect type) are set aside for training questions; the evaluation questions ask about
the rest. Rows, all on the same evaluation questions:

  random floor               the expected accuracy of a uniformly random letter (exact)
  training-free (PatchCore)  a PatchCore run per category (ImageNet MobileNetV2, 256 px, fitted on
                             train/good only; thresholds fitted on its validation split): detection by the
                             image threshold, localization by map mass per region, defect type by the
                             nearest prototype, the prototypes being the defective images of the training
                             questions (the few labelled images a VLM would train on); it abstains on
                             object classification. (`--labeled L` also gives PatchCore L labelled defects
                             per type; the questions about them are then left out of every row.)
  VLM before / after GRPO    (with --vlm-policy NAME: any registered policy that answers "mcq", e.g. the
                             VLM policy of issue 14 with --vlm-set policy.<key>=<value>) the untrained policy
                             and the policy after --vlm-steps GRPO steps on the training questions
                             (AnomalyR1's recipe: choice + ROAM), scored 1-shot. It shows that the pipeline
                             moves accuracy, not a result.

Boxes to masks (`rlad test-grounding --mask`): the PatchCore map restricted to a box and thresholded at
its validation threshold, against the map's own mask and the filled box, on the domain's real pairs;
boxes from the ground truth (the upper bound) and from the compact grounder (a supervised warm start on
the two other domains' real + synthetic pairs: the unseen-domain setting of benchmarks/grounding.py).

Usage: .venv/bin/python benchmarks/questions.py [--quick] [--work DIR] [--domains ...]
       .venv/bin/python benchmarks/questions.py --from-results benchmarks/results/questions-DATE.jsonl
Raw rows go to benchmarks/results/questions-DATE.jsonl as they are measured, the tables to
docs/benchmarks.md; a measurement that fails is listed as failed with its error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks._common import SHARED_WEIGHTS, Results, append_section, failed_row, failures_text, ok_rows  # noqa: E402
from benchmarks.grounding import DOMAINS, prepare_domains  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402

TYPES = ["Anomaly Detection", "Defect Classification", "Defect Localization", "Object Classification"]
MASK_KINDS = ("box_restricted", "map_only", "box_only")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: demo domain only, 128 px, grounder: 3 epochs on 80 source pairs")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    parser.add_argument("--work", default="/tmp/rlad_questions_bench", help="data, questions, runs (kept, reused)")
    parser.add_argument("--train-per-type", type=int, default=3, help="test/ images per group kept for training questions")
    parser.add_argument("--labeled", type=int, default=0,
                        help="labelled defects per type given to PatchCore (0: prototypes from the training questions only)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--synthetic", type=int, default=150, help="synthetic pairs per domain for the grounder's training")
    parser.add_argument("--warm-epochs", type=int, default=20, help="compact grounder warm-start epochs")
    parser.add_argument("--source-limit", type=int, default=0,
                        help="at most this many source pairs for the grounder, drawn at random (0: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--vlm-policy", default="", help="a registered policy that answers mcq (issue 14: hf)")
    parser.add_argument("--vlm-set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for the VLM's GRPO run (e.g. policy.<model key>=PATH)")
    parser.add_argument("--vlm-steps", type=int, default=30, help="GRPO steps of the 'after' row")
    parser.add_argument("--no-write", action="store_true", help="print the tables, do not touch docs/benchmarks.md")
    parser.add_argument("--from-results", metavar="FILE", help="do not measure: render an earlier run's results again")
    args = parser.parse_args(argv)
    if args.quick:
        args.domains, args.image_size, args.warm_epochs, args.synthetic, args.source_limit = ["demo"], 128, 3, 10, 80
    return args


# ------------------------------------------------------------------------------------------ parts
def pixel_runs(domain: str, dirs: list[str], work: Path, args) -> list[str]:
    """A PatchCore run per category (fitted once, reused on rerun)."""
    from rlad.workflows.detection import build_config, fit

    runs = []
    for data in dirs:
        run = work / "pixel" / domain / f"{Path(data).name}_{args.image_size}px_l{args.labeled}"
        overrides = [f"image_size={args.image_size}", f"protocol.labeled_per_type={args.labeled}",
                     f"model.backbone.weights={SHARED_WEIGHTS if SHARED_WEIGHTS.is_file() else ''}"]
        fit("patchcore", data, run, build_config("patchcore", overrides=overrides))
        runs.append(str(run))
    return runs


def question_files(domain: str, root: Path, work: Path, args) -> dict[str, Path]:
    from rlad.data.questions.builder import build_questions

    files = {}
    for split in ("train", "test"):
        files[split] = work / "questions" / f"{domain}_{split}_{args.train_per_type}.jsonl"
        if not files[split].is_file():
            files[split].parent.mkdir(parents=True, exist_ok=True)
            build_questions(root, files[split], split=split, train_per_type=args.train_per_type)
    return files


def summary_row(domain: str, answerer: str, result: dict, **extra) -> dict:
    return {"kind": "questions", "domain": domain, "answerer": answerer, "accuracy": result["accuracy"],
            "per_type": result["per_type"], "n": result["n"], "parse_failure_rate": result["parse_failure_rate"],
            "abstain_rate": result["abstain_rate"], "anomaly_detection": result["anomaly_detection"], **extra}


def floor_row(domain: str, result: dict) -> dict:
    per_type = {t: {**v, "accuracy": v["random_floor"], "answered": v["n"]} for t, v in result["per_type"].items()}
    return {"kind": "questions", "domain": domain, "answerer": "random floor", "accuracy": result["random_floor"],
            "per_type": per_type, "n": result["n"], "parse_failure_rate": 0.0, "abstain_rate": 0.0}


def vlm_rows(domain: str, files: dict, kept_ids: set, work: Path, args) -> list[dict]:
    """The VLM before and after a short GRPO run, scored 1-shot on the same evaluation questions."""
    from rlad.data.questions.records import load_questions, write_questions
    from rlad.workflows.grounding import build_grpo_config, grpo
    from rlad.workflows.questions import test_questions

    same = work / "questions" / f"{domain}_test_scored.jsonl"
    write_questions([r for r in load_questions(files["test"]) if r.id in kept_ids], same)
    rows = []
    for label, steps in (("VLM before GRPO", 0), (f"VLM after {args.vlm_steps} GRPO steps", args.vlm_steps)):
        cfg = build_grpo_config(overrides=[*args.vlm_set, f"grpo.steps={steps}"], policy_name=args.vlm_policy,
                                task_name="mcq")
        started = time.perf_counter()
        run = grpo(files["train"], work / "vlm" / domain / f"steps{steps}", cfg, policy_name=args.vlm_policy,
                   task_name="mcq")
        train_s = time.perf_counter() - started
        report = test_questions([run.path], same, shots=(1,))
        rows.append(summary_row(domain, label, report["results"]["1-shot"], train_s=round(train_s, 1)))
    return rows


def mask_rows(domain: str, domains: dict, runs: list[str], work: Path, args) -> list[dict]:
    """Boxes to masks on the domain's real pairs: ground-truth boxes and the compact grounder's (trained
    on the pairs of every other domain in `domains`)."""
    from rlad.data.pairs.records import load_pairs
    from rlad.workflows.box_masks import evaluate_box_masks

    real = [r for r in load_pairs(domains[domain]["pairs"]) if r.source == "real"]
    rows = []

    def add(boxes_name, boxes, **extra):
        report = evaluate_box_masks(runs, real, boxes)
        rows.append({"kind": "masks", "domain": domain, "boxes": boxes_name, **report, **extra})

    add("ground truth (upper bound)", [r.box for r in real])
    try:
        started = time.perf_counter()
        boxes = compact_boxes(domain, domains, real, args)
        add("compact grounder (unseen domain)", boxes, train_s=round(time.perf_counter() - started, 1))
    except Exception as exc:  # a failed grounder must not sink the ground-truth row, nor vanish
        rows.append(failed_row({"kind": "masks", "domain": domain, "boxes": "compact grounder (unseen domain)"},
                               f"{type(exc).__name__}: {exc}"))
    return rows


def compact_boxes(domain: str, domains: dict, records: list, args) -> list:
    from rlad.data.pairs.records import load_pairs
    from rlad.policies.compact.config import CompactConfig
    from rlad.policies.compact.policy import CompactPolicy
    from rlad.policies.compact.warm_start import WarmStartConfig, fit_supervised
    from rlad.tasks.grounding import GroundingTask
    from rlad.workflows.grounding import predict_boxes

    source = [r for name, d in domains.items() if name != domain for r in load_pairs(d["pairs"])]
    if not source:
        raise RuntimeError("the compact grounder needs pairs of another domain to train on")
    if args.source_limit and len(source) > args.source_limit:
        import numpy as np

        pick = np.random.default_rng(0).choice(len(source), size=args.source_limit, replace=False)
        source = [source[i] for i in sorted(pick)]
    weights = str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_file() else ""
    policy = CompactPolicy(CompactConfig(weights=weights, seed=0))
    fit_supervised(policy, GroundingTask(), source, WarmStartConfig(epochs=args.warm_epochs), seed=0)
    boxes, _ = predict_boxes(policy, records)
    return boxes


def measure(args, results: Results) -> None:
    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from rlad.data.questions.records import load_questions
    from rlad.workflows.questions import test_questions

    work = Path(args.work)
    everything = prepare_domains(work, args.synthetic)
    domains = {d: v for d, v in everything.items() if d in args.domains}
    for domain, info in domains.items():
        root = Path(info["dirs"][0]).parent if len(info["dirs"]) > 1 else Path(info["dirs"][0])
        keys = {"domain": domain}
        try:
            files = question_files(domain, root, work, args)
            started = time.perf_counter()
            runs = pixel_runs(domain, info["dirs"], work, args)
            fit_s = time.perf_counter() - started
            started = time.perf_counter()
            report = test_questions(runs, files["test"], prototypes=files["train"])
            answer_s = time.perf_counter() - started
        except Exception as exc:
            traceback.print_exc()
            results.add(failed_row({"kind": "questions", **keys, "answerer": "training-free (PatchCore)"},
                                   f"{type(exc).__name__}: {exc}"))
            continue
        result = report["results"]["map"]
        results.add(floor_row(domain, result))
        results.add(summary_row(domain, "training-free (PatchCore)", result, fit_s=round(fit_s, 1),
                                answer_s=round(answer_s, 1), n_excluded=report["n_excluded_protocol"],
                                n_train_questions=len(load_questions(files["train"]))))
        if args.vlm_policy:
            try:
                excluded = report["n_excluded_protocol"]
                kept = {r.id for r in load_questions(files["test"])}
                if excluded:  # score the VLM on the very questions the answerer was scored on
                    from rlad.workflows.pixel_maps import PixelRun, excluded_by_protocol

                    left_out = excluded_by_protocol([r.image for r in load_questions(files["test"])],
                                                    [PixelRun.open(r) for r in runs])
                    kept = {r.id for r in load_questions(files["test"]) if r.image not in left_out}
                for row in vlm_rows(domain, files, kept, work, args):
                    results.add(row)
            except Exception as exc:
                traceback.print_exc()
                results.add(failed_row({"kind": "questions", **keys, "answerer": f"VLM ({args.vlm_policy})"},
                                       f"{type(exc).__name__}: {exc}"))
        try:
            for row in mask_rows(domain, everything, runs, work, args):
                results.add(row)
        except Exception as exc:
            traceback.print_exc()
            results.add(failed_row({"kind": "masks", **keys, "boxes": "ground truth (upper bound)"},
                                   f"{type(exc).__name__}: {exc}"))


# ------------------------------------------------------------------------------------------ report
def _fmt(value, answered=None, n=None) -> str:
    if value is None:
        return ""
    text = f"{value:.3f}"
    if answered is not None and n and answered < n:
        text += " (abstains)" if answered == 0 else f" ({answered}/{n} answered)"
    return text


def question_table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        line = {"domain": row["domain"], "answerer": row["answerer"], "questions": row["n"]}
        for kind in TYPES:
            entry = row["per_type"].get(kind)
            line[kind] = "" if entry is None else _fmt(entry["accuracy"], entry["answered"], entry["n"])
        line["MMAD average"] = _fmt(row["accuracy"])
        line["parse failures"] = f"{row['parse_failure_rate']:.1%}"
        lines.append(line)
    return markdown_table(lines)


def mask_table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        line = {"domain": row["domain"], "boxes": row["boxes"], "pairs scored": row["n_scored"]}
        for kind in MASK_KINDS:
            line[f"{kind} F1"] = f"{row[kind]['pixel_f1']:.3f}"
            line[f"{kind} IoU"] = f"{row[kind]['pixel_iou']:.3f}"
        lines.append(line)
    return markdown_table(lines)


def render(results: Results, args) -> str:
    rows = ok_rows(results.rows)
    questions = [r for r in rows if r.get("kind") == "questions"]
    masks = [r for r in rows if r.get("kind") == "masks"]
    wall = next((r for r in rows if r.get("kind") == "wall"), None)
    details = [r for r in questions if r["answerer"].startswith("training-free")]
    body = (
        f"Questions from `rlad data questions DIR --split test --train-per-type {args.train_per_type}` (the "
        f"training split: `--split train`, {args.train_per_type} images of each group of test/); PatchCore "
        f"{args.image_size} px with the ImageNet MobileNetV2 trunk, fitted on train/good"
        + (f" with {args.labeled} labelled defects per type (the questions about them are left out of every row)"
           if args.labeled else "")
        + "; defect-type prototypes: the defective images of the training questions. Accuracy per type (MMAD scoring: "
        "anomaly detection balanced over normal and defective images; the average is over the types of a "
        "domain). An abstention counts as wrong; \"(k/n answered)\" marks types the answerer only partly "
        f"answers.\n\n{question_table(questions)}\n"
    )
    if details:
        body += "Anomaly detection by the training-free answerer, per kind of image: " + "; ".join(
            f"{r['domain']}: normal {_fmt(r['anomaly_detection']['accuracy_normal'])}, defective "
            f"{_fmt(r['anomaly_detection']['accuracy_defective'])} (fit {r.get('fit_s', 0):.0f} s, answering "
            f"{r.get('answer_s', 0):.0f} s, {r.get('n_excluded', 0)} questions left out)" for r in details) + ".\n\n"
    if not any(r["answerer"].startswith("VLM") for r in questions):
        body += ("VLM rows: not measured here; they need the VLM policy of issue 14 "
                 "(`--vlm-policy hf --vlm-set policy.<model key>=PATH`).\n\n")
    if masks:
        body += (
            "Boxes to masks (`rlad test-grounding --mask`): PatchCore's map inside the box, thresholded at its "
            "validation threshold (box_restricted), the same map without the box (map_only) and the filled box "
            "(box_only), pixel F1 and IoU pooled over every pixel of the domain's real pairs (normal queries "
            f"included), at {args.image_size} px. Compact grounder: warm start of {args.warm_epochs} epochs on the "
            f"two other domains' real + {args.synthetic} synthetic pairs each.\n\n{mask_table(masks)}\n"
        )
    if wall:
        body += f"Total {wall['seconds']:.0f} s; load average {wall['load_before']:.1f} before, {wall['load_after']:.1f} after.\n"
    return body + failures_text(results.rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RLAD_PROGRESS", "0")
    if args.from_results:
        results = Results("questions", path=args.from_results)
        args = parse_args([*results.meta["argv"][1:], *(["--no-write"] if args.no_write else [])])
        command = results.meta["command"] + "  (rendered again with --from-results)"
    else:
        if not SHARED_WEIGHTS.is_file():
            print(f"warning: {SHARED_WEIGHTS} not found: PatchCore and the grounder use a random trunk", file=sys.stderr)
        results = Results("questions")
        results.note(argv=sys.argv)
        load_before, started = os.getloadavg()[0], time.perf_counter()
        measure(args, results)
        results.add({"kind": "wall", "seconds": time.perf_counter() - started, "load_before": load_before,
                     "load_after": os.getloadavg()[0]})
        command = None
    body = render(results, args)
    print(body)
    if not args.no_write:
        append_section("Multiple-choice questions (training-free answerer, random floor) and boxes to masks", body,
                       results=results, command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
