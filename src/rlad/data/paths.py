"""How rlad names a file: its path relative to a folder (in messages, split records and pair files),
and its content hash (labelled and development images are recognised by it wherever the data moves)."""

from __future__ import annotations

from pathlib import Path


def relative_to(path: Path | str, root: Path | str) -> str:
    """`path` relative to `root` as a POSIX string, or `path` as given when it lies outside `root`.

    Both are resolved first, so a root named through a symlink or with `..` still contains its files;
    a file that is itself a symlink to somewhere outside `root` counts as outside.
    """
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def content_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes: its identity wherever the dataset is moved or copied."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
