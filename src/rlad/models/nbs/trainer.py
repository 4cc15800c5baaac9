"""NBS training loop and the `nbs` AnomalyModel (METHODS.md section 3).

One reset cycle of K autoencoder steps:
1. every step the sampler (learned policy, uniform, or a frozen untrained policy) picks `batch_patches`
   patches from the unlabelled normal images and the autoencoder takes one Adam step on them;
2. on the last `window` steps, the error maps of this cycle's profile set (a fixed reward subset and a
   rotating subset of the augmented labelled images, plus a few normal images) are recorded, and the
   autoencoder weights are kept as snapshots;
3. at the end of the cycle the profiles give R_pred (the predictor's loss on the reward subset, before
   it trains on them), the predictor trains on a replay buffer of profiles, the sampler takes policy-
   gradient steps on the transitions of steps `sampler_update_from..sampler_update_to`, and the
   autoencoder is reset to fresh weights (unless `reset` is off).
Inference replays the final cycle's snapshots on the image to get its profile, then runs the predictor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from rlad.errors import ConfigError, DataError
from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.nbs.autoencoder import PatchAutoencoder, crop_patches, error_maps
from rlad.models.nbs.context import CONTEXTS, ContextConfig, ContextEncoder
from rlad.models.nbs.predictor import Predictor, train_epochs, weighted_bce
from rlad.models.nbs.profiles import SnapshotBank, profile_features, resize
from rlad.models.nbs.sampler import EpisodeRunner, Geometry, SamplerMaps, SamplerPolicy, Transitions, mark_visits, uniform_patches
from rlad.models.patchcore import upsample_and_smooth
from rlad.rl.reinforce import MovingBaseline, discounted_returns, linear_anneal, reinforce_loss

GEOMETRY_REFERENCE = 256  # the paper's patch/crop/move sizes are pixels of a 256x256 image


@dataclass
class NBSConfig:
    image_size: int = 256
    # --- the paper's schedule constants (METHODS.md section 3) ---------------------------------
    reset_every: int = 20
    """K: autoencoder steps per reset cycle."""
    window: int = 10
    """Loss-profile length: error maps of the last `window` steps of a cycle (also the inference passes)."""
    patch_size: int = 64
    """Autoencoder patch side, in pixels of a 256x256 image (scaled to `profile_size`)."""
    crop_size: int = 128
    """Sampler state crop side, in pixels of a 256x256 image."""
    move_px: int = 24
    """Sampler move length, in pixels of a 256x256 image."""
    batch_patches: int = 32
    beta_anneal_steps: int = 5000
    """R = beta (R_struct + R_cover) + (1 - beta) R_pred, beta 1 -> 0 over this many autoencoder steps."""
    alpha_anneal_steps: int = 9000
    """Predictor BCE weight on normal pixels, alpha 1 -> alpha_end over this many steps."""
    alpha_end: float = 0.0
    sampler_update_from: int = 15
    """The sampler learns from its decisions on cycle steps from..to (1-based)."""
    sampler_update_to: int = 19
    predictor_epochs: int = 4
    """Predictor epochs over the replay buffer per cycle (paper: 2; 4 makes up for the shorter schedule)."""
    predictor_buffer: int = 80
    """Profiles kept for predictor training (replay buffer)."""
    bottleneck: int = 200
    ae_lr: float = 1e-3
    predictor_lr: float = 1e-3
    # --- budget (deviations from the paper, see docs/nbs.md) -----------------------------------
    steps: int = 2000
    """Total autoencoder steps (the paper runs thousands more; see docs/nbs.md for the cost)."""
    profile_size: int = 128
    """Resolution the autoencoder, sampler and profiles work at (maps are upsampled to image_size)."""
    ae_width: int = 16
    """Channels of the autoencoder's first level (doubling per level)."""
    labeled_per_cycle: int = 12
    """Augmented labelled images profiled per cycle, rotating through all of them."""
    reward_images: int = 6
    """Fixed labelled images profiled every cycle; R_pred is measured on them (a stable yardstick)."""
    normals_per_cycle: int = 4
    """Unlabelled normal images profiled per cycle as all-normal predictor examples (0: paper)."""
    augment_copies: int = 6
    """Each labelled image becomes this many: itself plus copies-1 random flips/rotations/shifts/shears."""
    context: ContextConfig = field(default_factory=ContextConfig)
    """Per-pixel context next to the profile (context.kind=none is the paper's input; docs/nbs.md)."""
    predictor_grid: int = 64
    """Side of the grid the predictor works on (profiles are area-averaged to it; maps upsampled)."""
    predictor_widths: list[int] = field(default_factory=lambda: [32, 16, 8, 4])
    predictor_dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    predictor_project: int = 32
    """1x1 projection of the predictor input to this many channels first (0 = none, the paper)."""
    predictor_dropout: float = 0.1
    """Channel dropout on the predictor input while training."""
    predictor_weight_decay: float = 1e-4
    predictor_batch: int = 8
    predictor_crop: int = 0
    """Predictor trains on random crops of this side (grid pixels; 0 = whole maps). Whole maps let it
    learn region-scale defects (magnetic tile's "uneven" areas span a quarter of an image); chosen on
    a development split over 32, docs/nbs.md."""
    predictor_normals: int = 32
    """Fixed subset of unlabelled normal images that can be profiled as all-normal examples."""
    prior_boost: float = 1.0
    """At inference, logits + prior_boost * (standardised PatchCore prior): an ensemble of the predictor,
    trained on few labels, with the unsupervised prior whose ranking it would otherwise overwrite
    (context.kind=patchcore only; 0 = the predictor alone). Chosen on a development split, docs/nbs.md."""
    # --- the sampler (RL) ----------------------------------------------------------------------
    sampler: Literal["learned", "uniform", "frozen"] = "learned"
    """learned: REINFORCE policy; uniform: random image and position per patch; frozen: the policy's
    episodes without any update (separates 'episodes' from 'learning')."""
    reset: bool = True
    """Reset the autoencoder to fresh weights every cycle (False: the 'no reset' ablation)."""
    sampler_lr: float = 3e-4
    entropy_coef: float = 0.01
    gamma: float = 0.9
    baseline_momentum: float = 0.9
    parallel_episodes: int = 4
    max_moves: int = 8
    # --- bookkeeping -----------------------------------------------------------------------------
    checkpoint_every: int = 5
    """Cycles between checkpoints."""
    score_pool: int = 1
    """Image score = max of the grid map after a score_pool x score_pool mean filter (1 = plain max;
    3 cost 0.025 image AUROC on a development split, docs/nbs.md)."""
    blur_sigma: float = 4.0
    """Gaussian smoothing of the output maps, in pixels at 256 px (0 = none; 4 as PatchCore's maps,
    chosen on a development split, docs/nbs.md)."""


def scaled_geometry(cfg: NBSConfig) -> Geometry:
    scale = cfg.profile_size / GEOMETRY_REFERENCE
    return Geometry(
        patch=int(round(cfg.patch_size * scale)),
        crop=int(round(cfg.crop_size * scale)),
        move=max(1, int(round(cfg.move_px * scale))),
    )


def validate_config(cfg: NBSConfig) -> None:
    """ConfigError naming the `model.*` option for every value the loop cannot run with."""
    geometry = scaled_geometry(cfg)
    problems = []
    if geometry.patch < 16 or geometry.patch & (geometry.patch - 1):
        problems.append(
            f"model.patch_size={cfg.patch_size} at model.profile_size={cfg.profile_size} gives {geometry.patch} px patches; "
            "need a power of two >= 16 (patch_size * profile_size / 256)"
        )
    if geometry.patch > cfg.profile_size:
        problems.append(f"model.patch_size={cfg.patch_size} is larger than the image at model.profile_size={cfg.profile_size}")
    if not 1 <= cfg.window <= cfg.reset_every:
        problems.append(f"model.window={cfg.window} must be between 1 and model.reset_every={cfg.reset_every}")
    if not 1 <= cfg.sampler_update_from <= cfg.sampler_update_to <= cfg.reset_every:
        problems.append(
            f"model.sampler_update_from/to={cfg.sampler_update_from}/{cfg.sampler_update_to} must satisfy "
            f"1 <= from <= to <= reset_every={cfg.reset_every}"
        )
    if cfg.steps < cfg.reset_every:
        problems.append(f"model.steps={cfg.steps} is shorter than one cycle (model.reset_every={cfg.reset_every})")
    for name in ("batch_patches", "labeled_per_cycle", "augment_copies", "predictor_batch", "checkpoint_every", "parallel_episodes", "max_moves"):
        if getattr(cfg, name) < 1:
            problems.append(f"model.{name}={getattr(cfg, name)} must be at least 1")
    if cfg.reward_images < 0 or cfg.normals_per_cycle < 0:
        problems.append("model.reward_images and model.normals_per_cycle must be >= 0")
    if len(cfg.predictor_widths) != len(cfg.predictor_dilations) or not cfg.predictor_widths:
        problems.append("model.predictor_widths and model.predictor_dilations need the same (non-zero) length")
    if cfg.predictor_grid < 8 or cfg.predictor_grid > cfg.image_size:
        problems.append(f"model.predictor_grid={cfg.predictor_grid} must be between 8 and image_size={cfg.image_size}")
    if not 0 <= cfg.predictor_crop <= cfg.predictor_grid:
        problems.append(f"model.predictor_crop={cfg.predictor_crop} must be between 0 (whole maps) and model.predictor_grid={cfg.predictor_grid}")
    if not 0 <= cfg.predictor_dropout < 1:
        problems.append(f"model.predictor_dropout={cfg.predictor_dropout} must be in [0, 1)")
    if cfg.context.kind not in CONTEXTS:
        problems.append(f"model.context.kind={cfg.context.kind!r} is not one of {', '.join(CONTEXTS)}")
    if cfg.blur_sigma < 0:
        problems.append(f"model.blur_sigma={cfg.blur_sigma} must be >= 0")
    if cfg.score_pool < 1:
        problems.append(f"model.score_pool={cfg.score_pool} must be >= 1")
    if cfg.prior_boost < 0:
        problems.append(f"model.prior_boost={cfg.prior_boost} must be >= 0")
    if cfg.sampler not in ("learned", "uniform", "frozen"):
        problems.append(f"model.sampler={cfg.sampler!r} is not one of learned, uniform, frozen")
    if problems:
        raise ConfigError("; ".join(problems))


# --- data preparation (shared with the supervised control) ---------------------------------------


def augment_labeled(images: np.ndarray, masks: np.ndarray, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each labelled image and mask, then copies-1 jointly warped versions (flips, +-30 deg rotation,
    10% shift, 20 deg shear): uint8 (M * copies, 3, S, S) and (M * copies, S, S)."""
    from rlad.data.transforms import augment_pair

    rng = np.random.default_rng([seed, 7919])
    out_images, out_masks = [], []
    for image, mask in zip(images, masks):
        out_images.append(image)
        out_masks.append(mask)
        for _ in range(copies - 1):
            warped, warped_mask = augment_pair(image, mask, rng, flip=True, max_rotation=30, max_shift=0.1, max_shear=20)
            out_images.append(warped)
            out_masks.append(warped_mask)
    return np.stack(out_images), np.stack(out_masks)


def to_float_at(images_uint8: np.ndarray, size: int, chunk: int = 64) -> torch.Tensor:
    """uint8 (N, C, S, S) -> float (N, C, size, size) in [0, 1], converted in chunks (bounded memory)."""
    parts = [resize(FitData.to_tensor(images_uint8[i : i + chunk]), size) for i in range(0, len(images_uint8), chunk)]
    if not parts:
        return torch.zeros(0, images_uint8.shape[1] if images_uint8.ndim == 4 else 1, size, size)
    return torch.cat(parts)


def masks_at(masks_uint8: np.ndarray, size: int) -> torch.Tensor:
    """Binary masks (N, S, S) -> soft masks (N, 1, size, size): the share of defect pixels per cell."""
    return resize(torch.from_numpy(np.ascontiguousarray(masks_uint8 > 0)).float()[:, None], size)


def require_labels(data: FitData, method: str) -> None:
    if len(data.labeled_images) == 0 or not np.asarray(data.labeled_masks).any():
        raise DataError(
            f"{method} is semi-supervised and needs labelled defective images with non-empty masks: "
            "run with --labeled-per-type N (N >= 1) on a dataset whose test/ has defect folders with masks"
        )
    if len(data.normal) == 0:
        raise DataError(f"{method} needs normal training images (train/good is empty)")


def image_score(prob_maps: torch.Tensor, pool: int) -> torch.Tensor:
    """(B, 1, h, w) probabilities -> (B,) scores: max of the locally averaged map."""
    if pool > 1:
        prob_maps = F.avg_pool2d(prob_maps, pool, stride=1, padding=pool // 2, count_include_pad=False)
    return prob_maps.flatten(1).amax(1)


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def _set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state


# --- the model -----------------------------------------------------------------------------------


@dataclass
class LabelledSet:
    """What both NBS and the supervised control train on, prepared once per fit.

    images: augmented labelled images at profile size (float); masks: their soft masks on the
    predictor grid; context: their context maps (float16); negative_* the same for a fixed subset of
    unlabelled normal images (all-normal examples); reward_ids: un-augmented originals spread over
    the labelled set (R_pred's fixed yardstick)."""

    images: torch.Tensor
    masks: torch.Tensor
    context: torch.Tensor
    negative_ids: list[int]
    negative_images: torch.Tensor
    negative_context: torch.Tensor
    reward_ids: list[int]


def draw_negative_ids(cfg: NBSConfig, n_normal: int, seed: int) -> list[int]:
    """The unlabelled normal images used as all-normal predictor examples (a seeded subset)."""
    rng = np.random.default_rng([seed, 31337])
    return sorted(rng.choice(n_normal, size=min(cfg.predictor_normals, n_normal), replace=False).tolist())


def prepare_labelled(cfg: NBSConfig, data: FitData, encoder: ContextEncoder, pool: torch.Tensor, seed: int) -> LabelledSet:
    lab_images_u8, lab_masks_u8 = augment_labeled(data.labeled_images, data.labeled_masks, cfg.augment_copies, seed)
    n_originals = len(data.labeled_images)
    spread = np.linspace(0, n_originals - 1, min(cfg.reward_images, n_originals)).round().astype(int)
    reward_ids = sorted({int(i) * cfg.augment_copies for i in spread}) if cfg.reward_images else []
    negative_ids = draw_negative_ids(cfg, len(pool), seed)
    return LabelledSet(
        images=to_float_at(lab_images_u8, cfg.profile_size),
        masks=masks_at(lab_masks_u8, cfg.predictor_grid),
        context=encoder.encode_uint8(lab_images_u8),
        negative_ids=negative_ids,
        negative_images=pool[negative_ids],
        negative_context=encoder.encode_uint8(data.normal[negative_ids]),
        reward_ids=reward_ids,
    )


def new_predictor(cfg: NBSConfig, encoder: ContextEncoder, profile_channels: int) -> Predictor:
    return Predictor(
        profile_channels + encoder.channels,
        tuple(cfg.predictor_widths),
        tuple(cfg.predictor_dilations),
        project=cfg.predictor_project,
        dropout=cfg.predictor_dropout,
        prior_residual=encoder.has_prior,
    )


def predictor_optimizer(cfg: NBSConfig, predictor: Predictor) -> torch.optim.Optimizer:
    return torch.optim.Adam(predictor.parameters(), lr=cfg.predictor_lr, weight_decay=cfg.predictor_weight_decay)


def fit_context(cfg: NBSConfig, data: FitData, seed: int) -> ContextEncoder:
    encoder = ContextEncoder(cfg.context, cfg.predictor_grid)
    encoder.fit(data.normal, seed)
    return encoder


def probability_maps(logits: torch.Tensor, size: tuple[int, int], score_pool: int, blur_sigma: float = 0.0) -> AnomalyMap:
    """Grid logits -> maps at `size` (bilinear, then a Gaussian of blur_sigma px at 256 px, scaled with
    the size: PatchCore's upsampling, one code path for both) and image scores from the grid."""
    probs = torch.sigmoid(logits)
    scores = image_score(probs, score_pool)
    maps = upsample_and_smooth(probs[:, 0], size, blur_sigma * size[-1] / 256.0)
    return AnomalyMap(maps.numpy(), scores.numpy())


def predict_maps(cfg: NBSConfig, predictor: Predictor, features: torch.Tensor, size: tuple[int, int]) -> AnomalyMap:
    """The predictor's maps at inference, ensembled with the prior channel (`prior_boost`)."""
    logits = predictor(features)
    if predictor.prior_residual and cfg.prior_boost:
        logits = logits + cfg.prior_boost * features[:, -1:]
    return probability_maps(logits, size, cfg.score_pool, cfg.blur_sigma)


# --- the model -----------------------------------------------------------------------------------


class NBSModel(AnomalyModel):
    name = "nbs"
    Config = NBSConfig
    uses_labels = True
    default_labeled_per_type = 5

    @classmethod
    def check_config(cls, config: NBSConfig) -> None:
        validate_config(config)

    def __init__(self, config: NBSConfig):
        super().__init__(config)
        self.geometry = scaled_geometry(config)
        self.predictor: Predictor | None = None
        self.bank: SnapshotBank | None = None
        self.encoder: ContextEncoder | None = None
        self.history: list[dict] = []

    def _new_autoencoder(self, seed: int, cycle: int) -> PatchAutoencoder:
        with torch.random.fork_rng():
            torch.manual_seed(int(seed) * 1_000_003 + cycle)
            return PatchAutoencoder(self.geometry.patch, self.config.ae_width, self.config.bottleneck)

    def profile_input(self, errors: torch.Tensor) -> torch.Tensor:
        """Raw errors (B, W, h, w) at profile size -> log errors on the predictor grid."""
        grid = self.config.predictor_grid
        return profile_features(resize(errors, grid))

    # --- fit --------------------------------------------------------------------------------------
    def fit(self, data: FitData, run=None) -> None:
        from rlad.engine import progress, status

        cfg = self.config
        validate_config(cfg)
        require_labels(data, self.name)
        size = cfg.profile_size
        geometry = self.geometry
        seed = int(data.seed)

        pool = to_float_at(data.normal, size)  # the sampler's images (unlabelled normals)
        maps = SamplerMaps.of(pool) if cfg.sampler != "uniform" else None
        status(f"nbs: context ({cfg.context.kind}) for {len(data.labeled_images)} labelled image(s) x {cfg.augment_copies}")
        encoder = fit_context(cfg, data, seed)
        lab = prepare_labelled(cfg, data, encoder, pool, seed)
        reward_ids = lab.reward_ids

        rng = np.random.default_rng([seed, 104729])
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed + 29)
            predictor = new_predictor(cfg, encoder, cfg.window)
        pred_opt = predictor_optimizer(cfg, predictor)
        with torch.random.fork_rng():
            torch.manual_seed(seed + 17)
            policy = SamplerPolicy(geometry.crop) if cfg.sampler != "uniform" else None
        policy_opt = torch.optim.Adam(policy.parameters(), lr=cfg.sampler_lr) if policy is not None else None
        baseline = MovingBaseline(cfg.baseline_momentum)
        runner = EpisodeRunner(policy, geometry, cfg.parallel_episodes, cfg.max_moves) if policy is not None else None
        ae = self._new_autoencoder(seed, 0)
        ae_opt = torch.optim.Adam(ae.parameters(), lr=cfg.ae_lr)
        # Replay buffer: (profile input fp16, ("lab" | "neg", index)) -- context is looked up, not copied.
        buffer: list[tuple[torch.Tensor, tuple[str, int]]] = []
        rotation: list[int] = []
        bank = SnapshotBank(template=ae)
        history: list[dict] = []
        total_cycles = cfg.steps // cfg.reset_every
        start_cycle = 0

        torch.manual_seed(seed + 7)  # the predictor's dropout: a seeded run repeats exactly
        checkpoint = run.latest_checkpoint() if run is not None else None
        if checkpoint is not None:
            if checkpoint.get("kind") != "nbs":
                raise ConfigError(f"{run.path}: its checkpoint is not from an nbs run; use a new --out")
            predictor.load_state_dict(checkpoint["predictor"])
            pred_opt.load_state_dict(checkpoint["pred_opt"])
            if policy is not None:
                policy.load_state_dict(checkpoint["policy"])
                policy_opt.load_state_dict(checkpoint["policy_opt"])
            baseline.load_state_dict(checkpoint["baseline"])
            ae.load_state_dict(checkpoint["ae"])
            ae_opt.load_state_dict(checkpoint["ae_opt"])
            buffer = [(f, (k, int(i))) for f, (k, i) in checkpoint["buffer"]]
            rotation = list(checkpoint["rotation"])
            bank = SnapshotBank(checkpoint["snapshots"], template=ae)
            history = list(checkpoint["history"])
            _set_rng_state(rng, checkpoint["rng"])
            generator.set_state(checkpoint["generator"])
            torch.set_rng_state(checkpoint["torch_rng"])  # predictor dropout draws from it
            start_cycle = int(checkpoint["cycle"]) + 1
            run.log({"event": "resume", "step": start_cycle * cfg.reset_every, "cycle": start_cycle})

        def example(entry):
            profile, (kind, index) = entry
            if kind == "lab":
                return torch.cat([profile, lab.context[index]]), lab.masks[index]
            return torch.cat([profile, lab.negative_context[index]]), torch.zeros_like(lab.masks[0])

        bar = progress(total=total_cycles * cfg.reset_every, desc=f"nbs ({cfg.sampler})", initial=start_cycle * cfg.reset_every)
        for cycle in range(start_cycle, total_cycles):
            started = time.perf_counter()
            if cfg.reset and cycle > 0:
                ae = self._new_autoencoder(seed, cycle)
                ae_opt = torch.optim.Adam(ae.parameters(), lr=cfg.ae_lr)
            # This cycle's profile set: reward subset + rotating labelled subset + a few normals.
            if len(rotation) < cfg.labeled_per_cycle:
                rotation += [int(i) for i in rng.permutation(len(lab.images))]
            rotating, rotation = rotation[: cfg.labeled_per_cycle], rotation[cfg.labeled_per_cycle :]
            profile_ids = reward_ids + [i for i in rotating if i not in reward_ids]
            negatives = rng.choice(len(lab.negative_ids), size=min(cfg.normals_per_cycle, len(lab.negative_ids)), replace=False).tolist()
            profile_images = torch.cat([lab.images[profile_ids], lab.negative_images[negatives]])
            keys = [("lab", i) for i in profile_ids] + [("neg", i) for i in negatives]
            errors: list[torch.Tensor] = []
            bank = SnapshotBank(template=ae)
            visits: dict[int, torch.Tensor] = {}
            recorded: dict[int, Transitions] = {}
            ae_losses = []
            for t in range(1, cfg.reset_every + 1):
                record = runner is not None and cfg.sampler == "learned" and cfg.sampler_update_from <= t <= cfg.sampler_update_to
                if runner is not None:
                    index, top, left, transitions = runner.collect(
                        pool, maps, ae, visits, cfg.batch_patches, rng, generator, record
                    )
                    if record:
                        recorded[t] = transitions
                else:
                    index, top, left = uniform_patches(rng, len(pool), size, size, geometry.patch, cfg.batch_patches)
                    mark_visits(visits, index, top, left, geometry.patch, size, size)
                batch = crop_patches(pool, torch.from_numpy(index), torch.from_numpy(top), torch.from_numpy(left), geometry.patch)
                ae.train()
                loss = F.mse_loss(ae(batch), batch)
                ae_opt.zero_grad(set_to_none=True)
                loss.backward()
                ae_opt.step()
                ae_losses.append(float(loss.detach()))
                if t > cfg.reset_every - cfg.window:
                    errors.append(error_maps(ae, profile_images))
                    bank.add(ae)
                bar.update(1)
            step = (cycle + 1) * cfg.reset_every
            alpha = linear_anneal(step, cfg.alpha_anneal_steps, 1.0, cfg.alpha_end)
            beta = linear_anneal(step, cfg.beta_anneal_steps, 1.0, 0.0)
            profiles = self.profile_input(torch.stack(errors, dim=1)).half()
            entries = list(zip(profiles, keys))

            # R_pred: the predictor's loss on this cycle's reward-subset profiles before it learns from them.
            predictor.eval()
            with torch.no_grad():
                n_reward = len(reward_ids)
                if n_reward:
                    feats, masks = zip(*[example(e) for e in entries[:n_reward]])
                    reward_loss = float(weighted_bce(predictor(torch.stack(feats).float()), torch.stack(masks), alpha))
                else:
                    reward_loss = 0.0
            r_pred = -reward_loss

            buffer = (buffer + entries)[-cfg.predictor_buffer :]
            pred_loss = train_epochs(
                predictor, pred_opt, [example(e) for e in buffer], cfg.predictor_epochs,
                cfg.predictor_batch, cfg.predictor_crop, alpha, generator,
            )

            sampler_stats = {}
            if cfg.sampler == "learned" and recorded:
                sampler_stats = self._update_sampler(policy, policy_opt, baseline, recorded, beta, r_pred)

            row = {
                "event": "cycle",
                "cycle": cycle,
                "step": step,
                "ae_loss": float(np.mean(ae_losses)),
                "ae_loss_last": ae_losses[-1],
                "r_pred": r_pred,
                "pred_loss": pred_loss,
                "alpha": alpha,
                "beta": beta,
                "seconds": time.perf_counter() - started,
                **sampler_stats,
            }
            history.append(row)
            bar.set_postfix(
                ae=f"{row['ae_loss_last']:.4f}", pred=f"{pred_loss:.3f}", r_pred=f"{r_pred:.3f}",
                reward=f"{sampler_stats.get('reward', float('nan')):.3f}",
            )
            if run is not None:
                run.log(row)
                last = cycle == total_cycles - 1
                if not last and (cycle + 1) % cfg.checkpoint_every == 0:
                    run.save_checkpoint(
                        {
                            "kind": "nbs",
                            "cycle": cycle,
                            "step": step,
                            "predictor": predictor.state_dict(),
                            "pred_opt": pred_opt.state_dict(),
                            "policy": policy.state_dict() if policy is not None else None,
                            "policy_opt": policy_opt.state_dict() if policy_opt is not None else None,
                            "baseline": baseline.state_dict(),
                            "ae": ae.state_dict(),
                            "ae_opt": ae_opt.state_dict(),
                            "buffer": buffer,
                            "rotation": rotation,
                            "snapshots": bank.snapshots,
                            "history": history,
                            "rng": _rng_state(rng),
                            "generator": generator.get_state(),
                            "torch_rng": torch.get_rng_state(),
                        },
                        step,
                    )
        bar.close()
        predictor.eval()
        self.predictor = predictor
        self.bank = bank
        self.encoder = encoder
        self.history = history
        self.policy = policy

    def _update_sampler(self, policy, optimizer, baseline, recorded: dict[int, Transitions], beta: float, r_pred: float) -> dict:
        """REINFORCE on the stored decisions of the update window (the released code had no gradient here)."""
        cfg = self.config
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
            stats["stop_share"].append(float(np.mean([a == 0 for a in trans.actions])))
        return {k: float(np.mean(v)) for k, v in stats.items() if v}

    # --- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> AnomalyMap:
        if self.predictor is None or self.bank is None or self.encoder is None:
            raise RuntimeError("NBSModel.predict before fit/load_state_dict")
        images = images.float()
        small = resize(images, self.config.profile_size)
        feats = torch.cat([self.profile_input(self.bank.profile(small)), self.encoder(images)], dim=1)
        return predict_maps(self.config, self.predictor, feats, tuple(images.shape[-2:]))

    def state_dict(self) -> dict:
        return {
            "predictor": self.predictor.state_dict(),
            "snapshots": self.bank.snapshots,
            "context": self.encoder.state_dict(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        self.encoder = ContextEncoder(self.config.context, self.config.predictor_grid)
        self.encoder.load_state_dict(state["context"])
        predictor = new_predictor(self.config, self.encoder, self.config.window)
        predictor.load_state_dict(state["predictor"])
        self.predictor = predictor.eval()
        template = PatchAutoencoder(self.geometry.patch, self.config.ae_width, self.config.bottleneck)
        self.bank = SnapshotBank(state["snapshots"], template=template)
        self.history = list(state.get("history", []))

    def extra_files(self) -> dict:
        import json

        return {"nbs_history.json": json.dumps(self.history, indent=1).encode()}
