"""The evaluation protocol: which images a run trains on, fits thresholds on, chooses settings on,
and is scored on. The same for every pixel model, so comparisons are side by side:

- an optional development split: `dev_fraction` of each group of `test/` (normal, each defect type),
  drawn ONCE per dataset with `protocol_seed`, which does not change with the run seed, so settings
  chosen on it never touch an image that any seed's test split scores; `rlad test` leaves it out,
  `rlad test --split dev` scores only it;
- `labeled_per_type` defective images per type drawn with the run seed from the rest of `test/`,
  given to the model as labelled training data and REMOVED from evaluation;
- the test split: everything else in `test/`;
- `train/good` minus a held-out validation share (run seed) -> unlabelled training images;
  thresholds are fitted on the validation split (held-out normal images, plus the labelled defects
  when there are any), never on the test split.

A run records its labelled and development images by relative path and by content hash
(`split_record`), so they are excluded from evaluation wherever the dataset is moved or copied
(`evaluation_samples`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlad.config import raise_if_problems
from rlad.data.paths import content_sha256, relative_to
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
    """Share of test/ (of test/good and of each defect type) held out as a development split for
    choosing settings: `rlad test` leaves it out, `rlad test --split dev` scores only it. 0 = none."""
    protocol_seed: int = 0
    """Seed of the development split. It does not follow the run seed: every seed of a comparison
    shares one development split, and no seed's test split contains any of its images."""

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
    dev = draw_dev(folder.test, protocol.dev_fraction, protocol.protocol_seed)
    dev_paths = {s.path for s in dev}
    remaining = [s for s in folder.test if s.path not in dev_paths]
    labeled: list = []
    if protocol.labeled_per_type > 0:
        for defect_type in folder.defect_types:
            candidates = [s for s in remaining if s.defect_type == defect_type]
            take = min(protocol.labeled_per_type, max(0, len(candidates) - 1))
            picks = rng.choice(len(candidates), size=take, replace=False) if take else []
            labeled += [candidates[i] for i in sorted(picks)]
    labeled_paths = {s.path for s in labeled}
    test = [s for s in remaining if s.path not in labeled_paths]
    if protocol.threshold_on_labeled:
        val = val + labeled
    return Split(train=train, val=val, labeled=labeled, test=test, dev=dev)


def draw_dev(samples: list, fraction: float, seed: int) -> list:
    """`fraction` of each group (normal, each defect type; at least one image of a group of two or
    more, never the whole group), drawn with its own generator from the protocol seed."""
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


def split_record(split: Split, folder, data_dir: Path | str, protocol: ProtocolConfig) -> dict:
    """What a run records about its split, for `evaluation_samples` later: relative file names, and the
    content hashes of the labelled and development images (which survive moving the data)."""
    return {
        "data": str(Path(data_dir).resolve()),
        "category": folder.category,
        "protocol_seed": protocol.protocol_seed,
        "labeled": [relative_to(s.path, folder.root) for s in split.labeled],
        "val": [relative_to(s.path, folder.root) for s in split.val],
        "dev": [relative_to(s.path, folder.root) for s in split.dev],
        "labeled_sha256": [content_sha256(s.path) for s in split.labeled],
        "dev_sha256": [content_sha256(s.path) for s in split.dev],
    }


@dataclass
class EvaluationSet:
    """The images a run is scored on, and which of the folder's images were left out and why."""

    samples: list
    excluded_labeled: list = field(default_factory=list)  # relative names of the run's labelled images found here
    excluded_dev: list = field(default_factory=list)  # relative names of development images left out (split "test")
    missing_labeled: int = 0  # recorded labelled images not found in this folder


def evaluation_samples(recorded: dict, folder, split: str = "test", run_name: str = "the run",
                       allow_missing_labelled: bool = False) -> EvaluationSet:
    """The samples of `folder` to score for `split` ("test": everything but the run's labelled and
    development images; "dev": the development images only).

    A run's labelled and development images are recognised by content hash, so a copied or moved
    dataset excludes them too; runs recorded before hashes existed fall back to relative paths on the
    very folder they were fitted on. A run trained with labels refuses a folder holding none of its
    labelled images (another dataset, or a copy without them) unless `allow_missing_labelled`."""
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: choose test or dev")
    names = {s.path: relative_to(s.path, folder.root) for s in folder.test}
    if "labeled_sha256" in recorded:
        labeled_keys, dev_keys = set(recorded["labeled_sha256"]), set(recorded["dev_sha256"])
        keys = {s.path: content_sha256(s.path) for s in folder.test}
        n_recorded = len(labeled_keys)
    else:
        same_data = bool(recorded) and Path(recorded.get("data", "")) == Path(folder.root).resolve()
        labeled_keys = set(recorded.get("labeled", [])) if same_data else set()
        dev_keys = set(recorded.get("dev", [])) if same_data else set()
        keys = names
        n_recorded = len(labeled_keys)
    labeled = [s for s in folder.test if keys[s.path] in labeled_keys]
    dev = [s for s in folder.test if keys[s.path] in dev_keys]
    missing = n_recorded - len({keys[s.path] for s in labeled})
    if n_recorded and not labeled and not allow_missing_labelled:
        raise DataError(
            f"{folder.root}: holds none of the {n_recorded} labelled images {run_name} was trained on "
            f"(matched by content), so it is another dataset or a copy without them; scoring it would not "
            f"be the run's protocol. Pass --allow-missing-labelled to score it anyway")
    if split == "dev":
        if not dev:
            raise ConfigError(
                f"{run_name}: has no development split on {folder.root} (fit with --set protocol.dev_fraction=0.3)"
            )
        samples, left_out_dev = dev, []
    else:
        left_out = {s.path for s in labeled} | {s.path for s in dev}
        samples, left_out_dev = [s for s in folder.test if s.path not in left_out], dev
    if not samples:
        raise DataError(f"{folder.root}: no {split} images left to evaluate")
    return EvaluationSet(samples, [names[s.path] for s in labeled], [names[s.path] for s in left_out_dev], missing)
