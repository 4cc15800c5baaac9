"""Difference grounding, the library behind `rlad fit compact`, `rlad grpo`, `rlad ground` and
`rlad test-grounding`.

Run directories follow `rlad.engine.RunDir`: config.yaml (what was asked), model.pt (the policy:
`{"method": name, "policy": name, "config": ..., "state": ...}`), checkpoints/ (resume), log.jsonl
(one line per epoch / GRPO step), metrics.json.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rlad import config as cfgmod
from rlad.engine import RunDir, seed_everything, status, torch_threads
from rlad.errors import ConfigError, DataError
from rlad.policies.compact.config import CompactConfig
from rlad.policies.compact.policy import CompactPolicy
from rlad.policies.compact.warm_start import WarmStartConfig, fit_supervised
from rlad.policies.registry import policy_class, policy_from_payload
from rlad.rl.loop import GRPOConfig, train_grpo
from rlad.tasks.grounding import GroundingTask, grounding_report
from rlad.tasks.registry import get_task

@dataclass
class CompactFitConfig:
    """`rlad fit compact`: the supervised warm start."""

    seed: int = 0
    threads: int = 1
    """torch CPU threads (0 = torch's default). The compact head's ops are small: one thread is about as
    fast on a quiet machine and up to 10x faster on a busy one (threads spin against other processes)."""
    policy: CompactConfig = field(default_factory=CompactConfig)
    train: WarmStartConfig = field(default_factory=WarmStartConfig)

    def validate(self) -> "CompactFitConfig":
        self.policy.seed = self.seed
        self.policy.validate()
        self.train.validate()
        return self


@dataclass
class GRPORunConfig:
    """`rlad grpo`: `policy` (the chosen policy's own config) is used only without --init (a fresh
    policy); with --init the initial run's policy config wins."""

    seed: int = 0
    threads: int = 1
    """torch CPU threads (0 = torch's default). The compact head's ops are small: one thread is about as
    fast on a quiet machine and up to 10x faster on a busy one (threads spin against other processes)."""
    policy: Any = None
    grpo: GRPOConfig = field(default_factory=GRPOConfig)

    def validate(self, task) -> "GRPORunConfig":
        self.policy.seed = self.seed
        self.grpo.seed = self.seed
        self.policy.validate()
        self.grpo.validate()
        task.check_rewards(self.grpo.rewards, needs_primary=self.grpo.reweighting or self.grpo.resampling)
        return self


def _with_seed(overrides: Sequence[str], seed: int | None) -> list[str]:
    return list(overrides or []) + ([f"seed={seed}"] if seed is not None else [])


def build_fit_config(config_file: str | None = None, overrides: Sequence[str] = (),
                     seed: int | None = None) -> CompactFitConfig:
    return cfgmod.build(CompactFitConfig, config_file, _with_seed(overrides, seed)).validate()


def build_grpo_config(config_file: str | None = None, overrides: Sequence[str] = (), seed: int | None = None,
                      policy_name: str = "compact", task_name: str = "grounding") -> GRPORunConfig:
    task = get_task(task_name)
    grpo_defaults = GRPOConfig(**copy.deepcopy(task.grpo_defaults))
    cfg = cfgmod.build(GRPORunConfig, config_file, _with_seed(overrides, seed),
                       defaults={"policy": policy_class(policy_name).Config(), "grpo": grpo_defaults})
    return cfg.validate(task)


# ---------------------------------------------------------------------------------------- fit
def fit_compact(pairs: str | Path, out: str | Path, cfg: CompactFitConfig | None = None) -> RunDir:
    """Supervised warm start of a compact grounder on a pair file."""
    cfg = (cfg or CompactFitConfig()).validate()
    task = GroundingTask()
    saved = {"method": "compact", "stage": "warm_start", "pairs": str(Path(pairs).resolve()), **cfgmod.to_dict(cfg)}
    records = task.load(pairs)
    run = RunDir.open(out, saved)
    if run.finished:
        return run
    seed_everything(cfg.seed)
    with torch_threads(cfg.threads):
        policy = CompactPolicy(cfg.policy)
        started = time.perf_counter()
        history = fit_supervised(policy, task, records, cfg.train, seed=cfg.seed, run=run)
        seconds = time.perf_counter() - started
    run.save_model(policy.save_payload())
    run.save_metrics({"fit_seconds": round(seconds, 2), "pairs": len(records),
                      "final_loss": history[-1]["loss"] if history else None}, key="fit")
    status(f"{out}: warm start done in {seconds:.1f} s ({len(records)} pairs)")
    return run


# --------------------------------------------------------------------------------------- grpo
def load_policy(run_path: str | Path):
    """The policy saved in a grounding run directory."""
    run = RunDir(run_path).require_model()
    return policy_from_payload(run.load_model(), run_path)


def grpo(pairs: str | Path, out: str | Path, cfg: GRPORunConfig | None = None, init: str | Path | None = None,
         policy_name: str = "compact", task_name: str = "grounding") -> RunDir:
    """GRPO-train a policy (from `init`'s policy, or a fresh one) on a task's record file."""
    task = get_task(task_name)
    cfg = cfg or build_grpo_config(policy_name=policy_name, task_name=task_name)
    saved = {"method": policy_name, "stage": "grpo", "pairs": str(Path(pairs).resolve()),
             "init": str(Path(init).resolve()) if init else None, **cfgmod.to_dict(cfg)}
    records = task.load(pairs)
    if init:
        policy = load_policy(init)
        if policy.name != policy_name:
            raise ConfigError(f"--init {init}: holds a {policy.name!r} policy, not {policy_name!r}")
        saved["policy"] = policy.config_dict()
    run = RunDir.open(out, saved)
    if run.finished:
        return run
    seed_everything(cfg.seed)
    with torch_threads(cfg.threads):
        if not init:
            policy = policy_class(policy_name)(cfg.policy)
        if task.name not in policy.tasks:
            raise ConfigError(f"the {policy.name!r} policy cannot answer the {task.name!r} task")
        summary = train_grpo(policy, task, records, cfg.grpo, run=run)
    run.save_model(policy.save_payload())
    run.save_metrics({k: v for k, v in summary.items() if k != "last"} | {"pairs": len(records)}, key="grpo")
    status(f"{out}: {summary['steps']} GRPO steps, {summary['completions_scored']} completions scored "
           f"({summary['completions_per_s']:.0f}/s)")
    return run


# --------------------------------------------------------------------------------- evaluation
def predict_boxes(policy, records: Sequence, batch_size: int = 64, threads: int = 1) -> tuple[list, list[str]]:
    """Greedy answers: (boxes in original query pixels, None when unparsable; texts)."""
    task = GroundingTask()
    prompts = [task.prompt(r) for r in records]
    with torch_threads(threads):
        policy.prepare(prompts)
        completions = policy.predict(prompts, batch_size=batch_size)
    boxes = [task.answer_box(c.text, r, policy) for c, r in zip(completions, records)]
    return boxes, [c.text for c in completions]


def evaluate(run_path: str | Path, pairs: str | Path, mask_runs: Sequence[str | Path] = ()) -> dict:
    """mIoU, Acc@0.3, F1 and the exploit statistics of a run's policy on a pair file; with `mask_runs`
    (fitted pixel runs, one per category) also the pixel F1 / IoU of the boxes turned into masks
    (`workflows.box_masks`)."""
    policy = load_policy(run_path)
    records = GroundingTask().load(pairs)
    started = time.perf_counter()
    boxes, _ = predict_boxes(policy, records)
    metrics = grounding_report(boxes, records)
    metrics["ms_per_pair"] = round((time.perf_counter() - started) * 1000 / len(records), 2)
    metrics["pairs"] = str(Path(pairs).resolve())
    if mask_runs:
        from rlad.workflows.box_masks import evaluate_box_masks

        metrics["box_masks"] = evaluate_box_masks(mask_runs, records, boxes)
    RunDir(run_path).save_metrics(metrics, key=f"grounding:{Path(pairs).name}")
    return metrics


def ground(run_path: str | Path, reference: str | Path, query: str | Path, mask_run: str | Path | None = None,
           mask_out: str | Path | None = None) -> dict:
    """The box of the difference between two images, in the query's original pixels; with `mask_run`
    (a fitted pixel run) also that run's map restricted to the box, thresholded, written to `mask_out`."""
    from rlad.data.pairs.records import PairRecord, image_hw

    for name, path in (("--reference", reference), ("--query", query)):
        if not Path(path).is_file():
            raise DataError(f"{name} {path}: image not found")
    if mask_run is not None and not mask_out:
        raise ConfigError("--mask needs --mask-out FILE.png (where to write the mask)")
    policy = load_policy(run_path)
    record = PairRecord(id="query", reference=str(Path(reference).resolve()), query=str(Path(query).resolve()),
                        box=(0, 0, 0, 0), query_size=image_hw(Path(query)),
                        reference_size=image_hw(Path(reference)), category="", defect_type="unknown")
    boxes, texts = predict_boxes(policy, [record])
    box = boxes[0]
    result = {
        "reference": record.reference, "query": record.query,
        "box": None if box is None else [round(float(v), 1) for v in box],
        "anomalous": box is not None and any(float(v) != 0 for v in box),
        "query_size": list(record.query_size), "text": texts[0],
    }
    if mask_run is not None:
        from rlad.workflows.box_masks import ground_mask

        result.update(ground_mask(mask_run, record.query, box, mask_out))
    return result
