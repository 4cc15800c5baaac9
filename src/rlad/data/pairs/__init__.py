"""Reference/query pairs for difference grounding, as flat JSONL records.

* `records`: `PairRecord`, the JSONL schema, `write_pairs` / `load_pairs`, selecting and splitting.
* `references`: choosing a defect-free reference for a query (random or most similar).
* `builders`: real, synthetic, normal/normal and adaptation pairs from dataset folders, `build_pairs`.

The public names are re-exported here lazily, so code that only reads pair files (`records`) does not
import the builders.
"""

from rlad.data import lazy_reexports

_HOMES = {
    "FIELDS": "records",
    "SOURCES": "records",
    "PairRecord": "records",
    "write_pairs": "records",
    "load_pairs": "records",
    "record_from_json": "records",
    "image_hw": "records",
    "categories_of": "records",
    "filter_pairs": "records",
    "split_by_category": "records",
    "split_fraction": "records",
    "REFERENCE_MODES": "references",
    "global_feature": "references",
    "similarity": "references",
    "ReferencePicker": "references",
    "real_pairs": "builders",
    "synthetic_pairs": "builders",
    "normal_pairs": "builders",
    "normal_images": "builders",
    "adaptation_pairs": "builders",
    "build_adaptation_pairs": "builders",
    "images_dir_for": "builders",
    "build_pairs": "builders",
    "PairBuildSummary": "builders",
}


__getattr__ = lazy_reexports(__name__, _HOMES)
__all__ = sorted(_HOMES)
