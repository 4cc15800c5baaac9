"""Fixed comparison maps and the bounded feature cache (rlad.policies.compact.features)."""

from __future__ import annotations

import torch

from rlad.policies.compact.features import FeatureCache, comparison_maps
from rlad.rl.rollout import Prompt


def test_comparison_maps_light_up_where_the_query_differs():
    torch.manual_seed(0)
    reference = [torch.randn(8, 16, 16), torch.randn(4, 8, 8)]
    same = comparison_maps(reference, reference, grid=16)
    assert same.shape == (8, 16, 16)
    assert same[[0, 2, 4, 6]].abs().max() < 1e-4  # raw distances of identical images are zero
    query = [r.clone() for r in reference]
    query[0][:, 2:6, 10:14] = torch.randn(8, 4, 4) * 3
    changed = comparison_maps(query, reference, grid=16)
    inside, outside = changed[0, 2:6, 10:14].mean(), changed[0, 8:, :8].mean()
    assert inside > 0.3 and outside < 1e-4
    assert changed[2, 2:6, 10:14].mean() > changed[2, 8:, :8].mean()  # nearest-neighbour distance too


def test_nearest_neighbour_distance_ignores_a_shift():
    torch.manual_seed(1)
    reference = [torch.randn(16, 12, 12)]
    shifted = [torch.roll(reference[0], shifts=3, dims=2)]
    maps = comparison_maps(shifted, reference, grid=12)
    assert maps[0].mean() > 0.5  # aligned: everything looks different
    assert maps[2][:, 3:].abs().max() < 1e-4  # nearest neighbour: the shifted content is found


class _CountingTrunk(torch.nn.Module):
    """Two feature levels of a 16 px image: enough for the cache, and it counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, images):
        self.calls += len(images)
        x = images.float().mean(1, keepdim=True)
        return [x.repeat(1, 4, 1, 1), torch.nn.functional.avg_pool2d(x, 2).repeat(1, 2, 1, 1)]


def test_feature_cache_drops_the_least_recently_used_beyond_its_budget(tmp_path):
    import numpy as np
    from PIL import Image

    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(path)
        paths.append(str(path))
    trunk = _CountingTrunk()
    one_image = (4 * 16 * 16 + 2 * 8 * 8) * 2  # float16 bytes of one image's two levels
    one_pair = 8 * 16 * 16 * 4  # float32 comparison maps: 4 per level
    cache = FeatureCache(trunk, image_size=16, grid=16, max_bytes=2 * one_image + one_pair)
    first = Prompt(images=(paths[0], paths[1]))
    cache.ensure([first])
    assert trunk.calls == 2 and cache.bytes <= cache.max_bytes
    maps_before = cache.pair(first).clone()
    cache.ensure([Prompt(images=(paths[2], paths[3]))])  # over budget: the oldest entries go
    assert cache.bytes <= cache.max_bytes
    assert ("image", paths[0]) not in cache.entries and ("image", paths[3]) in cache.entries
    calls = trunk.calls
    _, _, fixed = cache.batch([first])  # evicted, so recomputed: the same values
    assert trunk.calls > calls
    assert fixed.shape == (1, 8, 16, 16) and torch.equal(fixed[0], maps_before)
