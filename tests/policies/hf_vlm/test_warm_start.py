"""The VLM warm start (`rlad fit hf`'s library): teacher answers in the task's format and the policy's
coordinates, a falling loss, and a killed fit that resumes from its checkpoint."""

from __future__ import annotations

from rlad.data.pairs.records import write_pairs
from rlad.engine import RunDir
from rlad.policies.hf_vlm.config import HFVLMConfig
from rlad.policies.hf_vlm.warm_start import HFWarmStartConfig, fit_supervised, teacher_completions
from rlad.tasks.grounding import GroundingTask
from rlad.workflows.grounding import HFFitConfig, fit_hf


def test_teacher_answers_end_the_turn_and_the_loss_falls(make_hf_policy, square_pairs):
    policy = make_hf_policy(lora=False)
    task = GroundingTask()
    records = square_pairs[:4]
    texts = [task.answer_text(r, policy) for r in records]
    assert texts[0].startswith("<think>") and "<answer>(" in texts[0]
    completion = teacher_completions(policy, texts[:1])[0][0]
    assert completion.token_ids[-1] in policy.eos_ids
    assert policy.tokenizer.decode(completion.token_ids, skip_special_tokens=True) == texts[0]
    history = fit_supervised(policy, [task.prompt(r) for r in records], texts,
                             HFWarmStartConfig(epochs=6, batch_size=4, lr=3e-3))
    assert history[-1]["loss"] < history[0]["loss"] - 0.5


def test_a_killed_warm_start_resumes_from_its_checkpoint(tiny_vlm, square_pairs, tmp_path):
    pairs = write_pairs(square_pairs[:4], tmp_path / "pairs.jsonl")
    cfg = HFFitConfig(policy=HFVLMConfig(model=str(tiny_vlm("qwen2_vl")), max_new_tokens=16),
                      train=HFWarmStartConfig(epochs=3, batch_size=4, checkpoint_every=1))
    run = fit_hf(pairs, tmp_path / "warm", cfg)
    assert (run.path / "hf" / "adapter_model.safetensors").is_file()  # the peft export beside model.pt
    run.model_path.unlink()  # as if killed after the last checkpoint (epoch 2)
    fit_hf(pairs, tmp_path / "warm", cfg)
    assert [line["epoch"] for line in RunDir(run.path).read_log()] == [1, 2, 3, 3]
