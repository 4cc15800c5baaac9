"""Shared by the engine tests: tiny random Qwen-VL checkpoints (as in tests/policies/hf_vlm) and one warm-started
policy that already writes the answer format, so GRPO has a signal. Both are built once per test session in a
folder every xdist worker shares (a finished folder appears by rename, so concurrent workers never see half of one;
the warm start is trained by one worker while the others wait on a lock)."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the vlm extra is not installed")

WARM_FAMILY = "qwen2_5_vl"  # its small pixel coordinates are the quickest for a tiny model to learn


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def tiny_vlm(shared_root):
    """tiny_vlm(family) -> the checkpoint folder."""
    from rlad.policies.hf_vlm.tiny import write_tiny_vlm
    from rlad.tasks.grounding import prompt_corpus

    return lambda family: write_tiny_vlm(family, shared_root / "tiny_vlm" / family, corpus=prompt_corpus())


@pytest.fixture(scope="session")
def warm_run(shared_root, tiny_vlm, square_pairs) -> Path:
    """An `rlad fit hf` run (tiny Qwen2.5-VL, full fine-tuning) that writes `<think>..</think><answer>(..),(..)</answer>`
    for most samples: the starting point of the GRPO tests."""
    from rlad.data.pairs.records import write_pairs
    from rlad.policies.hf_vlm.config import HFVLMConfig
    from rlad.policies.hf_vlm.warm_start import HFWarmStartConfig
    from rlad.workflows.grounding import HFFitConfig, fit_hf

    out = shared_root / f"warm_{WARM_FAMILY}"
    with open(shared_root / ".warm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker trains it, the others wait for it instead of training it too
        if (out / "model.pt").is_file():
            return out
        scratch = Path(tempfile.mkdtemp(prefix=".warm.", dir=shared_root))
        pairs = write_pairs(square_pairs[:8], scratch / "pairs.jsonl")
        cfg = HFFitConfig(threads=1, policy=HFVLMConfig(model=str(tiny_vlm(WARM_FAMILY)), lora=False,
                                                        max_new_tokens=40),
                          train=HFWarmStartConfig(epochs=100, batch_size=8, lr=3e-3, checkpoint_every=1000))
        fit_hf(pairs, scratch / "run", cfg)
        (scratch / "run").rename(out)
        shutil.rmtree(scratch, ignore_errors=True)
    return out


@pytest.fixture
def warm_policy(warm_run):
    from rlad.workflows.grounding import load_policy

    return load_policy(warm_run)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread in every test here, also outside xdist (-n 0): a tiny model's products gain nothing from
    more, and on a busy 2-core machine two spinning threads per process made these tests several times slower."""
    from rlad.engine import torch_threads

    with torch_threads(1):
        yield
