"""Building pair files from dataset folders (the record and its JSONL: `records`).

Real pairs: one per test image of a category; the box is the bounding box of the LARGEST connected
component of the query's mask (the paper's default; `box_mode="whole"` boxes every defect pixel
instead); the reference is picked by `references.ReferencePicker`.

Synthetic pairs (`--synthetic N`): half are cut-paste pairs (the largest defect component of a real
defective image of the category, rescaled 0.6-1.4x and Poisson-blended onto a normal training image,
`rlad.data.synth.blend.paste_defect`), half Perlin-shaped blends of a foreign texture
(`rlad.data.synth.defects.add_defect(..., "perlin")`). Following the paper, the reference of a
synthetic pair is the very normal image the defect was blended onto (`synthetic_reference="same"`);
`"similar"` picks another normal image instead, which makes synthetic pairs look like real ones (the
reference is then never pixel-aligned). Their images go to `<stem>_images/` next to the pair file,
a folder this module marks as its own and refuses to overwrite otherwise.

Adapting to a new category from its normal images only (`adaptation_pairs`): no test image, mask or
label of that category is read. Normal/normal pairs (`normal_pairs`: a train/good query against the
most similar *other* train/good image, zero box) show what normal variation looks like there, and
Perlin pairs (`synthetic_pairs(..., kinds=("perlin",))`) on its train/good images give boxes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rlad.data.pairs.records import PairRecord, image_hw, write_pairs
from rlad.data.pairs.references import ReferencePicker, image_features
from rlad.errors import DataError
from rlad.viz import save_png, to_uint8

IMAGES_MARKER = ".rlad-pair-images"


def _real_box(sample, box_mode: str) -> tuple[int, int, int, int]:
    from rlad.boxes import mask_to_box
    from rlad.data.images import load_mask

    if sample.label == 0:
        return (0, 0, 0, 0)
    mask = load_mask(sample.mask_path, expected_size=sample.size)
    box = mask_to_box(mask, mode=box_mode)
    if all(v == 0 for v in box):
        raise DataError(f"{sample.mask_path}: the mask of defective image {sample.path} is empty; "
                        "a defective query needs a non-empty mask")
    return tuple(int(v) for v in box)


def real_pairs(folder, reference: str = "similar", seed: int = 0, box_mode: str = "largest") -> list[PairRecord]:
    """One pair per test image of a discovered category (normal queries get the zero box)."""
    from rlad.engine.progress import progress

    rng = np.random.default_rng(seed)
    picker = ReferencePicker(list(folder.train), reference, rng, folder.category)
    query_features = (image_features([s.path for s in folder.test], f"{folder.category}: queries")
                      if reference == "similar" else [None] * len(folder.test))
    records = []
    for sample, feature in zip(progress(folder.test, desc=f"{folder.category}: pairs"), query_features):
        ref = picker.pick(sample.path, sample.size, query_feature=feature)
        records.append(PairRecord(
            id=f"{folder.category}/real/{sample.defect_type}/{sample.path.stem}",
            reference=str(ref.path), query=str(sample.path), box=_real_box(sample, box_mode),
            query_size=tuple(sample.size), reference_size=tuple(ref.size), category=folder.category,
            defect_type=sample.defect_type, source="real",
        ))
    return records


def synthetic_pairs(folder, n: int, image_dir: Path, seed: int = 0, synthetic_reference: str = "same",
                    reference: str = "similar", scale_range: tuple[float, float] = (0.6, 1.4),
                    kinds: Sequence[str] = ("paste", "perlin")) -> list[PairRecord]:
    """`n` synthetic defective pairs for one category, images written under `image_dir/<category>/`.

    Even indices are cut-paste pairs (when the category has defective images with masks and "paste"
    is in `kinds`), odd ones Perlin blends; without donors every pair is a Perlin blend.
    `kinds=("perlin",)` reads nothing but the category's train/good images (no test image, mask or
    label). Boxes are exact: the bounding box of the blended mask (largest component, which for these
    single-blob masks is the whole mask).
    """
    from rlad.boxes import mask_to_box
    from rlad.data.images import load_image, load_mask
    from rlad.data.synth.blend import paste_defect
    from rlad.data.synth.defects import add_defect
    from rlad.engine.progress import progress

    if n <= 0:
        return []
    if synthetic_reference not in ("same", "similar"):
        raise DataError(f"synthetic_reference {synthetic_reference!r} is not one of 'same', 'similar'")
    unknown = sorted(set(kinds) - {"paste", "perlin"})
    if unknown or not kinds:
        raise DataError(f"synthetic kinds {list(kinds)}: choose from 'paste', 'perlin'")
    rng = np.random.default_rng([seed, 7919])
    normals = list(folder.train)
    if not normals:
        raise DataError(f"{folder.root}: train/good has no images to paste defects onto")
    donors = [s for s in folder.test if s.label == 1 and s.mask_path is not None] if "paste" in kinds else []
    if "perlin" not in kinds and not donors:
        raise DataError(f"{folder.category}: no defective test images with masks to cut pastes from")
    picker = ReferencePicker(normals, reference, rng, folder.category) if synthetic_reference == "similar" else None
    records = []
    for index in progress(range(n), desc=f"{folder.category}: synthetic"):
        base = normals[int(rng.integers(len(normals)))]
        normal = load_image(base.path)
        kind = "paste" if donors and (index % 2 == 0 or "perlin" not in kinds) else "perlin"
        origin = ""
        if kind == "paste":
            donor = donors[int(rng.integers(len(donors)))]
            image, mask = paste_defect(normal, load_image(donor.path), load_mask(donor.mask_path, donor.size),
                                       rng, scale_range=scale_range)
            origin = str(donor.path)
        else:
            image, mask = add_defect(normal, "perlin", rng)
        box = tuple(int(v) for v in mask_to_box(mask))
        if not any(box):  # cannot happen with non-empty masks; never write a mislabelled pair
            raise DataError(f"{folder.category}: synthetic defect #{index} produced an empty mask")
        query_path = Path(image_dir) / folder.category / f"{kind}_{index:05d}.png"
        save_png(query_path, to_uint8(np.asarray(image, np.float32)))
        ref = base if picker is None else picker.pick(query_path, base.size, exclude=base.path)
        records.append(PairRecord(
            id=f"{folder.category}/{kind}/{index:05d}", reference=str(ref.path), query=str(query_path), box=box,
            query_size=tuple(base.size), reference_size=tuple(ref.size), category=folder.category,
            defect_type=kind, source=kind, origin=origin,
        ))
    return records


def normal_pairs(folder, n: int, seed: int = 0, reference: str = "similar") -> list[PairRecord]:
    """Up to `n` normal/normal pairs of one category from its train/good images alone: each query is
    a distinct train/good image (in a seeded random order), its reference another train/good image
    (most similar, or random), the box is the zero box. Needs at least two train/good images."""
    if n <= 0:
        return []
    normals = list(folder.train)
    if len(normals) < 2:
        raise DataError(f"{folder.category}: normal/normal pairs need at least 2 train/good images, "
                        f"found {len(normals)}")
    rng = np.random.default_rng([seed, 6007])
    picker = ReferencePicker(normals, reference, rng, folder.category)
    features = picker.features
    records = []
    for i in rng.permutation(len(normals))[:n]:
        query = normals[int(i)]
        ref = picker.pick(query.path, query.size, exclude=query.path,
                          query_feature=None if features is None else features[int(i)])
        records.append(PairRecord(
            id=f"{folder.category}/normal/good/{query.path.stem}", reference=str(ref.path), query=str(query.path),
            box=(0, 0, 0, 0), query_size=tuple(query.size), reference_size=tuple(ref.size),
            category=folder.category, defect_type="good", source="normal",
        ))
    return records


def normal_images(category_dir: Path | str):
    """A category's train/good images only (a `DatasetFolder` with an empty test split): what the
    adaptation pairs may read. The folder needs no test/ or ground_truth/ at all."""
    from rlad.data.folder import NORMAL, DatasetFolder, Sample
    from rlad.data.images import IMAGE_EXTENSIONS

    root = Path(category_dir)
    good = root / "train" / NORMAL
    paths = sorted(p for p in good.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if good.is_dir() else []
    if not paths:
        raise DataError(f"{root}: no images in train/good")
    train = [Sample(path=p, split="train", label=0, defect_type=NORMAL, mask_path=None, size=image_hw(p))
             for p in paths]
    return DatasetFolder(root=root, category=root.name, train=train, test=[])


def adaptation_pairs(root: Path | str, out: Path | str, perlin: int, normal: int, seed: int = 0,
                     reference: str = "similar") -> list[PairRecord]:
    """Pairs for adapting a grounder to the categories under `root` from their train/good images only:
    `normal` normal/normal pairs and `perlin` Perlin pairs in total (spread over the categories; the
    Perlin pair's reference is another, similar normal image, as for real queries). Nothing of the
    test split (images, masks, labels) is read. Written to `out` (images in `<stem>_images/`)."""
    from rlad.data.folder import discover_categories

    out = Path(out)
    if perlin < 0 or normal < 0:
        raise DataError(f"perlin and normal pair counts must be >= 0, got {perlin}, {normal}")
    folders = [normal_images(p) for p in discover_categories(root)]
    records: list[PairRecord] = []
    image_dir = images_dir_for(out)
    _prepare_images_dir(image_dir)
    for i, folder in enumerate(folders):
        records += normal_pairs(folder, _share(normal, len(folders), i), seed=seed + 1000 * i, reference=reference)
        records += synthetic_pairs(folder, _share(perlin, len(folders), i), image_dir, seed=seed + 1000 * i,
                                   synthetic_reference="similar", reference=reference, kinds=("perlin",))
    write_pairs(records, out)
    return records


def _share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` spread over `parts` as evenly as possible (the first ones get the rest)."""
    return total // parts + (1 if index < total % parts else 0)


def images_dir_for(out: Path | str) -> Path:
    """Where synthetic images of a pair file go: `<folder>/<stem>_images/`."""
    out = Path(out)
    return out.parent / f"{out.stem}_images"


def _prepare_images_dir(path: Path) -> None:
    """Empty an images folder this module wrote before; refuse to touch anybody else's folder."""
    if path.exists():
        if not (path / IMAGES_MARKER).is_file():
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            else:
                raise DataError(f"{path}: exists and was not written by `rlad data pairs`; "
                                "move it away or choose another --out")
        else:
            shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / IMAGES_MARKER).write_text("synthetic pair images written by `rlad data pairs`; rewritten on rerun\n")


@dataclass
class PairBuildSummary:
    out: str
    n_pairs: int
    per_category: dict = field(default_factory=dict)
    images_dir: str | None = None

    def rows(self) -> list[dict]:
        """One table row per category: {"category", "normal", "defective", "synthetic"}."""
        return [{"category": category, **counts} for category, counts in self.per_category.items()]


def build_pairs(root: Path | str, out: Path | str, synthetic: int = 0, reference: str = "similar",
                seed: int = 0, synthetic_reference: str = "same", box_mode: str = "largest",
                categories: Sequence[str] | None = None) -> tuple[list[PairRecord], PairBuildSummary]:
    """Real pairs of every category under `root` (+ `synthetic` pasted pairs in total, spread over
    the categories), written to `out`. Returns the records and a summary."""
    from rlad.data.folder import discover, discover_categories

    if synthetic < 0:
        raise DataError(f"--synthetic must be >= 0, got {synthetic}")
    out = Path(out)
    if out.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"--out {out}: expected a .jsonl file name")
    folders = [discover(p) for p in discover_categories(root)]
    if categories is not None:
        folders = [f for f in folders if f.category in set(categories)]
        if not folders:
            raise DataError(f"{root}: none of the categories {list(categories)} found")
    records: list[PairRecord] = []
    for i, folder in enumerate(folders):
        records += real_pairs(folder, reference=reference, seed=seed + 1000 * i, box_mode=box_mode)
    image_dir = None
    if synthetic:
        image_dir = images_dir_for(out)
        _prepare_images_dir(image_dir)
        for i, folder in enumerate(folders):
            records += synthetic_pairs(folder, _share(synthetic, len(folders), i), image_dir, seed=seed + 1000 * i,
                                       synthetic_reference=synthetic_reference, reference=reference)
    write_pairs(records, out)
    per_category: dict = {}
    for r in records:
        row = per_category.setdefault(r.category, {"normal": 0, "defective": 0, "synthetic": 0})
        if r.source != "real":
            row["synthetic"] += 1
        elif r.label:
            row["defective"] += 1
        else:
            row["normal"] += 1
    return records, PairBuildSummary(str(out), len(records), per_category, str(image_dir) if image_dir else None)


def build_adaptation_pairs(root: Path | str, out: Path | str, perlin: int, normal: int, seed: int = 0,
                           reference: str = "similar") -> dict:
    """`adaptation_pairs`, summarised as `rlad data pairs --adapt` reports it:
    {"out" (as given), "n_pairs", "perlin", "normal"}."""
    records = adaptation_pairs(root, out, perlin=perlin, normal=normal, seed=seed, reference=reference)
    return {"out": str(out), "n_pairs": len(records), "perlin": sum(r.source == "perlin" for r in records),
            "normal": sum(r.source == "normal" for r in records)}
