"""The strict letter parser behind the multiple-choice rewards and evaluation: every malformed answer
shape earns nothing, the well-formed ones earn what AnomalyR1's table says."""

from __future__ import annotations

import pytest

from rlad.rl.rewards import (RewardTarget, answer_choice, as_trl_reward, as_verl_compute_score,
                             choice_format_reward, choice_reward, extract_choice, roam_reward)

ABCD = ("A", "B", "C", "D")
TRUTH = RewardTarget(choice="B", options=ABCD)


def text(think, *answers):
    return (f"<think>{think}</think>" if think is not None else "") + "".join(f"<answer>{a}</answer>" for a in answers)


# Every malformed shape: no reward at all, and no answer letter for evaluation.
MALFORMED = [
    ("two letters", text("x", "B C")),
    ("two letters in parentheses", text("x", "(B) (C)")),
    ("two letters, comma", text("x", "A, B")),
    ("two letters, slash-free list", text("x", "B) or C)")),
    ("two answer blocks", text("x", "B", "C")),
    ("lower case", text("x", "b")),
    ("lower case in parentheses", text("x", "(b)")),
    ("option text instead of letter", text("x", "Yes")),
    ("option text, capitalised word", text("x", "Scratch")),
    ("empty answer", text("x", "")),
    ("blank answer", text("x", "   ")),
    ("letter outside the options", text("x", "E")),
    ("letter glued to a word", text("x", "Bx")),
    ("letter with digits", text("x", "B2")),
    ("unclosed answer", "<think>x</think><answer>B"),
    ("no answer block, letter after think", "<think>x</think> B"),
    ("letter only inside think", "<think>the answer is B.</think>"),
    ("answer inside think only", "<think>draft <answer>B</answer></think>"),
    ("not text", None),
    ("two letters joined by or", text("x", "B or C")),
    ("two letters joined by and", text("x", "B and C")),
    ("article-like A before a connective", text("x", "A or B")),
    ("either ... or", text("x", "either B or C")),
    ("two letters with a slash", text("x", "B/C")),
    ("two letters with a hyphen", text("x", "B-C")),
    ("two letters, comma without space", text("x", "B,C")),
    ("two letters glued", text("x", "BC")),
    ("lower case with a period", text("x", "b.")),
    ("option text of the right option", text("x", "hole")),
    ("nested answer tags", "<think>x</think><answer><answer>B</answer></answer>"),
    ("letter after an empty answer block", "<think>x</think><answer></answer> B"),
    ("letter before the structure, empty answer", "B <think>x</think><answer></answer>"),
    ("answer before the reasoning", "<answer>B</answer><think>x</think>"),
    ("empty completion", ""),
]


@pytest.mark.parametrize("name, completion", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_answers_earn_nothing(name, completion):
    assert choice_reward(completion, TRUTH) == 0.0
    assert roam_reward(completion, TRUTH) == 0.0
    assert choice_format_reward(completion, TRUTH) == 0.0
    assert answer_choice(completion, ABCD) is None


@pytest.mark.parametrize("answer", ["B", " B ", "(B)", "B.", "B)", "\nB\n"])
def test_well_formed_letters(answer):
    completion = text("the dark spot is a hole, so B.", answer)
    assert choice_format_reward(completion, TRUTH) == 1.0
    assert choice_reward(completion, TRUTH) == 1.0
    assert roam_reward(completion, TRUTH) == 1.0
    assert answer_choice(completion, ABCD) == "B"


@pytest.mark.parametrize("answer", ["B. hole", "The answer is B.", "Answer: B", "B: hole"])
def test_a_letter_in_prose_is_read_but_is_not_the_format(answer):
    completion = text("x", answer)
    assert choice_reward(completion, TRUTH) == 1.0
    assert answer_choice(completion, ABCD) == "B"
    assert choice_format_reward(completion, TRUTH) == 0.0


def test_answer_without_think_block():
    # Evaluation reads the letter; every reward needs the structure.
    assert answer_choice("<answer>B</answer>", ABCD) == "B"
    assert choice_reward("<answer>B</answer>", TRUTH) == roam_reward("<answer>B</answer>", TRUTH) == 0.0
    assert choice_format_reward("<answer>B</answer>", TRUTH) == 0.0
    # Bare text without any tags is no answer.
    assert answer_choice("B", ABCD) is None


def test_the_article_is_not_a_choice_in_answer_or_reasoning():
    completion = text("A scratch runs across it", "B")
    assert extract_choice("A scratch runs across it", ABCD) is None
    assert roam_reward(completion, TRUTH) == 0.8  # no letter in the reasoning, right answer


def test_options_restrict_letters_in_the_reasoning():
    # "E" is not an option: ignored in the reasoning, so the conclusion read is C.
    assert extract_choice("The answer is C. See figure E.", ABCD) == "C"
    assert extract_choice("The answer is C. See figure E.") == "E"
    assert roam_reward(text("It is C. See figure E.", "C"), RewardTarget(choice="C", options=ABCD)) == 1.0


def test_without_options_any_capital_letter_counts():
    assert answer_choice(text("x", "E")) == "E"
    assert choice_reward(text("x", "E"), RewardTarget(choice="E")) == 1.0
    assert choice_format_reward(text("x", "E")) == 1.0


def test_roam_with_options_pays_nothing_for_a_letter_outside_them():
    # Without options "E" is a wrong answer (0.05); with them it is no answer (0).
    assert roam_reward(text("hmm", "E"), RewardTarget(choice="B")) == 0.05
    assert roam_reward(text("hmm", "E"), TRUTH) == 0.0


def test_adapters_carry_the_options():
    fn = as_trl_reward("choice")
    completions = [text("x", "B"), text("x", "E")]
    assert fn(completions, choice=["B", "E"], options=["ABCD", ["A", "B", "C", "D"]]) == [1.0, 0.0]
    assert fn(completions, choice=["B", "E"]) == [1.0, 1.0]  # no options column: any letter
    score = as_verl_compute_score(["choice_format", "choice", "roam"])
    assert score("mcq", text("so B.", "B"), {"choice": "B", "options": "ABCD"}) == 3.0
    assert score("mcq", text("so E.", "E"), {"choice": "E", "options": "ABCD"}) == 0.0


# Structure problems the rewards refuse although evaluation can still read one letter.
BROKEN_STRUCTURE = [
    ("duplicated answer blocks, same letter", text("x", "B", "B")),
    ("duplicated think blocks", "<think>x</think><think>y</think><answer>B</answer>"),
    ("nested think tags", "<think><think>x</think></think><answer>B</answer>"),
    ("an answer drafted inside the reasoning", "<think>x <answer>B</answer></think><answer>B</answer>"),
    ("unclosed think", "<think>x<answer>B</answer>"),
]


@pytest.mark.parametrize("name, completion", BROKEN_STRUCTURE, ids=[m[0] for m in BROKEN_STRUCTURE])
def test_nested_or_duplicated_tags_earn_nothing(name, completion):
    assert choice_reward(completion, TRUTH) == roam_reward(completion, TRUTH) == 0.0
    assert choice_format_reward(completion, TRUTH) == 0.0
    assert answer_choice(completion, ABCD) == "B"  # evaluation reads the one letter named


@pytest.mark.parametrize("completion", ["Sure. " + text("x", "B"), text("x", "B") + " B", text("x", "B") + " done"])
def test_text_outside_the_blocks_breaks_the_format_only(completion):
    assert choice_format_reward(completion, TRUTH) == 0.0
    assert choice_reward(completion, TRUTH) == 1.0 and answer_choice(completion, ABCD) == "B"


@pytest.mark.parametrize("answer", ["A scratch, so B.", "I think B.", "B. A hole.", "Option B"])
def test_english_a_and_i_beside_the_letter_are_not_a_second_letter(answer):
    assert choice_reward(text("x", answer), TRUTH) == 1.0 and answer_choice(text("x", answer), ABCD) == "B"


def test_a_letter_outside_a_two_option_question_is_no_answer():
    yes_no = RewardTarget(choice="A", options=("A", "B"))
    assert answer_choice(text("x", "C"), ("A", "B")) is None
    assert choice_reward(text("x", "C"), yes_no) == roam_reward(text("x", "C"), yes_no) == 0.0
    # A mention of a letter that is not an option does not make the answer ambiguous.
    assert answer_choice(text("x", "A, not the C of the other question"), ("A", "B")) == "A"
