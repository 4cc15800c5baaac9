"""NBS: its pieces (autoencoder tiling, sampler episodes, predictor, snapshot bank) and the whole
method through the harness and the CLI on the tiny generated dataset: fit, a real kill and resume,
predict, test, and the ablation switches."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from rlad.errors import ConfigError, DataError
from rlad.workflows import detection as api
from rlad.models.base import FitData
from rlad.models.maps import area_resize
from rlad.models.nbs import autoencoder
from rlad.models.nbs.autoencoder import (
    PatchAutoencoder,
    SnapshotStack,
    crop_patches,
    error_maps,
    interleave,
    phase_weight,
    stacked_block_errors,
    stacked_error_maps,
    tile,
    untile,
)
from rlad.models.nbs.context import ContextConfig, ContextEncoder, to_grid
from rlad.models.nbs.head import InferenceHead, head_state, new_predictor, restore_head
from rlad.models.nbs.predictor import Predictor, SubgridConv2d, train_epochs, weighted_bce
from rlad.models.nbs.fused_prior import fused_prior
from rlad.models.nbs.profiles import SnapshotBank, profile_features
from rlad.models.nbs.sampler import (
    STOP,
    EpisodeRunner,
    Geometry,
    SamplerMaps,
    SamplerPolicy,
    crop_around,
    move_centre,
    patch_origin,
)
from rlad.models.backbones import BackboneConfig
from rlad.models.nbs.config import NBSConfig
from rlad.models.nbs.model import NBSModel
from rlad.models.nbs.labelled import augment_labeled

@pytest.fixture(scope="module")
def tiny(nbs_short_cycles) -> list[str]:
    """A few cycles on 64 px images: every part of the loop runs, in seconds."""
    return nbs_short_cycles + [
        "model.predictor_crop=16",
        "model.steps=60",
        "model.checkpoint_every=1",
        "model.context.backbone.stages=[1]",
        "model.context.backbone.weights=random",
        "model.context.prior_stages=[1,2]",
    ]


@pytest.fixture
def fit_tiny(quiet_fit, tiny):
    """`fit_tiny(method, data, out, extra=())`: a fit on `tiny` plus `extra`."""
    return lambda method, data, out, extra=(): quiet_fit(method, data, out, tiny + list(extra))


# --- pieces --------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 5])
def test_tile_untile_round_trip(offset):
    images = torch.rand(2, 3, 40, 56)
    tiles, layout = tile(images, 16, offset)
    assert tiles.shape[1:] == (3, 16, 16)
    assert torch.equal(untile(tiles, layout), images)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_autoencoder_dense_bottleneck_equals_the_convolutions(norm):
    ae = PatchAutoencoder(patch=32, width=8, bottleneck=12, norm=norm)
    patches = torch.rand(4, 3, 32, 32)
    ae.train()
    assert torch.allclose(ae(patches), ae.forward_reference(patches), atol=1e-5)
    ae.eval()
    assert torch.allclose(ae(patches), ae.forward_reference(patches), atol=1e-5)


def test_autoencoder_shapes_and_error_maps():
    ae = PatchAutoencoder(patch=32, width=8, bottleneck=12)
    patches = torch.rand(4, 3, 32, 32)
    assert ae(patches).shape == patches.shape
    errors = error_maps(ae, torch.rand(2, 3, 48, 64), offsets=(0, 8))
    assert errors.shape == (2, 48, 64) and (errors >= 0).all()
    assert ae.training  # error_maps restores the mode it found


def test_crop_patches_gathers_the_right_windows():
    images = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).view(2, 3, 10, 12)
    patches = crop_patches(images, torch.tensor([1, 0]), torch.tensor([2, 0]), torch.tensor([3, 5]), 4)
    assert torch.equal(patches[0], images[1, :, 2:6, 3:7])
    assert torch.equal(patches[1], images[0, :, 0:4, 5:9])


def test_moves_stay_inside_and_crops_pad_with_zeros():
    assert move_centre((8, 8), 1, 24, 16, 64, 64) == (8, 8)  # up-left from the corner: clamped
    assert move_centre((32, 32), 8, 10, 16, 64, 64) == (42, 42)
    assert patch_origin(2, 60, 16, 64, 64) == (0, 48)
    stack = torch.ones(2, 10, 10)
    crop = crop_around(stack, (0, 0), 6)
    assert crop[:, :3, :3].sum() == 0 and crop[:, 3:, 3:].sum() == 2 * 9


def test_episode_runner_fills_the_batch_and_records_log_probs():
    torch.manual_seed(0)
    geometry = Geometry(patch=16, crop=32, move=6)
    policy = SamplerPolicy(geometry.crop)
    runner = EpisodeRunner(policy, geometry, parallel=3, max_moves=4)
    images = torch.rand(5, 3, 48, 48)
    maps = SamplerMaps.of(images)
    ae = PatchAutoencoder(16, 8, 8)
    visits: dict = {}
    index, top, left, trans = runner.collect(
        images, maps, ae, visits, 10, np.random.default_rng(0), torch.Generator().manual_seed(0), record=True
    )
    assert len(index) == len(trans) == 10
    assert ((top >= 0) & (top <= 32) & (left >= 0) & (left <= 32)).all()
    assert sum(float(v.sum()) for v in visits.values()) == 10 * 16 * 16  # every patch counted once
    with torch.no_grad():
        logits = policy(torch.stack(trans.states))
    replayed = torch.log_softmax(logits, -1).gather(1, torch.tensor(trans.actions).view(-1, 1)).squeeze(1)
    assert torch.allclose(replayed, torch.tensor(trans.log_probs), atol=1e-5)
    # R_cover = -sigmoid(mean visit count >= 0), R_struct = sigmoid(mean Sobel magnitude >= 0)
    assert all(-1.0 < c <= -0.5 for c in trans.cover) and all(0.5 <= s < 1.0 for s in trans.struct)
    assert min(trans.cover) < -0.5  # later patches of the batch land on visited pixels
    assert STOP == 0
    state = trans.states[0]
    assert state.shape == (6, 32, 32)
    prior = state[5][state[5] > 0]
    assert float(prior.max()) == pytest.approx(1.0, abs=1e-5)  # min-max scaled inside the image


def test_state_crop_matches_a_whole_image_computation_away_from_borders():
    """The state's RGB and visit channels are plain crops; its AE error equals the whole-image error
    where the crop's tiles line up with the image's."""
    geometry = Geometry(patch=16, crop=32, move=6)
    runner = EpisodeRunner(SamplerPolicy(32), geometry)
    images = torch.rand(1, 3, 64, 64)
    ae = PatchAutoencoder(16, 8, 8)
    visits = {0: torch.rand(64, 64)}
    episode = runner._start(1, 64, 64, np.random.default_rng(0))
    episode.centre = (32, 32)  # crop = rows/cols 16..47, tiles aligned with the image's 16 px grid
    state = runner.states([episode], images, SamplerMaps.of(images), ae, visits)[0]
    assert torch.equal(state[:3], images[0, :, 16:48, 16:48])
    assert torch.equal(state[4], visits[0][16:48, 16:48])
    assert torch.allclose(state[3], error_maps(ae, images)[0, 16:48, 16:48], atol=1e-6)


def test_fused_prior_is_min_max_scaled():
    prior = fused_prior(torch.rand(2, 1, 20, 20), torch.rand(2, 3, 20, 20))
    flat = prior.flatten(1)
    assert torch.allclose(flat.min(1).values, torch.zeros(2), atol=1e-6)
    assert torch.allclose(flat.max(1).values, torch.ones(2), atol=1e-5)


def test_weighted_bce_matches_the_formula():
    logits = torch.tensor([[-1.0, 0.5], [2.0, 0.0]]).view(1, 1, 2, 2)
    target = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    p = torch.sigmoid(logits)
    for alpha in (1.0, 0.3, 0.0):
        expected = -(target * torch.log(p) + alpha * (1 - target) * torch.log(1 - p)).mean()
        assert torch.allclose(weighted_bce(logits, target, alpha), expected, atol=1e-6)


@pytest.mark.parametrize("padding", ["replicate", "zeros"])
@pytest.mark.parametrize("dilation, size", [(1, 16), (2, 16), (4, 16), (8, 16), (4, 12), (3, 16), (2, 15)])
def test_subgrid_convolution_equals_the_dilated_one(dilation, size, padding):
    """Forward and both gradients of nn.Conv2d's dilated convolution (replicate or zero padding), in
    float64, on sizes the dilation divides (sub-grids) and sizes it does not (plain route)."""
    torch.manual_seed(0)
    fast = SubgridConv2d(3, 2, 3, padding=dilation, dilation=dilation, padding_mode=padding).double()
    plain = torch.nn.Conv2d(3, 2, 3, padding=dilation, dilation=dilation, padding_mode=padding).double()
    plain.load_state_dict(fast.state_dict())
    images = torch.randn(2, 3, size, size + dilation * 2 * (size % 2 == 0), dtype=torch.float64, requires_grad=True)
    ours, theirs = fast(images), plain(images)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    ours_grads = torch.autograd.grad((ours * theirs.detach()).sum(), [images, fast.weight, fast.bias])
    theirs_grads = torch.autograd.grad((theirs * theirs.detach()).sum(), [images, plain.weight, plain.bias])
    for mine, reference in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-10)


def test_training_folds_the_channel_dropout_into_the_projection():
    """In training the predictor's dropout + 1x1 projection run as one batched product with the mask
    in the weights: same seed, same dropped channels, same outputs and weight gradients as the
    layers one after the other (float64); in eval mode the dropout is off either way."""
    predictor = Predictor(7, (4,), (1,), project=5, dropout=0.4).double().train()
    assert predictor.dropout_then_project
    features = torch.randn(3, 7, 6, 6, dtype=torch.float64)
    outputs, grads = [], []
    for forward in (predictor, predictor.body):  # the folded route, then the layers in sequence
        torch.manual_seed(11)
        out = forward(features)
        outputs.append(out)
        grads.append(torch.autograd.grad((out * out.detach()).sum(), predictor.body[1].weight)[0])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-10)
    torch.manual_seed(12)
    other_draw = predictor(features)
    assert not torch.allclose(other_draw, outputs[0])  # the mask is random: a test with it on
    predictor.eval()
    torch.testing.assert_close(predictor(features), predictor.body[2:](predictor.body[1](features)), rtol=0, atol=1e-12)


def test_a_saved_head_keeps_its_padding_and_older_ones_load_as_replicate():
    """The padding a model was trained with comes back with it whatever the config now says, and a
    model saved before the option existed (no padding in its state) was trained with replicate."""
    from dataclasses import replace

    cfg = NBSConfig(context=ContextConfig(kind="image"))
    encoder = ContextEncoder(cfg.context, cfg.predictor_grid)
    state = head_state(new_predictor(replace(cfg, predictor_padding="zeros"), encoder, 0), encoder)
    _, restored = restore_head(cfg, state, 0)
    paddings = {m.padding_mode for m in restored.body if isinstance(m, SubgridConv2d)}
    assert restored.padding == "zeros" and paddings == {"zeros"}
    older = {key: value for key, value in state.items() if key != "predictor_padding"}
    _, old = restore_head(replace(cfg, predictor_padding="zeros"), older, 0)
    assert old.padding == "replicate" and {m.padding_mode for m in old.body if isinstance(m, SubgridConv2d)} == {"replicate"}


def test_prior_residual_predictor_starts_from_the_prior():
    predictor = Predictor(5, (8, 4), (1, 2), project=6, dropout=0.1, prior_residual=True).eval()
    features = torch.randn(2, 5, 12, 12)
    assert torch.allclose(predictor(features), features[:, -1:] - 3.0, atol=1e-6)
    paper = Predictor(10)  # the published network: dilations 1, 2, 4, 8; widths 32, 16, 8, 4
    convs = [m for m in paper.body if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation[0] for c in convs[:4]] == [1, 2, 4, 8] and [c.out_channels for c in convs] == [32, 16, 8, 4, 1]


def test_train_epochs_with_encode_trains_the_feature_network_too():
    # A trainable feature network (benchmarks/nbs_finetune.py) sees tuples of inputs, stacked item by item.
    torch.manual_seed(0)
    encoder = torch.nn.Conv2d(3, 4, 1)
    predictor = Predictor(5, widths=(4,), dilations=(1,))

    def encode(image, extra):
        assert image.shape == (2, 3, 8, 8) and extra.shape == (2, 1, 8, 8)
        return torch.cat([encoder(image), extra], 1)

    examples = [((torch.rand(3, 8, 8), torch.rand(1, 8, 8)), (torch.rand(1, 8, 8) > 0.5).float()) for _ in range(4)]
    before = encoder.weight.detach().clone()
    optimizer = torch.optim.Adam([*predictor.parameters(), *encoder.parameters()], lr=1e-2)
    loss = train_epochs(predictor, optimizer, examples, 2, 2, 0, 1.0, torch.Generator().manual_seed(0), encode=encode)
    assert np.isfinite(loss)
    assert not torch.equal(encoder.weight, before)
    with pytest.raises(ValueError, match="crop"):
        train_epochs(predictor, optimizer, examples, 1, 2, 4, 1.0, torch.Generator(), encode=encode)


@torch.no_grad()
def test_blur_smooths_the_maps_and_leaves_the_image_scores_alone():
    from rlad.models.nbs.head import probability_maps

    logits = torch.full((1, 1, 16, 16), -6.0)
    logits[0, 0, 8, 8] = 6.0  # one hot grid cell
    sharp = probability_maps(logits, (64, 64), score_pool=1, blur_sigma=0)
    smooth = probability_maps(logits, (64, 64), score_pool=1, blur_sigma=8)
    assert np.allclose(sharp.scores, smooth.scores)  # scores come from the grid, before smoothing
    assert smooth.maps.max() < sharp.maps.max()  # the peak spreads out ...
    assert abs(smooth.maps.mean() - sharp.maps.mean()) < 0.01 * sharp.maps.mean()  # ... keeping its mass
    peak = np.unravel_index(smooth.maps[0].argmax(), (64, 64))
    assert all(abs(int(p) - 34) <= 2 for p in peak)  # where the hot cell is (grid 8 of 16 -> pixel ~34)
    assert smooth.maps[0, 33, 27] > 2 * sharp.maps[0, 33, 27]  # and reaches pixels the sharp map does not


@torch.no_grad()
def test_prior_boost_adds_the_prior_channel_to_the_logits_at_inference():
    from rlad.models.nbs.head import predict_maps

    torch.manual_seed(0)
    predictor = Predictor(5, (8, 4), (1, 2), prior_residual=True).eval()
    torch.nn.init.normal_(predictor.body[-1].weight)  # a trained-looking body, not the zero start
    features = torch.randn(2, 5, 12, 12)
    logits = predictor(features)
    for boost in (0.0, 1.0, 2.5):
        maps = predict_maps(NBSConfig(prior_boost=boost, blur_sigma=0), predictor, features, (12, 12))
        expected = torch.sigmoid(logits + boost * features[:, -1:])[:, 0]
        assert np.allclose(maps.maps, expected.numpy(), atol=1e-6)
        assert np.allclose(maps.scores, expected.amax(dim=(1, 2)).numpy(), atol=1e-6)
    without_prior = Predictor(5, (8, 4), (1, 2)).eval()  # no prior channel: the boost does not apply
    plain = predict_maps(NBSConfig(prior_boost=2.0, blur_sigma=0), without_prior, features, (12, 12))
    assert np.allclose(plain.maps, torch.sigmoid(without_prior(features))[:, 0].numpy(), atol=1e-6)


def test_snapshot_bank_replays_the_stored_weights():
    torch.manual_seed(0)
    ae = PatchAutoencoder(16, 8, 8)
    bank = SnapshotBank(template=ae)
    images = torch.rand(2, 3, 32, 32)
    expected = []
    for _ in range(3):
        with torch.no_grad():
            for p in ae.parameters():
                p.add_(0.05 * torch.randn_like(p))
        bank.add(ae)
        expected.append(error_maps(ae, images))
    rebuilt = SnapshotBank(bank.snapshots, template=PatchAutoencoder(16, 8, 8))
    assert torch.allclose(rebuilt.profile(images), torch.stack(expected, 1), atol=1e-6)


def test_phase_convolution_equals_the_transposed_one():
    torch.manual_seed(1)
    weight, bias, x = torch.randn(5, 3, 4, 4), torch.randn(3), torch.randn(2, 5, 6, 7)
    transposed = torch.nn.functional.conv_transpose2d(x, weight, bias, stride=2, padding=1)
    phased = torch.nn.functional.conv2d(x, phase_weight(weight), bias.repeat_interleave(4), padding=1)
    assert torch.allclose(interleave(phased), transposed, atol=1e-5)


def _moved_snapshots(patch, width, bottleneck, count=3):
    """Autoencoders away from their initialisation, so every weight matters."""
    torch.manual_seed(patch)
    snapshots = [PatchAutoencoder(patch, width, bottleneck) for _ in range(count)]
    for ae in snapshots:
        with torch.no_grad():
            for p in ae.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return snapshots


@pytest.mark.parametrize("patch, width, bottleneck, tiles_per_pass, tiles_per_dense",
                         [(16, 8, 16, None, None), (16, 8, 16, 5, None), (16, 8, 16, 5, 7), (32, 16, 200, None, None),
                          (64, 8, 20, None, None)])
def test_stacked_snapshots_equal_one_pass_per_snapshot(patch, width, bottleneck, tiles_per_pass, tiles_per_dense, monkeypatch):
    if tiles_per_pass:  # 12 tiles in passes of 5, 5 and 2 through one product per dense layer
        monkeypatch.setattr(autoencoder, "STACK_TILES_PER_PASS", tiles_per_pass)
    if tiles_per_dense:  # dense products over 7 and 5 tiles: passes of 5 and 2, then one of 5
        monkeypatch.setattr(autoencoder, "STACK_TILES_PER_DENSE", tiles_per_dense)
    snapshots = _moved_snapshots(patch, width, bottleneck)
    images = torch.rand(2, 3, 2 * patch, 3 * patch)
    expected = torch.stack([error_maps(ae, images) for ae in snapshots], dim=1)
    assert torch.allclose(stacked_error_maps(SnapshotStack(snapshots), images), expected, atol=1e-5)
    # The block errors: the same maps averaged over 2 x 2 pixel blocks, also where tiles are padded.
    blocks = torch.nn.functional.avg_pool2d(expected, 2)
    assert torch.allclose(stacked_block_errors(SnapshotStack(snapshots), images), blocks, atol=1e-5)
    ragged = images[..., : 2 * patch - 6, : 3 * patch - 2]
    expected = torch.nn.functional.avg_pool2d(torch.stack([error_maps(ae, ragged) for ae in snapshots], dim=1), 2)
    assert torch.allclose(stacked_block_errors(SnapshotStack(snapshots), ragged), expected, atol=1e-5)
    with pytest.raises(ValueError, match="even image size"):
        stacked_block_errors(SnapshotStack(snapshots), images[..., :-1, :])


def test_bf16_stack_stays_close_to_fp32_and_the_bank_keeps_one_stack_per_precision():
    snapshots = _moved_snapshots(16, 8, 16)
    images = torch.rand(2, 3, 64, 64)
    exact = stacked_block_errors(SnapshotStack(snapshots), images)
    rounded = stacked_block_errors(SnapshotStack(snapshots, torch.bfloat16), images)
    assert rounded.dtype == torch.float32
    assert not torch.equal(rounded, exact)  # the bf16 path really ran
    assert torch.allclose(rounded, exact, rtol=0.03, atol=2e-3)
    bank = SnapshotBank(template=PatchAutoencoder(16, 8, 16))
    for ae in snapshots:
        bank.add(ae)
    assert torch.equal(bank.features(images, 32, torch.bfloat16), profile_features(rounded, 32))
    assert torch.allclose(bank.features(images, 32), profile_features(exact, 32), atol=1e-5)


def test_profile_precision_is_validated_and_resolved():
    with pytest.raises(ConfigError, match="profile_precision"):
        NBSConfig(profile_precision="fp16").validate()
    model = NBSModel(NBSConfig(profile_precision="bf16"))
    assert model.profile_dtype() == torch.bfloat16
    model.config.profile_precision = "fp32"
    assert model.profile_dtype() == torch.float32


@pytest.mark.parametrize("size, grid", [(64, 32), (64, 16), (64, 24), (48, 32)])
def test_snapshot_bank_features_equal_the_profile_on_the_grid(size, grid):
    """`features` (block errors where the sizes allow) = `profile_features` of the full-resolution
    profile, for grids the block errors reach exactly (32, 16) and ones they do not (24; 48 px)."""
    snapshots = _moved_snapshots(16, 8, 16)
    bank = SnapshotBank(template=PatchAutoencoder(16, 8, 16))
    for ae in snapshots:
        bank.add(ae)
    images = torch.rand(2, 3, size, size)
    expected = profile_features(torch.stack([error_maps(ae, images) for ae in snapshots], dim=1), grid)
    assert torch.allclose(bank.features(images, grid), expected, atol=1e-4)


def test_snapshot_bank_falls_back_where_it_cannot_stack():
    torch.manual_seed(2)
    ae = PatchAutoencoder(16, 8, 8, norm="batch")
    assert not SnapshotStack.supports(ae)
    ae(torch.rand(4, 3, 16, 16))  # running statistics
    bank = SnapshotBank(template=ae)
    bank.add(ae)
    images = torch.rand(1, 3, 32, 32)
    assert torch.allclose(bank.profile(images), error_maps(ae, images)[:, None], atol=1e-6)
    plain = SnapshotBank(template=PatchAutoencoder(16, 8, 8))
    plain.add(PatchAutoencoder(16, 8, 8))
    assert torch.allclose(plain.profile(images, offsets=(0, 8)), error_maps(plain._built()[0], images, (0, 8))[:, None], atol=1e-6)


def test_augmentation_keeps_originals_first_and_masks_binary():
    images = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    masks = np.zeros((2, 32, 32), np.uint8)
    masks[:, 10:20, 8:14] = 1
    out_images, out_masks = augment_labeled(images, masks, 3, seed=0)
    assert out_images.shape == (6, 3, 32, 32) and out_masks.shape == (6, 32, 32)
    assert np.array_equal(out_images[0], images[0]) and np.array_equal(out_images[3], images[1])
    assert set(np.unique(out_masks)) <= {0, 1} and out_masks[1].sum() > 0


def test_context_channels_match_their_count():
    images = torch.rand(2, 3, 64, 64)
    normal = (np.random.default_rng(0).random((4, 3, 64, 64)) * 255).astype(np.uint8)
    for kind in ("none", "image", "backbone", "patchcore"):
        backbone = BackboneConfig(weights="random", stages=[1, 2, 4])
        encoder = ContextEncoder(ContextConfig(kind=kind, backbone=backbone, prior_stages=[1, 2]), grid=16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoder.fit(normal, seed=0)
        out = encoder(images)
        assert out.shape == (2, encoder.channels, 16, 16), kind
        assert torch.allclose(torch.cat([to_grid(p, 16) for p in encoder.parts(images)], 1), out, atol=1e-6), kind
        if kind == "patchcore":  # the prior is standardised on normal images
            normals = encoder(FitData.to_tensor(normal))[:, -1]
            assert abs(float(normals.mean())) < 1.0
            # ... and is PatchCore's own map, area-resized to the grid (built there without the full size)
            levels = encoder._levels(images)
            full = encoder.prior.predict_from_levels([levels[s] for s in (1, 2)], (64, 64)).maps
            want = (area_resize(torch.from_numpy(full)[:, None], (16, 16)) - encoder.prior_mean) / encoder.prior_std
            assert torch.allclose(out[:, -1:], want, atol=1e-5)


@pytest.mark.parametrize("project, prior_boost", [(8, 1.0), (8, 0.0), (0, 1.0)])
def test_inference_head_from_parts_equals_the_head_on_the_joined_grid(project, prior_boost):
    """The projection run per part before the resize (`from_parts`) gives the maps of the predictor on
    the concatenated grid input, with and without a projection layer and the prior boost."""
    torch.manual_seed(3)
    normal = (np.random.default_rng(0).random((4, 3, 64, 64)) * 255).astype(np.uint8)
    encoder = ContextEncoder(ContextConfig(kind="patchcore", backbone=BackboneConfig(weights="random", stages=[1, 2, 4]),
                                           prior_stages=[1, 2]), grid=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder.fit(normal, seed=0)
    cfg = NBSConfig(predictor_grid=16, predictor_project=project, prior_boost=prior_boost, predictor_widths=[8, 4],
                    predictor_dilations=[1, 2])
    predictor = new_predictor(cfg, encoder, 3).eval()
    with torch.no_grad():  # a trained-looking predictor: every weight and BatchNorm statistic matters
        for name, value in list(predictor.named_parameters()) + list(predictor.named_buffers()):
            if value.dtype.is_floating_point:
                value.copy_(value.abs() + 0.5 if "running_var" in name else torch.randn_like(value) * 0.3)
    head = InferenceHead(cfg, predictor)
    images = torch.rand(2, 3, 64, 64)
    parts = [torch.randn(2, 3, 16, 16), *encoder.parts(images)]
    assert {tuple(p.shape[-2:]) for p in parts} != {(16, 16)}  # parts at several resolutions
    expected = head(torch.cat([to_grid(p, 16) for p in parts], 1), (64, 64))
    got = head.from_parts(parts, (64, 64))
    assert np.allclose(got.maps, expected.maps, atol=1e-5) and np.allclose(got.scores, expected.scores, atol=1e-5)
    if project:  # a part missing is refused, not mis-sliced
        with pytest.raises(ValueError, match="input channels"):
            head.from_parts(parts[1:], (64, 64))


@pytest.mark.parametrize(
    "override, message",
    [
        ({"window": 30}, "model.window"),
        ({"patch_size": 48}, "power of two"),
        ({"sampler_update_to": 25}, "sampler_update_from/to"),
        ({"sampler": "clever"}, "model.sampler"),
        ({"predictor_crop": 100}, "model.predictor_crop"),
        ({"steps": 5}, "shorter than one cycle"),
        ({"prior_boost": -1.0}, "model.prior_boost"),
        ({"blur_sigma": -1.0}, "model.blur_sigma"),
        ({"score_pool": 0}, "model.score_pool"),
        ({"predictor_padding": "reflect"}, "model.predictor_padding"),
    ],
)
def test_config_errors_name_the_option(override, message):
    cfg = NBSConfig(**override)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_unsupervised_data_is_refused_with_a_hint(tiny_mvtec, tmp_path, fit_tiny):
    with pytest.raises(DataError, match="--labeled-per-type"):
        fit_tiny("nbs", tiny_mvtec, tmp_path / "run", ["protocol.labeled_per_type=0"])


# --- the whole method ----------------------------------------------------------------------------


def test_fit_test_predict_and_repeatability(tiny_mvtec, tmp_path, fit_tiny):
    run = fit_tiny("nbs", tiny_mvtec, tmp_path / "run")
    split = json.loads((run.path / "split.json").read_text())
    assert len(split["labeled"]) == 2  # one per defect type (the tiny set has two per type)
    history = json.loads((run.path / "nbs_history.json").read_text())
    assert len(history) == 6 and all("r_pred" in row for row in history)
    assert any("entropy" in row for row in history)  # the learned sampler was updated

    first = api.test(run.path, tiny_mvtec, report=False)
    second = api.test(run.path, tiny_mvtec, report=False)
    assert first["n_test"] == 7 - 2 and first["n_excluded_labeled"] == 2
    for key in ("image_auroc", "pixel_auroc", "aupro", "pixel_f1_max"):
        assert first[key] == second[key]
    assert first["pixel_auroc"] > 0.8  # dark discs and lines on a smooth texture

    unseen = tmp_path / "unseen.png"
    from PIL import Image

    image = np.asarray(Image.open(tiny_mvtec / "test" / "good" / "000.png")).copy()
    image[10:20, 10:20] = 20
    Image.fromarray(image).save(unseen)
    from rlad.workflows.predict import predict

    rows = predict(run.path, [unseen], tmp_path / "pred").rows
    again = predict(run.path, [unseen], tmp_path / "pred2").rows
    assert rows[0]["raw_score"] == again[0]["raw_score"]
    assert (tmp_path / "pred" / rows[0]["map"]).is_file()


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tiny_mvtec, tmp_path, fit_tiny,
                                                                   interrupt_after_checkpoint):
    reference = fit_tiny("nbs", tiny_mvtec, tmp_path / "whole")
    interrupt_after_checkpoint(lambda: fit_tiny("nbs", tiny_mvtec, tmp_path / "cut"), after=2)
    resumed = fit_tiny("nbs", tiny_mvtec, tmp_path / "cut")
    assert any(row.get("event") == "resume" for row in resumed.read_log())

    whole, cut = api.load_run(reference.path), api.load_run(resumed.path)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert np.allclose(whole.model.predict(images).maps, cut.model.predict(images).maps, atol=1e-5)


def test_a_killed_cli_fit_resumes_when_rerun(tiny_mvtec, tmp_path, tiny, killed_cli_fit_rerun):
    # Enough cycles that the process is still training when the first checkpoint appears.
    killed, log = killed_cli_fit_rerun("nbs", tiny_mvtec, tmp_path / "run", tiny, steps=200, timeout=300)
    resume = [row for row in log if row.get("event") == "resume"]
    assert len(resume) == 1 and resume[0]["cycle"] >= 1
    assert any(row.get("event") == "cycle" for row in killed)
    # No cycle was skipped (those after the last checkpoint before the kill ran twice).
    cycles = sorted({row["cycle"] for row in log if row.get("event") == "cycle"})
    assert cycles == list(range(200 // 10))


@pytest.mark.parametrize(
    "method, extra",
    [
        ("nbs", ["model.sampler=uniform"]),
        ("nbs", ["model.reset=false"]),
        ("nbs", ["model.context.kind=none"]),
        ("refine", []),
    ],
)
def test_ablations_and_the_supervised_control_run(method, extra, tiny_mvtec, tmp_path, metrics_recomputed, fit_tiny):
    run = fit_tiny(method, tiny_mvtec, tmp_path / "run", extra)
    metrics = api.test(run.path, tiny_mvtec)
    assert metrics["method"] == method and metrics["n_excluded_labeled"] == 2
    reference = metrics_recomputed(run.path, tiny_mvtec)  # the labelled images left out, the run's own maps
    assert metrics["n_test"] == reference["n_test"] == 5
    assert metrics["pixel_auroc"] == pytest.approx(reference["pixel_auroc"], abs=1e-6)
    if method == "nbs" and "model.sampler=uniform" in extra:
        history = json.loads((run.path / "nbs_history.json").read_text())
        assert not any("entropy" in row for row in history)  # no policy, no sampler update


def test_cli_fit_and_test_json(tiny_mvtec, tmp_path, capsys, tiny):
    from rlad.cli.main import main

    args = ["fit", "nbs", "--data", str(tiny_mvtec), "--out", str(tmp_path / "run"), "--labeled-per-type", "1"]
    for item in tiny:
        args += ["--set", item]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    capsys.readouterr()
    assert main(["test", str(tmp_path / "run"), "--data", str(tiny_mvtec), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["method"] == "nbs" and metrics["n_excluded_labeled"] == 2


def test_bad_config_is_refused_before_a_run_directory_exists(tmp_path):
    with pytest.raises(ConfigError, match="shorter than one cycle"):
        api.build_config("nbs", None, ["model.steps=5"])
    assert not (tmp_path / "run").exists()


def test_a_start_that_failed_before_any_checkpoint_does_not_block_new_options(tiny_mvtec, tmp_path, fit_tiny):
    with pytest.raises(DataError):
        fit_tiny("nbs", tiny_mvtec, tmp_path / "run", ["protocol.labeled_per_type=0"])
    run = fit_tiny("nbs", tiny_mvtec, tmp_path / "run")  # different options, same --out: nothing was lost
    assert (run.path / "model.pt").is_file()
