"""Difference grounding, the library behind `rlad fit compact`, `rlad fit hf`, `rlad grpo`, `rlad ground`
and `rlad test-grounding`.

Run directories follow `rlad.engine.RunDir`: config.yaml (what was asked), model.pt (the policy:
`{"method": name, "policy": name, "config": ..., "state": ...}`), checkpoints/ (resume), log.jsonl
(one line per epoch / GRPO step), metrics.json; a VLM policy also writes hf/ (adapter or weights plus
the processor, in transformers/peft format) and, with the TRL engine, trl/ (TRL's checkpoints).
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, Sequence

from rlad import config as cfgmod
from rlad.engine import RunDir, seed_everything, status, torch_threads
from rlad.errors import ConfigError, DataError
from rlad.integrations.trl import TRLEngineConfig
from rlad.policies.compact.config import CompactConfig
from rlad.policies.compact.policy import CompactPolicy
from rlad.policies.compact.warm_start import WarmStartConfig, fit_supervised
from rlad.policies.hf_vlm.config import HFVLMConfig
from rlad.policies.hf_vlm.warm_start import HFWarmStartConfig
from rlad.policies.registry import policy_class, policy_from_payload
from rlad.rl.loop import GRPOConfig, train_grpo
from rlad.tasks.grounding import GroundingTask, grounding_report
from rlad.tasks.registry import get_task

@dataclass
class _WarmStartFitConfig:
    """What `rlad fit compact` and `rlad fit hf` share: the run's seed is its policy's, and the policy's
    and the warm start's configs are checked together. Subclasses add `threads`, `policy` and `train`."""

    seed: int = 0

    def validate(self) -> Self:
        self.policy.seed = self.seed
        self.policy.validate()
        self.train.validate()
        return self


@dataclass
class CompactFitConfig(_WarmStartFitConfig):
    """`rlad fit compact`: the supervised warm start."""

    threads: int = 1
    """torch CPU threads (0 = torch's default). The compact head's ops are small: one thread is about as
    fast on a quiet machine and up to 10x faster on a busy one (threads spin against other processes)."""
    policy: CompactConfig = field(default_factory=CompactConfig)
    train: WarmStartConfig = field(default_factory=WarmStartConfig)


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


ENGINES = ("rlad", "trl")


@dataclass
class TRLGRPORunConfig(GRPORunConfig):
    """`rlad grpo --engine trl`: the same settings plus TRL's own (`--set trl.KEY=VALUE`)."""

    trl: TRLEngineConfig = field(default_factory=TRLEngineConfig)

    def validate(self, task) -> "TRLGRPORunConfig":
        super().validate(task)
        self.trl.validate()
        return self


@dataclass
class HFFitConfig(_WarmStartFitConfig):
    """`rlad fit hf`: the VLM's supervised warm start."""

    threads: int = 0
    """torch CPU threads (0 = torch's default: a VLM's matrix products use every core)."""
    policy: HFVLMConfig = field(default_factory=HFVLMConfig)
    train: HFWarmStartConfig = field(default_factory=HFWarmStartConfig)


def build_grpo_config(config_file: str | None = None, overrides: Sequence[str] = (), seed: int | None = None,
                      policy_name: str = "compact", task_name: str = "grounding",
                      engine: str = "rlad", init: str | Path | None = None) -> GRPORunConfig:
    """The `rlad grpo` config for a task, a policy and an engine: the policy's own config dataclass (that
    of the `init` run when one is given), and the GRPO defaults the task asks for (its rewards) and then
    the policy (a VLM needs a smaller step than the compact head)."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
    task = get_task(task_name)
    cls = policy_class(policy_name)
    if engine == "trl" and policy_name != "hf":
        raise ConfigError("--engine trl trains vision-language models: use it with --policy hf")
    policy_cfg = cls.Config()
    if init:
        init_config = RunDir(init).require_model().load_config()
        _refuse_other_policy(init, init_config, policy_name)
        saved = init_config.get("policy")
        if saved is not None:
            policy_cfg = cfgmod.from_dict(cls.Config, saved, "policy")
    grpo_defaults = {**copy.deepcopy(task.grpo_defaults), **getattr(cls, "grpo_defaults", {})}
    defaults = {"policy": policy_cfg, "grpo": GRPOConfig(**grpo_defaults)}
    if policy_name == "hf":
        defaults["threads"] = 0
    config_cls = TRLGRPORunConfig if engine == "trl" else GRPORunConfig
    cfg = cfgmod.build(config_cls, config_file, _with_seed(overrides, seed), defaults=defaults)
    return cfg.validate(task)


def _refuse_other_policy(init, init_config: dict, policy_name: str) -> None:
    """--init must name a run of the chosen policy (`method` is the policy's name in grounding runs)."""
    held = init_config.get("method")
    if "stage" not in init_config or not isinstance(init_config.get("policy"), dict):
        raise ConfigError(f"--init {init}: not a grounding policy run (`rlad fit compact|hf` or `rlad grpo`); "
                          f"it holds a {held!r} run")
    if held != policy_name:
        raise ConfigError(f"--init {init}: holds a {held!r} policy, not {policy_name!r} (use --policy {held})")


def build_hf_fit_config(config_file: str | None = None, overrides: Sequence[str] = (),
                        seed: int | None = None) -> HFFitConfig:
    return cfgmod.build(HFFitConfig, config_file, _with_seed(overrides, seed)).validate()


# ---------------------------------------------------------------------------------------- fit
def fit_compact(pairs: str | Path, out: str | Path, cfg: CompactFitConfig | None = None) -> RunDir:
    """Supervised warm start of a compact grounder on a pair file."""
    cfg = (cfg or CompactFitConfig()).validate()

    def train(task, records, run):
        policy = CompactPolicy(cfg.policy)
        return policy, fit_supervised(policy, task, records, cfg.train, seed=cfg.seed, run=run)

    return _fit("compact", pairs, out, cfg, train)


def fit_hf(pairs: str | Path, out: str | Path, cfg: HFFitConfig, task_name: str = "grounding") -> RunDir:
    """Supervised warm start of a vision-language policy (the paper's cold start) on a pair file, or on a
    question file with `task_name="mcq"` (the answers' format and letters, before `rlad grpo --task mcq`)."""
    cfg.validate()

    def train(task, records, run):
        from rlad.policies.hf_vlm.policy import HFVLMPolicy
        from rlad.policies.hf_vlm.warm_start import fit_supervised as fit_vlm

        policy = HFVLMPolicy(cfg.policy)
        prompts = [task.prompt(r) for r in records]
        texts = [task.answer_text(r, policy) for r in records]
        return policy, fit_vlm(policy, prompts, texts, cfg.train, seed=cfg.seed, run=run)

    return _fit("hf", pairs, out, cfg, train, get_task(task_name))


def _run_record(method: str, stage: str, pairs, task, cfg, **extra) -> dict:
    """What a grounding run folder is opened with (`RunDir.open`): a rerun with other values is refused."""
    return {"method": method, "stage": stage, "pairs": str(Path(pairs).resolve()), **extra,
            **({"task": task.name} if task.name != "grounding" else {}), **cfgmod.to_dict(cfg)}


@contextmanager
def _training(run: RunDir, cfg, keep_on_failure=lambda: False):
    """Seeded, on `cfg.threads` threads; a failure (a model that cannot load, Ctrl-C) discards the
    half-made run, so the next command does not misread it, unless `keep_on_failure()` (a run that
    has checkpoints to resume from)."""
    seed_everything(cfg.seed)
    try:
        with torch_threads(cfg.threads):
            yield
    except BaseException:
        if not keep_on_failure():
            run.discard_unfinished()
        raise


def _fit(method: str, pairs, out, cfg, train, task=None) -> RunDir:
    task = task or GroundingTask()
    records = task.load(pairs)
    run = RunDir.open(out, _run_record(method, "warm_start", pairs, task, cfg))
    if run.finished:
        return run
    with _training(run, cfg):
        started = time.perf_counter()
        policy, history = train(task, records, run)
        seconds = time.perf_counter() - started
        _save_policy(run, policy)
    run.save_metrics({"fit_seconds": round(seconds, 2), "pairs": len(records),
                      "final_loss": history[-1]["loss"] if history else None}, key="fit")
    status(f"{out}: warm start done in {seconds:.1f} s ({len(records)} pairs)")
    return run


def _save_policy(run: RunDir, policy) -> None:
    """model.pt (what rlad loads), plus the policy in its ecosystem's own format where it has one
    (a VLM: RUN/hf, adapter or weights + processor, for TRL, verl, vLLM)."""
    run.save_model(policy.save_payload())
    export = getattr(policy, "export", None)
    if export is not None:
        export(run.path / "hf")


# --------------------------------------------------------------------------------------- grpo
def load_policy(run_path: str | Path):
    """The policy saved in a grounding run directory."""
    run = RunDir(run_path).require_model()
    return policy_from_payload(run.load_model(), run_path)


def grpo(pairs: str | Path, out: str | Path, cfg: GRPORunConfig | None = None, init: str | Path | None = None,
         policy_name: str = "compact", task_name: str = "grounding", engine: str = "rlad") -> RunDir | None:
    """GRPO-train a policy (from `init`'s policy, or a fresh one) on a task's record file, with rlad's own
    loop (one process) or through TRL (`engine="trl"`, any number of processes under accelerate/torchrun;
    None is returned on every process but the main one, which saves the run)."""
    task = get_task(task_name)
    cfg = cfg or build_grpo_config(policy_name=policy_name, task_name=task_name, engine=engine)
    if task.name not in policy_class(policy_name).tasks:  # before building it (a VLM takes long to load)
        raise ConfigError(f"the {policy_name!r} policy cannot answer the {task.name!r} task")
    if engine == "trl" and not isinstance(cfg, TRLGRPORunConfig):
        raise ConfigError("engine 'trl' needs the config of build_grpo_config(..., engine='trl')")
    if engine == "trl":
        from rlad.integrations.trl import require_trl

        require_trl()
    saved = _run_record(policy_name, "grpo", pairs, task, cfg, init=str(Path(init).resolve()) if init else None,
                        **({"engine": engine} if engine != "rlad" else {}))
    records = task.load(pairs)
    if init:
        policy = load_policy(init)
        if policy.name != policy_name:
            raise ConfigError(f"--init {init}: holds a {policy.name!r} policy, not {policy_name!r}")
        saved["policy"] = policy.config_dict()
    _refuse_changed_engine_run(out, saved)
    run = RunDir.open(out, saved)
    if run.finished:
        return run
    # Before its first checkpoint (rlad's or TRL's), a failed run leaves nothing behind.
    with _training(run, cfg, keep_on_failure=lambda: any((run.path / "trl").glob("checkpoint-*"))):
        if not init:
            policy = policy_class(policy_name)(cfg.policy)
        if engine == "trl":
            from rlad.integrations.trl import is_main_process, train_trl

            summary = train_trl(policy, task, records, cfg.grpo, cfg.trl, run)
            if not is_main_process():
                return None  # the main process saves the run
        else:
            summary = train_grpo(policy, task, records, cfg.grpo, run=run)
        _save_policy(run, policy)
    run.save_metrics({k: v for k, v in summary.items() if k != "last"} | {"pairs": len(records)}, key="grpo")
    status(f"{out}: {summary['steps']} GRPO steps, {summary['completions_scored']} completions scored "
           f"({summary['completions_per_s']:.0f}/s)")
    return run


def _refuse_changed_engine_run(out: str | Path, saved: dict) -> None:
    """RunDir.open refuses a changed config once rlad checkpoints exist; TRL keeps its own (RUN/trl)."""
    run = RunDir(out)
    if run.config_path.is_file() and any((run.path / "trl").glob("checkpoint-*")) and run.load_config() != saved:
        raise ConfigError(f"{run.path}: already holds a run with a different config; rerun with the same options to "
                          f"resume, or choose a new --out (saved config: {run.config_path})")


# --------------------------------------------------------------------------------- evaluation
def predict_boxes(policy, records: Sequence, batch_size: int = 64, threads: int | None = None) -> tuple[list, list[str]]:
    """Greedy answers: (boxes in original query pixels, None when unparsable; texts)."""
    task = GroundingTask()
    prompts = [task.prompt(r) for r in records]
    with torch_threads(getattr(policy, "cpu_threads", 1) if threads is None else threads):
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
