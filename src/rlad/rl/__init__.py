"""Reinforcement learning: rewards (`rewards`), GRPO tensor functions (`grpo`), loops.

Submodules are imported explicitly (`from rlad.rl.rewards import ...`) so that reading rewards
never pays for importing torch.
"""
