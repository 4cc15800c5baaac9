"""rlad: industrial visual anomaly localization driven by reinforcement learning."""

__version__ = "0.1.0"
