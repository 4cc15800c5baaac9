"""Reference/query pairs for difference grounding (DifferAD-R1's task), as flat JSONL records.

One line per pair; every field is a JSON scalar or a short list, so TRL/verl exporters (and pandas,
`datasets.load_dataset("json")`) read the file as a table without any rlad code:

    id              "magnetic_tile/real/blowhole/exp1_num_4"     unique within a file
    reference       path of the defect-free reference image
    query           path of the query image
    box             [x1, y1, x2, y2] in the query's ORIGINAL pixels; [0, 0, 0, 0] = normal query
    label           1 defective, 0 normal (always equal to "box is not the zero box")
    query_size      [height, width] of the query image
    reference_size  [height, width] of the reference image
    category        dataset category (folder name); use it to keep training and evaluation disjoint
    defect_type     "good" for normal queries, else the defect folder ("paste"/"perlin" kinds are
                    synthetic)
    source          "real" | "paste" | "perlin" | "normal" (a train/good query: normal/normal pair)
    origin          provenance: for pastes, the real defective image the defect was cut from

Boxes follow `rlad.boxes` (continuous coordinates, x2 = last column + 1); a real query's box is the
bounding box of the LARGEST connected component of its mask (the paper's default; `box_mode="whole"`
boxes every defect pixel instead).

Paths: images inside the JSONL's folder (the synthetic ones, written to `<stem>_images/`) are stored
relative to it so the pair set can be moved as a whole; other images are stored as absolute paths.
`load_pairs` resolves both.

Reference choice for real pairs: `random` (any train/good image of the category) or `similar` (the
train/good image whose global feature, a standardised 32x32 grey thumbnail, has the highest cosine
similarity with the query's, penalised by the difference in aspect ratio). The pixel feature is
cheap and good for aligned products; for textures any normal tile is as good as any other.

Synthetic pairs (`--synthetic N`): half are cut-paste pairs (the largest defect component of a real
defective image of the category, rescaled 0.6-1.4x and Poisson-blended onto a normal training image,
`rlad.data.synth.paste_defect`), half Perlin-shaped blends of a foreign texture (`add_defect(...,
"perlin")`). Following the paper, the reference of a synthetic pair is the very normal image the
defect was blended onto (`synthetic_reference="same"`); `"similar"` picks another normal image
instead, which makes synthetic pairs look like real ones (the reference is then never pixel-aligned).

Adapting to a new category from its normal images only (`adaptation_pairs`): no test image, mask or
label of that category is read. Normal/normal pairs (`normal_pairs`: a train/good query against the
most similar *other* train/good image, zero box) show what normal variation looks like there, and
Perlin pairs (`synthetic_pairs(..., kinds=("perlin",))`) on its train/good images give boxes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from rlad.errors import DataError

FIELDS = ("id", "reference", "query", "box", "label", "query_size", "reference_size", "category",
          "defect_type", "source", "origin")
SOURCES = ("real", "paste", "perlin", "normal")
REFERENCE_MODES = ("random", "similar")
IMAGES_MARKER = ".rlad-pair-images"
THUMBNAIL = 32


@dataclass(frozen=True)
class PairRecord:
    id: str
    reference: str
    query: str
    box: tuple[int, int, int, int]
    query_size: tuple[int, int]
    reference_size: tuple[int, int]
    category: str
    defect_type: str
    source: str = "real"
    origin: str = ""

    @property
    def label(self) -> int:
        return int(any(v != 0 for v in self.box))

    def to_json(self, base_dir: Path | None = None) -> dict:
        row = asdict(self)
        row["box"] = [int(v) for v in self.box]
        row["query_size"] = [int(v) for v in self.query_size]
        row["reference_size"] = [int(v) for v in self.reference_size]
        row["label"] = self.label
        if base_dir is not None:
            row["reference"] = _portable_path(self.reference, base_dir)
            row["query"] = _portable_path(self.query, base_dir)
        return {name: row[name] for name in FIELDS}


def _portable_path(path: str, base_dir: Path) -> str:
    """Relative to `base_dir` when the image lies inside it, else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path(base_dir).resolve()))
    except ValueError:
        return str(resolved)


# ----------------------------------------------------------------------------------------- io
def write_pairs(records: Sequence[PairRecord], path: Path | str) -> Path:
    """Write records as JSONL (atomically: a kill never leaves half a file)."""
    from rlad.engine.run import atomic_write_bytes

    path = Path(path)
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: pair id {dup!r} appears more than once")
    lines = [json.dumps(r.to_json(path.parent)) for r in records]
    atomic_write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode())
    return path


def _int_list(value, length: int, what: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise ValueError(f"{what} must be a list of {length} integers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
            raise ValueError(f"{what} must hold integers, got {value!r}")
        out.append(int(v))
    return tuple(out)


def image_hw(path: Path | str) -> tuple[int, int]:
    """(height, width) from an image file's header; DataError naming the file if it is not an image."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__})") from None
    return height, width


def record_from_json(row: dict, base_dir: Path, check_files: bool = True) -> PairRecord:
    """One JSON object -> PairRecord; ValueError with the problem (the caller adds the line)."""
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    missing = [k for k in FIELDS if k not in row and k not in ("label", "origin", "source")]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    box = _int_list(row["box"], 4, "box")
    query_size = _int_list(row["query_size"], 2, "query_size")
    reference_size = _int_list(row["reference_size"], 2, "reference_size")
    if min(query_size) <= 0 or min(reference_size) <= 0:
        raise ValueError(f"image sizes must be positive, got {query_size} and {reference_size}")
    h, w = query_size
    if box != (0, 0, 0, 0):
        x1, y1, x2, y2 = box
        if min(box) < 0 or x2 > w or y2 > h:
            raise ValueError(f"box {list(box)} lies outside the query image ({w}x{h} pixels, WxH)")
        if not (x1 < x2 and y1 < y2):
            raise ValueError(f"box {list(box)} is not a box (needs x1 < x2 and y1 < y2; [0,0,0,0] = normal)")
    label = int(box != (0, 0, 0, 0))
    if "label" in row and row["label"] != label:
        raise ValueError(f"label {row['label']!r} contradicts box {list(box)} (label 1 iff the box is not [0,0,0,0])")
    source = row.get("source", "real")
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {', '.join(SOURCES)}")
    paths = {}
    for key in ("reference", "query"):
        if not isinstance(row[key], str) or not row[key]:
            raise ValueError(f"{key} must be an image path, got {row[key]!r}")
        resolved = Path(row[key]) if os.path.isabs(row[key]) else base_dir / row[key]
        if check_files:
            if not resolved.is_file():
                raise ValueError(f"{key} image not found: {resolved}")
            try:
                actual = image_hw(resolved)
            except DataError as exc:
                raise ValueError(f"{key} image: {exc}") from None
            declared = query_size if key == "query" else reference_size
            if actual != declared:
                raise ValueError(
                    f"{key}_size {list(declared)} differs from the image {resolved} ({actual[0]}x{actual[1]}, HxW)")
        paths[key] = str(resolved)
    return PairRecord(
        id=str(row["id"]), reference=paths["reference"], query=paths["query"], box=box, query_size=query_size,
        reference_size=reference_size, category=str(row["category"]), defect_type=str(row["defect_type"]),
        source=source, origin=str(row.get("origin", "")),
    )


def load_pairs(path: Path | str, check_files: bool = True) -> list[PairRecord]:
    """Read a pair file. Every bad line is reported (up to 20) in one DataError with its number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pair file not found" + (" (it is a folder)" if path.is_dir() else ""))
    records, problems, seen = [], [], {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: not valid JSON ({exc.msg})")
                continue
            try:
                record = record_from_json(row, path.parent, check_files)
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"line {number}: {exc}")
                continue
            if record.id in seen:
                problems.append(f"line {number}: id {record.id!r} already used on line {seen[record.id]}")
                continue
            seen[record.id] = number
            records.append(record)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise DataError(f"{path}: {len(problems)} bad pair record(s):\n  " + "\n  ".join(shown))
    if not records:
        raise DataError(f"{path}: holds no pair records")
    return records


# ------------------------------------------------------------------------------------ selection
def categories_of(records: Iterable[PairRecord]) -> list[str]:
    return sorted({r.category for r in records})


def filter_pairs(records: Sequence[PairRecord], include: Iterable[str] | None = None,
                 exclude: Iterable[str] | None = None, sources: Iterable[str] | None = None) -> list[PairRecord]:
    """Records of the `include`d categories (all when None), minus `exclude`d ones, optionally of
    some sources only. Unknown category names are an error (a typo would silently select nothing)."""
    known = set(categories_of(records))
    for names in (include, exclude):
        unknown = sorted(set(names or ()) - known)
        if unknown:
            raise DataError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                            f"the pairs have: {', '.join(sorted(known))}")
    include = set(include) if include is not None else known
    exclude = set(exclude or ())
    sources = set(sources) if sources is not None else set(SOURCES)
    return [r for r in records if r.category in include and r.category not in exclude and r.source in sources]


def split_by_category(records: Sequence[PairRecord], eval_categories: Iterable[str]) -> tuple[list, list]:
    """(training pairs, evaluation pairs) with disjoint categories: the cross-category protocol."""
    eval_categories = set(eval_categories)
    evaluation = filter_pairs(records, include=eval_categories)
    training = filter_pairs(records, exclude=eval_categories)
    return training, evaluation


def split_fraction(records: Sequence[PairRecord], fraction: float, seed: int = 0) -> tuple[list, list]:
    """Random (first, rest) split with `fraction` of the records in `first`, stratified by label."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    first, rest = [], []
    for label in (0, 1):
        group = [r for r in records if r.label == label]
        order = rng.permutation(len(group))
        take = int(round(fraction * len(group)))
        first += [group[i] for i in sorted(order[:take])]
        rest += [group[i] for i in sorted(order[take:])]
    return first, rest


# ------------------------------------------------------------------------------------ building
def global_feature(image: np.ndarray) -> np.ndarray:
    """A cheap global descriptor: the standardised 32x32 grey thumbnail, unit length."""
    from rlad.data.transforms import resize_image

    grey = resize_image(np.asarray(image, np.float32), THUMBNAIL).mean(axis=2).ravel()
    grey = grey - grey.mean()
    return grey / (np.linalg.norm(grey) + 1e-8)


def similarity(query_feature: np.ndarray, query_hw: tuple[int, int], features: np.ndarray,
               sizes: Sequence[tuple[int, int]]) -> np.ndarray:
    """Cosine similarity of thumbnails minus |log aspect-ratio difference| (squashed thumbnails of
    very differently shaped crops look alike without being alike)."""
    aspect = math.log(query_hw[1] / query_hw[0])
    penalty = np.array([abs(aspect - math.log(w / h)) for h, w in sizes])
    return features @ query_feature - penalty


def _features(paths: Sequence[Path], desc: str) -> np.ndarray:
    from concurrent.futures import ThreadPoolExecutor

    from rlad.data.folder import load_image
    from rlad.engine.progress import progress

    def one(path):
        return global_feature(load_image(path))

    out = []
    with ThreadPoolExecutor(max_workers=4) as pool, progress(total=len(paths), desc=desc) as bar:
        for feature in pool.map(one, paths):
            out.append(feature)
            bar.update(1)
    return np.stack(out) if out else np.zeros((0, THUMBNAIL * THUMBNAIL), np.float32)


class _ReferencePicker:
    """Chooses a normal reference for a query image (random or most similar)."""

    def __init__(self, normals: list, mode: str, rng: np.random.Generator, category: str):
        if mode not in REFERENCE_MODES:
            raise DataError(f"--reference {mode!r} is not one of {', '.join(REFERENCE_MODES)}")
        if not normals:
            raise DataError(f"{category}: train/good has no images to use as references")
        self.normals, self.mode, self.rng = normals, mode, rng
        self.features = _features([s.path for s in normals], f"{category}: references") if mode == "similar" else None

    def pick(self, query_path: Path, query_hw: tuple[int, int], exclude: Path | None = None,
             query_feature: np.ndarray | None = None):
        candidates = [i for i, s in enumerate(self.normals) if exclude is None or s.path != exclude]
        if not candidates:
            candidates = list(range(len(self.normals)))
        if self.mode == "random":
            return self.normals[int(self.rng.choice(candidates))]
        if query_feature is None:
            from rlad.data.folder import load_image

            query_feature = global_feature(load_image(query_path))
        scores = similarity(query_feature, query_hw, self.features[candidates],
                            [self.normals[i].size for i in candidates])
        return self.normals[candidates[int(np.argmax(scores))]]


def _real_box(sample, box_mode: str) -> tuple[int, int, int, int]:
    from rlad.boxes import mask_to_box
    from rlad.data.folder import load_mask

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
    picker = _ReferencePicker(list(folder.train), reference, rng, folder.category)
    query_features = (_features([s.path for s in folder.test], f"{folder.category}: queries")
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


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)).save(path)


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
    from rlad.data.folder import load_image, load_mask
    from rlad.data.synth import add_defect, paste_defect
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
    picker = _ReferencePicker(normals, reference, rng, folder.category) if synthetic_reference == "similar" else None
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
        _save_png(query_path, np.asarray(image, np.float32))
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
    picker = _ReferencePicker(normals, reference, rng, folder.category)
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
    from rlad.data.folder import IMAGE_EXTENSIONS, NORMAL, DatasetFolder, Sample

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

    def share(total, i):
        return total // len(folders) + (1 if i < total % len(folders) else 0)

    records: list[PairRecord] = []
    image_dir = images_dir_for(out)
    _prepare_images_dir(image_dir)
    for i, folder in enumerate(folders):
        records += normal_pairs(folder, share(normal, i), seed=seed + 1000 * i, reference=reference)
        records += synthetic_pairs(folder, share(perlin, i), image_dir, seed=seed + 1000 * i,
                                   synthetic_reference="similar", reference=reference, kinds=("perlin",))
    write_pairs(records, out)
    return records


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
        shares = [synthetic // len(folders) + (1 if i < synthetic % len(folders) else 0) for i in range(len(folders))]
        for i, (folder, count) in enumerate(zip(folders, shares)):
            records += synthetic_pairs(folder, count, image_dir, seed=seed + 1000 * i,
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


def cli_pairs(args) -> int:
    """`rlad data pairs DIR --out PAIRS.jsonl [--synthetic N] [--reference random|similar] [--seed]`."""
    from rlad.cli.common import print_json, print_table

    if getattr(args, "adapt", None):
        if args.synthetic:
            raise DataError("--adapt builds its own synthetic pairs; drop --synthetic")
        perlin, normal = args.adapt
        records = adaptation_pairs(args.dir, args.out, perlin=perlin, normal=normal, seed=args.seed, reference=args.reference)
        summary = {"out": str(args.out), "n_pairs": len(records), "perlin": sum(r.source == "perlin" for r in records),
                   "normal": sum(r.source == "normal" for r in records)}
        if getattr(args, "json", False):
            print_json(summary)
        else:
            print(f"wrote {summary['n_pairs']} adaptation pairs ({summary['perlin']} Perlin, {summary['normal']} normal) to {args.out}")
        return 0
    _, summary = build_pairs(args.dir, args.out, synthetic=args.synthetic, reference=args.reference, seed=args.seed)
    if getattr(args, "json", False):
        print_json(asdict(summary))
        return 0
    rows = [{"category": c, **v} for c, v in summary.per_category.items()]
    print_table(rows, ["category", "normal", "defective", "synthetic"])
    where = f"; synthetic images in {summary.images_dir}" if summary.images_dir else ""
    print(f"wrote {summary.n_pairs} pairs to {summary.out}{where}")
    return 0
