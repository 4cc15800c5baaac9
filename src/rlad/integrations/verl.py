"""verl (Ray + FSDP/Megatron, vLLM/SGLang rollout), the engine for clusters: rlad's pair files as verl's
parquet rows, rlad's rewards as verl's `compute_score`, and DifferAD-R1's difficulty-weighted group
advantage as an advantage estimator verl can register. docs/vlm.md has the verl command line.

verl itself is never imported here except by `register` (it needs Ray, and pins transformers < 5.11,
which rlad's vlm extra does not match), so everything below is usable and tested without it.

* Rows (verl's RLHFDataset format): `data_source`, `prompt` (chat messages; each `<image>` in the text
  is replaced, in order, by an entry of `images`), `images` ({"bytes": PNG}), `ability`,
  `reward_model` ({"style": "rule", "ground_truth": JSON}), `extra_info`. Both images are stored
  already resized to the size the model's processor gives them, so verl's own resizing and the
  processor leave them as they are and a Qwen2.5-VL target (pixels of the model input) stays exact.
* `compute_score` returns verl's dict form: "score" is exactly rlad's summed reward, and each reward is
  a key of its own (per-sample metrics; `algorithm.filter_groups.metric=dclr` selects one).
* verl hands an advantage estimator the summed score per sample, not its parts, so the estimator
  recovers the localization reward from the DifferAD-R1 sum (format in {0, 1} + localization in
  [0, 1]): score - 1 above 1, the score below 1, and 0 at exactly 1 (docs/vlm.md: what that changes).
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from rlad.errors import ConfigError

DATA_SOURCE = "rlad_grounding"
ESTIMATOR = "rlad_difficulty_grpo"
DEFAULT_REWARDS = ("format", "dclr")


# ------------------------------------------------------------------------------------- rows
def _png(path: str, size_hw: tuple[int, int]) -> bytes:
    from PIL import Image

    from rlad.policies.hf_vlm.chat import load_images
    from rlad.rl.rollout import Prompt

    image = load_images(Prompt(images=(path,)))[0]
    if image.size != (size_hw[1], size_hw[0]):
        image = image.resize((size_hw[1], size_hw[0]), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def parquet_rows(task, records: Sequence, frame, split: str = "train") -> list[dict]:
    """verl rows for pair records, in the coordinate convention of `frame` (a `CoordinateFrame` or a
    policy: `coordinate_mode` and `resized_hw`)."""
    rows = []
    for index, record in enumerate(records):
        prompt = task.prompt(record)
        sizes = [frame.resized_hw(hw) for hw in (record.reference_size, record.query_size)]
        messages = ([{"role": "system", "content": prompt.system}] if prompt.system else []) + [
            {"role": "user", "content": "<image>" * len(prompt.images) + prompt.text}]
        rows.append({
            "data_source": DATA_SOURCE,
            "prompt": messages,
            "images": [{"bytes": _png(path, hw)} for path, hw in zip(prompt.images, sizes)],
            "ability": "grounding",
            "reward_model": {"style": "rule", "ground_truth": json.dumps({"box": list(task.target(record, frame).box)})},
            "extra_info": {"split": split, "index": index, "id": record.id, "query_size": list(record.query_size),
                           "model_input_hw": list(sizes[1]), "coordinate_mode": frame.coordinate_mode.value},
        })
    return rows


def write_parquet(rows: Sequence[dict], out: str | Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlad.engine import atomic_write_bytes

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(list(rows)), buffer)
    atomic_write_bytes(out, buffer.getvalue())
    return Path(out)


def export_pairs(pairs: str | Path, model: str, out: str | Path, split: str = "train", min_pixels: int = 0,
                 max_pixels: int = 0) -> int:
    """A pair file as a verl parquet file for `model`'s family and processor; returns the row count."""
    from rlad.policies.hf_vlm.loading import CoordinateFrame
    from rlad.tasks.grounding import GroundingTask

    task = GroundingTask()
    records = task.load(pairs)
    frame = CoordinateFrame.from_checkpoint(model, min_pixels, max_pixels)
    write_parquet(parquet_rows(task, records, frame, split), out)
    return len(records)


# ------------------------------------------------------------------------------------ reward
@lru_cache(maxsize=16)
def _scorer(names: tuple[str, ...]):
    from rlad.rl.rewards import as_verl_compute_score

    return as_verl_compute_score(names, details=True)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, rewards: Sequence[str] = DEFAULT_REWARDS,
                  **kwargs) -> dict:
    """verl's `custom_reward_function` (`path` = this file, `name` = compute_score); `rewards` can be set
    with `custom_reward_function.reward_kwargs.rewards=[format,iou]`."""
    return _scorer(tuple(rewards))(data_source, solution_str, ground_truth, extra_info)


# --------------------------------------------------------------------------------- advantage
def primary_from_score(scores, rewards: Sequence[str] = DEFAULT_REWARDS):
    """The localization part of summed scores (see the module docstring)."""
    import torch

    from rlad.rl.rewards import LOCALIZATION_REWARDS

    located = [r for r in rewards if r in LOCALIZATION_REWARDS]
    if len(located) != 1 or set(rewards) - LOCALIZATION_REWARDS - {"format"}:
        raise ConfigError(f"the {ESTIMATOR} estimator needs one localization reward plus optionally 'format', "
                          f"got {list(rewards)}")
    if "format" not in rewards:
        return scores
    return torch.where(scores > 1, scores - 1, torch.where(scores < 1, scores, torch.zeros_like(scores)))


def difficulty_weighted_grpo_advantage(token_level_rewards, response_mask, index, config=None, epsilon: float = 1e-4,
                                       norm_adv_by_std_in_grpo: bool | None = None, error_threshold: float = 0.3,
                                       rewards: Sequence[str] = DEFAULT_REWARDS, **kwargs):
    """verl's advantage-estimator signature -> (advantages, returns), both (batch, response tokens).

    Rows are grouped by `index` (verl's uid; never by position, since verl reorders its batch); each
    group gets rlad's group advantage (rl.grpo.group_advantages: unbiased std + 1e-4, or no scaling
    with `algorithm.norm_adv_by_std_in_grpo=False`) times its difficulty weight. A group of one has
    no spread and gets 0.
    """
    import torch

    from rlad.rl.grpo import difficulty_weights, group_advantages

    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = bool(getattr(config, "norm_adv_by_std_in_grpo", True)) if config is not None else True
    scores = token_level_rewards.sum(dim=-1).float()
    members: dict = {}
    for row, uid in enumerate(index):
        members.setdefault(uid, []).append(row)
    advantages = torch.zeros_like(scores)
    for rows in members.values():
        if len(rows) < 2:
            continue
        group = scores[rows].unsqueeze(0)
        weight = difficulty_weights(primary_from_score(group, rewards), error_threshold)
        scaled = group_advantages(group, "std" if norm_adv_by_std_in_grpo else "none", eps=epsilon)
        advantages[rows] = (scaled * weight[:, None])[0]
    per_token = advantages.unsqueeze(-1).to(response_mask.dtype) * response_mask
    return per_token, per_token


def register() -> None:
    """Register the estimator with verl as "rlad_difficulty_grpo". verl computes advantages in a Ray
    worker, so run this in every worker: `+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook=
    rlad.integrations.verl.register` (docs/vlm.md)."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, register_adv_est

    if ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR) is not difficulty_weighted_grpo_advantage:
        register_adv_est(ESTIMATOR)(difficulty_weighted_grpo_advantage)


# ------------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """`python -m rlad.integrations.verl PAIRS.jsonl --model PATH --out train.parquet`"""
    import argparse
    import sys

    from rlad.errors import RladError

    parser = argparse.ArgumentParser(prog="python -m rlad.integrations.verl",
                                     description="Write a pair file as verl parquet rows for a Qwen-VL checkpoint.")
    parser.add_argument("pairs", metavar="PAIRS.jsonl")
    parser.add_argument("--model", required=True, metavar="PATH", help="the checkpoint verl will train")
    parser.add_argument("--out", required=True, metavar="OUT.parquet")
    parser.add_argument("--split", default="train")
    parser.add_argument("--min-pixels", type=int, default=0, help="the image pixel budget verl's processor will use")
    parser.add_argument("--max-pixels", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        n = export_pairs(args.pairs, args.model, args.out, args.split, args.min_pixels, args.max_pixels)
    except RladError as exc:
        print(f"rlad: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{n} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
