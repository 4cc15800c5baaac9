"""Progress bars on stderr (stdout is reserved for `--json` output).

Set RLAD_PROGRESS=0 to silence them (tests do), RLAD_PROGRESS=1 to force them in non-terminals.
"""

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def _enabled() -> bool:
    flag = os.environ.get("RLAD_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return True


def progress(iterable: Iterable[T] | None = None, desc: str = "", total: int | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr; use `.set_postfix(...)` for live losses and rewards."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        file=sys.stderr,
        disable=not _enabled(),
        dynamic_ncols=True,
        leave=kwargs.pop("leave", False),
        **kwargs,
    )


def status(message: str) -> None:
    """A one-line status message on stderr (never on stdout)."""
    if _enabled() or os.environ.get("RLAD_QUIET") != "1":
        print(message, file=sys.stderr, flush=True)
