"""What the server computes per request: a pixel run's decision on one image (the rule of `rlad
predict`, `workflows.predict`), or a grounding run's box for a reference/query pair.

`open_inspector(RUN)` chooses by what RUN is: an exported `.onnx` file or a pixel run folder gives a
`PixelInspector`, a grounding run (compact or hf policy) a `GroundingInspector`.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import numpy as np

from rlad.errors import ConfigError
from rlad.serve.uploads import check_upload, load_upload, upload_file

MAX_SIDE = 2048  # maps, masks and overlays at most this size (larger images are shrunk while decoding, as predict)


def png_base64(pixels: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class PixelInspector:
    kind = "pixel"
    fields = ("image",)

    def __init__(self, run_path: str | Path, threads: int = 0):
        from rlad.workflows.predict import load_predictor
        from rlad.workflows.predict import thresholds_for

        # An exported model's idle threads sleep: busy-waiting took the cores the event loop and the
        # decoding need, a third of the throughput on the busy 2-core benchmark host (docs/deploy.md).
        self.loaded = load_predictor(run_path, threads, spinning=False)
        self.loaded.warn_if_untrained_backbone()
        self.thresholds = thresholds_for(self.loaded.post)
        self.run_path = str(run_path)

    def describe(self) -> dict:
        return {"kind": self.kind, "run": self.run_path, "method": self.loaded.cfg.method,
                "image_size": self.loaded.cfg.image_size, "thresholds": vars(self.thresholds),
                "engine": "onnxruntime" if self.run_path.endswith(".onnx") else "pytorch"}

    def handle(self, files: dict, cfg, overlay: bool = False) -> dict:
        data, content_type = files["image"]
        started = time.perf_counter()
        upload = check_upload(data, content_type, "image", cfg.allowed_types, cfg.max_pixels)
        image = load_upload(upload, MAX_SIDE)
        decoded = time.perf_counter()
        result = self.decide(image, upload.height, upload.width, overlay)
        result["timing_ms"] = {"decode": round((decoded - started) * 1000, 2), **result["timing_ms"]}
        result["timing_ms"]["total"] = round((time.perf_counter() - started) * 1000, 2)
        return result

    def decide(self, image: np.ndarray, height: int, width: int, overlay: bool = False) -> dict:
        """score, label, boxes (original pixels) and the mask as a PNG, by `rlad predict`'s rule."""
        from rlad.workflows.predict import decide, overlay_panel

        started = time.perf_counter()
        decision = decide(self.loaded, image, self.thresholds, height, width)
        decided = time.perf_counter()
        result = {
            "score": decision.score,
            "raw_score": decision.raw_score,
            "label": "anomalous" if decision.anomalous else "normal",
            "anomalous": decision.anomalous,
            "image_threshold": self.thresholds.image,
            "pixel_threshold": self.thresholds.pixel,
            "boxes": decision.boxes,
            "mask_rule": decision.mask_rule,
            "height": height,
            "width": width,
            "output_scale": round(image.shape[1] / width, 6),
            "mask_png": png_base64((decision.mask * 255).astype(np.uint8)),
        }
        if overlay:
            label = "ANOMALOUS" if decision.anomalous else "normal"
            title = f"score {decision.score:.3f}  {label}  (threshold {self.thresholds.image:.2f})"
            result["overlay_png"] = png_base64(overlay_panel(image, decision, title))
        result["timing_ms"] = {"model": round((decided - started) * 1000, 2),
                               "post": round((time.perf_counter() - decided) * 1000, 2)}
        return result


class GroundingInspector:
    kind = "grounding"
    fields = ("reference", "query")

    def __init__(self, run_path: str | Path, threads: int = 0):
        from rlad.workflows.grounding import load_policy

        self.policy = load_policy(run_path)
        self.threads = threads or 1
        self.run_path = str(run_path)

    def describe(self) -> dict:
        return {"kind": self.kind, "run": self.run_path, "policy": type(self.policy).__name__}

    def handle(self, files: dict, cfg, overlay: bool = False) -> dict:
        from rlad.data.pairs.records import PairRecord
        from rlad.workflows.grounding import predict_boxes

        started = time.perf_counter()
        (ref_data, ref_type), (query_data, query_type) = files["reference"], files["query"]
        reference = check_upload(ref_data, ref_type, "reference", cfg.allowed_types, cfg.max_pixels)
        query = check_upload(query_data, query_type, "query", cfg.allowed_types, cfg.max_pixels)
        load_upload(reference, MAX_SIDE)  # refuse a truncated file before the policy sees it
        load_upload(query, MAX_SIDE)
        with upload_file(reference) as reference_path, upload_file(query) as query_path:
            record = PairRecord(id="query", reference=str(reference_path), query=str(query_path), box=(0, 0, 0, 0),
                                query_size=(query.height, query.width),
                                reference_size=(reference.height, reference.width),
                                category="", defect_type="unknown")
            decoded = time.perf_counter()
            boxes, texts = predict_boxes(self.policy, [record], threads=self.threads)
        box = boxes[0]
        return {
            "box": None if box is None else [round(float(v), 1) for v in box],
            "anomalous": box is not None and any(float(v) != 0 for v in box),
            "text": texts[0],
            "query_size": [query.height, query.width],
            "timing_ms": {"decode": round((decoded - started) * 1000, 2),
                          "model": round((time.perf_counter() - decoded) * 1000, 2),
                          "total": round((time.perf_counter() - started) * 1000, 2)},
        }


def open_inspector(run_path: str | Path, threads: int = 0):
    """A PixelInspector for an exported file or a pixel run, a GroundingInspector for a grounding run."""
    from rlad.engine.run import RunDir
    from rlad.workflows.exported import is_export

    if is_export(run_path):
        return PixelInspector(run_path, threads)
    payload = RunDir(run_path).require_model().load_model()
    if payload.get("method") and payload.get("method") != "compact":
        return PixelInspector(run_path, threads)
    if "policy" in payload or payload.get("method") == "compact":
        return GroundingInspector(run_path, threads)
    raise ConfigError(f"{run_path}: neither a pixel run, an exported .onnx file nor a grounding run")
