"""Pictures people look at instead of reading numbers: heatmaps, masks, overlays, report plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _colormap(values: np.ndarray, name: str = "jet") -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](np.clip(values, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as 8-bit pixels (rounded; values outside [0, 1] are clipped)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png(path: Path, pixels: np.ndarray, compress_level: int = 6) -> None:
    """Write uint8 pixels, (H, W) grey or (H, W, 3) RGB, as a PNG, creating missing folders.

    `compress_level` is zlib's 0-9 (6 is PIL's default); the bytes written depend on it, so a caller
    that promises byte-identical files keeps its level fixed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path, format="PNG", compress_level=compress_level)


def save_heatmap(normalised_map: np.ndarray, path: Path) -> None:
    """A [0, 1] map (0.5 = the fitted threshold) as a colour PNG."""
    save_png(path, _colormap(normalised_map))


def save_mask(mask: np.ndarray, path: Path) -> None:
    save_png(path, (np.asarray(mask, bool) * 255).astype(np.uint8))


def overlay(image: np.ndarray, normalised_map: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.45) -> np.ndarray:
    """The image with the heatmap blended in and the mask outline drawn in white; uint8 (H, W, 3)."""
    base = np.clip(image, 0, 1) * 255
    heat = _colormap(normalised_map).astype(np.float32)
    weight = alpha * np.clip(normalised_map, 0, 1)[..., None] * 2
    out = base * (1 - np.clip(weight, 0, alpha)) + heat * np.clip(weight, 0, alpha)
    if mask is not None and np.any(mask):
        from scipy import ndimage

        edge = mask & ~ndimage.binary_erosion(mask)
        out[edge] = 255
    return out.astype(np.uint8)


def save_overlay(image: np.ndarray, normalised_map: np.ndarray, mask: np.ndarray | None, path: Path) -> None:
    save_png(path, overlay(image, normalised_map, mask))


def png_data_uri(path_or_array) -> str:
    """A PNG file or uint8 array as a data: URI, so a report is one self-contained HTML file."""
    import base64
    import io

    if isinstance(path_or_array, (str, Path)):
        data = Path(path_or_array).read_bytes()
    else:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(path_or_array)).save(buffer, format="PNG")
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def figure_png(fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def write_report(path: Path, title: str, sections: list[tuple[str, str]]) -> None:
    """One self-contained HTML page: `sections` are (heading, HTML body) pairs."""
    from html import escape

    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;margin:4px}.grid img{width:256px}figure{display:inline-block;margin:4px}"
        "figcaption{font-size:12px;color:#555;max-width:256px}"
    )
    body = "".join(f"<h2>{escape(h)}</h2>\n{html}\n" for h, html in sections)
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style></head><body><h1>{escape(title)}</h1>\n{body}</body></html>"
    from rlad.engine.run import atomic_write_bytes

    atomic_write_bytes(path, page.encode())
