"""Reference choice for a query (rlad.data.pairs.references), through the pair builders."""

from __future__ import annotations

import shutil
from pathlib import Path

from rlad.data.folder import discover
from rlad.data.pairs.builders import real_pairs, synthetic_pairs


def test_similar_reference_picks_the_identical_normal_image(tiny_mvtec):
    query = tiny_mvtec / "test" / "good" / "001.png"
    shutil.copy(query, tiny_mvtec / "train" / "good" / "zz_twin.png")
    records = real_pairs(discover(tiny_mvtec), reference="similar")
    twin = next(r for r in records if r.query == str(query))
    assert Path(twin.reference).name == "zz_twin.png"


def test_synthetic_reference_similar_is_another_normal_image(tiny_mvtec, tmp_path):
    folder = discover(tiny_mvtec)
    records = synthetic_pairs(folder, 3, tmp_path / "images", synthetic_reference="similar")
    for r in records:
        assert r.reference in {str(s.path) for s in folder.train}
