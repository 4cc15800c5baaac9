"""Datasets: MVTec-layout folders (`folder`), image/mask transforms (`transforms`), the synthetic
demo dataset (`synth`) and reference/query pairs (`pairs`).

The common names are re-exported lazily, so `import rlad.data.pairs` does not pay for PIL decoding
helpers it does not use.
"""

_FOLDER_NAMES = {
    "Sample",
    "DatasetFolder",
    "discover",
    "discover_categories",
    "load_image",
    "load_mask",
    "IMAGE_EXTENSIONS",
}
_TRANSFORM_NAMES = {"resize_image", "resize_mask", "load_sample", "load_samples", "augment_pair", "resize_map_to"}


def __getattr__(name):
    import importlib

    if name in _FOLDER_NAMES:
        return getattr(importlib.import_module("rlad.data.folder"), name)
    if name in _TRANSFORM_NAMES:
        return getattr(importlib.import_module("rlad.data.transforms"), name)
    raise AttributeError(f"module 'rlad.data' has no attribute {name!r}")


__all__ = sorted(_FOLDER_NAMES | _TRANSFORM_NAMES)
