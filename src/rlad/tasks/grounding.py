"""DifferAD-R1's task: a normal reference image and a query image -> one box around the difference
(the zero box for a normal query), trained with format + DCLR rewards.

Records are `PairRecord`s (`rlad.data.pairs.records`). The ground-truth box is stored in the query's
original pixels and converted into the policy's coordinate convention here (`target`); answers are
converted back to original pixels (`answer_box`) before anything is scored against the records.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from rlad.boxes import format_answer, is_zero_box, parse_answer, to_pixels, to_policy_coords
from rlad.errors import ConfigError
from rlad.rl.rewards import RewardTarget
from rlad.rl.rollout import Completion, Prompt
from rlad.tasks.base import Task

ANSWER_FORMAT = ("Think about the differences first inside <think>...</think>, then give the box inside "
                 "<answer>(x1,y1),(x2,y2)</answer>, or <answer>(0,0),(0,0)</answer> when nothing is abnormal.")
INSTRUCTION = ("The first image is a defect-free reference of a product; the second image is a query of the same "
               "product. Find the region of the query that is abnormal compared with the reference, ignoring "
               "changes of lighting and viewpoint.")
# The paper draws each sample's instruction from a pool of paraphrases; this pool was written for rlad.
# A record always gets the same one (picked by a hash of its id), so runs and evaluations are repeatable.
INSTRUCTIONS = (
    INSTRUCTION,
    "Image one shows the product without defects. Image two shows another unit of it. Locate the part of image two "
    "that is abnormal when compared with image one; differences in illumination or camera angle do not count.",
    "Compare the query (second image) against the normal reference (first image) and mark where the query is "
    "defective. Ignore shifts in lighting or position.",
    "You see a good sample first and a sample under inspection second. Point out the defective area of the second "
    "one relative to the first, disregarding brightness and viewpoint changes.",
    "Reference first, query second. Which region of the query deviates from the reference in a way that is a "
    "defect rather than a change of light or angle?",
    "The first picture is a flawless example; the second may contain a flaw. Find the flaw in the second picture by "
    "comparing the two, and do not treat lighting or viewpoint differences as flaws.",
    "Inspect the second image for anomalies, using the first image as the defect-free standard. Lighting and "
    "perspective differences are not anomalies.",
    "Given a normal reference and a query of the same object, localize the abnormal region of the query. Changes of "
    "illumination and viewpoint should be ignored.",
    "Look at both images. The first one is correct. Where does the second one differ from it because of a defect? "
    "Pay no attention to lighting or camera changes.",
    "Spot the defect: image 1 is the template of a good part, image 2 is the part to check. Report the abnormal "
    "region of image 2, not differences caused by light or pose.",
    "Using the defect-free first image as reference, identify the anomalous region in the second image. Variation "
    "in lighting and viewpoint is expected and is not a defect.",
    "The task is visual inspection. Image one: known-good reference. Image two: query. Find where the query is "
    "abnormal, ignoring harmless changes such as brightness or angle.",
    "Compare the two images of the product. The first is normal. Mark the region of the second that shows damage or "
    "contamination; lighting and viewpoint changes are not damage.",
    "Find the difference that matters: the first image is a normal product, the second may be defective. Localize "
    "the defect in the second image and ignore light and viewpoint variations.",
    "Check the second image against the first, which has no defects. Where is the second image abnormal? Do not "
    "report changes of illumination or camera position.",
    "A normal reference comes first and a query second. Determine the defective region of the query; illumination "
    "and viewpoint differences between the images should not be reported.",
    "The first image shows what the product should look like. Find the part of the second image that does not "
    "match because of a defect, ignoring light and perspective.",
    "Identify the abnormal area of the query image by comparing it with the reference image, which is free of "
    "defects. Lighting and viewpoint changes are irrelevant.",
    "Two images of the same product: a good one, then one to inspect. Locate any defect in the one to inspect, "
    "looking past differences of lighting and angle.",
    "Compare the inspected item (second image) with the good item (first image) and localize the anomaly in the "
    "inspected item; changes in light or viewpoint are not anomalies.",
)


class GroundingTask(Task):
    name = "grounding"
    default_rewards = ("format", "dclr")
    primary_rewards = frozenset({"dclr", "iou"})
    primary_kind = "localization"

    def load(self, path: str | Path) -> list:
        from rlad.data.pairs.records import load_pairs

        return load_pairs(path)

    def prompt(self, record) -> Prompt:
        text = INSTRUCTIONS[zlib.crc32(record.id.encode()) % len(INSTRUCTIONS)]
        return Prompt(images=(record.reference, record.query), text=text, system=ANSWER_FORMAT, key=record.id)

    def answer_text(self, record, policy) -> str:
        """The ground-truth answer in the task's format and the policy's coordinates (warm-start teacher).

        The think block is a short fixed sentence: the warm start teaches the answer format and the
        coordinate convention, not reasoning (rlad has no reasoning traces to distil).
        """
        box = self.target(record, policy).box
        think = ("The query matches the reference." if is_zero_box(box)
                 else "The query differs from the reference in one region.")
        return format_answer(box, think=think)

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


def prompt_corpus() -> list[str]:
    """Every text a grounding prompt can hold (to train the tokenizer of a tiny test model)."""
    return [ANSWER_FORMAT, *INSTRUCTIONS]


def grounding_report(pred_boxes: Sequence, records: Sequence) -> dict:
    """Grounding metrics + exploit statistics of boxes (original pixels) against pair records."""
    from rlad.metrics.grounding import box_exploit_stats, grounding_metrics
    from rlad.rl.rewards import dclr_from_boxes

    gt = [r.box for r in records]
    metrics = grounding_metrics(pred_boxes, gt)
    metrics.update(box_exploit_stats(pred_boxes, gt, [r.query_size for r in records]))
    metrics["mean_dclr"] = sum(dclr_from_boxes(p, g) for p, g in zip(pred_boxes, gt)) / len(gt)
    return metrics
