"""The named steps of one NBS reset cycle (`rlad.models.nbs.cycle`) and the labelled set they draw
from, on tiny tensors: which images a cycle profiles, what a checkpoint carries, and R_pred."""

from __future__ import annotations

import math

import numpy as np
import torch

from rlad.engine import RunDir
from rlad.models.nbs.config import NBSConfig
from rlad.models.nbs.context import ContextConfig, ContextEncoder
from rlad.models.nbs.cycle import (
    choose_profile_set,
    predictor_reward,
    reset_autoencoder,
    resume,
    save_checkpoint,
    run_autoencoder,
    start_learners,
)
from rlad.models.nbs.labelled import LabelledSet
from rlad.models.nbs.predictor import weighted_bce
from rlad.models.nbs.sampler import SamplerMaps

SIZE, GRID = 32, 8


def _config(**changes) -> NBSConfig:
    base = dict(
        image_size=64, profile_size=SIZE, patch_size=128, crop_size=128, predictor_grid=GRID, reset_every=4, window=2, sampler_update_from=2,
        sampler_update_to=3, steps=8, batch_patches=4, ae_width=4, bottleneck=8, labeled_per_cycle=3,
        reward_images=2, normals_per_cycle=2, parallel_episodes=2, max_moves=2, predictor_widths=[4],
        predictor_dilations=[1], predictor_project=0, context=ContextConfig(kind="image"),
    )
    return NBSConfig(**{**base, **changes}).validate()


def _labelled(n: int = 6, n_neg: int = 3) -> LabelledSet:
    generator = torch.Generator().manual_seed(0)
    return LabelledSet(
        images=torch.rand(n, 3, SIZE, SIZE, generator=generator),
        masks=(torch.rand(n, 1, GRID, GRID, generator=generator) > 0.5).float(),
        context=torch.rand(n, 1, GRID, GRID, generator=generator).half(),
        negative_ids=list(range(n_neg)),
        negative_images=torch.rand(n_neg, 3, SIZE, SIZE, generator=generator),
        negative_context=torch.rand(n_neg, 1, GRID, GRID, generator=generator).half(),
        reward_ids=[0, 3],
    )


def _learners(cfg: NBSConfig):
    return start_learners(cfg, ContextEncoder(cfg.context, cfg.predictor_grid), seed=0)


def test_examples_put_the_profile_before_the_context_and_normals_have_empty_masks():
    lab = _labelled()
    assert lab.keys() == [("lab", i) for i in range(6)] + [("neg", i) for i in range(3)]
    profile = torch.ones(2, GRID, GRID).half()
    features, mask = lab.example(("lab", 4), profile)
    assert features.shape == (3, GRID, GRID)
    assert torch.equal(features[:2], profile) and torch.equal(features[2:], lab.context[4])
    assert torch.equal(mask, lab.masks[4])
    features, mask = lab.example(("neg", 1))  # the supervised control: no profile
    assert torch.equal(features, lab.negative_context[1]) and not mask.any()


def test_profile_sets_put_the_reward_subset_first_and_rotate_through_every_labelled_image():
    cfg, lab = _config(), _labelled()
    learners = _learners(cfg)
    rotated = []
    for _ in range(4):  # 4 cycles x 3 rotating = two full passes over the 6 labelled images
        chosen = choose_profile_set(cfg, learners, lab)
        lab_ids = [i for kind, i in chosen.keys if kind == "lab"]
        negatives = [i for kind, i in chosen.keys if kind == "neg"]
        assert lab_ids[:2] == lab.reward_ids
        assert len(negatives) == cfg.normals_per_cycle and len(set(negatives)) == len(negatives)
        assert len(chosen.images) == len(chosen.keys)
        assert torch.equal(chosen.images[0], lab.images[0]) and torch.equal(chosen.images[-1], lab.negative_images[negatives[-1]])
        rotated += lab_ids[2:]
    # Reward images are not profiled twice in a cycle, every other image once per pass.
    assert sorted(set(rotated)) == [1, 2, 4, 5]
    assert all(rotated.count(i) == 2 for i in (1, 2, 4, 5))


def test_a_checkpoint_restores_every_learner_and_random_stream(tmp_path):
    cfg, lab = _config(), _labelled()
    pool = torch.rand(5, 3, SIZE, SIZE)
    learners = _learners(cfg)
    chosen = choose_profile_set(cfg, learners, lab)
    trace = run_autoencoder(cfg, learners, pool, SamplerMaps.of(pool), chosen.images, bar=_NoBar())
    assert len(trace.errors) == cfg.window == len(learners.bank) and len(trace.ae_losses) == cfg.reset_every
    assert sorted(trace.recorded) == [2, 3]  # the learned sampler's update window
    learners.buffer.append((torch.rand(cfg.window, GRID, GRID).half(), ("lab", 1)))
    learners.history.append({"cycle": 0})
    run = RunDir(tmp_path / "run").create()
    save_checkpoint(run, learners, cycle=0, step=cfg.reset_every)
    saved = run.latest_checkpoint()

    fresh = _learners(cfg)
    reset_autoencoder(cfg, fresh, seed=0, cycle=5)  # different weights than the saved ones
    assert resume(run, fresh) == 1
    again = RunDir(tmp_path / "again").create()
    save_checkpoint(again, fresh, cycle=0, step=cfg.reset_every)
    _assert_same(again.latest_checkpoint(), saved)
    # Both continue with the same draws.
    assert choose_profile_set(cfg, fresh, lab).keys == choose_profile_set(cfg, learners, lab).keys
    assert torch.equal(torch.rand(3, generator=fresh.generator), torch.rand(3, generator=learners.generator))


def test_r_pred_is_minus_the_predictor_loss_on_the_reward_examples():
    cfg, lab = _config(), _labelled()
    learners = _learners(cfg)
    examples = [lab.example(("lab", i), torch.zeros(cfg.window, GRID, GRID).half()) for i in lab.reward_ids]
    feats, masks = torch.stack([f for f, _ in examples]).float(), torch.stack([m for _, m in examples])
    with torch.no_grad():
        expected = -float(weighted_bce(learners.predictor.eval()(feats), masks, 0.5))
    assert predictor_reward(learners.predictor, examples, 0.5) == expected
    no_reward = predictor_reward(learners.predictor, [], 0.5)
    assert no_reward == 0.0 and math.copysign(1.0, no_reward) == -1.0  # logged as -0.0, as it always was


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _assert_same(a, b, where: str = "checkpoint") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where
