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
import torch

from rlad.errors import ConfigError
from rlad.serve.uploads import decoded_upload, load_upload

MAX_SIDE = 2048  # maps, masks and overlays at most this size (larger images are shrunk while decoding, as predict)
OVERLAY_SIDE = 768


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

        self.loaded = load_predictor(run_path, threads)
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
        with decoded_upload(data, content_type, "image", cfg.allowed_types, cfg.max_pixels) as upload:
            image = load_upload(upload, "image", MAX_SIDE)
            height, width = upload.height, upload.width
        decoded = time.perf_counter()
        result = self.decide(image, height, width, overlay)
        result["timing_ms"] = {"decode": round((decoded - started) * 1000, 2), **result["timing_ms"]}
        result["timing_ms"]["total"] = round((time.perf_counter() - started) * 1000, 2)
        return result

    def decide(self, image: np.ndarray, height: int, width: int, overlay: bool = False) -> dict:
        """score, label, boxes (original pixels) and the mask as a PNG, by `rlad predict`'s rule."""
        from rlad.data.transforms import resize_image, resize_map_to
        from rlad.workflows.predict import _decide_mask, _regions, _to_original

        started = time.perf_counter()
        loaded, thresholds = self.loaded, self.thresholds
        model_input = resize_image(image, loaded.cfg.image_size).transpose(2, 0, 1)[None]
        with torch.inference_mode():
            pred = loaded.model.predict(torch.from_numpy(np.ascontiguousarray(model_input)))
        modelled = time.perf_counter()
        out_h, out_w = image.shape[:2]
        scores = loaded.post.normalise_maps(resize_map_to(pred.maps[0], (out_h, out_w)))
        score = float(loaded.post.normalise_scores(pred.scores)[0])
        anomalous = score >= thresholds.image
        mask, rule = _decide_mask(scores, anomalous, thresholds.pixel)
        regions = _regions(scores, mask)
        result = {
            "score": score,
            "raw_score": float(pred.scores[0]),
            "label": "anomalous" if anomalous else "normal",
            "anomalous": bool(anomalous),
            "image_threshold": thresholds.image,
            "pixel_threshold": thresholds.pixel,
            "boxes": [{"box": _to_original(box, (out_h, out_w), height, width), "score": round(peak, 6)}
                      for box, peak in regions],
            "mask_rule": rule,
            "height": height,
            "width": width,
            "output_scale": round(out_w / width, 6),
            "mask_png": png_base64((mask * 255).astype(np.uint8)),
        }
        if overlay:
            result["overlay_png"] = png_base64(self._panel(image, scores, mask, regions, score, anomalous))
        result["timing_ms"] = {"model": round((modelled - started) * 1000, 2),
                               "post": round((time.perf_counter() - modelled) * 1000, 2)}
        return result

    def _panel(self, image, scores, mask, regions, score, anomalous) -> np.ndarray:
        """The labelled panel of `rlad predict`'s overlay files, at most OVERLAY_SIDE a side."""
        from rlad.data.transforms import resize_image, resize_map_to
        from rlad.viz import labelled_panel

        height, width = scores.shape
        scale = min(1.0, OVERLAY_SIDE / max(height, width))
        if scale < 1.0:
            hw = (max(1, round(height * scale)), max(1, round(width * scale)))
            image, scores = resize_image(image, hw), resize_map_to(scores, hw)
            mask = resize_map_to(mask.astype(np.float32), hw) >= 0.5
            regions = [([round(v * scale) for v in box], peak) for box, peak in regions]
        title = f"score {score:.3f}  {'ANOMALOUS' if anomalous else 'normal'}  (threshold {self.thresholds.image:.2f})"
        return labelled_panel(image, scores, regions, title, anomalous, mask=mask)


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
        with decoded_upload(ref_data, ref_type, "reference", cfg.allowed_types, cfg.max_pixels) as reference, \
                decoded_upload(query_data, query_type, "query", cfg.allowed_types, cfg.max_pixels) as query:
            load_upload(reference, "reference", MAX_SIDE)  # refuse a truncated file before the policy sees it
            load_upload(query, "query", MAX_SIDE)
            record = PairRecord(id="query", reference=str(reference.path), query=str(query.path), box=(0, 0, 0, 0),
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
