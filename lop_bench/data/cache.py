"""The data cache directory: ``$LOP_BENCH_DATA``, default ``~/.cache/lop_bench``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "DEFAULT_ROOT", "data_root"]

ENV_VAR = "LOP_BENCH_DATA"
"""The environment variable that moves the cache (``export LOP_BENCH_DATA=/data/lop``)."""

DEFAULT_ROOT = Path("~/.cache/lop_bench")
"""The cache directory when ``$LOP_BENCH_DATA`` is unset (``~`` is expanded at use)."""


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The directory datasets are read from and downloaded to.

    ``root`` when given, else ``$LOP_BENCH_DATA`` when set and not empty, else
    ``~/.cache/lop_bench``; ``~`` and environment variables in it are expanded. The
    directory need not exist (downloads create it).
    """
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(os.path.expandvars(os.path.expanduser(os.fspath(root))))
