"""`sample` on the tiny checkpoints: two-image prompts, groups, end-of-turn handling, vision special
tokens never sampled, the checkpoint's own sampling defaults overridden, reproducible with a generator."""

from __future__ import annotations

import pytest
import torch

from rlad.policies.hf_vlm.loading import FAMILIES


@pytest.fixture
def prompts(square_prompts):
    return square_prompts[:2]


def _vision_rows(policy) -> list[int]:
    """Patch rows the vision tower receives per call (a forward hook)."""
    seen = []
    visual = policy._hf_model().model.visual
    visual.register_forward_hook(lambda module, args, kwargs, out: seen.append(int(kwargs.get(
        "hidden_states", args[0] if args else None).shape[0])), with_kwargs=True)
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_two_image_groups_with_clean_endings(family, make_hf_policy, prompts):
    policy = make_hf_policy(family)
    seen = _vision_rows(policy)
    groups = policy.sample(prompts, 3, generator=torch.Generator().manual_seed(0))
    assert [len(g) for g in groups] == [3, 3]
    per_prompt = [policy._encode(p)["pixel_values"].shape[0] for p in prompts]
    assert len(policy._encode(prompts[0])["image_grid_thw"]) == 2  # reference + query
    assert seen == [3 * sum(per_prompt)]  # both images of every row, once (the prefill)
    for completion in (c for g in groups for c in g):
        ids = completion.token_ids
        assert 1 <= len(ids) <= 16 and len(completion.logprobs) == len(ids)
        assert not set(ids) & set(policy.suppressed)
        assert completion.truncated == (ids[-1] not in policy.eos_ids)
        assert all(t not in policy.eos_ids for t in ids[:-1])  # nothing after the end of the turn
        assert completion.text == policy.tokenizer.decode(ids, skip_special_tokens=True)
        assert all(lp <= 0 for lp in completion.logprobs)


def test_sampling_ignores_the_checkpoints_near_greedy_defaults(make_hf_policy, prompts):
    policy = make_hf_policy()
    assert policy.model.generation_config.top_k == 1  # the checkpoint asks for near-greedy decoding
    group = policy.sample(prompts[:1], 6, generator=torch.Generator().manual_seed(1))[0]
    assert len({tuple(c.token_ids) for c in group}) > 1  # temperature-1 samples differ


def test_same_generator_same_samples_and_greedy_is_deterministic(make_hf_policy, prompts):
    policy = make_hf_policy()
    a = policy.sample(prompts, 2, generator=torch.Generator().manual_seed(5))
    b = policy.sample(prompts, 2, generator=torch.Generator().manual_seed(5))
    c = policy.sample(prompts, 2, generator=torch.Generator().manual_seed(6))
    ids = lambda groups: [tuple(x.token_ids) for g in groups for x in g]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)
    greedy = policy.sample(prompts, 3, greedy=True)
    assert all(len({tuple(x.token_ids) for x in g}) == 1 for g in greedy)
    assert [x.text for x in policy.predict(prompts)] == [g[0].text for g in greedy]
