"""Where a backbone's ImageNet weights come from: one resolution order for every model.

A backbone's `weights` option is `imagenet` (the default), `random`, or a path. `imagenet` is
resolved, first match wins:

1. `$RLAD_BACKBONE_WEIGHTS`: a weight file, or a folder holding torchvision's file name for the
   architecture (e.g. `mobilenet_v2-b0353104.pth`);
2. the torch hub cache, `$TORCH_HOME/hub/checkpoints/<file name>` (where torchvision keeps its own
   downloads, so weights fetched by torchvision or timm once are reused);
3. a download from torchvision's official URL into that cache, its SHA-256 checked before the file
   is moved into place (`$RLAD_WEIGHTS_URL` replaces the base URL: a mirror, or a test server).

When all three fail (offline, nothing cached) the error says where to put the file; a run never
falls back to a random backbone on its own. `random` is what tests ask for.

torch.hub's downloader is not used because it has no timeout: a firewalled machine would hang on
it instead of printing the one-line error.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rlad.errors import ConfigError

IMAGENET = "imagenet"
RANDOM = "random"
WEIGHTS_ENV = "RLAD_BACKBONE_WEIGHTS"
URL_ENV = "RLAD_WEIGHTS_URL"
OFFICIAL_URL = "https://download.pytorch.org/models/"
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PretrainedFile:
    filename: str
    sha256: str
    """The file's SHA-256 in hex, or its leading digits (torchvision's file names carry the first 8,
    and torchvision checks only those)."""


# torchvision's IMAGENET1K_V1 weights of each architecture rlad builds.
PRETRAINED = {
    "mobilenet_v2": PretrainedFile(
        "mobilenet_v2-b0353104.pth", "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    ),
    "resnet18": PretrainedFile("resnet18-f37072fd.pth", "f37072fd"),
    "wide_resnet50_2": PretrainedFile("wide_resnet50_2-95faca4d.pth", "95faca4d"),
}


@dataclass(frozen=True)
class ResolvedWeights:
    """The outcome of resolving a `weights` option: a file, or None for a random backbone."""

    arch: str
    source: str
    """random | path (given in the option) | env ($RLAD_BACKBONE_WEIGHTS) | cache | download"""
    path: Path | None = None

    @property
    def pretrained(self) -> bool:
        return self.path is not None

    def describe(self) -> str:
        if self.path is None:
            return f"{self.arch}, RANDOM weights"
        return f"{self.arch}, weights {self.path} (from {self.source})"


def is_keyword(weights: str) -> bool:
    return weights in ("", IMAGENET, RANDOM)


def cache_dir() -> Path:
    """torch hub's checkpoint folder: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/...)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def download_url(arch: str) -> str:
    base = os.environ.get(URL_ENV) or OFFICIAL_URL
    return base.rstrip("/") + "/" + PRETRAINED[arch].filename


def resolve(arch: str, weights: str, option: str = "model.backbone.weights") -> ResolvedWeights:
    """The weight file a backbone of `arch` loads for the option value `weights` (see the module
    docstring); a ConfigError naming `option` and what to do when there is none."""
    if weights == RANDOM:
        return ResolvedWeights(arch, RANDOM)
    if not is_keyword(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"{option}={weights}: file not found")
        return ResolvedWeights(arch, "path", path)
    if arch not in PRETRAINED:
        raise ConfigError(f"{option}: no ImageNet weights known for {arch!r}; give a file path or 'random'")
    spec = PRETRAINED[arch]
    from_env = os.environ.get(WEIGHTS_ENV, "")
    if from_env:
        path = Path(from_env).expanduser()
        if path.is_file():
            return ResolvedWeights(arch, "env", path)
        if not path.is_dir():
            raise ConfigError(f"{WEIGHTS_ENV}={from_env}: no such file or folder")
        if (path / spec.filename).is_file():
            return ResolvedWeights(arch, "env", path / spec.filename)
    cached = cache_dir() / spec.filename
    if cached.is_file():
        return ResolvedWeights(arch, "cache", cached)
    url = download_url(arch)
    try:
        download(url, cached, spec.sha256)
    except OSError as exc:  # URLError, timeouts, refused connections, a read-only cache
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise ConfigError(
            f"{option}={IMAGENET}: {arch} ImageNet weights are not cached and the download from {url} failed "
            f"({reason}); put {spec.filename} into {cached.parent} (or point {WEIGHTS_ENV} or {option} at the "
            f"file), or use {option}={RANDOM} for an untrained backbone"
        ) from None
    return ResolvedWeights(arch, "download", cached)


def download(url: str, target: Path, sha256: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch `url` into `target` through a temporary file in the same folder; the file is moved into
    place only when its SHA-256 starts with `sha256`, so a broken download never reaches the cache."""
    from rlad.engine.progress import progress, status

    target.parent.mkdir(parents=True, exist_ok=True)
    status(f"downloading {url} -> {target}")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "rlad"})
        with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(request, timeout=timeout) as response:
            size = response.headers.get("Content-Length")
            bar = progress(total=int(size) if size else None, desc=target.name, unit="B", unit_scale=True)
            while chunk := response.read(1 << 20):
                handle.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
            bar.close()
        got = digest.hexdigest()
        if not got.startswith(sha256.lower()):
            raise ConfigError(
                f"download from {url}: SHA-256 {got[:16]}... does not match the expected {sha256[:16]}...; "
                "the file was discarded (a corrupted transfer or a wrong mirror)"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
