"""Pixel-level detection, the library behind `rlad fit METHOD`, `rlad test` and `rlad predict`: one
harness for every anomaly-map model (NBS and the baselines), so comparisons are side by side.

A model implements only `fit(FitData)`, `predict(tensor) -> AnomalyMap` and its state; this module
does the rest: the typed run config, the data protocol (`rlad.data.split`), run directories (resume,
refusal of a different config), thresholds fitted on the validation split (`rlad.models.postprocess`),
metrics on the test or development split, and prediction files at each image's original size.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlad import config as cfgmod
from rlad.data.split import ProtocolConfig, evaluation_samples, make_split, split_record
from rlad.engine import RunDir, progress, seed_everything, status
from rlad.errors import ConfigError, DataError
from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.postprocess import PostProcessor, fit_postprocessor
from rlad.models.registry import get_model_class


@dataclass
class FitConfig:
    method: str = "patchcore"
    seed: int = 0
    image_size: int = 256
    batch_size: int = 8
    """Inference batch size."""
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: Any = None
    """The method's own config dataclass (see `rlad.models.<method>`)."""

    def validate(self) -> "FitConfig":
        cfgmod.raise_if_problems([
            None if self.image_size >= 32 else f"image_size must be at least 32, got {self.image_size}",
        ])
        self.protocol.validate()
        if hasattr(self.model, "image_size"):
            self.model.image_size = self.image_size
        self.model.validate()
        return self


def default_config(method: str) -> FitConfig:
    cls = get_model_class(method)
    protocol = ProtocolConfig(labeled_per_type=getattr(cls, "default_labeled_per_type", 0))
    return FitConfig(method=method, protocol=protocol, model=cls.Config())


def config_to_dict(cfg: FitConfig) -> dict:
    return cfgmod.to_dict(cfg)


def config_from_dict(data: dict) -> FitConfig:
    method = data.get("method")
    if not method:
        raise ConfigError("config has no 'method'")
    data = {**data, "model": data.get("model") or {}}
    return cfgmod.from_dict(FitConfig, data, types={"model": get_model_class(method).Config})


def build_config(method: str, config_file: str | None = None, overrides: list[str] | None = None) -> FitConfig:
    """Defaults of `method`, then the YAML file, then `--set` overrides; validated before any data is
    read or a run directory made."""
    if config_file:
        loaded = cfgmod.load_yaml(config_file)
        if loaded.get("method", method) != method:
            raise ConfigError(f"{config_file}: is a config for {loaded['method']!r}, not {method!r}")
    defaults = default_config(method)
    cfg = cfgmod.build(FitConfig, config_file, overrides,
                       defaults={"method": method, "protocol": defaults.protocol, "model": defaults.model})
    cfg.method = method
    return cfg.validate()


# --- fit ----------------------------------------------------------------------------------------


def fit(method: str, data_dir: str | Path, out: str | Path, cfg: FitConfig | None = None) -> RunDir:
    """Train `method` on `data_dir` into run directory `out` (resuming when it holds a checkpoint)."""
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples

    cfg = cfg or default_config(method)
    run = RunDir.open(out, config_to_dict(cfg))
    if run.finished:
        return run

    rng_seed = cfg.seed
    seed_everything(rng_seed)
    folder = discover(data_dir)
    split = make_split(folder, cfg.protocol, rng_seed)
    labeled_record = split_record(split, folder, data_dir, cfg.protocol)
    (run.path / "split.json").write_text(json.dumps(labeled_record, indent=2))

    model_cls = get_model_class(method)
    model: AnomalyModel = model_cls(cfg.model)
    size = cfg.image_size
    normal, _ = load_samples(split.train, size, desc="loading train")
    if split.labeled:
        labeled_images, labeled_masks = load_samples(split.labeled, size, desc="loading labelled")
    else:
        labeled_images = np.zeros((0, 3, size, size), np.uint8)
        labeled_masks = np.zeros((0, size, size), np.uint8)
    data = FitData(normal=normal, labeled_images=labeled_images, labeled_masks=labeled_masks, seed=cfg.seed)

    started = time.perf_counter()
    model.fit(data, run=run)
    fit_seconds = time.perf_counter() - started

    val_images, val_masks = load_samples(split.val, size, desc="loading validation")
    val_pred = predict_arrays(model, val_images, cfg.batch_size, desc="validation")
    post = fit_postprocessor(
        val_pred.maps, val_pred.scores, np.array([s.label for s in split.val]), val_masks.astype(bool)
    )
    run.save_model(
        {
            "method": method,
            "config": config_to_dict(cfg),
            "state": model.state_dict(),
            "postprocess": post.to_dict(),
            "split": labeled_record,
        }
    )
    run.save_metrics({"fit_seconds": round(fit_seconds, 2), "threshold_rule": post.rule}, key="fit")
    run.log({"event": "fit_done", "fit_seconds": fit_seconds})
    for name, payload in model.extra_files().items():
        (run.path / name).write_bytes(payload)
    status(f"{out}: trained {method} in {fit_seconds:.1f} s")
    return run


# --- loading and prediction ---------------------------------------------------------------------


@dataclass
class LoadedRun:
    run: RunDir
    cfg: FitConfig
    model: AnomalyModel
    post: PostProcessor
    split: dict


def load_run(path: str | Path) -> LoadedRun:
    run = RunDir(path).require_model()
    payload = run.load_model()
    if "method" not in payload or payload["method"] == "compact":
        raise ConfigError(f"{path}: is not a pixel-level model run (use rlad ground / test-grounding)")
    cfg = config_from_dict(payload["config"])
    model = get_model_class(cfg.method)(cfg.model)
    model.load_state_dict(payload["state"])
    return LoadedRun(run, cfg, model, PostProcessor.from_dict(payload["postprocess"]), payload.get("split", {}))


def predict_arrays(model: AnomalyModel, images_uint8: np.ndarray, batch_size: int, desc: str = "predict") -> AnomalyMap:
    parts = []
    bar = progress(total=len(images_uint8), desc=desc)
    with torch.inference_mode():
        for start in range(0, len(images_uint8), batch_size):
            batch = FitData.to_tensor(images_uint8[start : start + batch_size])
            parts.append(model.predict(batch))
            bar.update(len(batch))
    bar.close()
    if not parts:
        size = images_uint8.shape[-1]
        return AnomalyMap(np.zeros((0, size, size), np.float32), np.zeros(0, np.float32))
    return AnomalyMap.concat(parts)


# --- test ---------------------------------------------------------------------------------------


def test(run_path: str | Path, data_dir: str | Path, split: str = "test", allow_missing_labelled: bool = False) -> dict:
    """Metrics of a trained run on `data_dir`'s test split (minus the images it was trained on and
    its development split, recognised by content), or with split="dev" on the development split only."""
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.metrics.pixel import evaluate

    loaded = load_run(run_path)
    folder = discover(data_dir)
    evaluation = evaluation_samples(loaded.split, folder, split, run_name=str(loaded.run.path),
                                    allow_missing_labelled=allow_missing_labelled)
    samples = evaluation.samples
    status(f"{split}: {len(samples)} images of {folder.root}; left out: {len(evaluation.excluded_labeled)} labelled "
           f"(training) and {len(evaluation.excluded_dev)} development images"
           + (f"; {evaluation.missing_labeled} of the run's labelled images are not in this folder"
              if evaluation.missing_labeled else ""))
    images, masks = load_samples(samples, loaded.cfg.image_size, desc="loading test")
    started = time.perf_counter()
    pred = predict_arrays(loaded.model, images, loaded.cfg.batch_size, desc="test")
    ms_per_image = (time.perf_counter() - started) * 1000 / len(samples)
    labels = np.array([s.label for s in samples])
    metrics = evaluate(pred.scores, labels, pred.maps, masks.astype(bool))
    post = loaded.post
    metrics.update(_thresholded_f1(post, pred, labels, masks.astype(bool)))
    metrics.update(
        {
            "n_test": len(samples),
            "n_excluded_labeled": len(evaluation.excluded_labeled),
            "n_excluded_dev": len(evaluation.excluded_dev),
            "n_missing_labeled": evaluation.missing_labeled,
            "split": split,
            "ms_per_image": round(ms_per_image, 2),
            "method": loaded.cfg.method,
            "data": str(Path(data_dir).resolve()),
        }
    )
    loaded.run.save_metrics(metrics, key=f"{split}:{folder.category}")
    return metrics


def _thresholded_f1(post: PostProcessor, pred: AnomalyMap, labels: np.ndarray, masks: np.ndarray) -> dict:
    """F1 at the validation-fitted thresholds (what a user gets in production), not the oracle max."""

    def f1(pred_pos: np.ndarray, truth: np.ndarray) -> float:
        tp = float(np.logical_and(pred_pos, truth).sum())
        fp = float(np.logical_and(pred_pos, ~truth).sum())
        fn = float(np.logical_and(~pred_pos, truth).sum())
        return 2 * tp / max(2 * tp + fp + fn, 1e-12)

    return {
        "pixel_f1_at_val_threshold": f1(post.masks(pred.maps), masks),
        "image_f1_at_val_threshold": f1(post.is_anomalous(pred.scores), labels.astype(bool)),
    }


# --- predict ------------------------------------------------------------------------------------


def collect_images(paths: list[str | Path]) -> list[Path]:
    from rlad.data.images import is_image_file

    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        elif path.is_file():
            if not is_image_file(path):
                raise DataError(f"{path}: not an image file (by extension)")
            found.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    if not found:
        raise DataError(f"no images found in: {', '.join(map(str, paths))}")
    return found


def predict(run_path: str | Path, paths: list[str | Path], out: str | Path) -> list[dict]:
    """Maps, masks, boxes and overlays for images at their original size; writes predictions.jsonl."""
    from rlad.boxes import mask_to_boxes
    from rlad.data.images import load_image
    from rlad.data.transforms import resize_image, resize_map_to
    from rlad.viz import save_heatmap, save_mask, save_overlay

    loaded = load_run(run_path)
    images = collect_images(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = loaded.cfg.image_size
    rows = []
    used_names: set[str] = set()
    with open(out / "predictions.jsonl.tmp", "w") as handle:
        for path in progress(images, desc="predict"):
            image = load_image(path)
            resized = resize_image(image, size).transpose(2, 0, 1)[None]
            with torch.inference_mode():
                pred = loaded.model.predict(torch.from_numpy(np.ascontiguousarray(resized)).float())
            raw_map = resize_map_to(pred.maps[0], image.shape[:2])
            norm_map = loaded.post.normalise_maps(raw_map)
            mask = norm_map >= 0.5
            score = float(loaded.post.normalise_scores(pred.scores)[0])
            stem = _unique_stem(path, used_names)
            save_heatmap(norm_map, out / f"{stem}_map.png")
            save_mask(mask, out / f"{stem}_mask.png")
            save_overlay(image, norm_map, mask, out / f"{stem}_overlay.png")
            row = {
                "path": str(path),
                "score": round(score, 6),
                "raw_score": float(pred.scores[0]),
                "anomalous": bool(score >= 0.5),
                "boxes": [list(map(int, b)) for b in mask_to_boxes(mask)],
                "map": f"{stem}_map.png",
                "mask": f"{stem}_mask.png",
                "overlay": f"{stem}_overlay.png",
            }
            rows.append(row)
            handle.write(json.dumps(row) + "\n")
    (out / "predictions.jsonl.tmp").replace(out / "predictions.jsonl")
    return rows


def _unique_stem(path: Path, used: set[str]) -> str:
    stem = f"{path.parent.name}_{path.stem}" if path.parent.name else path.stem
    candidate, i = stem, 1
    while candidate in used:
        i += 1
        candidate = f"{stem}_{i}"
    used.add(candidate)
    return candidate
