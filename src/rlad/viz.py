"""Pictures people look at instead of reading numbers: PNG writing, heat-map overlays, labelled panels,
plots as data URIs and the self-contained HTML page."""

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
    """Write uint8 pixels, (H, W) grey or (H, W, 3) RGB, or uint16 (H, W) grey (a 16-bit PNG), as a
    PNG, creating missing folders.

    `compress_level` is zlib's 0-9 (6 is PIL's default); the bytes written depend on it, so a caller
    that promises byte-identical files keeps its level fixed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path, format="PNG", compress_level=compress_level)


def to_uint16(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as 16-bit pixels (value = pixel / 65535), for maps that keep their precision."""
    return np.round(np.clip(values, 0.0, 1.0) * 65535.0).astype(np.uint16)


def overlay(image: np.ndarray, normalised_map: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image with the heat map blended in, more strongly where the map is higher (fully from the
    threshold, 0.5, up); uint8 (H, W, 3)."""
    base = np.clip(image, 0, 1) * 255
    heat = _colormap(normalised_map).astype(np.float32)
    weight = np.clip(alpha * np.clip(normalised_map, 0, 1)[..., None] * 2, 0, alpha)
    return (base * (1 - weight) + heat * weight).astype(np.uint8)


GOOD_COLOUR = (40, 160, 60)
BAD_COLOUR = (220, 30, 30)
TRUTH_COLOUR = (255, 255, 255)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _outline(pixels: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    from scipy import ndimage

    if mask is not None and np.any(mask):
        mask = np.asarray(mask, bool)
        pixels[mask & ~ndimage.binary_erosion(mask)] = colour


def _fitted_size(draw, text: str, size: int, width: int, smallest: int = 9) -> int:
    """The largest font size up to `size` (and down to `smallest`) at which `text` fits `width` pixels."""
    while size > smallest and draw.textlength(text, font=_font(size)) > width:
        size -= 1
    return size


def _fitted(draw, text: str, size: int, width: int) -> str:
    """`text`, cut with an ellipsis when it does not fit `width` even at the smallest font size (a
    narrow image with a long file name): the start (score and decision) is what must stay."""
    font = _font(_fitted_size(draw, text, size, width))
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2].rstrip() + "\u2026"
    return text


def labelled_panel(image: np.ndarray, scores: np.ndarray, boxes: list[tuple[list[int], float]], title: str,
                   flagged: bool, truth: np.ndarray | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """What a person reads without opening the original: a title strip (score and decision, coloured
    by the decision), then the image beside its heat-map overlay with the predicted regions boxed and
    each box's score written on it. `image` float (H, W, 3) in [0, 1]; `scores` (H, W) in [0, 1] with
    0.5 = the threshold; `boxes` ([x0, y0, x1, y1], score) in this image's pixels; `truth` (ground
    truth) and `mask` (prediction) are outlined in white and red. Returns uint8 (h, 2W + gap, 3)."""
    from PIL import ImageDraw

    height, width = scores.shape
    left = to_uint8(image)
    right = overlay(image, scores)
    _outline(right, mask, BAD_COLOUR)
    _outline(left, truth, TRUTH_COLOUR)
    _outline(right, truth, TRUTH_COLOUR)
    gap = max(4, width // 64)
    text_size = max(12, min(28, width // 14))
    strip = text_size + 10
    canvas = Image.new("RGB", (2 * width + gap, height + strip), (255, 255, 255))
    canvas.paste(Image.fromarray(left), (0, strip))
    canvas.paste(Image.fromarray(right), (width + gap, strip))
    draw = ImageDraw.Draw(canvas)
    colour = BAD_COLOUR if flagged else GOOD_COLOUR
    draw.rectangle((0, 0, canvas.width, strip - 3), fill=colour)
    draw.text((6, 4), _fitted(draw, title, text_size, canvas.width - 12), fill=(255, 255, 255),
              font=_font(_fitted_size(draw, title, text_size, canvas.width - 12)))
    line = max(1, width // 160)
    box_font = _font(max(10, text_size - 4))
    for (x0, y0, x1, y1), score in boxes:
        shape = (width + gap + x0, strip + y0, width + gap + max(x0, x1 - 1), strip + max(y0, y1 - 1))
        draw.rectangle(shape, outline=BAD_COLOUR, width=line)
        label = (shape[0], max(strip, shape[1] - text_size))
        draw.rectangle(draw.textbbox(label, f"{score:.2f}", font=box_font), fill=BAD_COLOUR)
        draw.text(label, f"{score:.2f}", fill=(255, 255, 255), font=box_font)
    return np.asarray(canvas)


def figure_png_uri(draw, size: tuple[float, float] = (5.0, 3.6)) -> str:
    """A matplotlib figure drawn by `draw(axes)` as a PNG data URI. A bare `Figure`, not pyplot: no GUI
    backend is ever started and nothing global is left open."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    draw(fig.subplots())
    fig.tight_layout()
    return png_data_uri_bytes(figure_png(fig))


def png_data_uri_bytes(data: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(data).decode()


def png_data_uri(path_or_array) -> str:
    """A PNG file or uint8 array as a data: URI, so a report is one self-contained HTML file."""
    import io

    if isinstance(path_or_array, (str, Path)):
        data = Path(path_or_array).read_bytes()
    else:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(path_or_array)).save(buffer, format="PNG")
        data = buffer.getvalue()
    return png_data_uri_bytes(data)


def figure_png(fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


# After loading, the page writes how many of its images decoded, and the narrowest one's width on
# screen, into <body data-images data-decoded data-narrowest>: a headless browser's DOM dump then shows
# whether every embedded picture renders, at a size a person can read.
_IMAGE_CHECK = (
    "<script>window.addEventListener('load',function(){var i=Array.prototype.slice.call(document.images);"
    "var b=document.body.dataset;b.images=i.length;"
    "b.decoded=i.filter(function(x){return x.complete&&x.naturalWidth>0}).length;"
    "b.narrowest=Math.round(Math.min.apply(null,i.map(function(x){return x.getBoundingClientRect().width})));});</script>"
)


def write_report(path: Path, title: str, sections: list[tuple[str, str]], intro: str = "") -> Path:
    """One self-contained HTML page (images embedded as data URIs, no external resource): `sections`
    are (heading, HTML body) pairs, `intro` HTML goes under the title."""
    from html import escape

    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.text-last td:last-child{text-align:left}"
        "img{max-width:100%;margin:4px}.grid img{width:256px}figure{display:inline-block;margin:4px;vertical-align:top}"
        ".panels img{width:520px}figcaption{font-size:13px;color:#555;max-width:520px}.warn{background:#fde8e8;border-left:4px solid #d33;"
        "padding:6px 10px}.plots img{width:480px}"
    )
    body = "".join(f"<h2>{escape(h)}</h2>\n{html}\n" for h, html in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style>"
            f"</head><body><h1>{escape(title)}</h1>\n{intro}\n{body}{_IMAGE_CHECK}</body></html>")
    from rlad.engine.run import atomic_write_bytes

    atomic_write_bytes(path, page.encode())
    return Path(path)
