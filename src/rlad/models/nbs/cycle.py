"""One NBS reset cycle of K = `reset_every` autoencoder steps, as named steps `NBSModel.fit` runs in
order (docs/nbs.md "What runs, top to bottom"):

1. `choose_profile_set`: the images whose loss profiles this cycle records (a fixed reward subset, a
   rotating subset of the augmented labelled images, a few normal images);
2. `run_autoencoder`: every step the sampler (learned policy, uniform, or a frozen untrained policy)
   picks `batch_patches` patches from the unlabelled normal images and the autoencoder takes one Adam
   step on them; on the last `window` steps the error maps of the profile set are recorded and the
   weights kept as snapshots;
3. `predictor_reward`: R_pred, minus the predictor's loss on the reward subset before it learns from it;
4. `train_predictor`: epochs over a replay buffer of profiles;
5. `update_sampler` (learned sampler only): REINFORCE steps on its decisions of cycle steps
   `sampler_update_from..to`;
6. `reset_autoencoder` (at the start of the next cycle, unless `reset` is off): fresh weights.

`Learners` holds everything that carries over from one cycle to the next, which is what a checkpoint
saves (`save_checkpoint` / `resume`, through `rlad.engine.TrainingState`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from rlad.engine import TrainingState
from rlad.models.nbs.autoencoder import PatchAutoencoder, crop_patches, error_maps
from rlad.models.nbs.config import NBSConfig
from rlad.models.nbs.context import ContextEncoder
from rlad.models.nbs.head import predictor_optimizer, seeded_predictor
from rlad.models.nbs.labelled import ExampleKey, LabelledSet
from rlad.models.nbs.predictor import Predictor, train_epochs, weighted_bce
from rlad.models.nbs.profiles import SnapshotBank
from rlad.models.nbs.sampler import STOP, EpisodeRunner, SamplerMaps, SamplerPolicy, Transitions, mark_visits, uniform_patches
from rlad.rl.reinforce import MovingBaseline, discounted_returns, reinforce_loss

CHECKPOINT_STAGE = "nbs"

# A replay-buffer entry: a profile (float16, on the predictor grid) and the example it belongs to.
BufferEntry = tuple[torch.Tensor, ExampleKey]


def autoencoder_for(cfg: NBSConfig) -> PatchAutoencoder:
    return PatchAutoencoder(cfg.geometry().patch, cfg.ae_width, cfg.bottleneck)


def fresh_autoencoder(cfg: NBSConfig, seed: int, cycle: int) -> PatchAutoencoder:
    """The autoencoder of cycle `cycle`: seeded by (seed, cycle), leaving torch's global stream alone."""
    with torch.random.fork_rng():
        torch.manual_seed(int(seed) * 1_000_003 + cycle)
        return autoencoder_for(cfg)


@dataclass
class Learners:
    """The networks, optimisers, random streams and buffers that live across cycles."""

    predictor: Predictor
    predictor_opt: torch.optim.Optimizer
    policy: SamplerPolicy | None  # None for the uniform sampler
    policy_opt: torch.optim.Optimizer | None
    runner: EpisodeRunner | None
    baseline: MovingBaseline
    ae: PatchAutoencoder
    ae_opt: torch.optim.Optimizer
    rng: np.random.Generator
    generator: torch.Generator
    bank: SnapshotBank
    buffer: list[BufferEntry] = field(default_factory=list)
    rotation: list[int] = field(default_factory=list)
    """Labelled images still to be profiled in the current pass through all of them."""
    history: list[dict] = field(default_factory=list)


def start_learners(cfg: NBSConfig, encoder: ContextEncoder, seed: int) -> Learners:
    """Fresh learners; each network is seeded on its own, so turning one off leaves the others as they were."""
    geometry = cfg.geometry()
    rng = np.random.default_rng([seed, 104729])
    generator = torch.Generator().manual_seed(seed)
    predictor = seeded_predictor(cfg, encoder, cfg.window, seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed + 17)
        policy = SamplerPolicy(geometry.crop) if cfg.sampler != "uniform" else None
    ae = fresh_autoencoder(cfg, seed, 0)
    return Learners(
        predictor=predictor,
        predictor_opt=predictor_optimizer(cfg, predictor),
        policy=policy,
        policy_opt=torch.optim.Adam(policy.parameters(), lr=cfg.sampler_lr) if policy is not None else None,
        runner=EpisodeRunner(policy, geometry, cfg.parallel_episodes, cfg.max_moves) if policy is not None else None,
        baseline=MovingBaseline(cfg.baseline_momentum),
        ae=ae,
        ae_opt=torch.optim.Adam(ae.parameters(), lr=cfg.ae_lr),
        rng=rng,
        generator=generator,
        bank=SnapshotBank(template=ae),
    )


def training_state(run, learners: Learners) -> TrainingState:
    """The learners' resumable state, built anew each time (a reset replaces the autoencoder)."""
    return TrainingState(run, CHECKPOINT_STAGE, predictor=learners.predictor, pred_opt=learners.predictor_opt,
                         policy=learners.policy, policy_opt=learners.policy_opt, baseline=learners.baseline,
                         ae=learners.ae, ae_opt=learners.ae_opt, rng=learners.rng, generator=learners.generator)


def save_checkpoint(run, learners: Learners, cycle: int, step: int) -> None:
    """Everything `resume` needs to continue after `cycle` exactly as an uninterrupted run would."""
    training_state(run, learners).save(
        step, cycle=cycle, step=step, buffer=learners.buffer, rotation=learners.rotation,
        snapshots=learners.bank.snapshots, history=learners.history, torch_rng=torch.get_rng_state())


def resume(run, learners: Learners) -> int:
    """Load the run's latest NBS checkpoint into `learners` (and torch's global stream, which the
    predictor's dropout draws from); the cycle to continue with (0 without a checkpoint)."""
    saved = training_state(run, learners).restore()
    if not saved:
        return 0
    learners.buffer = [(profile, (kind, int(index))) for profile, (kind, index) in saved["buffer"]]
    learners.rotation = list(saved["rotation"])
    learners.bank = SnapshotBank(saved["snapshots"], template=learners.ae)
    learners.history = list(saved["history"])
    torch.set_rng_state(saved["torch_rng"])
    return int(saved["cycle"]) + 1


def reset_autoencoder(cfg: NBSConfig, learners: Learners, seed: int, cycle: int) -> None:
    learners.ae = fresh_autoencoder(cfg, seed, cycle)
    learners.ae_opt = torch.optim.Adam(learners.ae.parameters(), lr=cfg.ae_lr)


@dataclass
class ProfileSet:
    images: torch.Tensor  # (P, 3, h, w) at profile size
    keys: list[ExampleKey]  # the reward subset first


def choose_profile_set(cfg: NBSConfig, learners: Learners, lab: LabelledSet) -> ProfileSet:
    """The reward subset, the next `labeled_per_cycle` labelled images of a rotation through all of
    them, and `normals_per_cycle` normal images."""
    if len(learners.rotation) < cfg.labeled_per_cycle:
        learners.rotation += [int(i) for i in learners.rng.permutation(len(lab.images))]
    rotating = learners.rotation[: cfg.labeled_per_cycle]
    learners.rotation = learners.rotation[cfg.labeled_per_cycle :]
    profile_ids = lab.reward_ids + [i for i in rotating if i not in lab.reward_ids]
    n_negatives = min(cfg.normals_per_cycle, len(lab.negative_ids))
    negatives = learners.rng.choice(len(lab.negative_ids), size=n_negatives, replace=False).tolist()
    return ProfileSet(
        images=torch.cat([lab.images[profile_ids], lab.negative_images[negatives]]),
        keys=[("lab", i) for i in profile_ids] + [("neg", i) for i in negatives],
    )


@dataclass
class CycleTrace:
    """What the autoencoder steps of one cycle leave behind."""

    errors: list[torch.Tensor] = field(default_factory=list)  # (P, h, w) per profile step
    recorded: dict[int, Transitions] = field(default_factory=dict)  # cycle step -> the sampler's decisions
    ae_losses: list[float] = field(default_factory=list)


def sample_patches(
    cfg: NBSConfig, learners: Learners, pool: torch.Tensor, maps: SamplerMaps | None, visits: dict, t: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Transitions | None]:
    """One batch of patches (image index, top, left) from the sampler, and its decisions when cycle
    step `t` (1-based) is one the learned sampler learns from."""
    if learners.runner is None:
        size, patch = cfg.profile_size, cfg.geometry().patch
        index, top, left = uniform_patches(learners.rng, len(pool), size, size, patch, cfg.batch_patches)
        mark_visits(visits, index, top, left, patch, size, size)
        return index, top, left, None
    record = cfg.sampler == "learned" and cfg.sampler_update_from <= t <= cfg.sampler_update_to
    index, top, left, transitions = learners.runner.collect(
        pool, maps, learners.ae, visits, cfg.batch_patches, learners.rng, learners.generator, record
    )
    return index, top, left, transitions if record else None


def autoencoder_step(ae: PatchAutoencoder, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> float:
    ae.train()
    loss = F.mse_loss(ae(batch), batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def run_autoencoder(
    cfg: NBSConfig, learners: Learners, pool: torch.Tensor, maps: SamplerMaps | None, profile_images: torch.Tensor, bar
) -> CycleTrace:
    """The K autoencoder steps of one cycle on patches of `pool` (the normal images at profile
    size); on the last `window` steps, the error maps of `profile_images` and a snapshot."""
    patch = cfg.geometry().patch
    trace = CycleTrace()
    learners.bank = SnapshotBank(template=learners.ae)
    visits: dict[int, torch.Tensor] = {}
    for t in range(1, cfg.reset_every + 1):
        index, top, left, transitions = sample_patches(cfg, learners, pool, maps, visits, t)
        if transitions is not None:
            trace.recorded[t] = transitions
        batch = crop_patches(pool, torch.from_numpy(index), torch.from_numpy(top), torch.from_numpy(left), patch)
        trace.ae_losses.append(autoencoder_step(learners.ae, learners.ae_opt, batch))
        if t > cfg.reset_every - cfg.window:
            trace.errors.append(error_maps(learners.ae, profile_images))
            learners.bank.add(learners.ae)
        bar.update(1)
    return trace


def predictor_reward(predictor: Predictor, examples: list[tuple[torch.Tensor, torch.Tensor]], alpha: float) -> float:
    """R_pred: minus the predictor's alpha-weighted loss on `examples` (this cycle's reward subset,
    which it has not learnt from yet); -0.0 without a reward subset."""
    predictor.eval()
    with torch.no_grad():
        if examples:
            feats, masks = zip(*examples)
            loss = float(weighted_bce(predictor(torch.stack(feats).float()), torch.stack(masks), alpha))
        else:
            loss = 0.0
    return -loss


def train_predictor(cfg: NBSConfig, learners: Learners, lab: LabelledSet, entries: list[BufferEntry], alpha: float) -> float:
    """Add this cycle's profiles to the replay buffer (the newest `predictor_buffer` kept), then
    `predictor_epochs` passes over it; returns the mean loss."""
    learners.buffer = (learners.buffer + entries)[-cfg.predictor_buffer :]
    return train_epochs(
        learners.predictor, learners.predictor_opt, [lab.example(key, profile) for profile, key in learners.buffer],
        cfg.predictor_epochs, cfg.predictor_batch, cfg.predictor_crop, alpha, learners.generator,
    )


def update_sampler(cfg: NBSConfig, learners: Learners, recorded: dict[int, Transitions], beta: float, r_pred: float) -> dict:
    """REINFORCE on the stored decisions of the update window, one step per cycle step (the released
    code had no gradient here); returns mean reward, entropy, log-prob and share of stops."""
    policy, optimizer, baseline = learners.policy, learners.policy_opt, learners.baseline
    stats = {"reward": [], "entropy": [], "log_prob": [], "stop_share": []}
    for t in sorted(recorded):
        trans = recorded[t]
        if not len(trans):
            continue
        struct = torch.tensor(trans.struct)
        cover = torch.tensor(trans.cover)
        rewards = beta * (struct + cover) + (1.0 - beta) * r_pred
        returns = discounted_returns(rewards, torch.tensor(trans.episode), cfg.gamma)
        advantages = baseline.advantages(returns)
        policy.train()
        logits = policy(torch.stack(trans.states))
        loss, info = reinforce_loss(logits, torch.tensor(trans.actions), advantages, cfg.entropy_coef)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stats["reward"].append(float(rewards.mean()))
        stats["entropy"].append(info["entropy"])
        stats["log_prob"].append(info["log_prob"])
        stats["stop_share"].append(float(np.mean([a == STOP for a in trans.actions])))
    return {k: float(np.mean(v)) for k, v in stats.items() if v}
