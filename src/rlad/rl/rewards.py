"""Rewards: plain functions `reward(completion: str, target: RewardTarget) -> float`.

Box rewards compare the first valid box of the answer block with `target.box`, both in the policy's
coordinate convention (the box in the completion is never converted here). Choice rewards compare
letters. Adapters at the bottom expose any of them to TRL (`f(completions, **columns)`) and verl
(`compute_score(data_source, solution_str, ground_truth, extra_info)`).

Decisions worth knowing (also in docs/methods.md):

* Letters are read by a strict parser (`extract_choice`): an upper-case letter that is the whole
  block or line, or is followed by '.', ')', ',', ':' or ';', by the end of a line or by another lone
  letter, optionally in parentheses; the last such letter in the block wins. The English article "A" (always followed by a
  word) is therefore never read as a choice, unlike in the released AnomalyR1 code. Lower-case
  letters are never choices.
* When the target names its options (`RewardTarget.options`), only those letters are choices: a
  letter outside them is no answer (and is ignored in the reasoning).
* The answer letter must be unambiguous: answer blocks (after the think block) naming two different
  letters ("A) or C)", "A, B", or two blocks) have no answer letter, so listing options never pays.
  Besides the strict letters, any other option letter standing alone in the answer ("B or C", "B/C",
  "C,D") makes it ambiguous too; only "A" (and "I") followed by a word other than "or"/"and"/"nor" is
  read as English, not as a letter.
* The choice rewards need exactly one think block followed by exactly one answer block and no other
  think/answer tags: nested or duplicated tags, an answer before or inside the reasoning earn nothing.
  Evaluation (`answer_choice`) is more lenient: repeated answer blocks naming the same letter are
  read, but an answer block holding tags is not.
* ROAM with no letter in the answer at all is 0 (the table's 0.05 case needs a wrong *answer*).
* `choice_format` is the letter task's format reward: a think block, then exactly one answer block
  holding nothing but one option letter ("B", "(B)", "B." or "B)").
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from rlad.boxes import (box_area, box_center, box_diagonal, box_iou, is_degenerate, is_zero_box,
                        parse_answer, split_blocks)
from rlad.errors import ConfigError, DataError

# A letter that is a choice: not glued to other letters, digits or a preceding dot, optionally "(X", and followed by
# ".", ")" or the end of a line. The article "A" is followed by a word, so it never matches.
# A letter followed by another lone letter ("B C") is a choice too: articles are followed by words.
_LETTER_RE = re.compile(r"(?<![A-Za-z0-9.])\(?([A-Z])(?:[.),:;]|(?=[ \t]*(?:\n|$))|(?=[ \t]+\(?[A-Z](?![A-Za-z0-9])))"
                        r"(?![A-Za-z0-9])")
# What the format asks for: the answer block is one letter and nothing else.
_BARE_LETTER_RE = re.compile(r"\s*\(?([A-Z])[.)]?\s*")
# Any capital letter standing alone (not glued to letters, digits or dots): a mention of that option.
_MENTION_RE = re.compile(r"(?<![A-Za-z0-9.])([A-Z])(?!\.?[A-Za-z0-9])")
_WORD_AFTER_RE = re.compile(r"[ \t]+([a-z]+)")
_ENGLISH_LETTERS = ("A", "I")  # the article and the pronoun, when a word follows
_CONNECTIVES = ("or", "and", "nor")
_TAG_RE = re.compile(r"</?(?:think|answer)>")
_STRUCTURE = ["<think>", "</think>", "<answer>", "</answer>"]
# The whole completion in the format: nothing but white space outside the two blocks.
_FORMAT_RE = re.compile(r"\s*<think>.*</think>\s*<answer>.*</answer>\s*", re.DOTALL)


@dataclass(frozen=True)
class RewardTarget:
    """What a reward compares a completion with."""

    box: tuple | None = None  # ground truth in the SAME coordinate convention as the completion
    choice: str | None = None  # correct letter for multiple-choice tasks
    options: tuple[str, ...] | None = None  # the letters a choice may take (None: any capital letter)


# ------------------------------------------------------------------------------------- format
def format_reward(completion: str, target: RewardTarget | None = None) -> float:
    """1 iff a <think> block precedes an <answer> block holding exactly one box of integers."""
    parsed = parse_answer(completion)
    ok = (parsed.has_think and parsed.has_answer and parsed.n_boxes == 1 and parsed.box is not None
          and parsed.integer_coords)
    return 1.0 if ok else 0.0


# --------------------------------------------------------------------------------- box rewards
def _target_box(target: RewardTarget | None, reward: str) -> tuple:
    if target is None or target.box is None:
        raise DataError(f"the {reward!r} reward needs a ground-truth box (target.box), got {target!r}")
    if len(target.box) != 4:
        raise DataError(f"the {reward!r} reward: ground-truth box {target.box!r} does not have 4 numbers")
    return tuple(target.box)


def dclr_from_boxes(pred, gt) -> float:
    """Dual-Consistency Localization Reward of DifferAD-R1 (range 0..1).

    Zero-box ground truth: 1 iff the prediction is the zero box. Otherwise a missing or zero
    prediction earns 0, and a real one `IoU + (1 - IoU) * CA` with
    `CA = clip(0.6 * center + 0.4 * area, 0, 1)` (0 when either box is degenerate), so a box with
    IoU 0 still earns something for being near and of the right size.
    """
    if is_zero_box(gt):
        return 1.0 if is_zero_box(pred) else 0.0
    if pred is None or is_zero_box(pred):
        return 0.0
    iou = box_iou(pred, gt)
    return iou + (1.0 - iou) * _consistency(pred, gt)


def _consistency(pred, gt) -> float:
    if is_degenerate(pred) or is_degenerate(gt):
        return 0.0
    (px, py), (gx, gy) = box_center(pred), box_center(gt)
    distance = math.hypot(px - gx, py - gy)
    center = 1.0 - min(1.0, distance / (max(box_diagonal(gt), box_diagonal(pred), 1.0) + 1e-6))
    area_gt = box_area(gt)
    area = 1.0 - min(1.0, abs(box_area(pred) - area_gt) / (area_gt + 1e-6))
    return min(1.0, max(0.0, 0.6 * center + 0.4 * area))


def dclr_reward(completion: str, target: RewardTarget) -> float:
    return dclr_from_boxes(parse_answer(completion).box, _target_box(target, "dclr"))


def iou_from_boxes(pred, gt) -> float:
    """The plain ablation reward: IoU, times `1 / (1 + |A(p) - A(g)| / A(g))` when 0 < IoU < 0.3.

    Normal queries follow the same rule as DCLR (1 iff the zero box is predicted).
    """
    if is_zero_box(gt):
        return 1.0 if is_zero_box(pred) else 0.0
    if pred is None or is_zero_box(pred):
        return 0.0
    iou = box_iou(pred, gt)
    if 0.0 < iou < 0.3:
        area_gt = box_area(gt)
        iou *= 1.0 / (1.0 + abs(box_area(pred) - area_gt) / area_gt)
    return iou


def iou_reward(completion: str, target: RewardTarget) -> float:
    return iou_from_boxes(parse_answer(completion).box, _target_box(target, "iou"))


# ------------------------------------------------------------------------------ choice rewards
def extract_choice(text: str | None, options: Sequence[str] | None = None) -> str | None:
    """The last strict choice letter in `text` (see module docstring), among `options` if given, or None."""
    if not text:
        return None
    letters = [x for x in _LETTER_RE.findall(text) if options is None or x in options]
    return letters[-1] if letters else None


def _mentions(block: str, options: Sequence[str] | None) -> set[str]:
    """Option letters standing alone anywhere in `block` ("B or C" mentions B and C), except "A" / "I"
    followed by a word that is not a connective (the article, the pronoun)."""
    found = set()
    for match in _MENTION_RE.finditer(block):
        letter = match.group(1)
        if letter in _ENGLISH_LETTERS:
            word = _WORD_AFTER_RE.match(block, match.end())
            if word is not None and word.group(1) not in _CONNECTIVES:
                continue
        if options is None or letter in options:
            found.add(letter)
    return found


def _answer_letter(answers: Sequence[str], options: Sequence[str] | None) -> str | None:
    """The one letter all answer blocks name, if it is among the options and no other option letter is
    mentioned beside it; None when there are none, several, one outside the options, or a block holds
    think/answer tags (nesting)."""
    if any(_TAG_RE.search(block) for block in answers):
        return None
    letters = {x for block in answers for x in _LETTER_RE.findall(block)}
    if len(letters) != 1:
        return None
    letter = letters.pop()
    if options is not None and letter not in options:
        return None
    mentioned = set().union(*(_mentions(block, options) for block in answers))
    return letter if mentioned <= {letter} else None


def answer_choice(completion: str, options: Sequence[str] | None = None) -> str | None:
    """The answered letter of a completion (what evaluation scores): the one letter named by its
    answer blocks (those after the think block when there is one; no think block needed), among
    `options` when given; None when unparsable or ambiguous."""
    if not isinstance(completion, str):
        return None
    # Answers drafted inside the reasoning are not answers: read only what follows it.
    after = completion.rsplit("</think>", 1)[-1] if "<think>" in completion else completion
    _, answers = split_blocks(after)
    return _answer_letter(answers, options)


def _target_letter(target: RewardTarget | None, reward: str) -> str:
    choice = None if target is None else target.choice
    letter = None if choice is None else str(choice).strip().strip("().").strip().upper()
    if not letter or len(letter) != 1 or not letter.isalpha():
        raise DataError(f"the {reward!r} reward needs a correct letter (target.choice), got {choice!r}")
    return letter


def _choice_blocks(completion: str) -> tuple[str, list[str]] | None:
    """(think text, [the answer block]) when the completion holds exactly one think block followed by
    exactly one answer block and no other think/answer tag; else None."""
    if not isinstance(completion, str):
        return None
    if [m.group(0) for m in _TAG_RE.finditer(completion)] != _STRUCTURE:
        return None
    return split_blocks(completion)


def choice_format_reward(completion: str, target: RewardTarget | None = None) -> float:
    """1 iff the completion is one <think> block, then one <answer> block holding one option letter and
    nothing else, with only white space around them (the letter task's format; options from `target`
    when it names them)."""
    blocks = _choice_blocks(completion)
    if blocks is None or not _FORMAT_RE.fullmatch(completion):
        return 0.0
    bare = _BARE_LETTER_RE.fullmatch(blocks[1][0])
    options = None if target is None else target.options
    return 1.0 if bare is not None and (options is None or bare.group(1) in options) else 0.0


def choice_reward(completion: str, target: RewardTarget) -> float:
    """1 iff the think/answer structure is present and the answer letter is the correct one."""
    truth = _target_letter(target, "choice")
    blocks = _choice_blocks(completion)
    if blocks is None:
        return 0.0
    return 1.0 if _answer_letter(blocks[1], target.options) == truth else 0.0


def roam_reward(completion: str, target: RewardTarget) -> float:
    """AnomalyR1's reasoning-answer consistency reward (t: letter concluded in the reasoning,
    a: letter answered, s: correct letter).

    t = a = s: 1.0; no t and a = s: 0.8; no t and a wrong: 0.05; t = a but wrong: 0.1; else 0
    (including a right answer that contradicts its reasoning, and no answer letter at all).
    """
    truth = _target_letter(target, "roam")
    blocks = _choice_blocks(completion)
    if blocks is None:
        return 0.0
    reasoned, answered = extract_choice(blocks[0], target.options), _answer_letter(blocks[1], target.options)
    if answered is None:
        return 0.0
    if reasoned is None:
        return 0.8 if answered == truth else 0.05
    if reasoned == answered:
        return 1.0 if answered == truth else 0.1
    return 0.0


# ------------------------------------------------------------------------------------ registry
RewardFn = Callable[[str, RewardTarget], float]

REWARDS: dict[str, RewardFn] = {
    "format": format_reward,
    "dclr": dclr_reward,
    "iou": iou_reward,
    "choice_format": choice_format_reward,
    "choice": choice_reward,
    "roam": roam_reward,
}
LOCALIZATION_REWARDS = {"dclr", "iou"}


def get_reward(name: str) -> RewardFn:
    try:
        return REWARDS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown reward {name!r}; valid rewards: {', '.join(sorted(REWARDS))}") from None


# ------------------------------------------------------------------------------------ adapters
def completion_text(completion: Any) -> str:
    """Plain text of a completion given as a string or as TRL's conversational form
    (`[{"role": "assistant", "content": str | [{"type": "text", "text": ...}, ...]}]`)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, Mapping)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        if assistant:
            content = assistant[-1].get("content", "")
            if isinstance(content, str):
                return content
            if isinstance(content, (list, tuple)):
                return "".join(part.get("text", "") for part in content
                               if isinstance(part, Mapping) and part.get("type", "text") == "text")
    raise DataError(f"cannot read a completion of type {type(completion).__name__}")


def _as_box(value) -> tuple | None:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            value = json.loads(value)
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"cannot read a box from {value!r}") from None
    if len(box) != 4:
        raise DataError(f"a box needs 4 numbers, got {value!r}")
    return box


def _as_options(value) -> tuple[str, ...] | None:
    """Option letters from a column: None, "ABCD", or a list of letters (or its JSON)."""
    if value is None:
        return None
    if isinstance(value, str):
        stripped = value.strip()
        value = json.loads(stripped) if stripped.startswith("[") else list(stripped)
    letters = tuple(str(v).strip().upper() for v in value)
    if not letters or any(len(x) != 1 or not x.isalpha() for x in letters):
        raise DataError(f"options must be letters such as 'ABCD', got {value!r}")
    return letters


_TARGET_FIELDS = ("box", "choice", "options")


def as_trl_reward(fn: RewardFn | str, target_columns: Mapping[str, str] | None = None) -> Callable:
    """Wrap a reward for TRL's GRPOTrainer: `f(completions, **columns) -> list[float]`.

    `target_columns` maps RewardTarget fields to dataset column names (default: the columns "box",
    "choice" and "options" feed the fields of the same name); absent columns leave the field None. The
    wrapper keeps the reward's name, which TRL uses in its logs (`rewards/<name>/mean`).
    """
    if isinstance(fn, str):
        fn = get_reward(fn)
    columns = dict(target_columns) if target_columns is not None else {name: name for name in _TARGET_FIELDS}
    unknown = set(columns) - set(_TARGET_FIELDS)
    if unknown:
        raise ConfigError(f"target_columns: {sorted(unknown)} are not RewardTarget fields ({', '.join(_TARGET_FIELDS)})")

    def reward(completions, **kwargs) -> list[float]:
        n = len(completions)
        values = {name: [None] * n for name in _TARGET_FIELDS}
        for field, column in columns.items():
            if kwargs.get(column) is not None:
                values[field] = list(kwargs[column])
                if len(values[field]) != n:
                    raise DataError(f"column {column!r} has {len(values[field])} values for {n} completions")
        targets = [RewardTarget(box=_as_box(b), choice=c, options=_as_options(o))
                   for b, c, o in zip(values["box"], values["choice"], values["options"])]
        return [float(fn(completion_text(c), t)) for c, t in zip(completions, targets)]

    reward.__name__ = getattr(fn, "__name__", "reward")
    reward.__qualname__ = reward.__name__
    return reward


def _verl_target(ground_truth) -> RewardTarget:
    """verl's `ground_truth` column as a RewardTarget: a dict (or its JSON) with "box" / "choice" /
    "options", a list of 4 numbers (a box) or a letter."""
    value = ground_truth
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            raise DataError("empty ground_truth: expected a box, a letter or a JSON object")
        if stripped[0] not in "[{":
            return RewardTarget(choice=stripped)
        try:
            value = json.loads(stripped)
        except ValueError:
            raise DataError(f"ground_truth is not valid JSON: {stripped[:80]!r}") from None
    if isinstance(value, Mapping):
        return RewardTarget(box=_as_box(value.get("box")), choice=value.get("choice"),
                            options=_as_options(value.get("options")))
    if isinstance(value, Iterable):
        return RewardTarget(box=_as_box(list(value)))
    raise DataError(f"cannot read a reward target from ground_truth={ground_truth!r}")


def as_verl_compute_score(names: Iterable[str] | str, details: bool = False) -> Callable:
    """A verl `compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)` that
    sums the named rewards (e.g. ["format", "dclr"] for DifferAD-R1's 0..2 total). With `details` it
    returns verl's dict form, `{"score": total, <name>: value, ...}` (verl keeps the extra keys as
    per-sample metrics, which its group filter can select)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ConfigError("as_verl_compute_score needs at least one reward name")
    fns = [get_reward(name) for name in names]

    def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        target = _verl_target(ground_truth)
        text = completion_text(solution_str)
        values = [float(fn(text, target)) for fn in fns]
        total = float(sum(values))
        return {"score": total, **dict(zip(names, values))} if details else total

    return compute_score
