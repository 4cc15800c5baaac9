"""The evaluation protocol: which images a run trains on, fits thresholds on, chooses settings on,
and is scored on. The same for every pixel model, so comparisons are side by side:

- `train/good` minus a held-out validation share -> unlabelled training images;
- `labeled_per_type` defective images per type drawn with the seed from `test/`, given to the model
  as labelled training data and REMOVED from evaluation; the run records which files;
- thresholds are fitted on the validation split (held-out normal images, plus the labelled defects
  when there are any), never on the test split;
- an optional development split (`dev_fraction` of the remaining test images, per group) for
  choosing settings; `rlad test` leaves it out, `rlad test --split dev` scores only it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlad.config import raise_if_problems
from rlad.data.paths import relative_to
from rlad.errors import ConfigError, DataError

SPLITS = ("test", "dev")


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

    def validate(self) -> "ProtocolConfig":
        raise_if_problems([dev_fraction_problem(self.dev_fraction)])
        return self


def dev_fraction_problem(fraction: float) -> str | None:
    return None if 0 <= fraction < 1 else f"protocol.dev_fraction={fraction} must be in [0, 1)"


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


def draw_dev(samples: list, fraction: float, seed: int) -> list:
    """`fraction` of each group (normal, each defect type; at least one image of a group of two or
    more) with its own seeded generator, so the labelled draw is the same with or without a dev split."""
    raise_if_problems([dev_fraction_problem(fraction)])
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


def split_record(split: Split, folder, data_dir: Path | str) -> dict:
    """What a run records about its split (relative file names), for `evaluation_samples` later."""
    return {
        "data": str(Path(data_dir).resolve()),
        "category": folder.category,
        "labeled": [relative_to(s.path, folder.root) for s in split.labeled],
        "val": [relative_to(s.path, folder.root) for s in split.val],
        "dev": [relative_to(s.path, folder.root) for s in split.dev],
    }


def evaluation_samples(recorded: dict, folder, split: str = "test", run_name: str = "the run"
                       ) -> tuple[list, set[str], set[str]]:
    """The samples of `folder` to score for `split`, and the labelled and development files of a run
    (its `split_record`) on this folder (relative paths; empty when the run was fitted on another folder)."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: choose test or dev")
    same_data = bool(recorded) and Path(recorded.get("data", "")) == Path(folder.root).resolve()
    excluded: set[str] = set(recorded.get("labeled", [])) if same_data else set()
    dev: set[str] = set(recorded.get("dev", [])) if same_data else set()
    if split == "dev":
        if not dev:
            raise ConfigError(
                f"{run_name}: has no development split on {folder.root} (fit with --set protocol.dev_fraction=0.3)"
            )
        keep = lambda name: name in dev  # noqa: E731
    else:
        left_out = excluded | dev
        keep = lambda name: name not in left_out  # noqa: E731
    samples = [s for s in folder.test if keep(relative_to(s.path, folder.root))]
    if not samples:
        raise DataError(f"{folder.root}: no {split} images left to evaluate")
    return samples, excluded, dev
