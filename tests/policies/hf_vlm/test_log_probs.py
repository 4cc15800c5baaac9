"""`log_probs` (one forward over prompt + completion with the images) agrees with the log-probs kept at
sampling time, and its gradients reach exactly the trainable parameters."""

from __future__ import annotations

import pytest
import torch

from rlad.policies.hf_vlm.loading import FAMILIES


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_log_probs_match_sampling_log_probs(family, lora, make_hf_policy, square_prompts):
    policy = make_hf_policy(family, lora=lora)
    prompts = square_prompts[:2]
    groups = policy.sample(prompts, 3, generator=torch.Generator().manual_seed(0))
    out = policy.log_probs(prompts, groups)
    rows = [c for g in groups for c in g]
    assert out.logp.shape == (6, max(len(c.token_ids) for c in rows))
    for i, completion in enumerate(rows):
        n = len(completion.token_ids)
        assert out.mask[i, :n].eq(1).all() and out.mask[i, n:].eq(0).all()
        difference = (out.logp[i, :n].detach() - torch.tensor(completion.logprobs)).abs().max()
        assert difference < 1e-4, (i, float(difference))
    assert torch.isfinite(out.entropy).all()

    (out.logp * out.mask).sum().backward()
    trainable = {id(p) for p in policy.trainable_parameters()}
    for name, param in policy.model.named_parameters():
        if id(param) not in trainable:
            assert param.grad is None, name
        elif ".visual." in name:
            raise AssertionError(f"vision tower parameter {name} is trainable")
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.trainable_parameters())
    if lora:
        assert all("lora_" in n for n, p in policy.model.named_parameters() if p.requires_grad)


def test_the_vision_tower_trains_when_asked(make_hf_policy):
    policy = make_hf_policy(lora=False, freeze_vision=False)
    assert any(".visual." in n for n, p in policy.model.named_parameters() if p.requires_grad)
