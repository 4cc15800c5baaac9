"""Datasets: decoding image and mask files (`images`), MVTec-layout folders (`folder`), image/mask
transforms (`transforms`), synthetic defects and the demo dataset (`synth/`) and reference/query
pairs (`pairs/`); `paths` holds the one rule for writing a path relative to a folder.

The common names are re-exported lazily (`lazy_reexports`, also used by `synth/` and `pairs/`), so
`import rlad.data.pairs.records` does not pay for PIL decoding helpers it does not use.
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


def lazy_reexports(package: str, homes: dict[str, str]):
    """A module `__getattr__` for `package` that imports `package.<homes[name]>` only when `name` is
    first used, so importing one submodule of a package never imports its siblings."""

    def __getattr__(name: str):
        import importlib

        if name in homes:
            return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_reexports(__name__, _HOMES)
__all__ = sorted(_HOMES)
