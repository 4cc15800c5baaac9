"""DifferAD-R1's task: a normal reference image and a query image -> one box around the difference
(the zero box for a normal query), trained with format + DCLR rewards.

Records are `PairRecord`s (`rlad.data.pairs.records`). The ground-truth box is stored in the query's
original pixels and converted into the policy's coordinate convention here (`target`); answers are
converted back to original pixels (`answer_box`) before anything is scored against the records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from rlad.boxes import parse_answer, to_pixels, to_policy_coords
from rlad.errors import ConfigError
from rlad.rl.rewards import RewardTarget
from rlad.rl.rollout import Completion, Prompt
from rlad.tasks.base import Task

ANSWER_FORMAT = ("Think about the differences first inside <think>...</think>, then give the box inside "
                 "<answer>(x1,y1),(x2,y2)</answer>, or <answer>(0,0),(0,0)</answer> when nothing is abnormal.")
INSTRUCTION = ("The first image is a defect-free reference of a product; the second image is a query of the same "
               "product. Find the region of the query that is abnormal compared with the reference, ignoring "
               "changes of lighting and viewpoint.")


class GroundingTask(Task):
    name = "grounding"
    default_rewards = ("format", "dclr")
    primary_rewards = frozenset({"dclr", "iou"})
    primary_kind = "localization"

    def load(self, path: str | Path) -> list:
        from rlad.data.pairs.records import load_pairs

        return load_pairs(path)

    def prompt(self, record) -> Prompt:
        return Prompt(images=(record.reference, record.query), text=INSTRUCTION, system=ANSWER_FORMAT, key=record.id)

    def target(self, record, policy) -> RewardTarget:
        box = to_policy_coords(record.box, policy.coordinate_mode, record.query_size,
                               policy.resized_hw(record.query_size))
        return RewardTarget(box=box)

    def check_rewards(self, names, needs_primary: bool) -> None:
        super().check_rewards(names, needs_primary)
        both = sorted(set(names) & self.primary_rewards)
        if len(both) > 1:
            raise ConfigError(f"grpo.rewards lists {len(both)} localization rewards ({', '.join(both)}): their sum "
                              f"runs from 0 to {len(both)}, which breaks the difficulty weight and the invalid-group "
                              f"test; keep one (dclr is the paper's, iou its ablation)")

    def answer_box(self, text: str, record, policy):
        """The first valid box of an answer in the query's original pixels (None if unparsable)."""
        box = parse_answer(text).box
        if box is None:
            return None
        return to_pixels(box, policy.coordinate_mode, record.query_size, policy.resized_hw(record.query_size))

    def rollout_stats(self, groups: Sequence[Sequence[Completion]], targets: Sequence[RewardTarget]) -> dict:
        """mean_iou: mean per-query score (IoU; 1 for a zero box on a normal query) in the policy's coordinates."""
        from rlad.metrics.grounding import query_score

        scores = [query_score(parse_answer(c.text).box, t.box) for group, t in zip(groups, targets) for c in group]
        return {"mean_iou": float(np.mean(scores)) if scores else 0.0}


def grounding_report(pred_boxes: Sequence, records: Sequence) -> dict:
    """Grounding metrics + exploit statistics of boxes (original pixels) against pair records."""
    from rlad.metrics.grounding import box_exploit_stats, grounding_metrics
    from rlad.rl.rewards import dclr_from_boxes

    gt = [r.box for r in records]
    metrics = grounding_metrics(pred_boxes, gt)
    metrics.update(box_exploit_stats(pred_boxes, gt, [r.query_size for r in records]))
    metrics["mean_dclr"] = sum(dclr_from_boxes(p, g) for p, g in zip(pred_boxes, gt)) / len(gt)
    return metrics
