"""The harness shared by every pixel-level model: configs, data protocol, fit (with resume), test,
predict. The CLI verbs `rlad fit/test/predict` are thin wrappers over the functions here.

Protocol (the same for every model, so comparisons are side by side):
- `train/good` minus a held-out validation share -> unlabelled training images;
- `protocol.labeled_per_type` defective images per type drawn with the seed from `test/`, given to
  the model as labelled training data and REMOVED from evaluation; the run records which files;
- thresholds are fitted on the validation split (held-out normal images, plus the labelled defects
  when there are any), never on the test split (see `rlad.models.postprocess`).
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
from rlad.engine import RunDir, progress, seed_everything, status
from rlad.errors import ConfigError, DataError
from rlad.models.base import AnomalyMap, AnomalyModel, FitData
from rlad.models.postprocess import PostProcessor, fit_postprocessor
from rlad.models.registry import get_model_class


@dataclass
class ProtocolConfig:
    labeled_per_type: int = 0
    """Defective images per defect type taken from test/ as labelled training data (0 = unsupervised)."""
    val_normal_fraction: float = 0.1
    """Share of train/good held out to fit thresholds (at least 2 images)."""
    threshold_on_labeled: bool = True
    """Use the labelled defects (un-augmented) in the threshold validation split."""
    dev_fraction: float = 0.0
    """Share of the test split (of test/good and of each defect type, seeded, after the labelled draw)
    held out as a development split for choosing settings: `rlad test` leaves it out, `rlad test
    --split dev` scores only it. 0 = none."""


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


def default_config(method: str) -> FitConfig:
    cls = get_model_class(method)
    protocol = ProtocolConfig(labeled_per_type=getattr(cls, "default_labeled_per_type", 0))
    return FitConfig(method=method, protocol=protocol, model=cls.Config())


def config_to_dict(cfg: FitConfig) -> dict:
    return cfgmod.to_dict(cfg)


def config_from_dict(data: dict) -> FitConfig:
    data = dict(data)
    method = data.get("method")
    if not method:
        raise ConfigError("config has no 'method'")
    cls = get_model_class(method)
    model_data = data.pop("model", None) or {}
    base = cfgmod.from_dict(FitConfig, {k: v for k, v in data.items()})
    base.model = cfgmod.from_dict(cls.Config, model_data, "model")
    return base


def build_config(method: str, config_file: str | None = None, overrides: list[str] | None = None) -> FitConfig:
    data = config_to_dict(default_config(method))
    if config_file:
        loaded = cfgmod.load_yaml(config_file)
        if loaded.get("method", method) != method:
            raise ConfigError(f"{config_file}: is a config for {loaded['method']!r}, not {method!r}")
        data = _deep_merge(data, loaded)
    if overrides:
        data = _deep_merge(data, cfgmod.parse_overrides(overrides))
    data["method"] = method
    cfg = config_from_dict(data)
    if cfg.image_size < 32:
        raise ConfigError(f"image_size must be at least 32, got {cfg.image_size}")
    check_dev_fraction(cfg.protocol.dev_fraction)
    if hasattr(cfg.model, "image_size"):
        cfg.model.image_size = cfg.image_size
    cfg.model.validate()  # before any data is read or a run directory made
    return cfg


def _deep_merge(base: dict, updates: dict) -> dict:
    out = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --- data protocol ------------------------------------------------------------------------------


@dataclass
class Split:
    train: list  # Samples (normal, unlabelled)
    val: list  # Samples (held-out normal + labelled defects when threshold_on_labeled)
    labeled: list  # Samples (defective, with masks) given to the model
    test: list  # Samples evaluated
    dev: list = field(default_factory=list)  # Samples held out from test for choosing settings


def make_split(folder, protocol: ProtocolConfig, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    normals = list(folder.train)
    if len(normals) < 3:
        raise DataError(f"{folder.root}: train/good needs at least 3 images, found {len(normals)}")
    n_val = min(len(normals) - 1, max(2, int(round(protocol.val_normal_fraction * len(normals)))))
    order = rng.permutation(len(normals))
    val = [normals[i] for i in sorted(order[:n_val])]
    train = [normals[i] for i in sorted(order[n_val:])]
    labeled: list = []
    if protocol.labeled_per_type > 0:
        for defect_type in folder.defect_types:
            candidates = [s for s in folder.test if s.defect_type == defect_type]
            take = min(protocol.labeled_per_type, max(0, len(candidates) - 1))
            picks = rng.choice(len(candidates), size=take, replace=False) if take else []
            labeled += [candidates[i] for i in sorted(picks)]
    labeled_paths = {s.path for s in labeled}
    test = [s for s in folder.test if s.path not in labeled_paths]
    dev = draw_dev(test, protocol.dev_fraction, seed)
    dev_paths = {s.path for s in dev}
    test = [s for s in test if s.path not in dev_paths]
    if protocol.threshold_on_labeled:
        val = val + labeled
    return Split(train=train, val=val, labeled=labeled, test=test, dev=dev)


def check_dev_fraction(fraction: float) -> None:
    if not 0 <= fraction < 1:
        raise ConfigError(f"protocol.dev_fraction={fraction} must be in [0, 1)")


def draw_dev(samples: list, fraction: float, seed: int) -> list:
    """`fraction` of each group (normal, each defect type; at least one image of a group of two or
    more) with its own seeded generator, so the labelled draw is the same with or without a dev split."""
    check_dev_fraction(fraction)
    if fraction == 0:
        return []
    rng = np.random.default_rng([seed, 4099])
    groups: dict = {}
    for sample in samples:
        groups.setdefault(sample.defect_type if sample.label else "good", []).append(sample)
    dev = []
    for name in sorted(groups):
        members = groups[name]
        take = min(len(members) - 1, max(1, int(round(fraction * len(members))))) if len(members) > 1 else 0
        picks = rng.choice(len(members), size=take, replace=False) if take else []
        dev += [members[i] for i in sorted(picks)]
    return dev


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


# --- fit ----------------------------------------------------------------------------------------


def fit(method: str, data_dir: str | Path, out: str | Path, cfg: FitConfig | None = None) -> RunDir:
    """Train `method` on `data_dir` into run directory `out` (resuming when it holds a checkpoint)."""
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples

    cfg = cfg or default_config(method)
    run = RunDir(out)
    if run.config_path.is_file():
        saved = run.load_config()
        if saved.get("method") != method:
            raise ConfigError(f"{out}: holds a {saved.get('method')!r} run; choose a new --out for {method!r}")
        if saved != config_to_dict(cfg) and (run.checkpoints() or run.model_path.is_file()):
            raise ConfigError(
                f"{out}: already holds a run with a different config; rerun with the same options to resume, "
                f"or choose a new --out (saved config: {run.config_path})"
            )
        if run.model_path.is_file():
            status(f"{out}: already trained (model.pt present); nothing to do")
            return run
        if run.checkpoints():
            status(f"{out}: resuming")
        # else: an earlier attempt stopped before its first checkpoint (nothing to lose): start afresh
    run.create()
    run.save_config(config_to_dict(cfg))

    rng_seed = cfg.seed
    seed_everything(rng_seed)
    folder = discover(data_dir)
    split = make_split(folder, cfg.protocol, rng_seed)
    labeled_record = {
        "data": str(Path(data_dir).resolve()),
        "category": folder.category,
        "labeled": [_relative(s.path, folder.root) for s in split.labeled],
        "val": [_relative(s.path, folder.root) for s in split.val],
        "dev": [_relative(s.path, folder.root) for s in split.dev],
    }
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


def evaluation_samples(loaded: LoadedRun, folder, split: str = "test") -> tuple[list, set[str], set[str]]:
    """The samples of `folder` to score for `split`, and the labelled and development files of the run
    on this folder (relative paths; empty when the run was fitted on another folder)."""
    if split not in ("test", "dev"):
        raise ConfigError(f"split={split!r}: choose test or dev")
    same_data = bool(loaded.split) and Path(loaded.split.get("data", "")) == Path(folder.root).resolve()
    excluded: set[str] = set(loaded.split.get("labeled", [])) if same_data else set()
    dev: set[str] = set(loaded.split.get("dev", [])) if same_data else set()
    if split == "dev":
        if not dev:
            raise ConfigError(
                f"{loaded.run.path}: has no development split on {folder.root} (fit with --set protocol.dev_fraction=0.3)"
            )
        keep = lambda name: name in dev  # noqa: E731
    else:
        left_out = excluded | dev
        keep = lambda name: name not in left_out  # noqa: E731
    samples = [s for s in folder.test if keep(_relative(s.path, folder.root))]
    if not samples:
        raise DataError(f"{folder.root}: no {split} images left to evaluate")
    return samples, excluded, dev


def test(run_path: str | Path, data_dir: str | Path, split: str = "test") -> dict:
    """Metrics of a trained run on `data_dir`'s test split (minus the images it was trained on and
    its development split), or with split="dev" on the development split only."""
    from rlad.data.folder import discover
    from rlad.data.transforms import load_samples
    from rlad.metrics.pixel import evaluate

    loaded = load_run(run_path)
    folder = discover(data_dir)
    samples, excluded, dev = evaluation_samples(loaded, folder, split)
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
            "n_excluded_labeled": len(excluded),
            "n_excluded_dev": len(dev) if split == "test" else 0,
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
    from rlad.data.folder import is_image_file

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
    from rlad.data.folder import load_image
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


# --- CLI entry points ---------------------------------------------------------------------------


def cli_fit(args) -> int:
    from rlad.cli.common import print_json

    if args.method == "compact":
        from rlad.policies.api import cli_fit_compact

        return cli_fit_compact(args)
    if not args.data:
        raise ConfigError(f"rlad fit {args.method} needs --data DIR")
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if getattr(args, "labeled_per_type", None) is not None:
        overrides.append(f"protocol.labeled_per_type={args.labeled_per_type}")
    cfg = build_config(args.method, args.config, overrides)
    run = fit(args.method, args.data, args.out, cfg)
    if args.json:
        print_json({"run": str(run.path), **json.loads(run.metrics_path.read_text()).get("fit", {})})
    else:
        print(f"trained {args.method} -> {run.path}")
    return 0


METRIC_ORDER = [
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "pixel_f1_max",
    "image_f1_max",
    "pixel_ap",
    "pixel_f1_at_val_threshold",
    "image_f1_at_val_threshold",
    "ms_per_image",
    "n_test",
]


def cli_test(args) -> int:
    from rlad.cli.common import print_json, print_table

    metrics = test(args.run, args.data, split=args.split)
    if args.json:
        print_json(metrics)
    else:
        print_table([{"metric": k, "value": metrics[k]} for k in METRIC_ORDER if k in metrics])
    return 0


def cli_predict(args) -> int:
    from rlad.cli.common import print_json

    rows = predict(args.run, args.paths, args.out)
    if args.json:
        print_json({"out": str(args.out), "predictions": rows})
    else:
        flagged = sum(r["anomalous"] for r in rows)
        print(f"{len(rows)} image(s), {flagged} flagged anomalous; results in {args.out}/predictions.jsonl")
    return 0

