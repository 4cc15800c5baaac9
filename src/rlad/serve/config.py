"""The server's limits and binding, one typed config (`rlad serve --set key=value`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlad.config import raise_if_problems

# What the server accepts: the formats `rlad predict` reads, by their multipart content type.
IMAGE_TYPES = ["image/png", "image/jpeg", "image/bmp", "image/tiff"]


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    """Loopback by default: nothing outside this machine can reach the server unless asked for."""
    port: int = 8000
    max_upload_mb: float = 20.0
    """Largest request body; a larger one is refused (413) before it is read."""
    max_pixels: int = 50_000_000
    """Largest image (width x height) decoded; checked from the header, before decoding (413)."""
    allowed_types: list[str] = field(default_factory=lambda: list(IMAGE_TYPES))
    """Content types accepted for an uploaded image (415 otherwise)."""
    timeout_s: float = 60.0
    """Per-request limit, waiting for a worker included (504 when exceeded)."""
    workers: int = 1
    """Requests computed at once (each on its own thread)."""
    queue: int = 32
    """Requests that may wait for a worker; more are refused at once (429, Retry-After)."""
    threads: int = 0
    """Compute threads per worker (0: the machine's cores shared between the workers)."""

    def validate(self) -> "ServeConfig":
        raise_if_problems([
            None if 0 <= self.port <= 65535 else f"port must be in 0..65535, got {self.port}",
            None if self.max_upload_mb > 0 else f"max_upload_mb must be > 0, got {self.max_upload_mb}",
            None if self.max_pixels >= 32 * 32 else f"max_pixels must be at least 1024, got {self.max_pixels}",
            None if self.timeout_s > 0 else f"timeout_s must be > 0, got {self.timeout_s}",
            None if self.workers >= 1 else f"workers must be at least 1, got {self.workers}",
            None if self.queue >= 0 else f"queue must be >= 0, got {self.queue}",
            None if self.threads >= 0 else f"threads must be >= 0 (0: automatic), got {self.threads}",
            None if self.allowed_types and all(t.startswith("image/") for t in self.allowed_types)
            else f"allowed_types must be a non-empty list of image/* types, got {self.allowed_types}",
        ])
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def compute_threads(self) -> int:
        import os

        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)


def build_config(config_file: str | None = None, overrides: list[str] | None = None) -> ServeConfig:
    from rlad import config as cfgmod

    return cfgmod.build(ServeConfig, config_file, overrides).validate()
