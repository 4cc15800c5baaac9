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
  VLM before / after GRPO    (with --vlm-policy hf) a tiny random-weight Qwen2-VL built in code
                             (rlad.policies.hf_vlm.tiny; --vlm-model PATH for another checkpoint), first
                             taught the answer format by a warm start (`rlad fit hf --questions`) on the
                             training questions with *random* answer letters, so it writes
                             <think>..</think><answer>X</answer> but has learnt nothing about the answers
                             (the "before" row); then --vlm-steps GRPO steps on the real training questions
                             (AnomalyR1's recipe: choice + ROAM; the "after" row). Both scored 1-shot on the
                             same evaluation questions as the other rows. It shows that the pipeline moves
                             accuracy, not a result.

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
import math
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks._common import SHARED_WEIGHTS, Results, failed_row, failures_text, finish, hold_work, ok_rows  # noqa: E402
from benchmarks.grounding import DOMAINS, prepare_domains  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402

TYPES = ["Anomaly Detection", "Defect Classification", "Defect Localization", "Object Classification"]
MASK_KINDS = ("box_restricted", "map_only", "box_only")
PARTS = ("questions", "vlm", "masks")
VLM_POLICY = ["policy.lora=false", "policy.max_new_tokens=24"]  # the format answer is 16 tokens
VLM_WARM_BATCH = 4
VLM_WARM = [f"train.batch_size={VLM_WARM_BATCH}", "train.lr=3e-3", "train.checkpoint_every=1000"]
VLM_GRPO = ["grpo.group_size=4", "grpo.prompts_per_step=4", "grpo.lr=5e-4", "grpo.checkpoint_every=1000"]


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
    parser.add_argument("--vlm-policy", default="", choices=["", "hf"], help="hf: the VLM rows")
    parser.add_argument("--vlm-model", default="", help="the VLM checkpoint (default: a tiny Qwen2-VL built in --work)")
    parser.add_argument("--vlm-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config overrides of the VLM's warm start and GRPO run (policy.*, grpo.*, train.*)")
    parser.add_argument("--vlm-steps", type=int, default=20, help="GRPO steps of the 'after' row")
    parser.add_argument("--vlm-warm-steps", type=int, default=100,
                        help="optimizer steps of the format-only warm start (rounded up to whole epochs)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS),
                        help="what to measure (vlm needs --vlm-policy; the pixel runs are fitted for every part)")
    parser.add_argument("--no-write", action="store_true", help="print the tables, do not touch docs/benchmarks.md")
    parser.add_argument("--from-results", metavar="FILE", help="do not measure: render an earlier run's results again")
    args = parser.parse_args(argv)
    if args.quick:
        args.domains, args.image_size, args.warm_epochs, args.synthetic, args.source_limit = ["demo"], 128, 3, 10, 80
    return args


# ------------------------------------------------------------------------------------------ parts
def pixel_runs(domain: str, dirs: list[str], work: Path, args, wait: bool = False) -> list[str]:
    """A PatchCore run per category (fitted once, reused on rerun). With `wait`, another process of this
    script fits them (`--parts vlm` beside `--parts questions masks`): wait up to an hour for each."""
    from rlad.workflows.detection import build_config, fit

    runs = []
    for data in dirs:
        run = work / "pixel" / domain / f"{Path(data).name}_{args.image_size}px_l{args.labeled}"
        deadline = time.time() + 3600
        while wait and not (run / "model.pt").is_file():
            if time.time() > deadline:
                raise TimeoutError(f"{run}: no pixel run after an hour (run --parts questions first)")
            time.sleep(30)
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


def tiny_vlm(work: Path) -> str:
    """A tiny random-weight Qwen2-VL (its tokenizer trained on the grounding and question prompts)."""
    from rlad.policies.hf_vlm.tiny import write_tiny_vlm
    from rlad.tasks import grounding, mcq

    return str(write_tiny_vlm("qwen2_vl", work / "vlm" / "tiny_qwen2_vl",
                              corpus=[*grounding.prompt_corpus(), *mcq.prompt_corpus()]))


def random_letters(train: Path, out: Path) -> Path:
    """The training questions with a uniformly random answer letter each: a warm start on them teaches
    the answer format and nothing about the answers."""
    import dataclasses

    import numpy as np

    from rlad.data.questions.records import load_questions, write_questions

    rng = np.random.default_rng(0)
    records = [dataclasses.replace(r, answer=str(rng.choice(r.letters))) for r in load_questions(train)]
    write_questions(records, out)
    return out


def vlm_rows(domain: str, files: dict, kept_ids, work: Path, args) -> list[dict]:
    """The VLM after a format-only warm start, and after --vlm-steps GRPO steps from it, scored 1-shot on
    the same evaluation questions as the other rows (`kept_ids()`, called once both are trained)."""
    from rlad.data.questions.records import load_questions, write_questions
    from rlad.workflows.grounding import build_grpo_config, build_hf_fit_config, fit_hf, grpo
    from rlad.workflows.questions import test_questions

    folder = work / "vlm" / domain
    model = args.vlm_model or tiny_vlm(work)
    policy = [f"policy.model={model}", *VLM_POLICY, f"threads={args.threads}"]
    extra = [o for o in args.vlm_set if not o.startswith("grpo.")]
    started = time.perf_counter()
    warm_questions = random_letters(files["train"], folder / "train_random_letters.jsonl")
    epochs = math.ceil(args.vlm_warm_steps / math.ceil(len(load_questions(warm_questions)) / VLM_WARM_BATCH))
    warm = fit_hf(warm_questions, folder / f"warm{epochs}", build_hf_fit_config(
        overrides=[*policy, *VLM_WARM, f"train.epochs={epochs}", *extra]), task_name="mcq")
    warm_s = time.perf_counter() - started
    started = time.perf_counter()
    changed = [o for o in args.vlm_set if o.startswith("grpo.")]
    grpo_set = [*VLM_GRPO, f"grpo.steps={args.vlm_steps}", f"threads={args.threads}", *changed]
    cfg = build_grpo_config(overrides=grpo_set, policy_name="hf", task_name="mcq", init=warm.path)
    name = f"grpo{args.vlm_steps}" + "".join("_" + o[len("grpo."):].replace("=", "") for o in changed)
    trained = grpo(files["train"], folder / name, cfg, init=warm.path, policy_name="hf", task_name="mcq")
    grpo_s = time.perf_counter() - started
    log = [line for line in trained.read_log() if line.get("stage") == "grpo"]
    same = work / "questions" / f"{domain}_test_scored.jsonl"
    write_questions([r for r in load_questions(files["test"]) if r.id in kept_ids()], same)
    rows = []
    for label, run, extra_row in (
            ("VLM (tiny) before GRPO", warm, {"train_s": round(warm_s, 1), "warm_epochs": epochs}),
            (f"VLM (tiny) after {args.vlm_steps} GRPO steps" + (f" ({', '.join(changed)})" if changed else ""), trained,
             {"train_s": round(grpo_s, 1), "train_accuracy_first": _mean(log[:5], "accuracy"),
              "train_accuracy_last": _mean(log[-5:], "accuracy"), "steps": len(log)})):
        report = test_questions([run.path], same, shots=(1,))
        rows.append(summary_row(domain, label, report["results"]["1-shot"], model=model, **extra_row))
    return rows


def _mean(lines: list[dict], key: str) -> float | None:
    values = [line[key] for line in lines if key in line]
    return sum(values) / len(values) if values else None


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
            if args.parts != ["vlm"]:
                started = time.perf_counter()
                runs = pixel_runs(domain, info["dirs"], work, args)
                fit_s = time.perf_counter() - started
            if "questions" in args.parts:
                started = time.perf_counter()
                report = test_questions(runs, files["test"], prototypes=files["train"])
                answer_s = time.perf_counter() - started
        except Exception as exc:
            traceback.print_exc()
            results.add(failed_row({"kind": "questions", **keys, "answerer": "training-free (PatchCore)"},
                                   f"{type(exc).__name__}: {exc}"))
            continue
        if "questions" in args.parts:
            result = report["results"]["map"]
            results.add(floor_row(domain, result))
            results.add(summary_row(domain, "training-free (PatchCore)", result, fit_s=round(fit_s, 1),
                                    answer_s=round(answer_s, 1), n_excluded=report["n_excluded_protocol"],
                                    n_train_questions=len(load_questions(files["train"]))))
        if args.vlm_policy and "vlm" in args.parts:
            try:
                test = load_questions(files["test"])

                def kept() -> set:
                    """The questions the training-free answerer is scored on (its runs' protocol images left out;
                    without labelled images there are none, and the pixel runs are not needed)."""
                    from rlad.workflows.pixel_maps import PixelRun, excluded_by_protocol

                    if not args.labeled:
                        return {r.id for r in test}

                    left_out = excluded_by_protocol([r.image for r in test],
                                                    [PixelRun.open(r) for r in pixel_runs(domain, info["dirs"], work, args,
                                                                                          wait=True)])
                    return {r.id for r in test if r.image not in left_out}

                rows = vlm_rows(domain, files, kept, work, args)
                if "questions" not in args.parts:  # the floor of exactly these questions, beside the VLM rows
                    from rlad.workflows.questions import Answers, score_answers

                    scored = [r for r in test if r.id in kept()]
                    results.add(floor_row(domain, score_answers(scored, Answers([None] * len(scored)))))
                for row in rows:
                    results.add(row)
            except Exception as exc:
                traceback.print_exc()
                results.add(failed_row({"kind": "questions", **keys, "answerer": f"VLM ({args.vlm_policy})"},
                                       f"{type(exc).__name__}: {exc}"))
        if "masks" in args.parts:
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


def _per_type(row: dict) -> list:
    return [row["per_type"][t]["accuracy"] for t in TYPES if t in row["per_type"]]


def render(results: Results, args) -> str:
    rows = ok_rows(results.rows)
    questions = [r for r in rows if r.get("kind") == "questions"]
    masks = [r for r in rows if r.get("kind") == "masks"]
    wall = next((r for r in rows if r.get("kind") == "wall"), None)
    details = [r for r in questions if r["answerer"].startswith("training-free")]
    pixel = (f"PatchCore {args.image_size} px with the ImageNet MobileNetV2 trunk, fitted on train/good"
             + (f" with {args.labeled} labelled defects per type (the questions about them are left out of every row)"
                if args.labeled else "")
             + "; defect-type prototypes: the defective images of the training questions. ") if details else ""
    body = (
        f"Questions from `rlad data questions DIR --split test --train-per-type {args.train_per_type}` (the "
        f"training split: `--split train`, {args.train_per_type} images of each group of test/). {pixel}Accuracy "
        "per type (MMAD scoring: anomaly detection balanced over normal and defective images; the average is over "
        "the types of a domain). An abstention counts as wrong; \"(k/n answered)\" marks types the answerer only "
        f"partly answers.\n\n{question_table(questions)}\n"
    )
    if details:
        body += "Anomaly detection by the training-free answerer, per kind of image: " + "; ".join(
            f"{r['domain']}: normal {_fmt(r['anomaly_detection']['accuracy_normal'])}, defective "
            f"{_fmt(r['anomaly_detection']['accuracy_defective'])} (fit {r.get('fit_s', 0):.0f} s, answering "
            f"{r.get('answer_s', 0):.0f} s, {r.get('n_excluded', 0)} questions left out)" for r in details) + ".\n\n"
    vlm = [r for r in questions if r["answerer"].startswith("VLM")]
    if vlm:
        body += (
            f"VLM rows: {'a tiny random-weight Qwen2-VL built in code' if not args.vlm_model else args.vlm_model} "
            f"(full fine-tuning, images at 56 x 56 px), warm start of about {args.vlm_warm_steps} steps of "
            f"{VLM_WARM_BATCH} on the training questions with random answer letters (it learns the answer format, "
            f"nothing about the answers), then {args.vlm_steps} GRPO steps (choice + ROAM, 4 questions x 4 samples per "
            f"step, {', '.join(args.vlm_set) or 'grpo.lr=5e-4'}) on the real training questions; 1-shot. They check "
            "whether the pipeline moves accuracy on data rlad can measure here; they are not a result. " + "; ".join(
                f"{r['domain']}: MMAD average {_fmt(before['accuracy'])} before -> {_fmt(r['accuracy'])} after "
                f"({sum(a != b for a, b in zip(_per_type(before), _per_type(r)))} of {len(_per_type(r))} types with a changed accuracy), "
                f"sampled-answer accuracy on the training questions {_fmt(r['train_accuracy_first'])} "
                f"(first 5 steps) -> {_fmt(r['train_accuracy_last'])} (last 5), GRPO {r['train_s']:.0f} s"
                for r in vlm if "train_accuracy_first" in r
                for before in [next(b for b in vlm if b["domain"] == r["domain"] and "before" in b["answerer"])])
            + ".\n\n")
    elif "vlm" in args.parts:
        body += "VLM rows: not measured in this run (`--vlm-policy hf`).\n\n"
    if masks:
        body += (
            "Boxes to masks (`rlad test-grounding --mask`): PatchCore's map inside the box, thresholded at its "
            "validation threshold (box_restricted), the same map without the box (map_only) and the filled box "
            "(box_only), pixel F1 and IoU pooled over every pixel of the domain's real pairs (normal queries "
            f"included), at {args.image_size} px. Compact grounder: warm start of {args.warm_epochs} epochs on the "
            f"two other domains' real + {args.synthetic} synthetic pairs each"
            + (f", at most {args.source_limit} of them drawn at random" if args.source_limit else "") + f".\n\n{mask_table(masks)}\n"
        )
    if wall:
        body += f"Total {wall['seconds']:.0f} s; load average {wall['load_before']:.1f} before, {wall['load_after']:.1f} after.\n"
    return body + failures_text(results.rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RLAD_PROGRESS", "0")
    if args.from_results:
        results = Results("questions", path=args.from_results)
        saved = [a for a in results.meta["argv"][1:] if a != "--no-write"]  # this invocation decides
        args = parse_args([*saved, *(["--no-write"] if args.no_write else [])])
        command = results.meta["command"] + "  (rendered again with --from-results)"
    else:
        hold_work(args.work)
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
    title = ("Multiple-choice questions: a tiny VLM before and after GRPO" if args.parts == ["vlm"] else
             "Multiple-choice questions (training-free answerer, random floor) and boxes to masks")
    return finish(title, body, results, append=not args.no_write, command=command)


if __name__ == "__main__":
    raise SystemExit(main())
