"""`rlad predict RUN PATH... --out DIR`: a trained pixel model on any images, with outputs a person
and a program can rely on (the fields are documented in docs/predict.md).

- Inputs: files and folders (searched recursively; hidden entries and the output folder skipped).
  An image that cannot be read (or is too small to score) is listed and skipped; the rest succeed.
- Per image, named after the image (`<folder>_<stem>`): `_map.png`, the anomaly map as a 16-bit PNG
  on the 0-1 score scale (value / 65535; 0.5 = the pixel threshold); `_mask.png`, the predicted
  defect mask; `_overlay.png`, a labelled panel (image beside its heat map, boxes with their scores,
  the image score and decision); `_map.npy` with `raw`: the model's raw map.
- `predictions.jsonl`: one line per image, written as each image finishes (a kill keeps the lines
  done); `summary.json` at the end: thresholds, counts, the failures, images per second.
- One decision rule: an image is anomalous when its score reaches the image threshold; only then
  are regions reported (the pixels at or above the pixel threshold, or, when none is, the region
  around the map's peak), so `anomalous` and `boxes` never contradict each other.
- Scores and thresholds are on the run's 0-1 scale (`models.postprocess`: 0.5 = the threshold fitted
  on the validation split); `threshold` / `pixel_threshold` replace those on the same scale.
- Maps and masks are written at the image's size up to `MAX_OUTPUT_SIDE` (a larger image is shrunk
  by a whole factor while it is decoded, and its map with it; `output_scale` says by how much; boxes
  are always in the original image's pixels), so an 8000 x 8000 photo does not need gigabytes.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlad.engine import progress, status
from rlad.engine.run import atomic_write_bytes, dumps
from rlad.errors import ConfigError, DataError

MAX_OUTPUT_SIDE = 2048
MIN_SIDE = 32  # an image this small has nothing to upscale to the model's view (a 1x1 image is no photo)
OVERLAY_SIDE = 768  # the overlay panel's image height/width cap: readable, and small files
PEAK_FRACTION = 0.9  # the fallback region: connected pixels at >= 90% of the peak score, around the peak
SIZE_RATIO_WARN = 2.0  # warn when a side differs from training's median by more than this factor ...
ASPECT_RATIO_WARN = 1.25  # ... or the aspect ratio by more than this factor
PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"


@dataclass
class Thresholds:
    """The operating point on the 0-1 score scale (0.5 = the run's fitted thresholds) and the raw
    model values they correspond to."""

    image: float
    pixel: float
    image_raw: float
    pixel_raw: float
    source: str

    def describe(self) -> str:
        return (f"image score >= {self.image:.6g} (raw {self.image_raw:.6g}), pixel >= {self.pixel:.6g} "
                f"(raw {self.pixel_raw:.6g}); {self.source}")


@dataclass
class Predictions:
    rows: list[dict]
    failed: list[dict]
    thresholds: Thresholds
    out: Path
    seconds: float
    skipped: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return len(self.rows) / max(self.seconds, 1e-9)


def thresholds_for(post, image: float | None = None, pixel: float | None = None) -> Thresholds:
    for name, value in (("--threshold", image), ("--pixel-threshold", pixel)):
        if value is not None and not 0.0 < value < 1.0:
            raise ConfigError(f"{name} {value}: give a score in (0, 1); 0.5 is the run's own threshold")
    image = 0.5 if image is None else float(image)
    pixel = 0.5 if pixel is None else float(pixel)
    changed = [n for n, v in (("image", image), ("pixel", pixel)) if v != 0.5]
    source = f"the run's thresholds, fitted on its validation split ({post.rule})"
    if changed:
        source = f"{' and '.join(changed)} threshold set by the user; otherwise " + source
    return Thresholds(image, pixel, post.raw_from_score(image), post.raw_from_score(pixel, pixel=True), source)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def collect_images(paths: list[str | Path], out: Path) -> tuple[list[Path], list[dict]]:
    """Image files under `paths` (folders recursively, sorted; hidden entries and anything inside
    `out` skipped) and the inputs that cannot be used, as failure records."""
    from rlad.data.images import is_image_file

    out = out.resolve()
    found: list[Path] = []
    failed: list[dict] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            root = path.resolve()
            for candidate in sorted(root.rglob("*")):
                if candidate.is_file() and is_image_file(candidate) and not _is_hidden(candidate, root) \
                        and out not in candidate.parents:
                    found.append(candidate)
        elif path.is_file():
            if is_image_file(path):
                found.append(path.resolve())
            else:
                failed.append({"path": str(path), "error": "not an image file (by its extension)"})
        else:
            failed.append({"path": str(path), "error": "no such file or folder"})
    unique = list(dict.fromkeys(found))
    return unique, failed


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder for the predictions")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None


def _regions(scores: np.ndarray, mask: np.ndarray) -> list[tuple[list[int], float]]:
    """([x0, y0, x1, y1] end-exclusive, peak score) per connected region of `mask`, highest peak first."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if not count:
        return []
    peaks = ndimage.maximum(scores, labels, index=np.arange(1, count + 1))
    regions = []
    for peak, (rows, cols) in zip(peaks, ndimage.find_objects(labels)):
        regions.append(([int(cols.start), int(rows.start), int(cols.stop), int(rows.stop)], float(peak)))
    return sorted(regions, key=lambda item: -item[1])


def _decide_mask(scores: np.ndarray, anomalous: bool, pixel_threshold: float) -> tuple[np.ndarray, str]:
    """The mask reported for one image and the rule that made it (see the module docstring)."""
    if not anomalous:
        return np.zeros(scores.shape, bool), "none (image below the image threshold)"
    mask = scores >= pixel_threshold
    if mask.any():
        return mask, "pixel threshold"
    from scipy import ndimage

    peak = np.unravel_index(int(np.argmax(scores)), scores.shape)
    labels, _ = ndimage.label(scores >= PEAK_FRACTION * scores[peak], structure=np.ones((3, 3), bool))
    return labels == labels[peak], f"peak region (no pixel at the pixel threshold; >= {PEAK_FRACTION:.0%} of the peak)"


def _to_original(box: list[int], shown_hw: tuple[int, int], height: int, width: int) -> list[int]:
    """A box on the (possibly shrunk) map in the original image's pixels, covering every pixel it touches."""
    if shown_hw == (height, width):
        return box
    sy, sx = height / shown_hw[0], width / shown_hw[1]
    x0, y0, x1, y1 = box
    return [max(0, int(np.floor(x0 * sx))), max(0, int(np.floor(y0 * sy))),
            min(width, int(np.ceil(x1 * sx))), min(height, int(np.ceil(y1 * sy)))]


def size_warning(height: int, width: int, train_size: dict | None) -> str | None:
    """A note when an image is far from the training images' size or aspect ratio (None when close
    or when the run did not record its training size)."""
    if not train_size:
        return None
    median_h, median_w = train_size["median_hw"]
    aspect, trained_aspect = width / height, median_w / median_h
    side_ratio = max(height / median_h, median_h / height, width / median_w, median_w / width)
    aspect_ratio = max(aspect / trained_aspect, trained_aspect / aspect)
    if side_ratio <= SIZE_RATIO_WARN and aspect_ratio <= ASPECT_RATIO_WARN:
        return None
    return (f"{height}x{width} is far from the training images ({median_h}x{median_w} median): the model sees every "
            f"image squeezed to a square, so scores for a different scale or aspect ratio are less reliable")


@dataclass
class Decision:
    """What a run says about one image, by the one rule of this module (predict and `rlad serve`)."""

    raw_map: np.ndarray  # the model's map at the decoded image's size
    scores: np.ndarray  # the same on the run's 0-1 scale
    score: float
    raw_score: float
    anomalous: bool
    mask: np.ndarray
    mask_rule: str
    regions: list  # ([x0, y0, x1, y1] on the decoded image, peak score), highest peak first
    boxes: list  # [{"box": in the original image's pixels, "score": peak}]


def decide(loaded, image: np.ndarray, thresholds: Thresholds, height: int, width: int) -> Decision:
    """Score one decoded image (H, W, 3 in [0, 1], possibly shrunk from `height` x `width`)."""
    from rlad.data.transforms import resize_image, resize_map_to

    out_h, out_w = image.shape[:2]
    model_input = resize_image(image, loaded.cfg.image_size).transpose(2, 0, 1)[None]
    with torch.inference_mode():
        pred = loaded.model.predict(torch.from_numpy(np.ascontiguousarray(model_input)))
    raw_map = resize_map_to(pred.maps[0], (out_h, out_w))
    scores = loaded.post.normalise_maps(raw_map)
    score = float(loaded.post.normalise_scores(pred.scores)[0])
    anomalous = score >= thresholds.image
    mask, mask_rule = _decide_mask(scores, anomalous, thresholds.pixel)
    regions = _regions(scores, mask)
    boxes = [{"box": _to_original(box, (out_h, out_w), height, width), "score": round(peak, 6)} for box, peak in regions]
    return Decision(raw_map, scores, score, float(pred.scores[0]), bool(anomalous), mask, mask_rule, regions, boxes)


def overlay_panel(image: np.ndarray, decision: Decision, title: str) -> np.ndarray:
    """The labelled panel a person reads (image beside its heat map, boxes, score, label), at most
    OVERLAY_SIDE a side."""
    from rlad.data.transforms import resize_image, resize_map_to
    from rlad.viz import labelled_panel

    scores, mask, regions = decision.scores, decision.mask, decision.regions
    height, width = scores.shape
    scale = min(1.0, OVERLAY_SIDE / max(height, width))
    if scale < 1.0:
        hw = (max(1, round(height * scale)), max(1, round(width * scale)))
        image, scores = resize_image(image, hw), resize_map_to(scores, hw)
        mask = resize_map_to(mask.astype(np.float32), hw) >= 0.5
        regions = [([round(v * scale) for v in box], peak) for box, peak in regions]
    return labelled_panel(image, scores, regions, title, decision.anomalous, mask=mask)


class _Writer:
    """Writes one image's files, and removes them again if the image fails halfway."""

    def __init__(self, out: Path, stem: str):
        self.out, self.stem, self.written = out, stem, []

    def path(self, suffix: str) -> Path:
        target = self.out / f"{self.stem}{suffix}"
        self.written.append(target)
        return target

    def discard(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)


def _predict_one(loaded, path: Path, stem: str, out: Path, thresholds: Thresholds, raw: bool) -> dict:
    from rlad.data.images import header_size, load_image
    from rlad.viz import save_png, to_uint16

    height, width = header_size(path)
    if min(height, width) < MIN_SIDE:
        raise DataError(f"{path}: {height}x{width} is too small to score (at least {MIN_SIDE} pixels a side)")
    image = load_image(path, max_side=MAX_OUTPUT_SIDE)  # maps and overlays are made at this size
    out_h, out_w = image.shape[:2]
    decision = decide(loaded, image, thresholds, height, width)
    notes = [n for n in (size_warning(height, width, loaded.train_size),) if n]

    writer = _Writer(out, stem)
    try:
        save_png(writer.path("_map.png"), to_uint16(decision.scores))
        save_png(writer.path("_mask.png"), (decision.mask * 255).astype(np.uint8))
        if raw:
            np.save(writer.path("_map.npy"), decision.raw_map.astype(np.float32))
        label = "ANOMALOUS" if decision.anomalous else "normal"
        title = f"score {decision.score:.3f}  {label}  (threshold {thresholds.image:.2f})  {path.name}"
        save_png(writer.path("_overlay.png"), overlay_panel(image, decision, title))
    except BaseException:
        writer.discard()
        raise
    return {
        "path": str(path),
        "height": height,
        "width": width,
        "score": decision.score,
        "raw_score": decision.raw_score,
        "anomalous": decision.anomalous,
        "image_threshold": thresholds.image,
        "pixel_threshold": thresholds.pixel,
        "boxes": decision.boxes,
        "mask_rule": decision.mask_rule,
        "map": f"{stem}_map.png",
        "mask": f"{stem}_mask.png",
        "overlay": f"{stem}_overlay.png",
        "raw_map": f"{stem}_map.npy" if raw else None,
        "output_scale": round(out_w / width, 6),
        "warnings": notes,
    }


def load_predictor(run_path: str | Path, threads: int = 0, spinning: bool = False):
    """What `predict` (and `rlad serve`) score with, loaded from `run_path`: a fitted pixel run
    (`workflows.detection.load_run`) or an exported `.onnx` file (`workflows.exported.load_exported`).
    Either offers `model.predict(uint8 NCHW tensor) -> AnomalyMap`, `post` (the run's
    `PostProcessor`), `cfg.image_size`, `train_size`, `run.path` and `warn_if_untrained_backbone()`.
    `threads` and `spinning` reach an exported file's ONNX Runtime session (`export.onnx_session`)."""
    from rlad.workflows.detection import load_run
    from rlad.workflows.exported import is_export, load_exported

    return load_exported(run_path, threads, spinning) if is_export(run_path) else load_run(run_path)


def predict(run_path: str | Path, paths: list[str | Path], out: str | Path, threshold: float | None = None,
            pixel_threshold: float | None = None, raw: bool = False) -> Predictions:
    """Score every image under `paths` with the run at `run_path`; files into `out` (module docstring)."""
    out = Path(out)
    _check_out(out)
    loaded = load_predictor(run_path)
    loaded.warn_if_untrained_backbone()
    thresholds = thresholds_for(loaded.post, threshold, pixel_threshold)
    images, failed = collect_images(paths, out)
    if not images and not failed:
        raise DataError(f"no images found in: {', '.join(map(str, paths))}")
    status(f"thresholds: {thresholds.describe()}")

    rows: list[dict] = []
    used: set[str] = set()
    far_from_training = 0
    started = time.perf_counter()
    bar = progress(images, desc="predict", unit="img")
    with open(out / PREDICTIONS, "w") as handle:
        for path in bar:
            try:
                row = _predict_one(loaded, path, _unique_stem(path, used), out, thresholds, raw)
            except (DataError, MemoryError) as exc:
                message = str(exc) if isinstance(exc, DataError) else "out of memory"
                failed.append({"path": str(path), "error": message.removeprefix(f"{path}: ")})
                continue
            rows.append(row)
            far_from_training += bool(row["warnings"])
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            bar.set_postfix(img_s=f"{len(rows) / max(time.perf_counter() - started, 1e-9):.1f}")
    bar.close()
    seconds = time.perf_counter() - started
    result = Predictions(rows, failed, thresholds, out, seconds)
    if far_from_training:
        warnings.warn(f"{far_from_training} image(s) far from the training images' size or aspect ratio "
                      f"(their rows in {out / PREDICTIONS} say which)", stacklevel=2)
    summary = {
        "run": str(loaded.run.path),
        "thresholds": vars(thresholds),
        "images": len(rows),
        "anomalous": sum(r["anomalous"] for r in rows),
        "failed": failed,
        "seconds": round(seconds, 3),
        "images_per_second": round(result.images_per_second, 3),
    }
    atomic_write_bytes(out / SUMMARY, (dumps(summary, indent=2) + "\n").encode())
    return result


def _unique_stem(path: Path, used: set[str]) -> str:
    stem = f"{path.parent.name}_{path.stem}" if path.parent.name else path.stem
    candidate, i = stem, 1
    while candidate in used:
        i += 1
        candidate = f"{stem}_{i}"
    used.add(candidate)
    return candidate
