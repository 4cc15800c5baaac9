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


def _grads(policy) -> dict:
    return {n: p.grad.detach().clone() for n, p in policy.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_gradient_checkpointing_changes_neither_log_probs_nor_gradients(lora, make_hf_policy, square_prompts):
    plain, checkpointed = make_hf_policy(lora=lora), make_hf_policy(lora=lora, gradient_checkpointing=True)
    assert checkpointed._hf_model().model.language_model.gradient_checkpointing
    prompts = square_prompts[:2]
    groups = plain.sample(prompts, 2, generator=torch.Generator().manual_seed(0))
    # sampling works with checkpointing on (generate needs its cache: transformers disables it only in training)
    assert len(checkpointed.sample(prompts, 2, generator=torch.Generator().manual_seed(0))[0]) == 2
    results = []
    for policy in (plain, checkpointed):
        policy.train(True)
        out = policy.log_probs(prompts, groups)
        (out.logp * out.mask).sum().backward()
        results.append((out.logp.detach(), _grads(policy)))
    (logp_a, grads_a), (logp_b, grads_b) = results
    assert torch.allclose(logp_a, logp_b, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4), name


def test_bfloat16_samples_scores_and_trains(make_hf_policy, square_prompts):
    """The dtype a CUDA run gets by default (`policy.dtype=auto`), here on the CPU: images are cast to it,
    the sampling transform works in fp32, and sampling and scoring agree to bf16 precision."""
    policy = make_hf_policy(dtype="bfloat16")
    assert next(policy.model.parameters()).dtype == torch.bfloat16
    prompts = square_prompts[:2]
    groups = policy.sample(prompts, 2, generator=torch.Generator().manual_seed(0))
    out = policy.log_probs(prompts, groups)
    assert out.logp.dtype == torch.float32
    for i, completion in enumerate(c for g in groups for c in g):
        n = len(completion.token_ids)
        assert (out.logp[i, :n].detach() - torch.tensor(completion.logprobs)).abs().max() < 0.1
    (out.logp * out.mask).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.trainable_parameters())
