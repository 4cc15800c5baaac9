import numpy as np

from rlad.models.postprocess import PostProcessor, fit_postprocessor


def test_normal_only_rule_uses_quantile_and_max():
    rng = np.random.default_rng(0)
    maps = rng.random((4, 8, 8)).astype(np.float32)
    scores = maps.reshape(4, -1).max(1)
    post = fit_postprocessor(maps, scores, np.zeros(4), np.zeros((4, 8, 8), bool), normal_pixel_quantile=0.9)
    assert np.isclose(post.pixel_threshold, np.quantile(maps, 0.9))
    assert np.isclose(post.image_threshold, scores.max())
    assert post.rule.startswith("normal-only")


def test_labelled_rule_picks_the_separating_threshold():
    maps = np.zeros((3, 4, 4), np.float32)
    masks = np.zeros((3, 4, 4), bool)
    maps[1, :2, :2] = 0.75
    masks[1, :2, :2] = True
    maps[2, 0, 0] = 0.3  # a bright normal pixel below the defect level
    scores = maps.reshape(3, -1).max(1)
    post = fit_postprocessor(maps, scores, np.array([0, 1, 0]), masks)
    assert 0.3 < post.pixel_threshold <= 0.75
    assert np.array_equal(post.masks(maps), masks)


def test_normalisation_puts_threshold_at_half_and_never_saturates():
    post = PostProcessor(pixel_threshold=2.0, pixel_min=1.0, image_threshold=10.0, image_min=0.0)
    assert np.allclose(post.normalise_maps(np.array([0.0, 1.0, 1.5, 2.0])), [0.0, 0.0, 0.25, 0.5])
    assert np.allclose(post.normalise_scores(np.array([5.0])), [0.25])
    assert PostProcessor.from_dict(post.to_dict()) == post
    # Far above the threshold the scores stay below 1 and keep their order (they all clipped to 1.0 once).
    high = post.normalise_scores(np.array([12.0, 20.0, 40.0, 60.0]))
    assert np.all(np.diff(high) > 0) and high.max() < 1.0 and high.min() > 0.5
    # Continuous at the threshold, and the inverse is exact on both sides.
    assert np.isclose(post.normalise_scores(np.array([10.0 + 1e-6]))[0], 0.5, atol=1e-6)
    for score in (0.1, 0.5, 0.7, 0.99):
        assert np.isclose(post.normalise_scores(np.array([post.raw_from_score(score)]))[0], score, atol=1e-6)
        assert np.isclose(post.normalise_maps(np.array([post.raw_from_score(score, pixel=True)]))[0], score, atol=1e-6)
