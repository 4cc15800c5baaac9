"""Discover and validate a dataset folder in the MVTec AD layout.

    ROOT/train/good/*.<img>                     normal training images
    ROOT/test/good/*.<img>                      normal test images
    ROOT/test/<type>/*.<img>                    defective test images, one folder per defect type
    ROOT/ground_truth/<type>/<stem>_mask.<img>  one mask per defective image (same size as the image)

`<img>` is any of png, jpg, jpeg, bmp, tif, tiff, in any case. A mask named `<stem>.<img>` (no
`_mask` suffix) is accepted too. Everything that is wrong with a folder is collected and raised as
one `DataError` listing every problem, so a user fixes a folder in one pass instead of one error per
run. Harmless oddities (stray files, soft masks, empty masks) become `notes` instead.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from rlad.data.images import IMAGE_EXTENSIONS, decode_mask, header_size, hw_text, is_image_file, load_image
from rlad.data.paths import relative_to
from rlad.errors import DataError

LAYOUT_HINT = "expected MVTec AD layout: train/good, test/good, test/<type>, ground_truth/<type>/<stem>_mask.png"
MAX_LISTED_PROBLEMS = 20
MAX_NAMES_IN_NOTE = 5
NORMAL = "good"

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Sample:
    path: Path
    split: str  # "train" | "test"
    label: int  # 0 normal ("good"), 1 defective
    defect_type: str  # "good" for normal images
    mask_path: Path | None
    size: tuple[int, int]  # (height, width) of the ORIGINAL image


@dataclass
class DatasetFolder:
    root: Path
    category: str
    train: list[Sample]
    test: list[Sample]
    notes: list[str] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    @property
    def defect_types(self) -> list[str]:
        return sorted({s.defect_type for s in self.test if s.label == 1})

    def counts(self, with_total: bool = False) -> list[dict]:
        """One row per split/type: {"split", "type", "images", "masks"}; train first, then test
        with `good` before the defect types; `with_total` adds a last row summing them
        (split "total", type "")."""
        rows = []
        for split, samples in (("train", self.train), ("test", self.test)):
            types = sorted({s.defect_type for s in samples}, key=lambda t: (t != NORMAL, t))
            for kind in types:
                of_kind = [s for s in samples if s.defect_type == kind]
                rows.append(
                    {
                        "split": split,
                        "type": kind,
                        "images": len(of_kind),
                        "masks": sum(s.mask_path is not None for s in of_kind),
                    }
                )
        if with_total:
            rows.append(
                {
                    "split": "total",
                    "type": "",
                    "images": sum(r["images"] for r in rows),
                    "masks": sum(r["masks"] for r in rows),
                }
            )
        return rows


def _parallel_map(func: Callable[[T], R], items: list[T], workers: int | None = None) -> list[R]:
    """Order-preserving map over a thread pool (PIL decoders release the GIL)."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    if len(items) < 16 or workers <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(func, items))


def _catching(func: Callable[[T], R]) -> Callable[[T], R | DataError]:
    def run(item: T) -> R | DataError:
        try:
            return func(item)
        except DataError as exc:
            return exc

    return run


def _require_dir(root: Path) -> None:
    if not root.exists():
        raise DataError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, not a dataset folder ({LAYOUT_HINT})")


def discover_categories(root: Path | str) -> list[Path]:
    """`root` itself if it has train/, else each direct subfolder that has train/ (sorted)."""
    root = Path(root)
    _require_dir(root)
    if (root / "train").is_dir():
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and (p / "train").is_dir())
    if not found:
        raise DataError(f"{root}: no train/good folder here or in any subfolder ({LAYOUT_HINT})")
    return found


class _Listing:
    """Files of one folder split into images, stray files and subfolders."""

    def __init__(self, folder: Path):
        try:
            entries = sorted(folder.iterdir(), key=lambda p: p.name) if folder.is_dir() else []
        except OSError as exc:
            raise DataError(f"{folder}: cannot list folder ({exc.strerror or exc})") from None
        self.images = [p for p in entries if p.is_file() and is_image_file(p)]
        self.stray = [p for p in entries if p.is_file() and not is_image_file(p)]
        self.folders = [p for p in entries if p.is_dir()]


def _names(paths: list[Path], root: Path, limit: int = MAX_NAMES_IN_NOTE) -> str:
    shown = [relative_to(p, root) for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(shown) + more


def _problem_report(root: Path, problems: list[str]) -> str:
    listed = problems[:MAX_LISTED_PROBLEMS]
    lines = [f"invalid dataset folder {root} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
    lines += [f"  - {p}" for p in listed]
    if len(problems) > len(listed):
        lines.append(f"  ... and {len(problems) - len(listed)} more")
    return "\n".join(lines)


def _find_masks(images: list[Path], mask_folder: Path) -> tuple[dict[Path, list[Path]], list[Path]]:
    """Mask candidates per image (`<stem>_mask.<img>` first, then `<stem>.<img>`) and the masks
    that belong to no image."""
    masks_by_stem: dict[str, list[Path]] = {}
    for mask in _Listing(mask_folder).images:
        masks_by_stem.setdefault(mask.stem, []).append(mask)
    used: set[Path] = set()
    found = {}
    for image in images:
        candidates = masks_by_stem.get(f"{image.stem}_mask") or masks_by_stem.get(image.stem) or []
        found[image] = candidates
        used.update(candidates)
    orphans = [m for stem in sorted(masks_by_stem) for m in masks_by_stem[stem] if m not in used]
    return found, orphans


def _pair_masks(
    images: list[Path], mask_folder: Path, root: Path, problems: list[str]
) -> list[tuple[str, str, Path, Path | None]]:
    """(split, type, image, mask) entries for one defect folder; images without exactly one mask
    become problems."""
    masks, _ = _find_masks(images, mask_folder)
    entries = []
    for image in images:
        candidates = masks[image]
        if not candidates:
            expected = mask_folder / f"{image.stem}_mask.png"
            problems.append(f"{relative_to(image, root)}: defect image without a mask (expected {relative_to(expected, root)})")
        elif len(candidates) > 1:
            problems.append(f"{relative_to(image, root)}: several masks match ({_names(candidates, root)}); keep one")
        else:
            entries.append(("test", mask_folder.name, image, candidates[0]))
    return entries


def discover(root: Path | str, verify: bool = False) -> DatasetFolder:
    """Index one category folder. Image headers are always read (sizes, mask/image size check);
    `verify=True` also fully decodes every image and mask, which catches truncated files and
    reports soft (non-binary) and empty masks in `notes`."""
    root = Path(root)
    _require_dir(root)
    if not (root / "train" / NORMAL).is_dir():
        raise DataError(f"{root}: no train/good folder ({LAYOUT_HINT})")
    problems: list[str] = []
    notes: list[str] = []
    skipped: list[Path] = []
    ignored_folders: list[Path] = []

    top = _Listing(root)
    skipped += top.stray + top.images  # images at the top level belong to no split
    known_top = {"train", "test", "ground_truth"}
    ignored_folders += [p for p in top.folders if p.name not in known_top]

    train_root = _Listing(root / "train")
    skipped += train_root.stray + train_root.images
    for folder in train_root.folders:
        if folder.name != NORMAL:
            problems.append(
                f"train/{folder.name}: only train/good is supported (training images must be normal; "
                "put defective images under test/<type>)"
            )
    train_listing = _Listing(root / "train" / NORMAL)
    skipped += train_listing.stray
    ignored_folders += train_listing.folders
    if not train_listing.images:
        problems.append("train/good: no images (extensions: " + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")")
    entries: list[tuple[str, str, Path, Path | None]] = [("train", NORMAL, p, None) for p in train_listing.images]

    test_dir = root / "test"
    gt_dir = root / "ground_truth"
    test_images = 0
    if not test_dir.is_dir():
        problems.append("test/: folder missing (needs test/good and/or test/<type> with images)")
    else:
        test_root = _Listing(test_dir)
        skipped += test_root.stray + test_root.images
        empty_types = []
        for folder in test_root.folders:
            listing = _Listing(folder)
            skipped += listing.stray
            ignored_folders += listing.folders
            test_images += len(listing.images)
            kind = folder.name
            if not listing.images:
                empty_types.append(folder)
            elif kind == NORMAL:
                entries += [("test", NORMAL, p, None) for p in listing.images]
            else:
                entries += _pair_masks(listing.images, gt_dir / kind, root, problems)
        if not test_images:
            problems.append("test/: no images (needs test/good and/or test/<type> with images)")
        if empty_types:
            notes.append(f"ignored {len(empty_types)} empty test folder(s): {_names(empty_types, root)}")
        test_kinds = {p.name for p in test_root.folders if p not in empty_types}
        if test_images and NORMAL not in test_kinds:
            notes.append("no test/good images: image-level metrics need normal test images")
        if test_kinds == {NORMAL}:
            notes.append("no defective test images: pixel-level metrics need defects with masks")

    if gt_dir.is_dir():
        gt_root = _Listing(gt_dir)
        skipped += gt_root.stray + gt_root.images
        test_types = {p.name for p in _Listing(test_dir).folders} if test_dir.is_dir() else set()
        orphan_masks: list[Path] = []
        for folder in gt_root.folders:
            listing = _Listing(folder)
            skipped += listing.stray
            ignored_folders += listing.folders
            if folder.name not in test_types or folder.name == NORMAL:
                orphan_masks += listing.images
                continue
            _, orphans = _find_masks(_Listing(test_dir / folder.name).images, folder)
            orphan_masks += orphans
        if orphan_masks:
            notes.append(
                f"ignored {len(orphan_masks)} mask(s) that match no defect image: {_names(orphan_masks, root)}"
            )

    # Headers of every image and mask: sizes for Sample and the mask/image size check.
    header_paths = [image for *_, image, _ in entries] + [mask for *_, mask in entries if mask is not None]
    headers = dict(zip(header_paths, _parallel_map(_catching(header_size), header_paths)))
    train: list[Sample] = []
    test: list[Sample] = []
    for split, kind, image, mask in entries:
        size = headers[image]
        if isinstance(size, DataError):
            problems.append(_relative_message(size, root))
            continue
        if mask is not None:
            mask_size = headers[mask]
            if isinstance(mask_size, DataError):
                problems.append(_relative_message(mask_size, root))
                continue
            if mask_size != size:
                problems.append(
                    f"{relative_to(mask, root)}: mask size {hw_text(mask_size)} differs from its image "
                    f"{relative_to(image, root)} size {hw_text(size)} (HxW)"
                )
                continue
        sample = Sample(image, split, 0 if kind == NORMAL else 1, kind, mask, size)
        (train if split == "train" else test).append(sample)

    if verify:
        problems += _verify_files(train + test, root, notes)

    if skipped:
        notes.append(f"skipped {len(skipped)} stray file(s): {_names(skipped, root)}")
    if ignored_folders:
        notes.append(f"ignored {len(ignored_folders)} unexpected folder(s): {_names(ignored_folders, root)}")
    if problems:
        raise DataError(_problem_report(root, problems))
    test.sort(key=lambda s: (s.defect_type != NORMAL, s.defect_type, s.path.name))
    return DatasetFolder(root=root, category=root.resolve().name, train=train, test=test, notes=notes, skipped=skipped)


def _relative_message(error: DataError, root: Path) -> str:
    """Shorten an absolute path at the start of a per-file message (the report names the root)."""
    message = str(error)
    prefix = str(root) + os.sep
    return message[len(prefix):] if message.startswith(prefix) else message


def _verify_files(samples: list[Sample], root: Path, notes: list[str]) -> list[str]:
    def check_image(sample: Sample) -> None:
        load_image(sample.path)

    def check_mask(sample: Sample) -> tuple[bool, bool]:
        mask, was_binary = decode_mask(sample.mask_path)
        return was_binary, bool(mask.any())

    problems = []
    for result in _parallel_map(_catching(check_image), samples):
        if isinstance(result, DataError):
            problems.append(_relative_message(result, root))
    with_masks = [s for s in samples if s.mask_path is not None]
    soft, empty = [], []
    for sample, result in zip(with_masks, _parallel_map(_catching(check_mask), with_masks)):
        if isinstance(result, DataError):
            problems.append(_relative_message(result, root))
            continue
        was_binary, has_defect = result
        if not was_binary:
            soft.append(sample.mask_path)
        if not has_defect:
            empty.append(sample.mask_path)
    if soft:
        notes.append(f"binarised {len(soft)} non-binary mask(s) at >= 128 (half scale): {_names(soft, root)}")
    if empty:
        notes.append(
            f"{len(empty)} mask(s) are all zero, so their images count as defective with no defect "
            f"pixels: {_names(empty, root)}"
        )
    return problems


def check_folder(root: Path | str) -> list[DatasetFolder]:
    """Verify every category under `root` (see discover_categories); one DataError for all."""
    folders, errors = [], []
    for category_root in discover_categories(root):
        try:
            folders.append(discover(category_root, verify=True))
        except DataError as exc:
            errors.append(str(exc))
    if errors:
        raise DataError("\n".join(errors))
    return folders


@dataclass(frozen=True)
class CheckReport:
    """What `rlad data check` reports: every category under `root`, verified."""

    root: Path
    folders: list[DatasetFolder]

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "valid": True,
            "categories": [f.category for f in self.folders],
            "counts": [{"category": f.category, **row} for f in self.folders for row in f.counts()],
            "notes": [{"category": f.category, "note": note} for f in self.folders for note in f.notes],
            "skipped": [{"category": f.category, "path": str(p)} for f in self.folders for p in f.skipped],
        }


def check_report(root: Path | str) -> CheckReport:
    """`check_folder` as `rlad data check` reports it; DataError (every problem) if anything is wrong."""
    root = Path(root)
    return CheckReport(root, check_folder(root))
