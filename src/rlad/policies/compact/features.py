"""What the compact grounder compares: frozen-trunk features of both images and fixed comparison maps
of each pair, computed once and cached (bounded), so GRPO steps never touch the trunk."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rlad.policies.compact.config import CompactConfig
from rlad.rl.rollout import Prompt

HANDCRAFTED_PER_STAGE = 4


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


CACHE_BYTES = 1536 * 2**20
"""Memory budget of one feature cache (about 9,000 images at the default 256 px); the least
recently used images and pairs are dropped beyond it and recomputed when needed again."""
MAX_SHARED_CACHES = 2


class FeatureCache:
    """Frozen-trunk features per image path (float16) and fixed comparison maps per (reference, query)
    pair, least recently used first out beyond `max_bytes`.

    One cache per trunk (image size, stages, weights); policies built on the same trunk share it
    (`shared_cache`), so a benchmark that trains many policies pays for each image once.
    """

    def __init__(self, extractor, image_size: int, grid: int, max_bytes: int = CACHE_BYTES):
        self.extractor = extractor
        self.image_size = image_size
        self.grid = grid
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple, list[torch.Tensor] | torch.Tensor] = OrderedDict()
        self.bytes = 0

    def _put(self, key: tuple, value) -> None:
        tensors = value if isinstance(value, list) else [value]
        self.entries[key] = value
        self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            _, old = self.entries.popitem(last=False)
            self.bytes -= sum(t.numel() * t.element_size() for t in (old if isinstance(old, list) else [old]))

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
                self._put(("image", path), levels)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()

    def image(self, path: str) -> list[torch.Tensor]:
        key = ("image", path)
        if key not in self.entries:
            self._encode([path])
        self.entries.move_to_end(key)
        return self.entries[key]

    def pair(self, prompt: Prompt) -> torch.Tensor:
        reference, query = prompt.images
        key = ("pair", reference, query)
        if key not in self.entries:
            self._put(key, comparison_maps(self.image(query), self.image(reference), self.grid))
        self.entries.move_to_end(key)
        return self.entries[key]

    def ensure(self, prompts: Sequence[Prompt]) -> None:
        """Encode every image of `prompts` not cached yet (in batches, with a progress bar)."""
        paths = sorted({p for prompt in prompts for p in prompt.images} - {k[1] for k in self.entries if k[0] == "image"})
        if paths:
            self._encode(paths)
        for prompt in prompts:
            self.pair(prompt)

    def batch(self, prompts: Sequence[Prompt]) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """(query features per stage (B, C, h, w), reference features per stage, fixed maps (B, K, G, G))."""
        self.ensure(prompts)
        query_levels = [self.image(p.images[1]) for p in prompts]
        reference_levels = [self.image(p.images[0]) for p in prompts]
        stages = len(query_levels[0])
        query = [torch.stack([levels[s] for levels in query_levels]).float() for s in range(stages)]
        reference = [torch.stack([levels[s] for levels in reference_levels]).float() for s in range(stages)]
        fixed = torch.stack([self.pair(p) for p in prompts])
        return query, reference, fixed


_SHARED_CACHES: OrderedDict[str, FeatureCache] = OrderedDict()


def _fingerprint(extractor, cfg: CompactConfig) -> str:
    digest = hashlib.sha1(f"{cfg.image_size}:{cfg.stages}".encode())
    for name, tensor in sorted(extractor.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def shared_cache(extractor, cfg: CompactConfig) -> FeatureCache:
    """The cache of this trunk, shared by every policy on it; at most MAX_SHARED_CACHES trunks are kept."""
    key = _fingerprint(extractor, cfg)
    if key not in _SHARED_CACHES:
        _SHARED_CACHES[key] = FeatureCache(extractor, cfg.image_size, cfg.grid)
        while len(_SHARED_CACHES) > MAX_SHARED_CACHES:
            _SHARED_CACHES.popitem(last=False)
    _SHARED_CACHES.move_to_end(key)
    return _SHARED_CACHES[key]
