"""Progress bars that stay quiet when output is not a terminal unless asked for."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", **kw):
    """A tqdm bar on stderr; ``BADBLOCK_PROGRESS=0`` turns bars off, ``=1`` forces them on."""
    flag = os.environ.get("BADBLOCK_PROGRESS")
    disable = (not sys.stderr.isatty()) if flag is None else flag == "0"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable,
                dynamic_ncols=True, leave=False, **kw)
