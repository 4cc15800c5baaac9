"""A fitted pixel run (`rlad fit METHOD`) as a source of anomaly maps for arbitrary image files: what
the training-free question answerer (`workflows.questions`) and boxes-to-masks (`workflows.box_masks`)
read. Images are fed exactly as `rlad fit` / `rlad test` feed them (resized to the run's square
`image_size`, 8-bit), in chunks, so memory stays flat however many images there are.

The run's protocol travels with it: `protocol_images` are the content hashes of the images the run
trained on (labelled defects) or chose settings on (its development split), which no evaluation may
score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from rlad.errors import DataError


@dataclass
class PixelRun:
    path: Path
    loaded: object  # workflows.detection.LoadedRun

    @classmethod
    def open(cls, path: str | Path) -> "PixelRun":
        from rlad.workflows.detection import load_run

        return cls(Path(path), load_run(path))

    @property
    def category(self) -> str:
        return self.loaded.split.get("category", "")

    @property
    def size(self) -> int:
        return self.loaded.cfg.image_size

    @property
    def post(self):
        return self.loaded.post

    def predictions(self, paths: Sequence[str], desc: str = "maps", chunk: int = 32) -> Iterator[tuple]:
        """(path, image float (3, S, S) in [0, 1], raw map (S, S), raw score) per image, in order."""
        from rlad.engine import progress
        from rlad.policies.baselines import load_resized
        from rlad.workflows.detection import predict_arrays

        with progress(total=len(paths), desc=desc) as bar:
            for start in range(0, len(paths), chunk):
                part = list(paths[start:start + chunk])
                images = load_resized(part, self.size)
                pred = predict_arrays(self.loaded.model, np.round(images * 255).astype(np.uint8),
                                      self.loaded.cfg.batch_size, desc=desc)
                yield from zip(part, images, pred.maps, pred.scores)
                bar.update(len(part))

    def protocol_images(self) -> set[str]:
        """SHA-256 of the run's labelled and development images (recorded at fit time; older runs:
        hashed from their recorded relative paths where the data still is)."""
        from rlad.data.paths import content_sha256

        split = self.loaded.split or {}
        if "labeled_sha256" in split:
            return set(split["labeled_sha256"]) | set(split.get("dev_sha256", []))
        root = Path(split.get("data", ""))
        files = [root / rel for rel in [*split.get("labeled", []), *split.get("dev", [])]]
        return {content_sha256(f) for f in files if f.is_file()}

    def labelled_images(self) -> list[tuple[str, str]]:
        """(path, defect type) of the run's labelled defective images that are still on disk."""
        split = self.loaded.split or {}
        root = Path(split.get("data", ""))
        out = []
        for rel in split.get("labeled", []):
            parts = Path(rel).parts
            if len(parts) >= 3 and (root / rel).is_file():
                out.append((str(root / rel), parts[-2]))
        return out


def runs_by_category(paths: Sequence[str | Path]) -> dict[str, PixelRun]:
    """Pixel runs keyed by the category each was fitted on; two runs of one category are an error."""
    runs: dict[str, PixelRun] = {}
    for path in paths:
        run = PixelRun.open(path)
        if run.category in runs:
            raise DataError(f"{path} and {runs[run.category].path} are both fitted on category {run.category!r}; "
                            "give one run per category")
        runs[run.category] = run
    return runs


def excluded_by_protocol(image_paths: Sequence[str], runs: Sequence[PixelRun]) -> set[str]:
    """The image paths that are a labelled or development image of any of the runs (by content)."""
    from rlad.data.paths import content_sha256

    keys = set().union(*(run.protocol_images() for run in runs)) if runs else set()
    if not keys:
        return set()
    return {p for p in set(image_paths) if content_sha256(p) in keys}
