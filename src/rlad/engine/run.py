"""The run directory contract (docs/architecture.md): config.yaml, model.pt, checkpoints/, metrics.json,
log.jsonl, report.html. Every file that could be half-written when a process is killed is written
to a temporary file first and renamed, so a kill never leaves a corrupt checkpoint behind.

Run folders get shared, so reading one never unpickles arbitrary objects: model.pt and checkpoints
hold only tensors, numbers, text and containers (NumPy arrays become tagged tensors on the way in,
`to_loadable`) and are read with `torch.load(weights_only=True)`; the rest is YAML or JSON.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from rlad.engine.progress import status
from rlad.errors import ConfigError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); a run folder is shared, so give it the permissions any
        # other file written here would get.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_NDARRAY = "__ndarray__"


def to_loadable(obj: Any, where: str = "state") -> Any:
    """`obj` with NumPy arrays as tagged byte tensors and NumPy scalars as Python numbers, so that it
    loads with `torch.load(weights_only=True)`; a TypeError naming the place of anything else that
    would need unpickling (a class instance), so such an object never reaches a run folder."""
    import numpy as np
    import torch

    if isinstance(obj, np.generic):  # before the Python types: np.float64 is a float subclass
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"{where}: NumPy object arrays cannot be stored safely")
        data = torch.frombuffer(bytearray(np.ascontiguousarray(obj).tobytes()), dtype=torch.uint8) if obj.size else torch.zeros(0, dtype=torch.uint8)
        return {_NDARRAY: data, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {key: to_loadable(value, f"{where}.{key}") for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [to_loadable(value, f"{where}[{i}]") for i, value in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: a {type(obj).__name__} cannot be stored in a run folder (tensors, arrays, numbers, text only)")


def from_loadable(obj: Any) -> Any:
    """The inverse of `to_loadable`."""
    import numpy as np

    if isinstance(obj, dict):
        if _NDARRAY in obj:
            return np.frombuffer(obj[_NDARRAY].numpy().tobytes(), dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        return {key: from_loadable(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [from_loadable(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(from_loadable(value) for value in obj)
    return obj


def atomic_torch_save(obj: Any, path: Path | str) -> None:
    """Write `obj` (see `to_loadable`) atomically; `load_torch_file` reads it back."""
    import torch

    buffer = io.BytesIO()
    torch.save(to_loadable(obj), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _numpy_array_globals() -> list:
    """What pickled NumPy arrays and scalars need, and nothing else: how files written before run
    folders held tagged tensors stored arrays (PyTorch's documented way to allow them)."""
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray
    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def load_torch_file(path: Path | str) -> Any:
    """A file written by `atomic_torch_save`, read without unpickling arbitrary objects; a ConfigError
    (one line) when it is damaged, truncated or holds anything else. Files of older rlad versions,
    which pickled NumPy arrays directly, load with only NumPy's array globals allowed."""
    import pickle

    import torch

    path = Path(path)
    try:
        try:
            return from_loadable(torch.load(path, map_location="cpu", weights_only=True))
        except pickle.UnpicklingError as exc:
            if "GLOBAL numpy." not in str(exc):
                raise
            with torch.serialization.safe_globals(_numpy_array_globals()):
                return from_loadable(torch.load(path, map_location="cpu", weights_only=True))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found is None:
            raise ConfigError(f"{path}: damaged or not an rlad file (UnpicklingError); rerun the command that wrote it") from None
        raise ConfigError(
            f"{path}: not loaded: it holds a {found.group(1)} object, and run folders are read without running "
            "pickled code (a file from an older rlad or from elsewhere; rerun the command that wrote it)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncation surfaces as any of a dozen exception types
        raise ConfigError(f"{path}: damaged or not an rlad file ({type(exc).__name__}); rerun the command that wrote it") from None


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite_or_none(obj: Any) -> Any:
    """NaN/inf -> None: strict JSON has no NaN, and an undefined metric should read as null."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.floating):
            return _finite_or_none(float(obj))
    except ImportError:  # pragma: no cover
        pass
    return obj


def dumps(obj: Any, **kwargs) -> str:
    return json.dumps(_finite_or_none(obj), default=_json_default, allow_nan=False, **kwargs)


class RunDir:
    """One training run's folder. Creating it never deletes anything already there."""

    CONFIG = "config.yaml"
    MODEL = "model.pt"
    METRICS = "metrics.json"
    LOG = "log.jsonl"
    REPORT = "report.html"

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.finished = False  # set by `open` when the folder already holds this run's finished model
        self._created: list[Path] = []  # what `open` made, for `discard_unfinished`

    # --- layout -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def model_path(self) -> Path:
        return self.path / self.MODEL

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def log_path(self) -> Path:
        return self.path / self.LOG

    @classmethod
    def open(cls, path: Path | str, config: dict, kind_key: str = "method") -> "RunDir":
        """The run directory a training command writes into, for every command the same way.

        A new folder is created with `config` saved in it. An existing run resumes when its saved
        config equals `config`; a run whose config differs is refused once it holds a checkpoint or
        a model (an attempt killed before its first checkpoint lost nothing, so it starts afresh);
        a run of another kind (`config[kind_key]`) is always refused. When the folder already holds
        the finished model, `finished` is True and nothing is rewritten.
        """
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise ConfigError(f"{run.path}: exists and is not a directory")
        if run.config_path.is_file():
            saved = run.load_config()
            kind, saved_kind = config.get(kind_key), saved.get(kind_key)
            if saved_kind != kind:
                raise ConfigError(f"{run.path}: holds a {saved_kind!r} run; choose a new --out for {kind!r}")
            if saved != config and (run.checkpoints() or run.model_path.is_file()):
                raise ConfigError(
                    f"{run.path}: already holds a run with a different config; rerun with the same options to "
                    f"resume, or choose a new --out (saved config: {run.config_path})"
                )
            if saved == config and run.model_path.is_file():
                status(f"{run.path}: already trained ({cls.MODEL} present); nothing to do")
                run.finished = True
                return run
            if saved == config and run.checkpoints():
                status(f"{run.path}: resuming")
        missing = [p for p in (run.path, run.checkpoint_dir, run.config_path) if not p.exists()]
        run.create()
        run.save_config(config)
        run._created = missing
        return run

    def discard_unfinished(self, also: tuple[str, ...] = ()) -> None:
        """After a failed attempt that saved no checkpoint and no model: remove what `open` created
        (with the run files named in `also`, the log and the metrics when it started the run, i.e.
        wrote its config), so no half-made run is left for `test` or `predict` to misread. A run that
        holds a checkpoint or a model is never touched, nor any file of the folder's own."""
        if self.model_path.exists() or self.checkpoints() or not self._created:
            return
        if self.config_path in self._created:
            for name in (*also, self.LOG, self.METRICS):
                (self.path / name).unlink(missing_ok=True)
        for path in self._created:
            if path.is_file():
                path.unlink()
        for path in reversed(self._created):  # the checkpoint folder before the run folder
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        self._created = []

    def create(self) -> "RunDir":
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path}: exists and is not a directory")
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return self

    def require_model(self) -> "RunDir":
        """For commands that read a finished run (test, predict, export, serve)."""
        if not self.path.is_dir():
            raise ConfigError(f"{self.path}: run directory not found")
        if not self.config_path.is_file():
            raise ConfigError(f"{self.path}: not an rlad run directory (no {self.CONFIG})")
        if not self.model_path.is_file():
            raise ConfigError(
                f"{self.path}: has no {self.MODEL}; training did not finish (rerun `rlad fit` with the same --out to resume)"
            )
        return self

    # --- config -------------------------------------------------------------------------------
    def save_config(self, data: dict) -> None:
        import yaml

        atomic_write_bytes(self.config_path, yaml.safe_dump(data, sort_keys=False).encode())

    def load_config(self) -> dict:
        from rlad.config import load_yaml

        return load_yaml(self.config_path)

    # --- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict, step: int, keep: int = 2) -> Path:
        target = self.checkpoint_dir / f"step_{step:08d}.pt"
        atomic_torch_save(state, target)
        for old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
        return target

    def checkpoints(self) -> list[Path]:
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted(self.checkpoint_dir.glob("step_*.pt"))

    def latest_checkpoint(self) -> dict | None:
        """The newest checkpoint that loads; a damaged newest one falls back to the previous."""
        for path in reversed(self.checkpoints()):
            try:
                return load_torch_file(path)
            except ConfigError as exc:  # a truncated file from a crash mid-write of an older rlad
                status(f"skipping checkpoint {exc}")
                continue
        return None

    def save_model(self, state: dict) -> None:
        atomic_torch_save(state, self.model_path)

    def load_model(self) -> dict:
        """model.pt's contents; a one-line ConfigError when it is damaged or holds unsafe objects."""
        payload = load_torch_file(self.model_path)
        if not isinstance(payload, dict):
            raise ConfigError(f"{self.model_path}: not an rlad model file")
        return payload

    # --- logs and metrics -----------------------------------------------------------------------
    def log(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        self.path.mkdir(parents=True, exist_ok=True)
        line = dumps(record) + "\n"
        # A kill mid-write leaves a partial last line; start on a fresh line so this record survives.
        if self.log_path.is_file() and self.log_path.stat().st_size:
            with open(self.log_path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    line = "\n" + line
        with open(self.log_path, "a") as handle:
            handle.write(line)

    def read_log(self) -> list[dict]:
        if not self.log_path.is_file():
            return []
        rows = []
        for line in self.log_path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill; the rest is still useful
                    continue
        return rows

    def save_metrics(self, metrics: dict, key: str | None = None) -> None:
        """Merge `metrics` into metrics.json (under `key` when given)."""
        current = {}
        if self.metrics_path.is_file():
            try:
                current = json.loads(self.metrics_path.read_text())
            except json.JSONDecodeError:
                current = {}
        if key is None:
            current.update(metrics)
        else:
            current[key] = metrics
        atomic_write_bytes(self.metrics_path, dumps(current, indent=2).encode())
