"""Library entry points behind `rlad fit compact`, `rlad grpo`, `rlad ground`, `rlad test-grounding`.

Run directories follow `rlad.engine.RunDir`: config.yaml (what was asked), model.pt (the policy:
`{"method": "compact", "policy": name, "config": ..., "state": ...}`), checkpoints/ (resume),
log.jsonl (one line per epoch / GRPO step), metrics.json.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rlad import config as cfgmod
from rlad.engine import RunDir, seed_everything, status
from rlad.errors import ConfigError, RladError
from rlad.policies.compact import CompactConfig, CompactPolicy, WarmStartConfig, fit_supervised
from rlad.rl.loop import GRPOConfig, train_grpo


@contextmanager
def torch_threads(n: int):
    """Run a block with `n` torch threads (0 = leave as is), then restore the previous setting."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class CompactFitConfig:
    """`rlad fit compact`: the supervised warm start."""

    seed: int = 0
    threads: int = 1
    """torch CPU threads (0 = torch's default). The compact head's ops are small: one thread is about as
    fast on a quiet machine and up to 10x faster on a busy one (threads spin against other processes)."""
    policy: CompactConfig = field(default_factory=CompactConfig)
    train: WarmStartConfig = field(default_factory=WarmStartConfig)


@dataclass
class GRPORunConfig:
    """`rlad grpo`: `policy` is used only without --init (a fresh policy); with --init the initial
    run's policy config wins."""

    seed: int = 0
    threads: int = 1
    """torch CPU threads (0 = torch's default). The compact head's ops are small: one thread is about as
    fast on a quiet machine and up to 10x faster on a busy one (threads spin against other processes)."""
    policy: CompactConfig = field(default_factory=CompactConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)


def _with_seed(overrides: Sequence[str], seed: int | None) -> list[str]:
    return list(overrides or []) + ([f"seed={seed}"] if seed is not None else [])


def build_fit_config(config_file: str | None = None, overrides: Sequence[str] = (),
                     seed: int | None = None) -> CompactFitConfig:
    cfg = cfgmod.build(CompactFitConfig, config_file, _with_seed(overrides, seed))
    cfg.policy.seed = cfg.seed
    cfg.policy.validate()
    return cfg


def build_grpo_config(config_file: str | None = None, overrides: Sequence[str] = (),
                      seed: int | None = None) -> GRPORunConfig:
    cfg = cfgmod.build(GRPORunConfig, config_file, _with_seed(overrides, seed))
    cfg.policy.seed = cfg.seed
    cfg.grpo.seed = cfg.seed
    cfg.policy.validate()
    cfg.grpo.validate()
    return cfg


def _open_run(out: str | Path, saved: dict) -> RunDir | None:
    """The run directory to train into, or None when it already holds this finished run."""
    run = RunDir(out)
    if run.config_path.is_file():
        if run.load_config() != saved:
            raise ConfigError(f"{out}: already holds a run with a different config; rerun with the same options "
                              f"to resume, or choose a new --out (saved config: {run.config_path})")
        if run.model_path.is_file():
            status(f"{out}: already trained (model.pt present); nothing to do")
            return None
        status(f"{out}: resuming")
    run.create()
    run.save_config(saved)
    return run


def _load_records(pairs: str | Path):
    from rlad.data.pairs.records import load_pairs

    return load_pairs(pairs)


# ---------------------------------------------------------------------------------------- fit
def fit_compact(pairs: str | Path, out: str | Path, cfg: CompactFitConfig | None = None) -> RunDir:
    """Supervised warm start of a compact grounder on a pair file."""
    cfg = cfg or CompactFitConfig()
    saved = {"method": "compact", "stage": "warm_start", "pairs": str(Path(pairs).resolve()), **cfgmod.to_dict(cfg)}
    records = _load_records(pairs)
    run = _open_run(out, saved)
    if run is None:
        return RunDir(out)
    seed_everything(cfg.seed)
    with torch_threads(cfg.threads):
        policy = CompactPolicy(cfg.policy)
        started = time.perf_counter()
        history = fit_supervised(policy, records, cfg.train, seed=cfg.seed, run=run)
        seconds = time.perf_counter() - started
    run.save_model(policy.save_payload())
    run.save_metrics({"fit_seconds": round(seconds, 2), "pairs": len(records),
                      "final_loss": history[-1]["loss"] if history else None}, key="fit")
    status(f"{out}: warm start done in {seconds:.1f} s ({len(records)} pairs)")
    return run


# --------------------------------------------------------------------------------------- grpo
def load_policy(run_path: str | Path):
    """The policy saved in a grounding run directory."""
    from rlad.policies.base import policy_from_payload

    run = RunDir(run_path).require_model()
    return policy_from_payload(run.load_model(), run_path)


def _require_compact(policy_name: str, model: str | None) -> None:
    if policy_name == "hf":
        import importlib.util

        if importlib.util.find_spec("rlad.policies.hf_vlm") is None:
            raise RladError("--policy hf: the VLM backend (rlad.policies.hf_vlm) is not part of this build yet; "
                            "it comes in a later issue. Use --policy compact.")
        raise RladError("--policy hf: use the VLM backend's own entry point (rlad.policies.hf_vlm)")
    if policy_name != "compact":
        raise ConfigError(f"--policy {policy_name!r} is not one of compact, hf")
    if model:
        raise ConfigError("--model is for --policy hf (local VLM weights); the compact policy takes --init RUN")


def grpo(pairs: str | Path, out: str | Path, cfg: GRPORunConfig | None = None, init: str | Path | None = None,
         policy_name: str = "compact") -> RunDir:
    """GRPO-train a grounding policy (from `init`'s policy, or a fresh one) on a pair file."""
    _require_compact(policy_name, None)
    cfg = cfg or GRPORunConfig()
    saved = {"method": "compact", "stage": "grpo", "pairs": str(Path(pairs).resolve()),
             "init": str(Path(init).resolve()) if init else None, **cfgmod.to_dict(cfg)}
    records = _load_records(pairs)
    if init:
        policy = load_policy(init)
        saved["policy"] = policy.config_dict()
    run = _open_run(out, saved)
    if run is None:
        return RunDir(out)
    seed_everything(cfg.seed)
    with torch_threads(cfg.threads):
        if not init:
            policy = CompactPolicy(cfg.policy)
        summary = train_grpo(policy, records, cfg.grpo, run=run)
    run.save_model(policy.save_payload())
    run.save_metrics({k: v for k, v in summary.items() if k != "last"} | {"pairs": len(records)}, key="grpo")
    status(f"{out}: {summary['steps']} GRPO steps, {summary['completions_scored']} completions scored "
           f"({summary['completions_per_s']:.0f}/s)")
    return run


# --------------------------------------------------------------------------------- evaluation
def predict_boxes(policy, records: Sequence, batch_size: int = 64, threads: int = 1) -> tuple[list, list[str]]:
    """Greedy answers: (boxes in original query pixels, None when unparsable; texts)."""
    with torch_threads(threads):
        policy.prepare(records)
        completions = policy.predict(list(records), batch_size=batch_size)
    boxes = [policy.answer_pixels(c.text, r) for c, r in zip(completions, records)]
    return boxes, [c.text for c in completions]


def grounding_report(pred_boxes: Sequence, records: Sequence) -> dict:
    """Grounding metrics + exploit statistics of boxes (original pixels) against pair records."""
    from rlad.metrics.grounding import box_exploit_stats, grounding_metrics
    from rlad.rl.rewards import dclr_from_boxes

    gt = [r.box for r in records]
    metrics = grounding_metrics(pred_boxes, gt)
    metrics.update(box_exploit_stats(pred_boxes, gt, [r.query_size for r in records]))
    metrics["mean_dclr"] = sum(dclr_from_boxes(p, g) for p, g in zip(pred_boxes, gt)) / len(gt)
    return metrics


def evaluate(run_path: str | Path, pairs: str | Path) -> dict:
    policy = load_policy(run_path)
    records = _load_records(pairs)
    started = time.perf_counter()
    boxes, _ = predict_boxes(policy, records)
    metrics = grounding_report(boxes, records)
    metrics["ms_per_pair"] = round((time.perf_counter() - started) * 1000 / len(records), 2)
    metrics["pairs"] = str(Path(pairs).resolve())
    RunDir(run_path).save_metrics(metrics, key=f"grounding:{Path(pairs).name}")
    return metrics


def ground(run_path: str | Path, reference: str | Path, query: str | Path) -> dict:
    """The box of the difference between two images, in the query's original pixels."""
    from rlad.data.pairs.records import PairRecord, image_hw
    from rlad.errors import DataError

    for name, path in (("--reference", reference), ("--query", query)):
        if not Path(path).is_file():
            raise DataError(f"{name} {path}: image not found")
    policy = load_policy(run_path)
    record = PairRecord(id="query", reference=str(Path(reference).resolve()), query=str(Path(query).resolve()),
                        box=(0, 0, 0, 0), query_size=image_hw(Path(query)),
                        reference_size=image_hw(Path(reference)), category="", defect_type="unknown")
    boxes, texts = predict_boxes(policy, [record])
    box = boxes[0]
    return {
        "reference": record.reference, "query": record.query,
        "box": None if box is None else [round(float(v), 1) for v in box],
        "anomalous": box is not None and any(float(v) != 0 for v in box),
        "query_size": list(record.query_size), "text": texts[0],
    }


# ------------------------------------------------------------------------------------------ CLI
def cli_fit_compact(args) -> int:
    from rlad.cli.common import print_json

    if not args.pairs:
        raise ConfigError("rlad fit compact needs --pairs PAIRS.jsonl (build one with `rlad data pairs`)")
    if getattr(args, "data", None):
        raise ConfigError("rlad fit compact trains on --pairs, not --data (build pairs with `rlad data pairs DIR`)")
    cfg = build_fit_config(args.config, args.overrides, args.seed)
    run = fit_compact(args.pairs, args.out, cfg)
    if args.json:
        import json

        print_json({"run": str(run.path), **json.loads(run.metrics_path.read_text()).get("fit", {})})
    else:
        print(f"trained compact grounder (warm start) -> {run.path}")
    return 0


def cli_grpo(args) -> int:
    from rlad.cli.common import print_json

    _require_compact(args.policy, args.model)
    cfg = build_grpo_config(args.config, args.overrides, args.seed)
    run = grpo(args.pairs, args.out, cfg, init=args.init, policy_name=args.policy)
    if args.json:
        import json

        print_json({"run": str(run.path), **json.loads(run.metrics_path.read_text()).get("grpo", {})})
    else:
        print(f"GRPO-trained {args.policy} policy -> {run.path}")
    return 0


def cli_ground(args) -> int:
    from rlad.cli.common import print_json

    result = ground(args.run, args.reference, args.query)
    if args.json:
        print_json(result)
    elif not result["anomalous"]:
        print("no difference found (zero box)" if result["box"] is not None else "no valid box in the answer")
    else:
        x1, y1, x2, y2 = result["box"]
        print(f"box (pixels of the query): ({x1:g},{y1:g}),({x2:g},{y2:g})")
    return 0


REPORT_ORDER = ["miou", "acc_at_0_3", "f1", "precision", "recall", "miou_defective", "miou_normal", "mean_dclr",
                "whole_image_rate", "far_box_rate", "mean_area_fraction", "n", "n_defective", "n_normal",
                "n_invalid", "ms_per_pair"]


def cli_test_grounding(args) -> int:
    from rlad.cli.common import print_json, print_table

    metrics = evaluate(args.run, args.pairs)
    if args.json:
        print_json(metrics)
    else:
        print_table([{"metric": k, "value": metrics[k]} for k in REPORT_ORDER if metrics.get(k) is not None])
    return 0
