"""Difference grounding across categories: the compact grounder with and without DifferAD-R1's
GRPO additions, against map-to-box baselines.

Leave-one-domain-out over three domains: magnetic tile (../shared/data/magnetic_tile), MPDD
metal_plate (../shared/data/mpdd_metal_plate_512) and the demo textures (brick, grass, gravel; built
with rlad.data.synth into the work folder). For each evaluation domain the policies train on the
real + synthetic pairs of the two others ("source" pairs) and are evaluated on the unseen domain's
real pairs. With `--adapt P N` (default 150 75) they also get P Perlin and N normal/normal pairs built
from the unseen domain's train/good images only (`rlad.data.pairs.adaptation_pairs`: no test image,
mask or label of that domain): the one-shot user has normal images of the new product.

  warm start (source only)  supervised teacher-forced cross-entropy on the source pairs
  warm start                (with --adapt) the above + supervised fine-tuning on source + adaptation
                            pairs, as many pair visits as one GRPO run (steps x prompts): the starting
                            point of every GRPO row and the reference for the goal, so that SFT and
                            GRPO had the same data
  + GRPO iou                plain IoU reward (the paper's ablation), no weighting, no resampling
  + GRPO dclr               DCLR reward, no weighting, no resampling
  + weighting               DCLR + difficulty-aware reweighting
  + resampling (full)       DCLR + weighting + group-wise resampling (the full recipe)
  source only: full recipe  (with --adapt) the full recipe from the source-only warm start on the
                            source pairs (the protocol without adaptation)
GRPO rows train on the same pairs as the warm start they start from.

Baselines turn pixel maps into boxes (threshold maximising grounding F1 on a 30% calibration split
of the evaluation pairs, largest component, box): |query - reference| (absdiff), nearest-neighbour
feature distance (nnfeature, training-free), and PatchCore / PaDiM fitted on the evaluation
category's own train/good images. Every row is scored on the same remaining 70%.

Usage: .venv/bin/python benchmarks/grounding.py [--quick] [--seeds 0 1 2] [--eval ...] [--jobs 2]
       .venv/bin/python benchmarks/grounding.py --from-results benchmarks/results/grounding-DATE.jsonl
Raw rows go to benchmarks/results/grounding-DATE.jsonl as they are measured, the tables to
docs/benchmarks.md; a baseline that fails is listed as failed with its error.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchmarks._common import SHARED_DATA, SHARED_WEIGHTS, Results, failed_row, failures_text, finish, hold_work, ok_rows  # noqa: E402
from rlad.tables import markdown_table  # noqa: E402

DOMAINS = {
    "magnetic_tile": SHARED_DATA / "magnetic_tile",
    "mpdd_metal_plate": SHARED_DATA / "mpdd_metal_plate_512",
    "demo": None,  # generated into the work folder
}
VARIANTS = {
    "+ GRPO iou": dict(rewards=["format", "iou"], reweighting=False, resampling=False),
    "+ GRPO dclr": dict(rewards=["format", "dclr"], reweighting=False, resampling=False),
    "+ weighting": dict(rewards=["format", "dclr"], reweighting=True, resampling=False),
    "+ resampling (full)": dict(rewards=["format", "dclr"], reweighting=True, resampling=True),
}
SOURCE_ONLY_FULL = "source only: full recipe"
METRICS = ["miou", "acc_at_0_3", "f1", "miou_defective", "miou_normal", "whole_image_rate", "far_box_rate"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, MPDD held out only, short training, no PatchCore/PaDiM")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval", nargs="+", default=list(DOMAINS), choices=list(DOMAINS), help="held-out domains")
    parser.add_argument("--work", default="/tmp/rlad_grounding_bench", help="pairs, demo data, pixel-model runs")
    parser.add_argument("--synthetic", type=int, default=150, help="synthetic pairs per domain (spread over categories)")
    parser.add_argument("--adapt", type=int, nargs=2, default=[150, 75], metavar=("PERLIN", "NORMAL"),
                        help="adaptation pairs from the held-out domain's train/good images (0 0: source pairs only)")
    parser.add_argument("--warm-epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300, help="GRPO steps per variant")
    parser.add_argument("--lr", type=float, default=3e-4, help="GRPO learning rate")
    parser.add_argument("--prompts-per-step", type=int, default=8, help="GRPO prompts per step (the paper: 8)")
    parser.add_argument("--project", type=int, default=0, help="policy.project (0: fixed comparisons only)")
    parser.add_argument("--pixel-models", nargs="*", default=["patchcore", "padim"])
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes (one torch thread each)")
    parser.add_argument("--no-write", action="store_true", help="print the table, do not touch docs/benchmarks.md")
    parser.add_argument("--from-results", metavar="FILE", help="do not train: render an earlier run's results file again")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.eval, args.steps, args.warm_epochs, args.pixel_models = [0], ["mpdd_metal_plate"], 60, 15, []
    args.adapt = [max(0, v) for v in args.adapt]
    return args


# ------------------------------------------------------------------------------------ data
def prepare_domains(work: Path, synthetic: int, adapt: tuple[int, int] = (0, 0)) -> dict[str, dict]:
    """Pair files per domain (cached in `work`): {"pairs": path, "adapt": path or None, "dirs": [category
    folders]}. The adaptation pairs read the domain's train/good images only."""
    from rlad.data.folder import discover_categories
    from rlad.data.pairs.builders import adaptation_pairs, build_pairs
    from rlad.data.synth.demo import write_demo_dataset

    work.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, folder in DOMAINS.items():
        if folder is None:
            folder = work / "demo"
            if not (folder / "README.md").is_file():
                write_demo_dataset(folder, seed=0)
        elif not folder.is_dir():
            print(f"skipping {name}: {folder} not found", file=sys.stderr)
            continue
        pairs = work / f"{name}.jsonl"
        if not pairs.is_file():
            build_pairs(folder, pairs, synthetic=synthetic, reference="similar", seed=0)
        adapt_file = None
        if any(adapt):
            adapt_file = work / f"{name}_adapt_{adapt[0]}_{adapt[1]}.jsonl"
            if not adapt_file.is_file():
                adaptation_pairs(folder, adapt_file, perlin=adapt[0], normal=adapt[1], seed=0)
        out[name] = {"pairs": str(pairs), "adapt": str(adapt_file) if adapt_file else None,
                     "dirs": [str(p) for p in discover_categories(folder)]}
    return out


def split_domain(domains: dict, held_out: str):
    """(source training pairs, calibration 30%, test 70% of the held-out domain's real pairs)."""
    from rlad.data.pairs.records import load_pairs, split_fraction

    train = [r for name, d in domains.items() if name != held_out for r in load_pairs(d["pairs"])]
    real = [r for r in load_pairs(domains[held_out]["pairs"]) if r.source == "real"]
    calibration, test = split_fraction(real, 0.3, seed=0)
    return train, calibration, test


def adaptation_of(domains: dict, held_out: str) -> list:
    from rlad.data.pairs.records import load_pairs

    path = domains[held_out].get("adapt")
    return load_pairs(path) if path else []


def summary_of(report: dict) -> dict:
    return {k: report[k] for k in METRICS if report.get(k) is not None}


# --------------------------------------------------------------------------------- policies
def policy_unit(job: dict) -> list[dict]:
    """Warm start + every GRPO variant for one (held-out domain, seed); runs in a worker process."""
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from rlad.policies.compact.config import CompactConfig
    from rlad.policies.compact.policy import CompactPolicy
    from rlad.policies.compact.warm_start import WarmStartConfig, fit_supervised
    from rlad.rl.loop import GRPOConfig, train_grpo
    from rlad.tasks.grounding import GroundingTask, grounding_report
    from rlad.workflows.grounding import predict_boxes

    source, _, test = split_domain(job["domains"], job["held_out"])
    adapt = adaptation_of(job["domains"], job["held_out"])
    seed = job["seed"]
    policy = CompactPolicy(CompactConfig(weights=job["weights"], project=job["project"], seed=seed))
    task = GroundingTask()
    started = time.perf_counter()
    policy.prepare([task.prompt(r) for r in source + adapt + test])
    prepare_s = time.perf_counter() - started
    rows = []

    def evaluate(method: str, extra: dict) -> None:
        boxes, _ = predict_boxes(policy, test)
        rows.append({"held_out": job["held_out"], "method": method, "seed": seed,
                     **summary_of(grounding_report(boxes, test)), **extra})

    def grpo_row(name: str, options: dict, start: dict, pairs: list) -> None:
        policy.head.load_state_dict(start)
        cfg = GRPOConfig(steps=job["steps"], lr=job["lr"], prompts_per_step=job["prompts_per_step"], seed=seed,
                         **options)
        log: list[dict] = []
        summary = train_grpo(policy, task, pairs, cfg, callback=log.append)
        evaluate(name, {
            "train_s": summary["seconds"], "completions_per_s": summary["completions_per_s"],
            "final_kl": float(np.mean([line["kl"] for line in log[-10:]])),
            "frac_zero_variance": float(np.mean([line["frac_zero_variance"] for line in log])),
            "groups_resampled_per_step": float(np.mean([line["groups_resampled"] for line in log])),
            "train_reward_first": float(np.mean([line["reward/total"] for line in log[:10]])),
            "train_reward_last": float(np.mean([line["reward/total"] for line in log[-10:]])),
        })

    started = time.perf_counter()
    fit_supervised(policy, task, source, WarmStartConfig(epochs=job["warm_epochs"]), seed=seed)
    source_s = time.perf_counter() - started
    source_state = copy.deepcopy(policy.head.state_dict())
    train = source
    if adapt:
        evaluate("warm start (source only)", {"train_s": source_s, "prepare_s": prepare_s})
        train = source + adapt
        visits = job["steps"] * job["prompts_per_step"]  # the pair visits of one GRPO run
        started = time.perf_counter()
        fit_supervised(policy, task, train, WarmStartConfig(epochs=max(1, round(visits / len(train)))), seed=seed)
        evaluate("warm start", {"train_s": source_s + time.perf_counter() - started, "prepare_s": prepare_s})
    else:
        evaluate("warm start", {"train_s": source_s, "prepare_s": prepare_s})
    warm_state = copy.deepcopy(policy.head.state_dict())
    for name, options in VARIANTS.items():
        grpo_row(name, options, warm_state, train)
    if adapt:
        grpo_row(SOURCE_ONLY_FULL, VARIANTS["+ resampling (full)"], source_state, source)
    return rows


# -------------------------------------------------------------------------------- baselines
def baseline_rows(domains: dict, held_out: str, work: Path, weights: str, pixel_models: list[str]) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from rlad.policies.baselines import boxes_from_maps, fit_threshold
    from rlad.tasks.grounding import grounding_report
    from rlad.workflows.map_grounding import map_baseline

    _, calibration, test = split_domain(domains, held_out)
    rows = []
    makers = {"absdiff": map_baseline("absdiff"), "nnfeature": map_baseline("nnfeature", weights=weights)}
    for method in pixel_models:
        per_category = {Path(d).name: map_baseline(method, data_dir=d, run_dir=str(work / "pixel_runs" / f"{method}_{Path(d).name}"),
                                                    weights=weights) for d in domains[held_out]["dirs"]}

        def maps_by_category(records, size=256, _makers=per_category):
            out = np.zeros((len(records), size, size), np.float32)
            for category, maker in _makers.items():
                index = [i for i, r in enumerate(records) if r.category == category]
                if index:
                    out[index] = maker([records[i] for i in index], size=size)
            return out

        makers[method] = maps_by_category
    for method, maker in makers.items():
        started = time.perf_counter()
        try:
            threshold, _ = fit_threshold(maker(calibration), calibration)
            boxes = boxes_from_maps(maker(test), test, threshold)
        except Exception as exc:  # a missing optional model must not sink the whole benchmark, nor vanish
            print(f"baseline {method} on {held_out} failed: {exc}", file=sys.stderr)
            rows.append(failed_row({"held_out": held_out, "method": f"baseline: {method}"}, f"{type(exc).__name__}: {exc}"))
            continue
        rows.append({"held_out": held_out, "method": f"baseline: {method}", "seed": 0,
                     **summary_of(grounding_report(boxes, test)), "train_s": time.perf_counter() - started})
    return rows


# ---------------------------------------------------------------------------------- report
def aggregate(rows: list[dict]) -> list[dict]:
    out = []
    order = ["warm start (source only)", SOURCE_ONLY_FULL, "warm start", *VARIANTS]
    keys = []
    for row in rows:
        key = (row["held_out"], row["method"])
        if key not in keys:
            keys.append(key)
    keys.sort(key=lambda k: (k[0], order.index(k[1]) if k[1] in order else len(order), k[1]))
    for held_out, method in keys:
        group = [r for r in rows if r["held_out"] == held_out and r["method"] == method]
        line = {"held out": held_out, "method": method, "seeds": len(group)}
        for metric in ["acc_at_0_3", "miou", "f1", "whole_image_rate", "far_box_rate"]:
            values = [r[metric] for r in group if metric in r]
            if values:
                line[metric] = f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else "")
        rates = [r["completions_per_s"] for r in group if "completions_per_s" in r]
        line["completions/s"] = f"{np.mean(rates):.0f}" if rates else ""
        out.append(line)
    return out


def diagnostics(rows: list[dict]) -> list[dict]:
    """What GRPO did on the training pairs (means over seeds)."""
    out = []
    for held_out in sorted({r["held_out"] for r in rows}):
        for method in [*VARIANTS, SOURCE_ONLY_FULL]:
            group = [r for r in rows if r["held_out"] == held_out and r["method"] == method]
            if not group:
                continue

            def mean(key, fmt="{:.3f}"):
                return fmt.format(np.mean([r[key] for r in group]))

            out.append({"held out": held_out, "method": method,
                        "train reward, first 10 steps": mean("train_reward_first"),
                        "train reward, last 10 steps": mean("train_reward_last"),
                        "zero-variance groups": mean("frac_zero_variance"),
                        "groups resampled / step": mean("groups_resampled_per_step", "{:.2f}"),
                        "KL (last 10 steps)": mean("final_kl")})
    return out


def claims(rows: list[dict]) -> list[str]:
    """Plain statements: which of the paper's claims held here."""
    lines = []

    def mean(held_out, method, metric="acc_at_0_3"):
        values = [r[metric] for r in rows if r["held_out"] == held_out and r["method"] == method and metric in r]
        return float(np.mean(values)) if values else None

    def per_seed(held_out, method, metric="acc_at_0_3"):
        chosen = sorted((r["seed"], r[metric]) for r in rows if r["held_out"] == held_out and r["method"] == method)
        return [v for _, v in chosen]

    for held_out in sorted({r["held_out"] for r in rows}):
        warm, full = mean(held_out, "warm start"), mean(held_out, "+ resampling (full)")
        iou, dclr = mean(held_out, "+ GRPO iou"), mean(held_out, "+ GRPO dclr")
        weighted = mean(held_out, "+ weighting")
        if warm is None or full is None:
            continue
        delta = 100 * (full - warm)
        lines.append(f"- **{held_out}** held out: full recipe vs warm start {delta:+.1f} points of Acc@0.3 "
                     f"(goal >= +5: {'met' if delta >= 5 else 'not met'}); DCLR vs IoU reward {100 * (dclr - iou):+.1f}; "
                     f"difficulty weighting {100 * (weighted - dclr):+.1f}; resampling {100 * (full - weighted):+.1f}.")
        exploit_dclr = mean(held_out, "+ GRPO dclr", "whole_image_rate")
        exploit_iou = mean(held_out, "+ GRPO iou", "whole_image_rate")
        far_dclr, far_iou = mean(held_out, "+ GRPO dclr", "far_box_rate"), mean(held_out, "+ GRPO iou", "far_box_rate")
        lines.append(f"  DCLR exploit check: whole-image boxes {exploit_dclr:.3f} (DCLR) vs {exploit_iou:.3f} (IoU); "
                     f"far-away boxes {far_dclr:.3f} vs {far_iou:.3f}.")
        source_warm, source_full = mean(held_out, "warm start (source only)"), mean(held_out, SOURCE_ONLY_FULL)
        if source_warm is not None and source_full is not None:
            lines.append(f"  Adaptation pairs (SFT) vs source only: {100 * (warm - source_warm):+.1f}; without them, "
                         f"full recipe vs source-only warm start {100 * (source_full - source_warm):+.1f}.")
        seed_deltas = [100 * (f - w) for f, w in zip(per_seed(held_out, "+ resampling (full)"),
                                                     per_seed(held_out, "warm start"))]
        if seed_deltas:
            lines.append("  Full recipe minus warm start per seed: " + ", ".join(f"{d:+.1f}" for d in seed_deltas) + ".")
    rates = [r["completions_per_s"] for r in rows if "completions_per_s" in r]
    if rates:
        lines.append(f"- GRPO throughput: {np.mean(rates):.0f} completions scored per second on average "
                     f"(min {np.min(rates):.0f}; goal >= 200: {'met' if np.min(rates) >= 200 else 'not met'}).")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.from_results:
        hold_work(args.work)
    os.environ.setdefault("RLAD_PROGRESS", "0")
    work = Path(args.work)
    weights = str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_file() else "random"
    if weights == "random":
        print(f"warning: {SHARED_WEIGHTS} not found, using a random trunk", file=sys.stderr)
    if args.from_results:
        results = Results("grounding", path=args.from_results)
        args = parse_args([*results.meta["argv"][1:], *(["--no-write"] if args.no_write else [])])
        command = results.meta["command"] + "  (rendered again with --from-results)"
    else:
        results = Results("grounding")
        results.note(argv=sys.argv)
        load_before, started = os.getloadavg(), time.perf_counter()
        domains = prepare_domains(work, args.synthetic, tuple(args.adapt))
        held_outs = [d for d in args.eval if d in domains]
        jobs = [{"domains": domains, "held_out": h, "seed": s, "weights": weights, "project": args.project,
                 "warm_epochs": args.warm_epochs, "steps": args.steps, "lr": args.lr,
                 "prompts_per_step": args.prompts_per_step} for h in held_outs for s in args.seeds]
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(policy_unit, job) for job in jobs]
            futures += [pool.submit(baseline_rows, domains, h, work, weights, args.pixel_models) for h in held_outs]
            for future in futures:
                for row in future.result():
                    results.add(row)
                print(f"[{time.perf_counter() - started:.0f} s] {len(results.rows)} rows", file=sys.stderr, flush=True)
        results.add({"kind": "wall", "load_before": load_before[0], "load_after": os.getloadavg()[0],
                     "seconds": time.perf_counter() - started})
        command = None
    wall = next(r for r in results.rows if r.get("kind") == "wall")
    load_before, load_after, total = (wall["load_before"],), (wall["load_after"],), wall["seconds"]
    rows = ok_rows([r for r in results.rows if r.get("kind") != "wall"])
    table = markdown_table(aggregate(rows))
    statements = claims(rows)
    if any(args.adapt):
        adapt_text = (
            f"Adaptation pairs: {args.adapt[0]} Perlin + {args.adapt[1]} normal/normal pairs (at most one per image) "
            f"built from the held-out domain's train/good images only (no test image, mask or label of it). "
            f"\"warm start (source only)\": {args.warm_epochs} epochs of supervised training on the source pairs; "
            f"\"warm start\": that, then supervised fine-tuning on source + adaptation pairs for as many pair visits "
            f"as one GRPO run ({args.steps} x {args.prompts_per_step}); every GRPO row starts from \"warm start\" "
            f"and trains on the same "
            f"source + adaptation pairs, except \"{SOURCE_ONLY_FULL}\" (from the source-only warm start, source pairs "
            f"only). ")
    else:
        adapt_text = f"Warm start {args.warm_epochs} epochs on the source pairs; GRPO on the same pairs. "
    body = (
        f"Leave-one-domain-out: train on the real + synthetic pairs ({args.synthetic} synthetic per domain) of the "
        f"other domains, evaluate on the held-out domain's real pairs (70% test split; baselines calibrate their "
        f"threshold on the other 30%). {adapt_text}Compact grounder: image 256, ImageNet MobileNetV2 trunk (frozen), "
        f"policy.project={args.project}; GRPO {args.steps} steps x {args.prompts_per_step} prompts x "
        f"G=8, lr {args.lr}, beta 0.04, eps 0.2, 1 resampling round. Seeds {args.seeds} (mean ± std). "
        f"{args.jobs} worker process(es), 1 torch thread each. Load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after; total {total:.0f} s.\n\n"
        f"{table}\nGRPO on the training pairs (reward = format + localization, 0..2; means over seeds):\n\n"
        f"{markdown_table(diagnostics(rows))}\nWhat held (Acc@0.3 differences, points):\n\n" + "\n".join(statements) + "\n"
        + failures_text(results.rows)
    )
    title = "Difference grounding: compact grounder + GRPO, unseen domains"
    if args.warm_epochs != 20:
        title += f" (warm start {args.warm_epochs} epochs)"
    if any(args.adapt):
        title += ", with adaptation pairs from normal images"
    return finish(title, body, results, append=not args.no_write, command=command)


if __name__ == "__main__":
    raise SystemExit(main())
