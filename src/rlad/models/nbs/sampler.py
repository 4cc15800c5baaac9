"""The neural batch sampler (the RL agent) and its uniform-random counterpart.

An episode walks over one image: it starts at a random position; each step the policy sees a crop of
six maps around the current position (RGB, the current autoencoder error, the visit counter, the fused
prior) and either stops or moves `move` pixels in one of 8 directions; every move adds the patch at the
new position to the autoencoder's next batch. Several episodes run side by side and a finished one is
replaced by a new episode on another image until the batch is full.

Per-move rewards are computed here (R_struct, R_cover); the task reward R_pred comes from the training
cycle (`rlad.models.nbs.cycle`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from rlad.models.maps import grey
from rlad.models.nbs.autoencoder import PatchAutoencoder, error_maps
from rlad.models.nbs.fused_prior import fuse_prior_terms, local_variance, structure_map, zscore

STOP = 0
DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))  # actions 1..8
N_ACTIONS = 1 + len(DIRECTIONS)
STATE_CHANNELS = 6


class SamplerPolicy(nn.Module):
    """Five stride-2 conv blocks 6 -> 16 -> 32 -> 32 -> 64 -> 64, FC 256, FC 9 (logits)."""

    def __init__(self, crop: int, channels: tuple[int, ...] = (16, 32, 32, 64, 64), hidden: int = 256):
        super().__init__()
        layers: list[nn.Module] = []
        previous = STATE_CHANNELS
        side = crop
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.ReLU()]
            previous = width
            side = (side + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(previous * side * side, hidden), nn.ReLU(), nn.Linear(hidden, N_ACTIONS))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(states))


@dataclass(frozen=True)
class Geometry:
    """Sizes in pixels of the image the autoencoder works on."""

    patch: int
    crop: int
    move: int


def patch_origin(centre_y: int, centre_x: int, patch: int, height: int, width: int) -> tuple[int, int]:
    """Top-left corner of the patch centred at (y, x), pushed inside the image."""
    top = min(max(centre_y - patch // 2, 0), height - patch)
    left = min(max(centre_x - patch // 2, 0), width - patch)
    return top, left


def move_centre(centre: tuple[int, int], action: int, step: int, patch: int, height: int, width: int) -> tuple[int, int]:
    """Centre after moving in direction `action` (1..8), clamped so the patch stays in the image."""
    dy, dx = DIRECTIONS[action - 1]
    half = patch // 2
    y = min(max(centre[0] + dy * step, half), height - (patch - half))
    x = min(max(centre[1] + dx * step, half), width - (patch - half))
    return y, x


def crop_around(stack: torch.Tensor, centre: tuple[int, int], crop: int) -> torch.Tensor:
    """(C, H, W) -> (C, crop, crop) window centred at `centre`, zero outside the image."""
    channels, height, width = stack.shape
    out = torch.zeros(channels, crop, crop, dtype=stack.dtype)
    top, left = centre[0] - crop // 2, centre[1] - crop // 2
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + crop, height), min(left + crop, width)
    if src_bottom > src_top and src_right > src_left:
        out[:, src_top - top : src_bottom - top, src_left - left : src_right - left] = stack[
            :, src_top:src_bottom, src_left:src_right
        ]
    return out


def uniform_patches(rng: np.random.Generator, n_images: int, height: int, width: int, patch: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` patches, each from a random image at a random position: (image index, top, left)."""
    index = rng.integers(0, n_images, size=count)
    top = rng.integers(0, height - patch + 1, size=count)
    left = rng.integers(0, width - patch + 1, size=count)
    return index, top, left


@dataclass
class Transitions:
    """What the policy did during one batch collection (kept only on steps that update the sampler)."""

    states: list[torch.Tensor] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    struct: list[float] = field(default_factory=list)
    cover: list[float] = field(default_factory=list)
    episode: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actions)

    def extend(self, other: "Transitions") -> None:
        for name in ("states", "actions", "log_probs", "struct", "cover", "episode"):
            getattr(self, name).extend(getattr(other, name))


@dataclass
class _Episode:
    image: int
    centre: tuple[int, int]
    moves: int = 0
    uid: int = 0


@dataclass
class SamplerMaps:
    """Per-image maps that do not change during training, computed once per fit.

    structure (N, 1, H, W): Sobel magnitude of the blurred grey image (R_struct averages it);
    static (N, 2, H, W): per-image z-scores of the local variance and of `structure`, the fixed
    parts of the fused prior."""

    structure: torch.Tensor
    static: torch.Tensor

    @staticmethod
    def of(images: torch.Tensor, chunk: int = 64) -> "SamplerMaps":
        structures, statics = [], []
        for start in range(0, len(images), chunk):
            part = images[start : start + chunk]
            structure = structure_map(part)
            structures.append(structure)
            statics.append(torch.cat([zscore(local_variance(grey(part))), zscore(structure)], dim=1).half())
        return SamplerMaps(torch.cat(structures), torch.cat(statics))


def _masked_zscore(maps: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    count = inside.flatten(1).sum(1).clamp_min(1).view(-1, 1, 1, 1)
    mean = (maps * inside).flatten(1).sum(1).view(-1, 1, 1, 1) / count
    var = (((maps - mean) * inside) ** 2).flatten(1).sum(1).view(-1, 1, 1, 1) / count
    return (maps - mean) / (var.sqrt() + 1e-6) * inside


def _masked_minmax(maps: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    big = torch.finfo(maps.dtype).max
    low = torch.where(inside > 0, maps, big).flatten(1).amin(1).view(-1, 1, 1, 1)
    high = torch.where(inside > 0, maps, -big).flatten(1).amax(1).view(-1, 1, 1, 1)
    return (maps - low) / (high - low + 1e-12) * inside


class EpisodeRunner:
    """Runs the policy's episodes to fill one autoencoder batch."""

    def __init__(
        self,
        policy: SamplerPolicy,
        geometry: Geometry,
        parallel: int = 4,
        max_moves: int = 8,
    ):
        self.policy = policy
        self.geometry = geometry
        self.parallel = parallel
        self.max_moves = max_moves
        self._next_uid = 0

    def _start(self, n_images: int, height: int, width: int, rng) -> _Episode:
        index = int(rng.integers(0, n_images))
        half = self.geometry.patch // 2
        centre = (
            int(rng.integers(half, height - (self.geometry.patch - half) + 1)),
            int(rng.integers(half, width - (self.geometry.patch - half) + 1)),
        )
        self._next_uid += 1
        return _Episode(index, centre, uid=self._next_uid)

    def states(self, episodes: list[_Episode], images: torch.Tensor, maps: SamplerMaps, ae: PatchAutoencoder,
               visits: dict[int, torch.Tensor]) -> torch.Tensor:
        """(E, 6, crop, crop): RGB, AE error, visit count, fused prior around each episode's position.

        Computed on the crop only (zero outside the image): the AE error of a crop costs a fraction
        of the whole image's, and the fused prior's AE-error term is standardised over the crop (the
        paper standardises over the image; its static terms still are, see SamplerMaps)."""
        crop = self.geometry.crop
        height, width = images.shape[-2:]
        ones = torch.ones(1, height, width)
        rgb = torch.stack([crop_around(images[e.image], e.centre, crop) for e in episodes])
        inside = torch.stack([crop_around(ones, e.centre, crop) for e in episodes])
        static = torch.stack([crop_around(maps.static[e.image].float(), e.centre, crop) for e in episodes])
        visit = torch.stack([crop_around(visits[e.image][None], e.centre, crop) for e in episodes])
        error = error_maps(ae, rgb)[:, None] * inside
        prior = fuse_prior_terms(_masked_zscore(error, inside), static[:, :1], static[:, 1:])
        return torch.cat([rgb, error, visit, _masked_minmax(prior, inside)], dim=1)

    def _add_patch(self, episode: _Episode, structure, visits, height: int, width: int) -> tuple[float, float, tuple[int, int]]:
        """R_struct and R_cover of the patch at the episode's position, then count the visit."""
        patch = self.geometry.patch
        top, left = patch_origin(*episode.centre, patch, height, width)
        window = (slice(top, top + patch), slice(left, left + patch))
        struct = float(torch.sigmoid(structure[episode.image, 0][window].mean()))
        visit = visits[episode.image]
        cover = -float(torch.sigmoid(visit[window].mean()))
        visit[window] += 1.0
        return struct, cover, (top, left)

    @torch.no_grad()
    def collect(
        self,
        images: torch.Tensor,
        maps: SamplerMaps,
        ae: PatchAutoencoder,
        visits: dict[int, torch.Tensor],
        batch: int,
        rng: np.random.Generator,
        generator: torch.Generator,
        record: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Transitions]:
        """Patches (image index, top, left) for one batch, and the transitions when `record`.

        images (N, 3, H, W) at the autoencoder's resolution with their `maps`; `visits` maps an image
        index to its visit counter for the current cycle (updated in place)."""
        geometry = self.geometry
        n_images, (height, width) = images.shape[0], images.shape[-2:]

        def start() -> _Episode:
            episode = self._start(n_images, height, width, rng)
            visits.setdefault(episode.image, torch.zeros(height, width))
            return episode

        episodes = [start() for _ in range(self.parallel)]
        picked: list[tuple[int, int, int]] = []
        recorded = Transitions()
        was_training = self.policy.training
        self.policy.eval()
        while len(picked) < batch:  # every decision adds one patch, so this ends after `batch` decisions
            states_t = self.states(episodes, images, maps, ae, visits)
            log_probs = torch.log_softmax(self.policy(states_t), dim=-1)
            actions = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(1)
            for slot, episode in enumerate(episodes):
                if len(picked) >= batch:
                    break
                action = int(actions[slot])
                if action == STOP:
                    # Stop = leave this image: a new episode starts at a random place and its first
                    # patch is this action's patch (a stop that added nothing would earn a free 0).
                    finished = episode
                    episode = episodes[slot] = start()
                else:
                    finished = None
                    episode.centre = move_centre(episode.centre, action, geometry.move, geometry.patch, height, width)
                struct, cover, origin = self._add_patch(episode, maps.structure, visits, height, width)
                picked.append((episode.image, *origin))
                episode.moves += 1
                if record:
                    recorded.states.append(states_t[slot])
                    recorded.actions.append(action)
                    recorded.log_probs.append(float(log_probs[slot, action]))
                    recorded.struct.append(struct)
                    recorded.cover.append(cover)
                    recorded.episode.append((finished or episode).uid)
                if finished is None and episode.moves >= self.max_moves:
                    episodes[slot] = start()
        self.policy.train(was_training)
        arr = np.asarray(picked, dtype=np.int64)
        return arr[:, 0], arr[:, 1], arr[:, 2], recorded


def mark_visits(visits: dict[int, torch.Tensor], index: np.ndarray, top: np.ndarray, left: np.ndarray, patch: int, height: int, width: int) -> None:
    """Visit bookkeeping for patches not chosen by the policy (uniform sampler), for the cover statistic."""
    for i, t, l in zip(index.tolist(), top.tolist(), left.tolist()):
        visit = visits.setdefault(i, torch.zeros(height, width))
        visit[t : t + patch, l : l + patch] += 1.0
