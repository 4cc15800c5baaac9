"""Synthetic anomalies and the embedded demo dataset (`rlad data demo`).

* `noise`: Perlin noise, Perlin masks, the largest connected component of a mask.
* `blend`: Poisson (gradient-domain) blending and cut-and-paste of a real defect (`paste_defect`).
* `defects`: the hand-made defect catalogue (`add_defect`, `DEFECT_KINDS`) and its mask convention.
* `textures`: tiles of the CC0 textures scikit-image ships offline.
* `demo`: the demo dataset writer (`write_demo_dataset`), MVTec AD layout, byte-identical per seed.

The pair builder (`rlad.data.pairs.builders`) reuses `paste_defect` and the `perlin` defect for its
synthetic pairs (docs/grounding.md, "Pair files"). Images are float arrays in [0, 1] throughout;
masks are bool (H, W). The public names are re-exported here lazily, so importing one submodule
imports only what that submodule needs.
"""

from rlad.data import lazy_reexports

_HOMES = {
    "perlin_noise": "noise",
    "perlin_mask": "noise",
    "largest_component": "noise",
    "seamless_blend": "blend",
    "paste_defect": "blend",
    "add_defect": "defects",
    "DEFECT_KINDS": "defects",
    "MIN_CHANGE": "defects",
    "Texture": "textures",
    "TEXTURES": "textures",
    "load_texture": "textures",
    "texture_tile": "textures",
    "write_demo_dataset": "demo",
    "README_MARKER": "demo",
}


__getattr__ = lazy_reexports(__name__, _HOMES)
__all__ = sorted(_HOMES)
