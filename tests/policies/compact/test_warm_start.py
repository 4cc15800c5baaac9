"""The supervised warm start (rlad.policies.compact.warm_start)."""

from __future__ import annotations

from rlad.policies.compact.warm_start import WarmStartConfig, fit_supervised, supervised_step
from rlad.tasks.grounding import GroundingTask

TASK = GroundingTask()


def test_supervised_warm_start_learns_the_squares(square_pairs, square_prompts, make_policy):
    from rlad.tasks.grounding import grounding_report
    from rlad.workflows.grounding import predict_boxes

    policy = make_policy(seed=1)
    start = supervised_step(policy, square_prompts, [TASK.target(r, policy) for r in square_pairs]).item()
    history = fit_supervised(policy, TASK, square_pairs, WarmStartConfig(epochs=40, batch_size=16, lr=3e-3), seed=1)
    assert history[-1]["loss"] < 0.5 * start
    boxes, _ = predict_boxes(policy, square_pairs)
    metrics = grounding_report(boxes, square_pairs)
    assert metrics["acc_at_0_3"] >= 0.75, metrics
