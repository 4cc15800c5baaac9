"""`rlad grpo --policy hf --engine trl`: the same GRPO recipe through TRL's `GRPOTrainer` (pinned
1.16.0), which brings data parallelism, DeepSpeed/FSDP through accelerate, vLLM generation and TRL's
loss variants. The policy, its processor, the pair file, rlad's rewards and rlad's GRPO maths stay
the same; TRL generates, computes log-probs and takes the optimizer steps.

What maps to what (docs/vlm.md has the full table and the differences):
* the record file -> a dataset with a conversational `prompt` (the policy's own chat messages), `images`
  (decoded lazily from their paths) and the target: `box` in the policy's coordinates (pairs), or
  `choice` and `options` (questions); each configured reward -> a TRL reward function reading them;
* DifferAD-R1's two additions live in `RladGRPOTrainer._generate_and_score_completions`: invalid
  groups are regenerated (on every rank in lock-step, since the decision is taken on gathered
  rewards) and replace their first samples before the advantages are computed; the difficulty
  weight of each group, from its first samples, multiplies that group's advantages;
* prompts_per_step prompts x group_size completions make one optimizer step on any number of
  processes, as in rlad's own loop.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rlad.config import raise_if_problems
from rlad.errors import ConfigError

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
_COMPLETION_PADDING = {"completion_ids": None, "completion_mask": 0, "old_per_token_logps": 0.0,
                       "ref_per_token_logps": 0.0, "sampling_per_token_logps": 0.0, "importance_sampling_ratio": 0.0}


@dataclass
class TRLEngineConfig:
    """`--set trl.KEY=VALUE`, used with `--engine trl` only."""

    loss_type: str = ""
    """TRL's loss aggregation: grpo (per-sequence token mean, the paper's), bnpo, dr_grpo, dapo, cispo, sapo,
    luspo, vespo; "" follows grpo.aggregation (sequence -> grpo, token -> dapo)."""
    importance_sampling_level: str = "token"
    """"token" (GRPO) or "sequence" (GSPO)."""
    per_device_prompts: int = 1
    """Prompts per process per micro-batch; prompts_per_step must be a multiple of this x processes."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other trl.GRPOConfig field, passed through as is (e.g. use_vllm, vllm_mode, delta, top_entropy_quantile)."""

    def validate(self) -> "TRLEngineConfig":
        raise_if_problems([
            None if self.loss_type in ("", *LOSS_TYPES)
            else f"trl.loss_type {self.loss_type!r} is not one of {', '.join(LOSS_TYPES)}",
            None if self.importance_sampling_level in ("token", "sequence")
            else f"trl.importance_sampling_level must be token or sequence, got {self.importance_sampling_level!r}",
            None if self.per_device_prompts >= 1 else "trl.per_device_prompts must be >= 1",
        ])
        return self


def require_trl() -> None:
    """`--engine trl` refused in one line, before the policy loads, when TRL's part of the vlm extra is missing."""
    from rlad.policies.hf_vlm.loading import VLM_MODULES, require_vlm_extra

    require_vlm_extra((*VLM_MODULES, "trl", "datasets", "accelerate"), what="--engine trl")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# ------------------------------------------------------------------------------------ dataset
def task_dataset(task, records: Sequence, policy):
    """A task's records as a TRL dataset: prompt (chat messages with image placeholders), images (paths,
    decoded to PIL lazily), id, and the reward target in the policy's conventions, one column per field
    the task sets: box (JSON, grounding), choice and options (the letters, "ABCD"; multiple choice)."""
    from datasets import Dataset, Features, Image, List, Value

    from rlad.policies.hf_vlm.chat import messages

    rows, targets = {"prompt": [], "images": [], "id": []}, []
    for record in records:
        prompt = task.prompt(record)
        rows["prompt"].append(messages(prompt))
        rows["images"].append([str(p) for p in prompt.images])
        rows["id"].append(record.id)
        targets.append(task.target(record, policy))
    encode = {"box": lambda box: json.dumps(list(box)), "choice": str, "options": "".join}
    for name, write in encode.items():
        if any(getattr(t, name) is not None for t in targets):
            rows[name] = [write(getattr(t, name)) for t in targets]
    part = {"type": Value("string"), "text": Value("string")}
    features = Features({"prompt": List({"role": Value("string"), "content": List(part)}), "images": List(Image()),
                         "id": Value("string"), **{name: Value("string") for name in encode if name in rows}})
    return Dataset.from_dict(rows, features=features)


def reward_functions(names: Sequence[str]) -> list:
    """rlad's rewards reading their target from the dataset's box / choice / options columns."""
    from rlad.rl.rewards import as_trl_reward

    return [as_trl_reward(name) for name in names]


# ------------------------------------------------------------------------------------ trainer
def _merge_rows(out: dict, fresh: dict, take: "Any", pad_token_id: int) -> dict:
    """`out` with the rows where `take` is True replaced by `fresh`'s (same prompts, new completions)."""
    import torch

    merged = dict(out)
    width = max(out["completion_ids"].shape[1], fresh["completion_ids"].shape[1])
    for key, fill in _COMPLETION_PADDING.items():
        if key not in out:
            continue
        a, b = out[key], fresh[key]
        if a.ndim == 2 and a.shape[1] > 1 or b.ndim == 2 and b.shape[1] > 1:
            value = fill if fill is not None else pad_token_id
            a = torch.nn.functional.pad(a, (0, width - a.shape[1]), value=value)
            b = torch.nn.functional.pad(b, (0, width - b.shape[1]), value=value)
        rows = take.view(-1, *([1] * (a.ndim - 1)))
        merged[key] = torch.where(rows, b, a)
    prompt_width = out["prompt_ids"].shape[1]
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in out:  # prompt part as it was, zeros over the (new) completion width
            prompt_part = out[key][:, :prompt_width]
            merged[key] = torch.cat([prompt_part, prompt_part.new_zeros(prompt_part.shape[0], width)], dim=1)
    return merged


def make_trainer_class():
    """RladGRPOTrainer, defined when TRL is imported (rlad's import of this module stays light)."""
    import torch
    from trl import GRPOTrainer

    from rlad.rl.grpo import difficulty_weights, group_advantages, invalid_groups

    class RladGRPOTrainer(GRPOTrainer):
        """GRPOTrainer + DifferAD-R1's group resampling and difficulty weights (rlad.rl.grpo maths)."""

        def __init__(self, *args, rlad_grpo, primary_columns: Sequence[int], **kwargs):
            super().__init__(*args, **kwargs)
            self.rlad_grpo, self.primary_columns = rlad_grpo, list(primary_columns)
            self.completions_scored = 0
            self._last_rewards = None

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            """Full weights read back through `from_pretrained`. transformers 5.23's Trainer loads a checkpoint's
            tensors by their names on disk, which for the Qwen-VL families are the hub's (`model.layers.*`,
            `visual.*`) rather than the modules' (`model.language_model.*`, `model.visual.*`); it loads with
            strict=False, so nothing would load and a resumed full fine-tuning run would silently continue
            from its starting weights. Adapters (peft), FSDP and DeepSpeed checkpoints take TRL's own path."""
            from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

            target = self.accelerator.unwrap_model(model if model is not None else self.model)
            full = any((Path(resume_from_checkpoint) / name).is_file() for name in (SAFE_WEIGHTS_NAME,
                                                                                     SAFE_WEIGHTS_INDEX_NAME))
            if not full or hasattr(target, "peft_config") or self.is_fsdp_enabled or self.is_deepspeed_enabled:
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            saved = type(target).from_pretrained(resume_from_checkpoint, dtype=target.dtype)
            target.load_state_dict(saved.state_dict(), strict=True)
            return None

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._last_rewards = rewards  # (completions of all processes, reward functions)
            return rewards

        def _primary(self, rewards):
            columns = self.primary_columns or list(range(rewards.shape[1]))
            return rewards[:, columns].sum(-1).view(-1, self.num_generations)

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if not self.model.training:
                return out
            cfg, G, device = self.rlad_grpo, self.num_generations, self.accelerator.device
            local = len(inputs)
            process = slice(self.accelerator.process_index * local, (self.accelerator.process_index + 1) * local)
            rewards = self._last_rewards.clone().cpu()
            primary = self._primary(rewards)
            weights = difficulty_weights(primary, cfg.error_threshold) if cfg.reweighting else torch.ones(len(primary))
            invalid = invalid_groups(primary)
            first_invalid, resampled, scored = int(invalid.sum()), 0, rewards.shape[0]
            if cfg.resampling:
                for _ in range(cfg.rounds):
                    if not bool(invalid.any()):  # the same decision on every rank (gathered rewards)
                        break
                    fresh = super()._generate_and_score_completions(inputs)
                    redo = invalid.repeat_interleave(G)
                    rewards[redo] = self._last_rewards.cpu()[redo]
                    out = _merge_rows(out, fresh, redo[process].to(device), self._tokenizer.pad_token_id)
                    resampled += int(invalid.sum())
                    scored += int(redo.sum())
                    invalid = invalid_groups(self._primary(rewards))
            advantages = group_advantages(rewards.sum(-1).view(-1, G), cfg.advantage_scale)
            if cfg.resampling:
                advantages[invalid] = 0.0
            advantages = advantages * weights[:, None]
            out["advantages"] = advantages.flatten()[process].to(device)
            out["num_items_in_batch"] = self.accelerator.gather(out["completion_mask"].sum()).sum()
            self.completions_scored += scored
            metrics = self._metrics["train"]
            metrics["rlad/groups_invalid"].append(first_invalid)
            metrics["rlad/groups_resampled"].append(resampled)
            metrics["rlad/groups_still_invalid"].append(int(invalid.sum()) if cfg.resampling else first_invalid)
            metrics["rlad/difficulty_weight"].append(float(weights.mean()))
            metrics["rlad/completions_scored"].append(scored)
            return out

    return RladGRPOTrainer


# ---------------------------------------------------------------------------------- the route
@contextmanager
def _renamed_fields_quiet():
    """TRL 1.16 and peft 0.21 still use `gradient_checkpointing` names transformers 5 renamed (a warning per use)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
        yield


def _number(value):
    """TRL logs numbers as strings; a log line keeps them as numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def trl_arguments(policy, cfg, engine: TRLEngineConfig, output_dir: Path):
    """trl.GRPOConfig for rlad's GRPO settings (the mapping in docs/vlm.md)."""
    import torch
    from trl import GRPOConfig as TRLGRPOConfig

    per_step = engine.per_device_prompts * world_size()
    if cfg.prompts_per_step % per_step:
        raise ConfigError(f"grpo.prompts_per_step={cfg.prompts_per_step} must be a multiple of trl.per_device_prompts "
                          f"x processes = {per_step}")
    loss_type = engine.loss_type or ("grpo" if cfg.aggregation == "sequence" else "dapo")
    on_cpu = policy.device.type == "cpu"
    arguments = dict(
        # TRL counts each of the mu updates of one generation as a step; rlad counts generations.
        output_dir=str(output_dir), max_steps=cfg.steps * cfg.mu, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed,
        beta=cfg.beta, epsilon=cfg.eps_low, epsilon_high=cfg.eps_high, num_iterations=cfg.mu,
        num_generations=cfg.group_size, per_device_train_batch_size=engine.per_device_prompts * cfg.group_size,
        gradient_accumulation_steps=cfg.prompts_per_step // per_step,
        scale_rewards="group" if cfg.advantage_scale == "std" else "none", loss_type=loss_type,
        importance_sampling_level=engine.importance_sampling_level, mask_truncated_completions=True,
        max_completion_length=policy.cfg.max_new_tokens, temperature=policy.cfg.temperature, top_p=1.0, top_k=0,
        repetition_penalty=1.0, generation_kwargs={"suppress_tokens": policy.suppressed},
        use_cpu=on_cpu, bf16=policy.dtype == torch.bfloat16, fp16=policy.dtype == torch.float16,
        gradient_checkpointing=policy.cfg.gradient_checkpointing, disable_dropout=True,
        remove_unused_columns=False, logging_steps=1, save_strategy="steps", save_steps=cfg.checkpoint_every * cfg.mu,
        save_total_limit=2, report_to="none", dataloader_num_workers=0, disable_tqdm=True,
    )
    unknown = set(engine.extra) - set(TRLGRPOConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"trl.extra: {', '.join(sorted(unknown))} are not trl.GRPOConfig fields")
    arguments.update(engine.extra)
    try:
        with _renamed_fields_quiet():
            return TRLGRPOConfig(**arguments)
    except ValueError as exc:
        raise ConfigError(f"trl.GRPOConfig refused these settings: {exc}") from None


def train_trl(policy, task, records: Sequence, cfg, engine: TRLEngineConfig, run, callback=None) -> dict:
    """GRPO through TRL. `run` is the run directory (TRL's checkpoints go to RUN/trl; every process
    writes there, TRL saves on the main one); resumes from the newest TRL checkpoint."""
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint

    from rlad.engine import progress

    cfg.validate()
    engine.validate()
    task.check_rewards(cfg.rewards, needs_primary=cfg.reweighting or cfg.resampling)
    primary = [i for i, name in enumerate(cfg.rewards) if name in task.primary_rewards]
    output_dir = Path(run.path) / "trl"
    if cfg.beta > 0:
        policy.prepare_engine_reference(output_dir / "reference")
    arguments = trl_arguments(policy, cfg, engine, output_dir)
    main = is_main_process()

    class _Log(TrainerCallback):
        """rlad's log lines and progress bar (stderr) instead of TRL's printing (stdout is for --json)."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = progress(total=args.max_steps, initial=state.global_step, desc="grpo (trl)") if main else None

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

        def on_log(self, args, state, control, logs=None, **kwargs):
            line = {"stage": "grpo", "engine": "trl", "step": state.global_step,
                    **{k: _number(v) for k, v in (logs or {}).items()}}
            if main:
                run.log(line)
            if self.bar is not None and isinstance(line.get("reward"), float):
                self.bar.set_postfix(reward=f"{line['reward']:.3f}")
            if callback is not None:
                callback(line)

    with _renamed_fields_quiet():
        trainer = make_trainer_class()(
            model=policy.model, args=arguments, reward_funcs=reward_functions(cfg.rewards),
            train_dataset=task_dataset(task, records, policy), processing_class=policy.processor,
            callbacks=[_Log()], rlad_grpo=cfg, primary_columns=primary)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    started = time.perf_counter()
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    with _renamed_fields_quiet():
        trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - started
    policy.model = trainer.accelerator.unwrap_model(trainer.model)
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {"steps": cfg.steps, "completions_scored": trainer.completions_scored, "seconds": seconds,
            "completions_per_s": trainer.completions_scored / seconds if seconds > 0 else 0.0,
            "last": history[-1] if history else {}}
