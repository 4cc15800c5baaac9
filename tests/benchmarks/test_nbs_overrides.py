"""Which `--set` overrides of benchmarks/nbs.py reach which row: protocol.* every row, plain keys the
nbs/refine rows only, DATASET:KEY=VALUE that dataset's rows, METHOD:KEY=VALUE that method's rows."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.nbs import for_dataset, row_overrides  # noqa: E402

GIVEN = [
    "protocol.dev_fraction=0.3",
    "model.predictor_batch=4",
    "magnetic_tile:model.steps=100",
    "patchcore:model.coreset_ratio=0.05",
]


def rows(method: str, dataset: str) -> list[str]:
    return row_overrides(method, [], for_dataset(GIVEN, dataset), seed=3)


def test_method_prefixed_overrides_reach_only_that_methods_rows():
    patchcore = rows("patchcore", "magnetic_tile")
    assert "model.coreset_ratio=0.05" in patchcore
    assert "model.predictor_batch=4" not in patchcore and "model.steps=100" not in patchcore
    assert "protocol.dev_fraction=0.3" in patchcore
    refine = rows("refine", "magnetic_tile")
    assert "model.coreset_ratio=0.05" not in refine and not any(o.startswith("patchcore:") for o in refine)
    assert {"model.predictor_batch=4", "model.steps=100", "protocol.dev_fraction=0.3"} <= set(refine)


def test_dataset_prefixed_overrides_reach_only_that_datasets_rows():
    assert "model.steps=100" not in rows("refine", "mpdd_metal_plate_512")
    assert "model.coreset_ratio=0.05" in rows("patchcore", "mpdd_metal_plate_512")
