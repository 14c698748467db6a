"""Where datasets are kept: the cache directory on disk (``$LOP_BENCH_DATA``, default
``~/.cache/lop_bench``) and, in memory, what this process has already decoded
(:data:`MEMORY`), so that every env of a process shares one copy of a dataset."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from typing import Any

__all__ = ["ENV_VAR", "DEFAULT_ROOT", "data_root", "MemoryCache", "MEMORY"]

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


class MemoryCache:
    """What this process keeps in memory, by kind (``"MNIST"``, ``"CIFAR-100 on a device"``,
    ...): for each kind the last few values, least recently used first out. Loaders key a
    dataset by its files' paths, sizes and times, so a changed file is read again.
    :meth:`clear` forgets everything (or one kind)."""

    def __init__(self) -> None:
        self._kinds: dict[str, OrderedDict[Hashable, Any]] = {}

    def get(self, kind: str, key: Hashable) -> Any | None:
        """The value kept under ``key`` (now the most recently used), or None."""
        values = self._kinds.get(kind)
        if values is None or key not in values:
            return None
        values.move_to_end(key)
        return values[key]

    def put(self, kind: str, key: Hashable, value: Any, size: int) -> Any:
        """Keep ``value`` under ``key``, with at most ``size`` values of its kind; returns it."""
        values = self._kinds.setdefault(kind, OrderedDict())
        values[key] = value
        values.move_to_end(key)
        while len(values) > size:
            values.popitem(last=False)
        return value

    def clear(self, kind: str | None = None) -> None:
        """Forget every value (of ``kind`` only, when given)."""
        if kind is None:
            self._kinds.clear()
        else:
            self._kinds.pop(kind, None)

    def __len__(self) -> int:
        return sum(len(values) for values in self._kinds.values())


MEMORY = MemoryCache()
"""The process's memory cache: decoded datasets (two MNIST and CIFAR-100 loads, one
ImageNet 32x32), their tensors on a device, and small constant tensors of the image
operations. ``MEMORY.clear()`` frees them (envs that hold a dataset keep it)."""
