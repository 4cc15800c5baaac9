"""`rlad export RUN --format onnx --out FILE.onnx`: a fitted pixel run as one ONNX graph, checked
against PyTorch before it is written.

The graph (`workflows.export_graphs`) holds the whole inference path: the resize to the run's
square input, normalisation, backbone, scoring, smoothing and the run's 0-1 scale; the thresholds,
the run's config and its records travel as metadata (`METADATA_KEY`, JSON). Batch size, height and
width are dynamic.

Parity, by the export itself, on real images (the run's validation images and a few of its test
images, or `images`): every image is scored by PyTorch exactly as `rlad predict` scores it (PIL
resize, `model.predict`, `PostProcessor`), and by ONNX Runtime twice, at its own size (the resize in
the graph) and in one batch of all of them at the model's size (the dynamic batch). The export fails,
and writes nothing, unless the normalised maps differ by less than `tolerance` everywhere and every
image gets the same label (image score at or above the threshold) in both.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlad.engine import status
from rlad.errors import ConfigError, DataError, RladError

METADATA_KEY = "rlad"
FORMAT_VERSION = 1
FORMATS = ("onnx",)
PARITY_TOLERANCE = 1e-4
PARITY_IMAGES = 8
MIN_SIDE, MAX_SIDE = 32, 4096  # the graph's accepted input sides (also what the resize was traced for)


class ExportError(RladError):
    """The exported graph could not be made, or disagrees with PyTorch."""


@dataclass
class Parity:
    images: int
    max_abs_map_diff: float
    """Largest |ONNX - PyTorch| of the 0-1 maps, over every pixel of every image, both ONNX passes."""
    max_abs_score_diff: float
    labels_agree: bool
    anomalous: int
    """Images PyTorch labels anomalous (so both labels were exercised when 0 < anomalous < images)."""
    batch_sizes: list[int]
    tolerance: float = PARITY_TOLERANCE
    torch_ms_per_image: float = 0.0
    onnx_ms_per_image: float = 0.0
    paths: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.labels_agree and self.max_abs_map_diff < self.tolerance

    def describe(self) -> str:
        return (f"parity on {self.images} image(s) (batches {self.batch_sizes}): max |map diff| "
                f"{self.max_abs_map_diff:.2e} (limit {self.tolerance:.0e}), max |score diff| {self.max_abs_score_diff:.2e}, "
                f"labels {'identical' if self.labels_agree else 'DIFFER'} ({self.anomalous} anomalous)")


@dataclass
class ExportResult:
    path: Path
    method: str
    parity: Parity
    seconds: float
    bytes: int


def export(run_path: str | Path, out: str | Path, fmt: str = "onnx", images: list[str | Path] | None = None,
           max_images: int = PARITY_IMAGES, tolerance: float = PARITY_TOLERANCE) -> ExportResult:
    """Write the run at `run_path` as `out` (module docstring); raises ExportError when parity fails."""
    from rlad.workflows.detection import load_run
    from rlad.workflows.export_graphs import graph_for

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    out = _check_out(Path(out))
    if max_images < 1:
        raise ConfigError(f"--images-max {max_images}: give at least 1")
    started = time.perf_counter()
    loaded = load_run(run_path)
    loaded.warn_if_untrained_backbone()
    if getattr(loaded.model.config, "profile_precision", "fp32") != "fp32":
        # The graph is fp32 throughout (NBS's bf16 loss profile is a PyTorch-side speed-up):
        # parity is checked against the same arithmetic.
        loaded.model.config.profile_precision = "fp32"
    paths = parity_images(loaded, images, max_images)
    graph = graph_for(loaded.cfg.method, loaded.model, loaded.cfg.image_size, loaded.post)
    status(f"export: tracing {loaded.cfg.method} ({loaded.cfg.image_size} px) to ONNX")
    program = _to_onnx(graph, loaded.cfg.image_size)
    tmp_dir = tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)
    tmp = Path(tmp_dir) / out.name
    try:
        program.save(str(tmp))
        status(f"export: parity check on {len(paths)} image(s)")
        parity = check_parity(loaded, tmp, paths, tolerance)
        if not parity.passed:
            raise ExportError(f"the exported graph disagrees with PyTorch, nothing written: {parity.describe()}")
        _write_metadata(tmp, metadata(loaded, parity))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        os.rmdir(tmp_dir)
    return ExportResult(out, loaded.cfg.method, parity, time.perf_counter() - started, out.stat().st_size)


def _check_out(out: Path) -> Path:
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: give a file name ending in .onnx")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name ending in .onnx")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create its folder ({exc.strerror or exc})") from None
    return out


def parity_images(loaded, images: list[str | Path] | None, max_images: int) -> list[Path]:
    """`images` (files or folders), or the run's validation images and then test images of each kind
    from its dataset, evenly spread, at most `max_images`."""
    if images:
        from rlad.workflows.predict import collect_images

        found, failed = collect_images(images, Path(tempfile.gettempdir()) / ".rlad-no-output")
        if failed:
            raise DataError(f"--images: {failed[0]['path']}: {failed[0]['error']}")
        if not found:
            raise DataError(f"--images: no images in {', '.join(map(str, images))}")
        return _spread(found, max_images)
    data = loaded.split.get("data")
    if not data or not Path(data).is_dir():
        raise DataError(f"{loaded.run.path}: its dataset ({data or 'not recorded'}) is not here for the parity "
                        "check; give real images with --images PATH...")
    from rlad.data.folder import discover

    root = Path(data)
    folder = discover(root)
    val = [root / name for name in loaded.split.get("val", [])]
    test = [s.path for s in folder.test]
    half = max(1, max_images // 2)
    chosen = _spread(val, min(half, len(val))) if val else []
    chosen += _spread(test, max_images - len(chosen))
    if not chosen:
        raise DataError(f"{root}: no images for the parity check; give --images PATH...")
    return chosen


def _spread(paths: list[Path], count: int) -> list[Path]:
    if count <= 0 or not paths:
        return []
    if len(paths) <= count:
        return list(paths)
    return [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]


def _to_onnx(graph, image_size: int):
    """The dynamo exporter with dynamic batch, height and width (the legacy TorchScript exporter
    cannot write the antialiased resize)."""
    example = torch.rand(2, 3, image_size, image_size)
    dims = ({0: torch.export.Dim("batch", min=1, max=4096), 2: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
             3: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)},)
    from rlad.workflows.export_graphs import OUTPUTS

    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter():
            warnings.simplefilter("ignore")
            return torch.onnx.export(graph, (example,), input_names=["images"], output_names=list(OUTPUTS),
                                     dynamic_shapes=dims, dynamo=True, verbose=False, optimize=True)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the export extra (pip install 'rlad[export]'): {exc}") from None
    except Exception as exc:  # noqa: BLE001 - tracing failures surface as many exception types
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"tracing the {type(graph).__name__} failed: {type(exc).__name__}: {first}") from None


class _quiet_exporter:
    """The exporter logs its progress and torchvision notes through `logging`; rlad's stderr stays readable."""

    def __enter__(self):
        import logging

        self.loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
        self.levels = [logger.level for logger in self.loggers]
        for logger in self.loggers:
            logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for logger, level in zip(self.loggers, self.levels):
            logger.setLevel(level)


def onnx_session(path: str | Path, threads: int = 0, spinning: bool = False):
    """An ONNX Runtime CPU session (`threads` 0: its default). Its intra-op threads sleep when idle
    unless `spinning`: busy-waiting after every operator and call takes the cores from image decoding,
    a server's event loop and anything else, and on 2 cores it was no faster even alone (docs/deploy.md)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError(f"running an exported model needs onnxruntime (pip install 'rlad[export]'): {exc}") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_parity(loaded, onnx_path: Path, paths: list[Path], tolerance: float = PARITY_TOLERANCE) -> Parity:
    from rlad.data.images import load_image
    from rlad.data.transforms import resize_image

    session = onnx_session(onnx_path)
    size = loaded.cfg.image_size
    originals = [load_image(p, max_side=MAX_SIDE) for p in paths]
    resized = np.stack([resize_image(image, size).transpose(2, 0, 1) for image in originals]).astype(np.float32)
    started = time.perf_counter()
    with torch.inference_mode():
        reference = loaded.model.predict(torch.from_numpy(resized))
    torch_ms = (time.perf_counter() - started) * 1000 / len(paths)
    ref_maps = loaded.post.normalise_maps(reference.maps)
    ref_scores = loaded.post.normalise_scores(reference.scores)

    started = time.perf_counter()
    batch = session.run(None, {"images": resized})
    onnx_ms = (time.perf_counter() - started) * 1000 / len(paths)
    singles = [session.run(None, {"images": np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)})
               for image in originals]
    map_diff = max([float(np.abs(batch[2] - ref_maps).max())]
                   + [float(np.abs(s[2][0] - ref_maps[i]).max()) for i, s in enumerate(singles)])
    score_diff = max([float(np.abs(batch[3] - ref_scores).max())]
                     + [float(abs(s[3][0] - ref_scores[i])) for i, s in enumerate(singles)])
    labels = ref_scores >= 0.5
    agree = bool((labels == (batch[3] >= 0.5)).all()) and all(
        bool(labels[i] == (s[3][0] >= 0.5)) for i, s in enumerate(singles))
    return Parity(images=len(paths), max_abs_map_diff=map_diff, max_abs_score_diff=score_diff, labels_agree=agree,
                  anomalous=int(labels.sum()), batch_sizes=sorted({1, len(paths)}), tolerance=tolerance,
                  torch_ms_per_image=round(torch_ms, 2), onnx_ms_per_image=round(onnx_ms, 2),
                  paths=[str(p) for p in paths])


def metadata(loaded, parity: Parity) -> dict:
    from rlad import __version__
    from rlad.workflows.detection import config_to_dict
    from rlad.workflows.export_graphs import OUTPUTS

    return {
        "format_version": FORMAT_VERSION,
        "rlad_version": __version__,
        "method": loaded.cfg.method,
        "image_size": loaded.cfg.image_size,
        "input": f"images: float32 (batch, 3, height, width) in [0, 1], RGB; {MIN_SIDE}..{MAX_SIDE} px a side; "
                 f"resized to {loaded.cfg.image_size} x {loaded.cfg.image_size} inside",
        "outputs": list(OUTPUTS),
        "config": config_to_dict(loaded.cfg),
        "postprocess": loaded.post.to_dict(),
        "thresholds": {"image": 0.5, "pixel": 0.5, "image_raw": loaded.post.image_threshold,
                       "pixel_raw": loaded.post.pixel_threshold},
        "run": str(Path(loaded.run.path).resolve()),
        "split": {k: loaded.split.get(k) for k in ("data", "category")},
        "backbones": loaded.backbones,
        "train_size": loaded.train_size,
        "parity": asdict(parity),
    }


def _write_metadata(path: Path, meta: dict) -> None:
    import onnx

    from rlad.engine.run import dumps

    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, dumps(meta)
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict:
    """The rlad metadata of an exported file (a ConfigError when it is not one)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise ConfigError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    return parse_metadata({p.key: p.value for p in model.metadata_props}.get(METADATA_KEY), path)


def parse_metadata(raw: str | None, path: str | Path) -> dict:
    """The rlad metadata from its JSON text (None: the file has none), checked for this format."""
    if raw is None:
        raise ConfigError(f"{path}: an ONNX file without rlad metadata (not written by rlad export)")
    meta = json.loads(raw)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path}: exported by another rlad version (format {meta.get('format_version')})")
    return meta
