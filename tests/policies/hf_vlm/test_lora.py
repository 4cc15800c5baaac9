"""LoRA through peft: the reference is the adapter disabled (no second copy), a trained adapter is
merged when a run starts from it, and saved policies load back with the same log-probs; full
fine-tuning keeps a frozen copy instead."""

from __future__ import annotations

import torch

from rlad.policies.hf_vlm.config import HFVLMConfig
from rlad.policies.hf_vlm.loading import load_processor
from rlad.policies.hf_vlm.policy import HFVLMPolicy


def _train_adapter(policy, seed=0):
    """As if the adapter had trained: random lora_B weights (a fresh adapter's are zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


def _logp(policy, prompts, groups):
    with torch.no_grad():
        return policy.log_probs(prompts, groups).logp


def test_reference_is_the_model_with_its_adapter_disabled(make_hf_policy, square_prompts):
    policy = make_hf_policy()
    prompts = square_prompts[:2]
    groups = policy.sample(prompts, 2, generator=torch.Generator().manual_seed(0))
    reference = policy.frozen_copy()
    assert reference.model is None and reference.state_dict() == {}  # no copy, nothing to checkpoint
    start = _logp(policy, prompts, groups)
    assert torch.allclose(reference.log_probs(prompts, groups).logp, start, atol=1e-6)
    _train_adapter(policy)
    moved = _logp(policy, prompts, groups)
    assert (moved - start).abs().max() > 1e-3
    assert torch.allclose(reference.log_probs(prompts, groups).logp, start, atol=1e-6)


def test_a_trained_adapter_is_merged_when_the_reference_is_taken_and_saved_with_the_policy(make_hf_policy,
                                                                                           square_prompts):
    prompts = square_prompts[:2]
    warm = make_hf_policy()
    _train_adapter(warm)
    groups = warm.sample(prompts, 2, generator=torch.Generator().manual_seed(0))
    expected = _logp(warm, prompts, groups)

    loaded = HFVLMPolicy.from_payload(warm.save_payload())
    assert torch.allclose(_logp(loaded, prompts, groups), expected, atol=1e-5)
    reference = loaded.frozen_copy()  # a run starting from the warm start: merge, fresh adapter
    assert len(loaded.merged) == 1 and not loaded._adapter_trained()
    assert torch.allclose(_logp(loaded, prompts, groups), expected, atol=1e-5)
    assert torch.allclose(reference.log_probs(prompts, groups).logp, expected, atol=1e-5)

    _train_adapter(loaded, seed=1)  # GRPO moves the fresh adapter
    tuned = _logp(loaded, prompts, groups)
    again = HFVLMPolicy.from_payload(loaded.save_payload())
    assert len(again.merged) == 1
    assert torch.allclose(_logp(again, prompts, groups), tuned, atol=1e-5)


def test_export_loads_with_peft_and_transformers(make_hf_policy, square_prompts, tmp_path, tiny_vlm):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    prompts = square_prompts[:1]
    policy = make_hf_policy()
    _train_adapter(policy)
    groups = policy.sample(prompts, 2, generator=torch.Generator().manual_seed(0))
    expected = _logp(policy, prompts, groups)

    policy.export(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    base = AutoModelForImageTextToText.from_pretrained(tiny_vlm("qwen2_vl"))
    merged = PeftModel.from_pretrained(base, tmp_path / "adapter").merge_and_unload()
    assert torch.allclose(policy.log_probs(prompts, groups, model=merged).logp.detach(), expected, atol=1e-5)
    assert load_processor(str(tmp_path / "adapter"), "qwen2_vl").chat_template == policy.processor.chat_template

    policy.frozen_copy()  # merges: the folder now needs the whole merged model
    policy.export(tmp_path / "merged")
    standalone = HFVLMPolicy(HFVLMConfig(model=str(tmp_path / "merged"), lora=False, max_new_tokens=16))
    assert torch.allclose(_logp(standalone, prompts, groups), expected, atol=1e-5)


def test_full_fine_tuning_keeps_a_frozen_copy_as_reference(make_hf_policy, square_prompts):
    policy = make_hf_policy(lora=False)
    prompts = square_prompts[:1]
    groups = policy.sample(prompts, 2, generator=torch.Generator().manual_seed(0))
    reference = policy.frozen_copy()
    assert reference.model is not policy.model and not any(p.requires_grad for p in reference.model.parameters())
    start = _logp(policy, prompts, groups)
    with torch.no_grad():
        for param in policy.trainable_parameters():
            param.add_(0.05)
    assert (_logp(policy, prompts, groups) - start).abs().max() > 1e-3
    assert torch.allclose(reference.log_probs(prompts, groups).logp, start, atol=1e-6)


def test_a_checkpoint_of_a_run_from_a_warm_adapter_restores_into_the_resumed_policy(make_hf_policy, square_prompts):
    """Resume: the rebuilt policy merges the warm adapter again (frozen_copy), then loads the checkpoint."""
    prompts = square_prompts[:1]
    warm = make_hf_policy()
    _train_adapter(warm)
    payload = warm.save_payload()
    running = HFVLMPolicy.from_payload(payload)
    running.frozen_copy()
    _train_adapter(running, seed=2)
    groups = running.sample(prompts, 2, generator=torch.Generator().manual_seed(0))
    checkpoint = running.state_dict()
    resumed = HFVLMPolicy.from_payload(payload)
    resumed.frozen_copy()
    resumed.load_state_dict(checkpoint)
    assert len(resumed.merged) == 1
    assert torch.allclose(_logp(resumed, prompts, groups), _logp(running, prompts, groups), atol=1e-5)
