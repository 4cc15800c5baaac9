"""Pixel-level detection, the library behind `rlad fit METHOD` and `rlad test` (and the run loading
`rlad predict` uses, `workflows.predict`): one harness for every anomaly-map model (NBS and the
baselines), so comparisons are side by side.

A model implements only `fit(FitData)`, `predict(tensor) -> AnomalyMap` and its state; this module
does the rest: the typed run config, the data protocol (`rlad.data.split`), run directories (resume,
refusal of a different config, no half-made run left by a failed fit), what the run records about
itself (its backbones' weights, its training image size), thresholds fitted on the validation split
(`rlad.models.postprocess`), metrics on the test or development split and the test report
(`workflows.report`).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
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
        cfgmod.raise_if_problems(p for key, backbone in _backbone_configs(self.model) for p in backbone.problems(key))
        self.model.validate()
        return self


def _backbone_configs(obj: Any, key: str = "model"):
    """(dotted key, BackboneConfig) of every backbone in a model config, however deeply nested."""
    from rlad.models.backbones import BackboneConfig

    if isinstance(obj, BackboneConfig):
        yield key, obj
    elif dataclasses.is_dataclass(obj):
        for item in dataclasses.fields(obj):
            yield from _backbone_configs(getattr(obj, item.name), f"{key}.{item.name}")


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


SPLIT_FILE = "split.json"


def fit(method: str, data_dir: str | Path, out: str | Path, cfg: FitConfig | None = None) -> RunDir:
    """Train `method` on `data_dir` into run directory `out` (resuming when it holds a checkpoint).
    An attempt that fails before its first checkpoint removes what it created, so no half-made run
    is left behind for `test` or `predict` to misread."""
    cfg = cfg or default_config(method)
    run = RunDir.open(out, config_to_dict(cfg))
    if run.finished:
        return run
    try:
        _fit_into(run, method, data_dir, cfg)
    except BaseException:
        run.discard_unfinished(also=(SPLIT_FILE,))
        raise
    return run


def _fit_into(run: RunDir, method: str, data_dir: str | Path, cfg: FitConfig) -> None:
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.models.backbones import record_backbones

    rng_seed = cfg.seed
    seed_everything(rng_seed)
    folder = discover(data_dir)
    split = make_split(folder, cfg.protocol, rng_seed)
    labeled_record = split_record(split, folder, data_dir, cfg.protocol)
    (run.path / SPLIT_FILE).write_text(json.dumps(labeled_record, indent=2))

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
    with record_backbones() as backbones:
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
            "backbones": backbones,
            "train_size": _size_summary([s.size for s in split.train]),
        }
    )
    run.save_metrics({"fit_seconds": round(fit_seconds, 2), "threshold_rule": post.rule, "backbones": backbones}, key="fit")
    run.log({"event": "fit_done", "fit_seconds": fit_seconds})
    for name, payload in model.extra_files().items():
        (run.path / name).write_bytes(payload)
    status(f"{run.path}: trained {method} in {fit_seconds:.1f} s")


def _size_summary(sizes: list[tuple[int, int]]) -> dict:
    """The training images' (height, width): median, smallest and largest, for predict's size warnings."""
    array = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    return {"median_hw": [int(v) for v in np.median(array, axis=0)], "min_hw": array.min(0).tolist(),
            "max_hw": array.max(0).tolist()}


# --- loading and prediction ---------------------------------------------------------------------


@dataclass
class LoadedRun:
    run: RunDir
    cfg: FitConfig
    model: AnomalyModel
    post: PostProcessor
    split: dict
    backbones: list[dict] | None = None
    """What the run's backbones were loaded from (`models.backbones.record_backbones`); None for runs
    saved before rlad recorded it."""
    train_size: dict | None = None

    def warn_if_untrained_backbone(self) -> None:
        """A run fitted with `weights=random` gives poor maps; say so wherever its output is used."""
        for record in self.backbones or []:
            if not record.get("pretrained"):
                warnings.warn(
                    f"{self.run.path}: its {record.get('arch')} backbone has RANDOM weights (fitted with "
                    "weights=random), so its maps and scores are poor; refit with the default weights=imagenet",
                    stacklevel=3,
                )


def load_run(path: str | Path, overrides: list[str] | None = None) -> LoadedRun:
    """A saved run's model, post-processor and split. `overrides` (`--set`-style "model.key=value")
    change settings that do not touch what was learned, e.g. `model.knn_chunk_mb`, the search's block
    size, which a run keeps from the code that fitted it."""
    run = RunDir(path).require_model()
    payload = run.load_model()
    if "method" not in payload or payload["method"] == "compact":
        raise ConfigError(f"{path}: is not a pixel-level model run (use rlad ground / test-grounding)")
    if overrides:  # checked before the `try`: a bad value is the user's mistake, not a damaged run
        payload = {**payload, "config": cfgmod.deep_merge(payload.get("config") or {}, cfgmod.parse_overrides(overrides))}
        config_from_dict(payload["config"]).validate()
    try:
        cfg = config_from_dict(payload["config"])
        model = get_model_class(cfg.method)(cfg.model)
        model.load_state_dict(payload["state"])
        post = PostProcessor.from_dict(payload["postprocess"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{run.model_path}: damaged or from another rlad version ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    return LoadedRun(run, cfg, model, post, payload.get("split", {}), payload.get("backbones"), payload.get("train_size"))


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


def test(run_path: str | Path, data_dir: str | Path | None = None, split: str = "test",
         report: str | Path | bool | None = None, allow_missing_labelled: bool = False) -> dict:
    """Metrics of a trained run on `data_dir`'s test split (minus the images it was trained on and
    its development split, recognised by content), or with split="dev" on the development split only.
    `data_dir` defaults to the dataset the run was fitted on. Writes an HTML report into the run (or to
    `report`; False: none) and returns the metrics with its path under "report"."""
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.metrics.pixel import evaluate

    loaded = load_run(run_path)
    loaded.warn_if_untrained_backbone()
    data_dir = _dataset_of(loaded, data_dir)
    folder = discover(data_dir)
    recorded_category = loaded.split.get("category")
    if recorded_category and folder.category != recorded_category:
        warnings.warn(f"{loaded.run.path} was fitted on {recorded_category!r} ({loaded.split.get('data')}); "
                      f"testing it on {folder.category!r} ({folder.root})", stacklevel=2)
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
    masks = masks.astype(bool)
    metrics = evaluate(pred.scores, labels, pred.maps, masks)
    post = loaded.post
    metrics.update(_thresholded_f1(post, pred, labels, masks))
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
    if report is not False:
        from rlad.workflows.report import write_test_report

        target = Path(report) if report not in (None, True) else loaded.run.path / RunDir.REPORT
        metrics["report"] = str(write_test_report(target, loaded, folder, samples, images, masks, pred, metrics))
    loaded.run.save_metrics(metrics, key=f"{split}:{folder.category}")
    return metrics


def _dataset_of(loaded: LoadedRun, data_dir: str | Path | None) -> Path:
    """`data_dir`, or the dataset the run was fitted on (a clear error when it is gone or unknown)."""
    if data_dir is not None:
        return Path(data_dir)
    recorded = loaded.split.get("data")
    if not recorded:
        raise ConfigError(f"{loaded.run.path}: records no dataset; give --data DIR")
    if not Path(recorded).is_dir():
        raise DataError(f"{loaded.run.path} was fitted on {recorded}, which is not there any more; give --data DIR")
    status(f"data: {recorded} (the run's dataset)")
    return Path(recorded)


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
