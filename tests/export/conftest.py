"""Tiny random-weight runs of every exportable method on `tiny_mvtec`-style data, each fitted and
exported once per session (`exported(method) -> (run folder, .onnx file)`): export is the slow part."""

from __future__ import annotations

import warnings

import pytest

# Small on purpose: the graphs keep every stage type of the real configs (a two-level backbone, the
# memory bank, the Gaussians, the autoencoder, the NBS snapshots, context and prior), in seconds.
TINY = {
    "patchcore": ["image_size=64", "model.backbone.weights=random", "model.backbone.stages=[1,2]"],
    "padim": ["image_size=64", "model.backbone.weights=random", "model.backbone.stages=[0,1]", "model.n_features=12"],
    "ae": ["image_size=64", "model.steps=3", "model.batch_size=2", "model.channels=[8,8]", "model.train_crop=32"],
    "nbs": ["image_size=64", "model.profile_size=32", "model.patch_size=128", "model.predictor_grid=16",
            "model.predictor_crop=0", "model.steps=10", "model.reset_every=5", "model.window=2",
            "model.sampler=uniform", "model.sampler_update_from=3", "model.sampler_update_to=4", "model.batch_patches=4", "model.ae_width=4", "model.bottleneck=8",
            "model.augment_copies=1", "model.labeled_per_cycle=1", "model.reward_images=1",
            "model.normals_per_cycle=1", "model.predictor_buffer=4", "model.predictor_epochs=1",
            "model.predictor_widths=[4,4]", "model.predictor_dilations=[1,2]",
            "model.context.backbone.stages=[1]", "model.context.backbone.weights=random",
            "model.context.prior_stages=[1]", "protocol.labeled_per_type=1"],
    "refine": ["image_size=64", "model.predictor_grid=16", "model.steps=40",  # 2 rounds of 20
               "model.augment_copies=1", "model.predictor_buffer=4", "model.predictor_epochs=1",
               "model.predictor_widths=[4,4]", "model.predictor_dilations=[1,2]",
               "model.context.backbone.stages=[1]", "model.context.backbone.weights=random",
               "model.context.prior_stages=[1]", "protocol.labeled_per_type=1"],
}


@pytest.fixture(scope="session")
def tiny_data(tiny_patchcore_run):
    """`tiny_mvtec`'s images (the session's PatchCore run lies beside them)."""
    return tiny_patchcore_run.parent / "tiny"


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_data):
    """method -> (run folder, exported .onnx), made on first use."""
    from rlad.workflows import detection
    from rlad.workflows.export import export

    made: dict = {}
    root = tmp_path_factory.mktemp("exports")

    def get(method: str):
        if method not in made:
            with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
                patch.setenv("RLAD_PROGRESS", "0")
                warnings.simplefilter("ignore")  # random-weight backbones
                run = detection.fit(method, tiny_data, root / method, detection.build_config(method, None, TINY[method]))
                result = export(run.path, root / f"{method}.onnx")
            made[method] = (run.path, result)
        return made[method]

    return get
