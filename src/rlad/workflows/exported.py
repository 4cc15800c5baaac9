"""An exported `.onnx` file (`rlad export`) opened as a run: the same `LoadedRun` interface
`workflows.detection.load_run` gives (config, post-processor, records, `model.predict`), with ONNX
Runtime doing the inference, so `rlad predict` and `rlad serve` take either without a special case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rlad.errors import ConfigError
from rlad.models.base import AnomalyMap


class ExportedModel:
    """`predict(images (B, 3, S, S) float in [0, 1]) -> AnomalyMap` of raw maps and scores, like the
    run's own model."""

    def __init__(self, session, path: Path):
        self.session = session
        self.path = path

    def predict(self, images: torch.Tensor) -> AnomalyMap:
        array = np.ascontiguousarray(images.detach().float().cpu().numpy())
        maps, scores = self.session.run(["maps", "scores"], {"images": array})
        return AnomalyMap(maps, scores)


def load_exported(path: str | Path, threads: int = 0, spinning: bool = False):
    """The `LoadedRun` of an exported file (`threads`, `spinning`: as `onnx_session`); a one-line
    ConfigError when it is not an rlad export."""
    from rlad.engine.run import RunDir
    from rlad.models.postprocess import PostProcessor
    from rlad.workflows.detection import LoadedRun, config_from_dict
    from rlad.workflows.export import METADATA_KEY, onnx_session, parse_metadata

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        session = onnx_session(path, threads, spinning)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for any bad file
        raise ConfigError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    meta = parse_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)
    cfg = config_from_dict(meta["config"])
    loaded = LoadedRun(RunDir(path), cfg, ExportedModel(session, path), PostProcessor.from_dict(meta["postprocess"]),
                       meta.get("split") or {}, meta.get("backbones"), meta.get("train_size"))
    loaded.export_metadata = meta
    return loaded


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix == ".onnx" and not path.is_dir()
