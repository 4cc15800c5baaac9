"""The VLM policy on multiple-choice questions: the MCQ prompt through the checkpoint's own chat template
(answer format as the system turn, the template image before the inspected one, the lettered options),
images encoded in that order, and sampling-time log-probs that the training forward reproduces when
1-shot (two images) and 0-shot (one image) prompts share a batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlad.data.questions.records import MCQRecord
from rlad.tasks.mcq import ANSWER_FORMAT, MCQTask


def questions(pairs, n: int) -> list[MCQRecord]:
    """Questions about the square pairs' queries, each with its pair's reference as the template."""
    return [MCQRecord(id=f"q{i}", image=p.query, templates=(p.reference,), question="Where is the defect?",
                      options=("top left", "center", "bottom right"), answer="ABC"[i % 3], type="Defect Localization",
                      category="square", dataset="d", defect_type="square") for i, p in enumerate(pairs[:n])]


def test_the_policy_accepts_the_mcq_task(make_hf_policy):
    assert "mcq" in make_hf_policy().tasks


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_mcq_prompt_in_the_models_chat_template_template_image_first(family, make_hf_policy, square_pairs):
    policy = make_hf_policy(family)
    record = questions(square_pairs, 1)[0]
    one_shot, zero_shot = MCQTask(shots=1).prompt(record), MCQTask(shots=0).prompt(record)

    text = policy.chat_text(one_shot)
    system, user = text.index("<|im_start|>system"), text.index("<|im_start|>user")
    assert system < text.index(ANSWER_FORMAT) < user
    assert text.count("<|vision_start|>") == 2 and text.index("<|vision_start|>") > user
    assert text.rindex("<|vision_end|>") < text.index("Question: Where is the defect?")
    assert "\nA. top left\nB. center\nC. bottom right" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert policy.chat_text(zero_shot).count("<|vision_start|>") == 1

    # The images are encoded in the prompt's order: the template's patches first, then the query's.
    both = policy._encode(one_shot)
    template = policy._encode(MCQTask(shots=0).prompt(dataclasses.replace(record, image=record.templates[0])))
    query = policy._encode(zero_shot)
    assert torch.equal(both["pixel_values"], torch.cat([template["pixel_values"], query["pixel_values"]]))
    assert both["image_grid_thw"].shape[0] == 2
    image_tokens = int((both["input_ids"] == policy.model.config.image_token_id).sum())
    assert image_tokens == int(both["image_grid_thw"].prod(-1).sum()) // 4  # 2 x 2 patches merge into one token


def test_sampled_log_probs_match_the_forward_with_one_and_two_images_in_a_batch(make_hf_policy, square_pairs):
    policy = make_hf_policy("qwen2_vl", lora=False)
    records = questions(square_pairs, 2)
    prompts = [MCQTask(shots=1).prompt(records[0]), MCQTask(shots=0).prompt(records[1])]
    groups = policy.sample(prompts, 2, generator=torch.Generator().manual_seed(0))
    out = policy.log_probs(prompts, groups)
    for i, completion in enumerate(c for g in groups for c in g):
        n = len(completion.token_ids)
        assert (out.logp[i, :n].detach() - torch.tensor(completion.logprobs)).abs().max() < 1e-4, i
