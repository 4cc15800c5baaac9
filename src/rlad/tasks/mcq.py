"""AnomalyR1's task: a multiple-choice inspection question about an image (MMAD's format), answered
`<think>...</think><answer>X</answer>` with one option letter, trained with choice + ROAM rewards.

Records are `MCQRecord`s (`rlad.data.questions`). The prompt is what any vision-language policy
renders with its chat template: the images in the order the model sees them (the normal template(s)
first for the 1-shot protocol, then the inspected image), the question with its lettered options as
the user text, and the answer format as the system text. The reward target is the correct letter and
the option letters, so the strict parser accepts only a letter among them (`rlad.rl.rewards`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rlad.errors import ConfigError
from rlad.rl.rewards import RewardTarget, answer_choice
from rlad.rl.rollout import Completion, Prompt
from rlad.tasks.base import Task

ANSWER_FORMAT = ("You inspect industrial products for defects. Reason about the images first inside "
                 "<think>...</think>, then give only the letter of the one option you choose inside "
                 "<answer>...</answer>, for example <answer>B</answer>.")
ONE_SHOT = ("The first {n} shows a defect-free example of the product ({templates}); the last image is the "
            "inspected image.")
ZERO_SHOT = "The image is the inspected image."
# The warm start's reasoning: a fixed sentence naming no letter (ROAM then reads no reasoning letter), so
# the warm start teaches the format and the letters, not reasoning (rlad has no reasoning traces).
WARM_THINK = "I compare the inspected image with the options."
BOX_REWARDS = ("format", "dclr", "iou")


def question_text(record) -> str:
    """The question and its lettered options, one per line."""
    lines = [f"Question: {record.question}"]
    lines += [f"{letter}. {text}" for letter, text in zip(record.letters, record.options)]
    return "\n".join(lines)


class MCQTask(Task):
    name = "mcq"
    default_rewards = ("choice", "roam")
    primary_rewards = frozenset({"choice"})
    primary_kind = "correctness"
    grpo_defaults = {"rewards": list(default_rewards), "reweighting": False, "resampling": False}
    """AnomalyR1's recipe: choice + ROAM, without DifferAD-R1's difficulty weights and resampling."""

    def __init__(self, shots: int = 1):
        if shots < 0:
            raise ConfigError(f"shots must be >= 0, got {shots}")
        self.shots = shots

    def load(self, path: str | Path) -> list:
        from rlad.data.questions.records import load_question_file

        return load_question_file(path)

    def images(self, record) -> tuple[str, ...]:
        """The template(s) the protocol shows (up to `shots`), then the inspected image."""
        return (*record.templates[:self.shots], record.image)

    def prompt(self, record) -> Prompt:
        templates = len(self.images(record)) - 1
        if templates:
            context = ONE_SHOT.format(n="image" if templates == 1 else f"{templates} images",
                                      templates="a template" if templates == 1 else "templates")
        else:
            context = ZERO_SHOT
        return Prompt(images=self.images(record), text=f"{context}\n{question_text(record)}", system=ANSWER_FORMAT,
                      key=record.id)

    def answer_text(self, record, policy=None) -> str:
        """The correct answer in the task's format (the teacher of a supervised warm start, `rlad fit hf
        --questions`)."""
        return f"<think>{WARM_THINK}</think><answer>{record.answer}</answer>"

    def target(self, record, policy=None) -> RewardTarget:
        return RewardTarget(choice=record.answer, options=record.letters)

    def answer(self, text: str, record) -> str | None:
        """The letter a completion answers (among the record's options), None when unparsable."""
        return answer_choice(text, record.letters)

    def check_rewards(self, names, needs_primary: bool) -> None:
        boxes = sorted(set(names) & set(BOX_REWARDS))
        if boxes:
            raise ConfigError(f"grpo.rewards {boxes} score boxes; the mcq task answers with a letter: use "
                              f"choice_format, choice, roam (AnomalyR1: choice + roam)")
        super().check_rewards(names, needs_primary)

    def rollout_stats(self, groups: Sequence[Sequence[Completion]], targets: Sequence[RewardTarget]) -> dict:
        """accuracy: share of sampled answers naming the correct letter; parse_failure: share naming no
        single letter among the options."""
        letters = [(answer_choice(c.text, t.options), t.choice) for group, t in zip(groups, targets) for c in group]
        if not letters:
            return {"accuracy": 0.0, "parse_failure": 0.0}
        return {"accuracy": sum(a == truth for a, truth in letters) / len(letters),
                "parse_failure": sum(a is None for a, _ in letters) / len(letters)}


def prompt_corpus() -> list[str]:
    """Texts an MCQ prompt and answer hold (to train the tokenizer of a tiny test model)."""
    return [ANSWER_FORMAT, ONE_SHOT, ZERO_SHOT, WARM_THINK, "Question: Is there any defect in the object? Yes No",
            "Question: Which type of defect is present? Question: Where is the defect? top left center bottom right"]
