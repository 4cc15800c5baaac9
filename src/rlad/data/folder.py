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
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import numpy as np
from PIL import Image, ImageFile

from rlad.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
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

    def counts(self) -> list[dict]:
        """One row per split/type: {"split", "type", "images", "masks"}; train first, then test
        with `good` before the defect types."""
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
        return rows


# ---------------------------------------------------------------------------------------------
# Decoding single files


def is_image_file(path: Path) -> bool:
    # macOS writes "._name.png" AppleDouble files next to real images: image suffix, no image inside.
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _open_decoded(path: Path) -> Image.Image:
    """Open and fully decode one file, turning every PIL/OS failure into a DataError naming it."""
    # A truncated file must fail loudly, never be padded with grey by PIL.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataError(
            f"{path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code), so truncated "
            "images would load silently; set it back to False"
        )
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except MemoryError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large to decode safely ({exc})") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not an image (PIL cannot identify the file format)") from None
    except Exception as exc:  # OSError for truncated files, SyntaxError for broken PNGs, ...
        raise DataError(f"{path}: corrupt or truncated image ({type(exc).__name__}: {exc})") from None


def _pixel_array(image: Image.Image, path: Path) -> tuple[np.ndarray, float]:
    """The pixels as an (H, W) or (H, W, C) array and the value that means "full scale"."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image).astype(np.float32), 65535.0
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"{path}: 32-bit integer image with values outside 0..65535 is not supported")
        return values.astype(np.float32), 65535.0
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            raise DataError(f"{path}: floating-point image must hold values in [0, 1]")
        return values, 1.0
    if mode not in ("1", "L", "LA", "RGB", "RGBA"):
        try:
            image = image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB")
        except Exception as exc:
            raise DataError(f"{path}: unsupported image mode {mode!r} ({exc})") from None
    if image.mode == "1":
        image = image.convert("L")
    return np.asarray(image).astype(np.float32), 255.0


def load_image(path: Path | str) -> np.ndarray:
    """Decode any supported image as float32 RGB (H, W, 3) in [0, 1].

    Grey is repeated over three channels; 16-bit images are scaled by 65535; palette images are
    expanded; an alpha channel is composited on black (transparent pixels carry no content). EXIF
    orientation is ignored on purpose: masks are drawn on the stored pixel grid.
    """
    path = Path(path)
    pixels, full_scale = _pixel_array(_open_decoded(path), path)
    pixels = pixels / full_scale
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels in (2, 4):  # LA / RGBA: composite on black
        pixels = pixels[:, :, :-1] * pixels[:, :, -1:]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(np.clip(pixels, 0.0, 1.0), dtype=np.float32)


def _mask_values(path: Path) -> tuple[np.ndarray, float]:
    """Raw single-channel mask values and their full scale. A colour mask counts a pixel as defect
    if any channel is lit (a red-on-black mask would vanish under a luminance conversion)."""
    image = _open_decoded(path)
    values, full_scale = _pixel_array(image, path)
    if values.ndim == 3:
        if values.shape[2] in (2, 4):
            values = values[:, :, :-1] * (values[:, :, -1:] / full_scale)
        values = values.max(axis=2)
    return values, full_scale


def _binarise(values: np.ndarray, full_scale: float) -> tuple[np.ndarray, bool]:
    """Mask -> (bool mask, was_binary). {0, 1} masks (label maps) mean 1 = defect; anything else
    is thresholded at half scale (>= 128 for 8-bit, >= 32768 for 16-bit, >= 0.5 for float)."""
    unique = np.unique(values)
    if np.isin(unique, (0.0, 1.0)).all():
        return values >= 1.0, True
    was_binary = bool(np.isin(unique, (0.0, full_scale)).all())
    threshold = 0.5 if full_scale == 1.0 else (full_scale + 1) / 2
    return values >= threshold, was_binary


def load_mask(path: Path | str, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a mask as bool (H, W): {0, 255} and {0, 1} masks as they are, soft masks binarised
    at >= 128 (half scale). `expected_size` is the image's (height, width); a different mask size
    raises DataError naming both."""
    path = Path(path)
    values, full_scale = _mask_values(path)
    if expected_size is not None and tuple(values.shape[:2]) != tuple(expected_size):
        raise DataError(
            f"{path}: mask size {_hw(values.shape[:2])} differs from its image size {_hw(expected_size)} (HxW)"
        )
    return _binarise(values, full_scale)[0]


def _hw(size: Iterable[int]) -> str:
    height, width = size
    return f"{height}x{width}"


def _header_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header only (cheap); DataError if it is not an image."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            return height, width
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not an image (PIL cannot identify the file format)") from None
    except Exception as exc:
        raise DataError(f"{path}: unreadable image header ({type(exc).__name__}: {exc})") from None


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


# ---------------------------------------------------------------------------------------------
# Folder discovery


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
    shown = [_rel(p, root) for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(shown) + more


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


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
            problems.append(f"{_rel(image, root)}: defect image without a mask (expected {_rel(expected, root)})")
        elif len(candidates) > 1:
            problems.append(f"{_rel(image, root)}: several masks match ({_names(candidates, root)}); keep one")
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
    headers = dict(zip(header_paths, _parallel_map(_catching(_header_size), header_paths)))
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
                    f"{_rel(mask, root)}: mask size {_hw(mask_size)} differs from its image "
                    f"{_rel(image, root)} size {_hw(size)} (HxW)"
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
        values, full_scale = _mask_values(sample.mask_path)
        mask, was_binary = _binarise(values, full_scale)
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


# ---------------------------------------------------------------------------------------------
# `rlad data check DIR [--json]`


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


def _with_total(rows: list[dict]) -> list[dict]:
    total = {
        "split": "total",
        "type": "",
        "images": sum(r["images"] for r in rows),
        "masks": sum(r["masks"] for r in rows),
    }
    return rows + [total]


def cli_check(args) -> int:
    from rlad.cli.common import print_json, print_table

    root = Path(args.dir)
    folders = check_folder(root)
    if getattr(args, "json", False):
        print_json(
            {
                "root": str(root),
                "valid": True,
                "categories": [f.category for f in folders],
                "counts": [{"category": f.category, **row} for f in folders for row in f.counts()],
                "notes": [{"category": f.category, "note": note} for f in folders for note in f.notes],
                "skipped": [{"category": f.category, "path": str(p)} for f in folders for p in f.skipped],
            }
        )
        return 0
    for index, folder in enumerate(folders):
        if index:
            print()
        print(f"{folder.category}  ({folder.root})")
        print_table(_with_total(folder.counts()), ["split", "type", "images", "masks"])
        for note in folder.notes:
            print(f"note: {note}")
    sys.stdout.flush()
    return 0
