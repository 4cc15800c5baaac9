"""The compact grounder: a CPU-trainable stochastic policy (reference, query) -> box, as text.

Why it exists: a 7B VLM cannot be trained here, yet DifferAD-R1's recipe (rewards on the answer
text, GRPO with difficulty weights and group resampling) has to be tested on real data. This policy
writes exactly what a VLM writes, `<think>...</think><answer>(x1,y1),(x2,y2)</answer>` in 0..1000
coordinates (Qwen2-VL's convention), so the same reward functions and loop train it.

Model (see docs/grounding.md for the picture):

1. A frozen ImageNet MobileNetV2 trunk encodes both images (shared weights) at strides 4, 8 and 16.
   Its features are computed once per image and cached, so GRPO steps never touch the trunk.
2. Comparison maps on the stride-8 grid (G x G, G = image_size / 8):
   * fixed, per stage: the cosine distance of query and reference features at the same position
     (aligned products) and to the nearest reference position anywhere (a one-shot PatchCore:
     alignment-free, works for textures and shifted parts), each raw and divided by its image mean;
   * learned, per stage: a shared 1x1 projection P of both images, then |Pq - Pr| and Pq * Pr.
   A small dilated CNN fuses them (+ two coordinate channels) into a map F (width x G x G).
3. The box is a short token sequence, each token a categorical distribution:
   presence (normal / defect); then, if defect, x1, x2 | x1, y1 | x1..x2, y2 | y1, x1..x2. The x
   tokens read a column profile of F (max and mean over rows); the y tokens read a row profile of F
   restricted to the chosen columns, so y follows the x the policy already committed to. End tokens
   get a learned bias per box width/height and can never precede their start (boxes are always
   valid). Coordinates are quantised to `bins` per axis: start bin b -> 1000 * b / bins, end bin
   e -> 1000 * (e + 1) / bins.
4. The think block is a template filled from the box (so the format reward is 1 whenever the
   policy emits a box; the compact policy cannot fail the format, only the localization).
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rlad.boxes import CoordinateMode, format_answer, is_zero_box
from rlad.config import from_dict, to_dict
from rlad.data.pairs.records import PairRecord
from rlad.errors import ConfigError
from rlad.policies.base import Completion, Policy, TokenLogProbs, flatten

NEG = -1e9  # "impossible" logit; finite so masked positions never produce inf/nan in the loss
N_TOKENS = 5  # presence, x1, x2, y1, y2
HANDCRAFTED_PER_STAGE = 4


@dataclass
class CompactConfig:
    image_size: int = 256
    """Side of the square both images are resized to before the trunk (multiple of 16)."""
    weights: str = ""
    """torchvision ImageNet mobilenet_v2 .pth for the frozen trunk; empty = random init (tests only)."""
    stages: list[int] = field(default_factory=lambda: [1, 2, 4])
    """Trunk stages compared (rlad.models.backbones numbering: 1 = stride 4, 2 = stride 8, 4 = stride 16)."""
    width: int = 32
    """Channels of the fused comparison map and of the coordinate heads."""
    project: int = 0
    """Channels of a learned shared projection of both images compared per stage (|Pq - Pr|, Pq * Pr);
    0 = the fixed comparisons only, which transferred better to unseen domains (docs/grounding.md)."""
    bins: int = 32
    """Quantisation levels per axis for box coordinates."""
    temperature: float = 1.0
    """Sampling temperature (log-probs are computed at the same temperature, as TRL does)."""
    seed: int = 0
    """Seed of the head's initialisation (and of a random trunk)."""

    def validate(self) -> "CompactConfig":
        if self.image_size < 32 or self.image_size % 16:
            raise ConfigError(f"policy.image_size must be a multiple of 16 and >= 32, got {self.image_size}")
        if self.bins < 2 or self.bins > 1000:
            raise ConfigError(f"policy.bins must be in 2..1000, got {self.bins}")
        if self.width < 4 or self.project < 0:
            raise ConfigError(f"policy.width must be >= 4 and policy.project >= 0, "
                              f"got {self.width}, {self.project}")
        if not self.temperature > 0:
            raise ConfigError(f"policy.temperature must be > 0, got {self.temperature}")
        from rlad.models.backbones import checked_stages

        try:
            self.stages = checked_stages(self.stages)
        except ConfigError:
            raise ConfigError(f"policy.stages={self.stages}: give distinct stage numbers from 0..6, e.g. [1, 2, 4]") from None
        return self

    @property
    def grid(self) -> int:
        return self.image_size // 8


# ------------------------------------------------------------------------------ token <-> box
def box_to_tokens(box: Sequence[float], bins: int) -> list[int]:
    """A 0..1000 box -> [presence, x1, x2, y1, y2] bins (just [0] for the zero box).

    Start coordinates floor into their bin, end coordinates take the bin that contains them, so the
    rendered box (`tokens_to_box`) always covers the original one (up to one bin of slack per side).
    """
    if is_zero_box(box):
        return [0]
    x1, y1, x2, y2 = (float(v) for v in box)

    def start(v):
        return int(min(bins - 1, max(0, np.floor(v * bins / 1000.0))))

    def end(v, first):
        return int(min(bins - 1, max(first, np.ceil(v * bins / 1000.0) - 1)))

    bx1, by1 = start(x1), start(y1)
    return [1, bx1, end(x2, bx1), by1, end(y2, by1)]


def tokens_to_box(tokens: Sequence[int], bins: int) -> tuple[int, int, int, int]:
    if not tokens or tokens[0] == 0:
        return (0, 0, 0, 0)
    _, bx1, bx2, by1, by2 = (int(t) for t in tokens)

    def edge(b):
        return int(round(1000.0 * b / bins))

    return (edge(bx1), edge(by1), edge(bx2 + 1), edge(by2 + 1))


_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "centre", "right")


def think_text(box: Sequence[int]) -> str:
    """The templated reasoning (a function of the box only, so it carries no information of its own)."""
    if is_zero_box(box):
        return "Comparing the query with the reference, nothing differs beyond normal variation."
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2000.0, (y1 + y2) / 2000.0
    where = f"{_ROWS[min(2, int(cy * 3))]} {_COLS[min(2, int(cx * 3))]}"
    return (f"Comparing the query with the reference, the {where} part differs: a region about "
            f"{round((x2 - x1) / 10)}% wide and {round((y2 - y1) / 10)}% tall.")


def render(tokens: Sequence[int], bins: int) -> str:
    box = tokens_to_box(tokens, bins)
    return format_answer(box, think=think_text(box))


# --------------------------------------------------------------------------- comparison maps
def _unit(features: torch.Tensor) -> torch.Tensor:
    return features / (features.norm(dim=0, keepdim=True) + 1e-6)


def comparison_maps(query: Sequence[torch.Tensor], reference: Sequence[torch.Tensor], grid: int) -> torch.Tensor:
    """Fixed per-stage comparisons of one pair -> (4 * stages, grid, grid) float32.

    Per stage (features (C, h, w) of the query and of the reference): the aligned cosine distance
    (same position), the nearest-neighbour cosine distance (closest reference position anywhere),
    and both divided by their mean over the query (a scale-free "how unusual is this spot").
    """
    maps = []
    for q, r in zip(query, reference):
        q, r = _unit(q.float()), _unit(r.float())
        if q.shape[1:] != r.shape[1:]:
            r_aligned = F.interpolate(r[None], size=q.shape[1:], mode="bilinear", align_corners=False)[0]
        else:
            r_aligned = r
        aligned = 1.0 - (q * r_aligned).sum(0)
        qf, rf = q.flatten(1), r.flatten(1)
        nearest = 1.0 - (qf.T @ rf).amax(dim=1).view(q.shape[1:])
        stage = torch.stack([aligned, aligned / (aligned.mean() + 1e-3), nearest, nearest / (nearest.mean() + 1e-3)])
        if stage.shape[-1] != grid:
            stage = F.interpolate(stage[None], size=(grid, grid), mode="bilinear", align_corners=False)[0]
        maps.append(stage)
    return torch.cat(maps).clamp_min(0.0)


# ------------------------------------------------------------------------------- feature cache
class FeatureCache:
    """Frozen-trunk features per image path (float16) and fixed comparison maps per pair.

    One cache per trunk (image size, stages, weights); policies built on the same trunk share it
    (`shared_cache`), so a benchmark that trains many policies pays for each image once.
    """

    def __init__(self, extractor, image_size: int, grid: int):
        self.extractor = extractor
        self.image_size = image_size
        self.grid = grid
        self.images: dict[str, list[torch.Tensor]] = {}
        self.pairs: dict[tuple[str, str], torch.Tensor] = {}

    def _encode(self, paths: list[str]) -> None:
        from rlad.data.images import load_image
        from rlad.data.transforms import resize_image
        from rlad.engine.progress import progress

        batch = 16
        bar = progress(total=len(paths), desc="trunk features") if len(paths) > batch else None
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            images = np.stack([resize_image(load_image(p), self.image_size).transpose(2, 0, 1) for p in chunk])
            with torch.no_grad():
                outputs = self.extractor(torch.from_numpy(images))
            for i, path in enumerate(chunk):
                levels = []
                for level in outputs:
                    level = level[i]
                    if level.shape[-1] > self.grid:  # finer than the grid: average down, 4x less memory
                        level = F.adaptive_avg_pool2d(level, self.grid)
                    levels.append(level.to(torch.float16).clone())
                self.images[path] = levels
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()

    def ensure(self, records: Sequence[PairRecord]) -> None:
        paths = sorted({p for r in records for p in (r.reference, r.query)} - set(self.images))
        if paths:
            self._encode(paths)
        for r in records:
            key = (r.reference, r.query)
            if key not in self.pairs:
                self.pairs[key] = comparison_maps(self.images[r.query], self.images[r.reference], self.grid)

    def batch(self, records: Sequence[PairRecord]) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """(query features per stage (B, C, h, w), reference features per stage, fixed maps (B, K, G, G))."""
        self.ensure(records)
        stages = len(self.images[records[0].query])
        query = [torch.stack([self.images[r.query][s] for r in records]).float() for s in range(stages)]
        reference = [torch.stack([self.images[r.reference][s] for r in records]).float() for s in range(stages)]
        fixed = torch.stack([self.pairs[(r.reference, r.query)] for r in records])
        return query, reference, fixed


_SHARED_CACHES: dict[str, FeatureCache] = {}


def _fingerprint(extractor, cfg: CompactConfig) -> str:
    digest = hashlib.sha1(f"{cfg.image_size}:{cfg.stages}".encode())
    for name, tensor in sorted(extractor.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def shared_cache(extractor, cfg: CompactConfig) -> FeatureCache:
    key = _fingerprint(extractor, cfg)
    if key not in _SHARED_CACHES:
        _SHARED_CACHES[key] = FeatureCache(extractor, cfg.image_size, cfg.grid)
    return _SHARED_CACHES[key]


# ------------------------------------------------------------------------------------- the head
def _profile_head(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(2 * width, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, width, 3, padding=1),
                         nn.ReLU(), nn.Conv1d(width, 2, 3, padding=1))


class CompactHead(nn.Module):
    """The trainable part: comparison fusion, presence and coordinate heads."""

    def __init__(self, channels: Sequence[int], cfg: CompactConfig):
        super().__init__()
        self.grid, self.bins = cfg.grid, cfg.bins
        n_fixed = HANDCRAFTED_PER_STAGE * len(channels)
        width = cfg.width
        self.project = nn.ModuleList(nn.Conv2d(c, cfg.project, 1) for c in channels) if cfg.project else nn.ModuleList()
        in_channels = 2 * cfg.project * len(self.project) + n_fixed + 2
        self.fuse = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        )
        self.presence = nn.Sequential(nn.Linear(2 * width + 2 * n_fixed, width), nn.ReLU(), nn.Linear(width, 2))
        self.x_head = _profile_head(width)
        self.y_head = _profile_head(width)
        self.width_bias = nn.Parameter(torch.zeros(cfg.bins))
        self.height_bias = nn.Parameter(torch.zeros(cfg.bins))
        coords = torch.linspace(-1.0, 1.0, cfg.grid)
        self.register_buffer("coords", torch.stack(torch.meshgrid(coords, coords, indexing="ij")), persistent=False)

    def encode(self, query: list[torch.Tensor], reference: list[torch.Tensor], fixed: torch.Tensor):
        """-> fused map (B, W, G, G), presence logits (B, 2), x start/end logits (B, 2, bins)."""
        parts = []
        for proj, q, r in zip(self.project, query, reference):
            pq, pr = proj(q), proj(r)
            both = torch.cat([(pq - pr).abs(), pq * pr], dim=1)
            if both.shape[-1] != self.grid:
                both = F.interpolate(both, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
            parts.append(both)
        batch = fixed.shape[0]
        parts += [fixed, self.coords.expand(batch, -1, -1, -1)]
        fused = self.fuse(torch.cat(parts, dim=1))
        pooled = torch.cat([fused.amax(dim=(2, 3)), fused.mean(dim=(2, 3)),
                            fixed.amax(dim=(2, 3)), fixed.mean(dim=(2, 3))], dim=1)
        profile = torch.cat([fused.amax(dim=2), fused.mean(dim=2)], dim=1)  # over rows: (B, 2W, G cols)
        return fused, self.presence(pooled), self._to_bins(self.x_head(profile))

    def _to_bins(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] == self.bins:
            return logits
        return F.interpolate(logits, size=self.bins, mode="linear", align_corners=False)

    def column_mask(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """(N, G) bool: grid columns whose centre lies inside bins x1..x2 (at least one column)."""
        centres = (torch.arange(self.grid, dtype=torch.float32) + 0.5) / self.grid
        lo, hi = x1.float()[:, None] / self.bins, (x2.float()[:, None] + 1) / self.bins
        mask = (centres[None] >= lo) & (centres[None] <= hi)
        middle = ((lo + hi) / 2 * self.grid).long().clamp(0, self.grid - 1)
        return mask | F.one_hot(middle[:, 0], self.grid).bool()

    def y_logits(self, fused: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Row profile of `fused` (N, W, G, G) over the chosen columns -> y start/end logits (N, 2, bins)."""
        cols = self.column_mask(x1, x2)[:, None, None, :]
        count = cols.sum(-1).clamp_min(1)
        masked_max = torch.where(cols, fused, torch.full_like(fused, NEG)).amax(-1)
        masked_mean = (fused * cols).sum(-1) / count
        return self._to_bins(self.y_head(torch.cat([masked_max, masked_mean], dim=1)))


def _end_logits(end: torch.Tensor, start_token: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """End logits given the start bin: impossible before it, plus a learned bias per extent."""
    bins = end.shape[-1]
    offset = torch.arange(bins)[None, :] - start_token[:, None]
    extent_bias = bias[offset.clamp(0, bins - 1)]
    return torch.where(offset >= 0, end + extent_bias, torch.full_like(end, NEG))


class _Dists:
    """Token logits of N completions, built one token at a time (sampling needs the sampled prefix)."""

    def __init__(self, head: CompactHead, fused, presence, x_logits, index, temperature):
        self.head, self.fused, self.index, self.t = head, fused, index, temperature
        self.presence = presence[index] / temperature
        self.x_start = x_logits[index, 0] / temperature
        self.x_end = x_logits[index, 1]

    def x2(self, x1):
        return _end_logits(self.x_end, x1, self.head.width_bias) / self.t

    def y(self, x1, x2):
        logits = self.head.y_logits(self.fused[self.index], x1, x2)
        return logits[:, 0] / self.t, logits[:, 1]

    def y2(self, y_end, y1):
        return _end_logits(y_end, y1, self.head.height_bias) / self.t


def _pick(logits: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> torch.Tensor:
    if greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _gather(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of `tokens` and the entropy of each row's distribution."""
    logp = torch.log_softmax(logits, dim=-1)
    probs = logp.exp()
    entropy = -(torch.where(probs > 0, probs * logp, torch.zeros_like(probs))).sum(-1)
    return logp.gather(-1, tokens[:, None])[:, 0], entropy


# ------------------------------------------------------------------------------------- policy
class CompactPolicy(Policy):
    name = "compact"
    coordinate_mode = CoordinateMode.RELATIVE_1000

    def __init__(self, cfg: CompactConfig | None = None, trunk_state: dict | None = None,
                 head_state: dict | None = None):
        from rlad.models.backbones import FeatureExtractor, MobileNetV2, load_mobilenet_v2

        self.cfg = (cfg or CompactConfig()).validate()
        if trunk_state is not None:
            extractor = FeatureExtractor(self.cfg.stages, MobileNetV2())
            extractor.load_state_dict(trunk_state)
        else:
            if not self.cfg.weights:
                warnings.warn("policy.weights is empty: the compact grounder's frozen trunk is RANDOMLY initialised "
                              "(poor features; fine for tests). Set --set policy.weights=PATH to torchvision's "
                              "ImageNet mobilenet_v2 .pth file.", stacklevel=2)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="no backbone weights given")
                network = load_mobilenet_v2(self.cfg.weights, seed=self.cfg.seed)
            extractor = FeatureExtractor(self.cfg.stages, network)
        self.extractor = extractor
        self.cache = shared_cache(extractor, self.cfg)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.cfg.seed)
        self.head = CompactHead(extractor.channels, self.cfg)
        torch.random.set_rng_state(generator_state)
        if head_state is not None:
            self.head.load_state_dict(head_state)

    # --- persistence ------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return to_dict(self.cfg)

    def state_dict(self) -> dict:
        return {"head": copy.deepcopy(self.head.state_dict()), "trunk": self.extractor.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])

    @classmethod
    def from_payload(cls, payload: dict) -> "CompactPolicy":
        cfg = from_dict(CompactConfig, payload["config"], "policy")
        return cls(cfg, trunk_state=payload["state"]["trunk"], head_state=payload["state"]["head"])

    def frozen_copy(self) -> "CompactPolicy":
        twin = copy.copy(self)
        twin.head = copy.deepcopy(self.head)
        for p in twin.head.parameters():
            p.requires_grad_(False)
        return twin

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.head.parameters() if p.requires_grad]

    def prepare(self, prompts: Sequence[PairRecord]) -> None:
        self.cache.ensure(prompts)

    # --- generation -------------------------------------------------------------------------------
    def _dists(self, prompts: Sequence[PairRecord], n: int) -> _Dists:
        query, reference, fixed = self.cache.batch(prompts)
        fused, presence, x_logits = self.head.encode(query, reference, fixed)
        index = torch.arange(len(prompts)).repeat_interleave(n)
        return _Dists(self.head, fused, presence, x_logits, index, self.cfg.temperature)

    def sample(self, prompts: Sequence[PairRecord], n: int, generator: torch.Generator | None = None,
               greedy: bool = False) -> list[list[Completion]]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not prompts:
            return []
        with torch.no_grad():
            d = self._dists(prompts, n)
            present = _pick(d.presence, greedy, generator)
            x1 = _pick(d.x_start, greedy, generator)
            x2 = _pick(d.x2(x1), greedy, generator)
            y_start, y_end = d.y(x1, x2)
            y1 = _pick(y_start, greedy, generator)
            y2 = _pick(d.y2(y_end, y1), greedy, generator)
            tokens = torch.stack([present, x1, x2, y1, y2], dim=1)
            logp = self._token_logp(d, tokens)[0]
        completions = []
        for row, lp in zip(tokens.tolist(), logp.tolist()):
            ids = row if row[0] == 1 else row[:1]
            completions.append(Completion(render(ids, self.cfg.bins), ids, lp[: len(ids)]))
        return [completions[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _token_logp(self, d: _Dists, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        present, x1, x2, y1, y2 = tokens.unbind(1)
        y_start, y_end = d.y(x1, x2)
        pairs = [(d.presence, present), (d.x_start, x1), (d.x2(x1), x2), (y_start, y1), (d.y2(y_end, y1), y2)]
        logps, entropies = zip(*(_gather(logits, tok) for logits, tok in pairs))
        return torch.stack(logps, dim=1), torch.stack(entropies, dim=1)

    def log_probs(self, prompts: Sequence[PairRecord], groups: Sequence[Sequence[Completion]]) -> TokenLogProbs:
        sizes = {len(g) for g in groups}
        if len(groups) != len(prompts) or len(sizes) != 1:
            raise ValueError("log_probs needs one equally sized group of completions per prompt")
        n = sizes.pop()
        rows = flatten(groups)
        # Absent coordinates (normal answers) get placeholder bins; the mask removes them.
        tokens = torch.tensor([list(c.token_ids) + [0] * (N_TOKENS - len(c.token_ids)) for c in rows])
        mask = torch.tensor([[1.0] * len(c.token_ids) + [0.0] * (N_TOKENS - len(c.token_ids)) for c in rows])
        d = self._dists(prompts, n)
        logp, entropy = self._token_logp(d, tokens)
        return TokenLogProbs(logp * mask, mask, entropy * mask)


def teacher_completions(policy: CompactPolicy, records: Sequence[PairRecord]) -> list[list[Completion]]:
    """The ground-truth answer of each record as a one-completion group (for supervised training)."""
    groups = []
    for r in records:
        ids = box_to_tokens(policy.target_for(r).box, policy.cfg.bins)
        groups.append([Completion(render(ids, policy.cfg.bins), ids, [0.0] * len(ids))])
    return groups


# ---------------------------------------------------------------------------- supervised start
@dataclass
class WarmStartConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    checkpoint_every: int = 5
    """Epochs between checkpoints (a killed fit resumes from the last one)."""


def supervised_step(policy: CompactPolicy, records: Sequence[PairRecord]) -> torch.Tensor:
    """Teacher-forced cross-entropy of the ground-truth token sequences (mean over sequences)."""
    out = policy.log_probs(records, teacher_completions(policy, records))
    return -(out.logp * out.mask).sum(1).mean()


def fit_supervised(policy: CompactPolicy, records: Sequence[PairRecord], cfg: WarmStartConfig, seed: int = 0,
                   run=None) -> list[dict]:
    """The warm start (the paper's cold-start SFT analogue). Resumes from `run`'s last checkpoint."""
    from rlad.engine.progress import progress

    if not records:
        raise ConfigError("the warm start needs at least one pair")
    policy.prepare(records)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(seed)
    start_epoch, history = 0, []
    if run is not None and (state := run.latest_checkpoint()) is not None and state.get("stage") == "warm_start":
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        start_epoch, history = state["epoch"], state["history"]
    bar = progress(total=cfg.epochs, initial=start_epoch, desc="warm start")
    for epoch in range(start_epoch, cfg.epochs):
        order = rng.permutation(len(records))
        total, count = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            batch = [records[i] for i in order[start:start + cfg.batch_size]]
            loss = supervised_step(policy, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
        history.append({"epoch": epoch + 1, "loss": total / count})
        bar.update(1)
        bar.set_postfix(loss=f"{total / count:.3f}")
        if run is not None:
            run.log({"stage": "warm_start", **history[-1]})
            if (epoch + 1) % cfg.checkpoint_every == 0 and epoch + 1 < cfg.epochs:
                run.save_checkpoint({"stage": "warm_start", "epoch": epoch + 1, "policy": policy.state_dict(),
                                     "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
                                     "history": history}, step=epoch + 1)
    bar.close()
    return history
