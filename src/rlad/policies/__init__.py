"""Policies: the Policy contract (`base`), the registry of policy names (`registry`), the
CPU-trainable compact grounder (`compact/`) and map-to-box baselines (`baselines`).

Submodules are imported explicitly (`from rlad.policies.compact.policy import CompactPolicy`) so that
importing the package costs nothing.
"""
