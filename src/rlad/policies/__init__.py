"""Grounding policies: the Policy contract (`base`), the CPU-trainable compact grounder
(`compact`), map-to-box baselines (`baselines`) and the CLI-facing functions (`api`).

Submodules are imported explicitly (`from rlad.policies.compact import CompactPolicy`) so that
importing the package costs nothing.
"""
