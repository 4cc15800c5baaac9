"""Datasets: decoding image and mask files (`images`), MVTec-layout folders (`folder`), image/mask
transforms (`transforms`), synthetic defects and the demo dataset (`synth/`) and reference/query
pairs (`pairs/`); `paths` holds the one rule for writing a path relative to a folder.

The common names are re-exported lazily, so `import rlad.data.pairs` does not pay for PIL decoding
helpers it does not use.
"""

_HOMES = {
    "Sample": "folder",
    "DatasetFolder": "folder",
    "discover": "folder",
    "discover_categories": "folder",
    "load_image": "images",
    "load_mask": "images",
    "IMAGE_EXTENSIONS": "images",
    "resize_image": "transforms",
    "resize_mask": "transforms",
    "load_sample": "transforms",
    "load_samples": "transforms",
    "augment_pair": "transforms",
    "resize_map_to": "transforms",
}


def __getattr__(name):
    import importlib

    if name in _HOMES:
        return getattr(importlib.import_module(f"rlad.data.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'rlad.data' has no attribute {name!r}")


__all__ = sorted(_HOMES)
