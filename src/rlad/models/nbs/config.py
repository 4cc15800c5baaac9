"""The config of NBS and of its supervised control, the refiner (`--set model.*` means the same for
both; `RefineConfig` only changes two training defaults): the paper's schedule constants, rlad's
budget and deviations (docs/nbs.md "Deviations from the paper"), the sampler switches, and the
validation of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlad.config import raise_if_problems
from rlad.models.nbs.context import CONTEXTS, ContextConfig
from rlad.models.nbs.sampler import Geometry
from rlad.models.nearest import PRECISIONS

GEOMETRY_REFERENCE = 256  # the paper's patch/crop/move sizes are pixels of a 256x256 image


@dataclass
class NBSConfig:
    image_size: int = 256
    # --- the paper's schedule constants (docs/nbs.md "What runs, top to bottom") ---------------
    reset_every: int = 20
    """K: autoencoder steps per reset cycle."""
    window: int = 8
    """Loss-profile length: error maps of the last `window` steps of a cycle (also the inference passes;
    the paper: 10, docs/nbs.md "Deviations")."""
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
    predictor_padding: Literal["replicate", "zeros"] = "replicate"
    """Padding of the predictor's 3 x 3 layers: replicate (NBS), or zeros (the refiner's default: the
    convolution pads itself, about a tenth less per training step; docs/nbs.md). A saved model keeps
    the padding it was trained with."""
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
    profile_precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Arithmetic of the snapshot replay that gives a new image its loss profile at inference
    (training's profiles are fp32 either way): bf16 runs the autoencoders on the CPU's bf16 units
    (AMX / AVX512-BF16) at about half the cost, its errors within a few percent of fp32's; auto =
    bf16 where the CPU has such units (elsewhere bf16 is emulated and slower). On a development
    split the metrics were the same to three decimals (docs/nbs.md). An exported graph is fp32."""

    def geometry(self) -> Geometry:
        """Patch, crop and move sizes in pixels at `profile_size` (the paper gives them at 256 px)."""
        scale = self.profile_size / GEOMETRY_REFERENCE
        return Geometry(
            patch=int(round(self.patch_size * scale)),
            crop=int(round(self.crop_size * scale)),
            move=max(1, int(round(self.move_px * scale))),
        )

    def validate(self) -> "NBSConfig":
        """Every value the training cycle cannot run with, named as a `--set model.*` key."""
        geometry = self.geometry()
        problems = []
        if geometry.patch < 16 or geometry.patch & (geometry.patch - 1):
            problems.append(
                f"model.patch_size={self.patch_size} at model.profile_size={self.profile_size} gives {geometry.patch} px patches; "
                "need a power of two >= 16 (patch_size * profile_size / 256)"
            )
        if geometry.patch > self.profile_size:
            problems.append(f"model.patch_size={self.patch_size} is larger than the image at model.profile_size={self.profile_size}")
        if not 1 <= self.window <= self.reset_every:
            problems.append(f"model.window={self.window} must be between 1 and model.reset_every={self.reset_every}")
        if not 1 <= self.sampler_update_from <= self.sampler_update_to <= self.reset_every:
            problems.append(
                f"model.sampler_update_from/to={self.sampler_update_from}/{self.sampler_update_to} must satisfy "
                f"1 <= from <= to <= reset_every={self.reset_every}"
            )
        if self.steps < self.reset_every:
            problems.append(f"model.steps={self.steps} is shorter than one cycle (model.reset_every={self.reset_every})")
        for name in ("batch_patches", "labeled_per_cycle", "augment_copies", "predictor_batch", "checkpoint_every", "parallel_episodes", "max_moves"):
            if getattr(self, name) < 1:
                problems.append(f"model.{name}={getattr(self, name)} must be at least 1")
        if self.reward_images < 0 or self.normals_per_cycle < 0:
            problems.append("model.reward_images and model.normals_per_cycle must be >= 0")
        if len(self.predictor_widths) != len(self.predictor_dilations) or not self.predictor_widths:
            problems.append("model.predictor_widths and model.predictor_dilations need the same (non-zero) length")
        if self.predictor_grid < 8 or self.predictor_grid > self.image_size:
            problems.append(f"model.predictor_grid={self.predictor_grid} must be between 8 and image_size={self.image_size}")
        if not 0 <= self.predictor_crop <= self.predictor_grid:
            problems.append(f"model.predictor_crop={self.predictor_crop} must be between 0 (whole maps) and model.predictor_grid={self.predictor_grid}")
        if self.predictor_padding not in ("replicate", "zeros"):
            problems.append(f"model.predictor_padding={self.predictor_padding!r} is not one of replicate, zeros")
        if not 0 <= self.predictor_dropout < 1:
            problems.append(f"model.predictor_dropout={self.predictor_dropout} must be in [0, 1)")
        if self.context.kind not in CONTEXTS:
            problems.append(f"model.context.kind={self.context.kind!r} is not one of {', '.join(CONTEXTS)}")
        if self.blur_sigma < 0:
            problems.append(f"model.blur_sigma={self.blur_sigma} must be >= 0")
        if self.score_pool < 1:
            problems.append(f"model.score_pool={self.score_pool} must be >= 1")
        if self.prior_boost < 0:
            problems.append(f"model.prior_boost={self.prior_boost} must be >= 0")
        if self.profile_precision not in PRECISIONS:
            problems.append(f"model.profile_precision={self.profile_precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.sampler not in ("learned", "uniform", "frozen"):
            problems.append(f"model.sampler={self.sampler!r} is not one of learned, uniform, frozen")
        raise_if_problems(problems)
        return self


@dataclass
class RefineConfig(NBSConfig):
    """The refiner's config: NBS's keys (`--set model.*` means the same for both), with the predictor
    trained in batches of 4 for 2 epochs per round instead of 8 for 4: the same 40 updates per round
    as NBS's predictor gets per cycle, each on half as many maps, at half the training cost. On the
    development split of magnetic tile it scored as batches of 8 did (docs/nbs.md, "The refiner's
    batches"). Its dilated layers pad with zeros: a tenth less per step, and no worse on the same
    split (docs/nbs.md, "The refiner's padding")."""

    predictor_batch: int = 4
    predictor_epochs: int = 2
    predictor_padding: Literal["replicate", "zeros"] = "zeros"
