"""Run by tests/integrations/test_two_process.py under `torch.distributed.run --nproc_per_node 2` (CPU, gloo):
the TRL route trains one policy in two processes; each process saves its trainable parameters, and the test
checks they are identical (and moved). Arguments: WARM_RUN PAIRS OUT."""

import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from rlad.engine import RunDir  # noqa: E402
from rlad.integrations.trl import TRLEngineConfig, train_trl  # noqa: E402
from rlad.rl.loop import GRPOConfig  # noqa: E402
from rlad.tasks.grounding import GroundingTask  # noqa: E402
from rlad.workflows.grounding import load_policy  # noqa: E402


def main(warm: str, pairs: str, out: str) -> None:
    import torch.distributed as dist

    task = GroundingTask()
    policy = load_policy(warm)
    cfg = GRPOConfig(steps=2, group_size=4, prompts_per_step=2, lr=1e-3, checkpoint_every=100, seed=0)
    train_trl(policy, task, task.load(pairs), cfg, TRLEngineConfig(), RunDir(out).create())
    rank = dist.get_rank() if dist.is_initialized() else 0
    state = {n: p.detach().cpu() for n, p in policy.model.named_parameters() if p.requires_grad}
    torch.save({"world": dist.get_world_size() if dist.is_initialized() else 1, "params": state},
               Path(out) / f"params_rank{rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:4])
