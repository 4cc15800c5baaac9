"""How rlad writes a file's path relative to a folder (in messages, split records and pair files)."""

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
