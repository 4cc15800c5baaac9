"""Tiny random-weight Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoints (rlad.policies.hf_vlm.tiny), written
once per test session into a folder every xdist worker shares, and policies built on them."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("transformers", reason="the vlm extra is not installed")

@pytest.fixture(scope="session")
def tiny_vlm_root(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    return (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "tiny_vlm"


@pytest.fixture(scope="session")
def tiny_vlm(tiny_vlm_root):
    """tiny_vlm(family) -> the checkpoint folder."""
    from rlad.policies.hf_vlm.tiny import write_tiny_vlm
    from rlad.tasks.grounding import prompt_corpus

    return lambda family: write_tiny_vlm(family, tiny_vlm_root / family, corpus=prompt_corpus())


@pytest.fixture
def make_hf_policy(tiny_vlm):
    """make_hf_policy(family, **config changes) -> HFVLMPolicy on the tiny checkpoint (short completions)."""
    from rlad.policies.hf_vlm.config import HFVLMConfig
    from rlad.policies.hf_vlm.policy import HFVLMPolicy

    def make(family="qwen2_vl", **changes):
        changes.setdefault("max_new_tokens", 16)
        return HFVLMPolicy(HFVLMConfig(model=str(tiny_vlm(family)), **changes))

    return make


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread in every test here, also outside xdist (-n 0): a tiny model's products gain nothing from
    more, and on a busy 2-core machine two spinning threads per process made these tests several times slower."""
    from rlad.engine import torch_threads

    with torch_threads(1):
        yield
