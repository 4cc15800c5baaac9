"""Reference/query pairs for difference grounding (DifferAD-R1's task): the record, its JSONL file,
and selecting or splitting records.

One line per pair; every field is a JSON scalar or a short list, so pandas (`pd.read_json(path,
lines=True)`) or `datasets.load_dataset("json", data_files=path)` read the file as a table without
any rlad code:

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

Boxes follow `rlad.boxes` (continuous coordinates, x2 = last column + 1).

Paths: images inside the JSONL's folder (the synthetic ones, written to `<stem>_images/`) are stored
relative to it so the pair set can be moved as a whole; other images are stored as absolute paths.
`load_pairs` resolves both and reports every bad line, with its number, in one `DataError`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from rlad.data.paths import relative_to
from rlad.errors import DataError

FIELDS = ("id", "reference", "query", "box", "label", "query_size", "reference_size", "category",
          "defect_type", "source", "origin")
SOURCES = ("real", "paste", "perlin", "normal")


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
            # Resolved first, so an image outside `base_dir` is written as an absolute path.
            row["reference"] = relative_to(Path(self.reference).resolve(), base_dir)
            row["query"] = relative_to(Path(self.query).resolve(), base_dir)
        return {name: row[name] for name in FIELDS}


def write_pairs(records: Sequence[PairRecord], path: Path | str) -> Path:
    """Write records as JSONL (atomically: a kill never leaves half a file)."""
    from rlad.data.jsonl import write_records

    path = Path(path)
    return write_records([r.to_json(path.parent) for r in records], path, "pair")


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
    from rlad.data.jsonl import check_fields

    check_fields(row, FIELDS, optional=("label", "origin", "source"))
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
    from rlad.data.jsonl import read_records

    path = Path(path)
    return read_records(path, lambda row, _: record_from_json(row, path.parent, check_files), "pair")


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
