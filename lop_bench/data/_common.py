"""Helpers shared by the dataset loaders (MNIST, CIFAR-100, ImageNet 32x32)."""

from __future__ import annotations

import hashlib
import importlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

from lop_bench.data.cache import data_root
from lop_bench.errors import DependencyNotInstalled

# import name -> the pip distribution that provides it
_PIP_NAMES = {"PIL": "pillow", "pyarrow": "pyarrow", "torchvision": "torchvision",
              "datasets": "datasets"}


def require(module: str, dataset: str) -> Any:
    """Import ``module`` (torchvision, datasets, PIL, pyarrow...), or raise
    :class:`~lop_bench.errors.DependencyNotInstalled` naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        pip = _PIP_NAMES.get(top, top)
        raise DependencyNotInstalled(
            f"reading {dataset} from this source needs {pip!r}: pip install "
            f"\"lop-bench[data]\" (or pip install {pip})."
        ) from None


def md5_file(path: Path) -> str:
    """The md5 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_saved_dataset(directory: Path) -> bool:
    """Whether ``directory`` holds a ``datasets`` ``save_to_disk`` copy (dict or split)."""
    return (directory / "dataset_dict.json").is_file() or (directory / "state.json").is_file()


def stat_key(paths: list[Path]) -> tuple:
    """(resolved path, size, mtime) of each file: a cache key that changes with the files."""
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


def root_flag(root: Path) -> str:
    """``" --root DIR"`` for commands in messages, or "" when ``root`` is the default."""
    return "" if root == data_root() else f" --root {root}"


def save_hub_copy(datasets: Any, hf_id: str, base: Path, target: Path, command: str) -> Path:
    """Fetch ``hf_id`` with ``datasets`` (its cache under ``base/huggingface``) and save it to
    ``target`` with ``save_to_disk``, where the loaders read it without the network."""
    try:
        ds = datasets.load_dataset(hf_id, cache_dir=str(base / "huggingface"))
    except Exception as exc:
        from lop_bench.errors import DatasetNotFoundError

        raise DatasetNotFoundError(
            f"could not fetch {hf_id!r} with datasets: {type(exc).__name__}: {exc}. Without "
            f"network access, use `{command}` elsewhere and copy {base} here."
        ) from exc
    ds.save_to_disk(str(target))
    return target


def lru_put(cache: OrderedDict, key: Any, value: Any, size: int) -> Any:
    """Put ``value`` in the in-process LRU ``cache`` (at most ``size`` entries); return it."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
    return value
