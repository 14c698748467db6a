"""Helpers shared by the dataset loaders (MNIST, CIFAR-100, ImageNet 32x32): optional
imports, md5 checks against the published values (and the opt-out), the restricted
unpickler every pickle-reading loader uses, and errors that name the file."""

from __future__ import annotations

import builtins
import hashlib
import importlib
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lop_bench.data.cache import data_root
from lop_bench.errors import (
    ChecksumError,
    DatasetNotFoundError,
    DatasetReadError,
    DependencyNotInstalled,
    InvalidConfigError,
    LopBenchError,
    UnsafeDataError,
)

ALLOW_MISMATCH_ENV_VAR = "LOP_BENCH_ALLOW_CHECKSUM_MISMATCH"
"""Set to 1 to read dataset files whose md5 differs from the published one (the default of
``allow_checksum_mismatch`` in the loaders, hence of ``make`` and ``lop-bench run``)."""

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


def read_error(path: Path, exc: OSError, fix: str) -> LopBenchError:
    """The error for an ``OSError`` raised while reading the dataset file ``path``:
    :class:`DatasetNotFoundError` when it vanished, else :class:`DatasetReadError`; both
    name the file, the cause and ``fix``."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return DatasetNotFoundError(f"{path}: no such file ({cause}). {fix}")
    return DatasetReadError(
        f"{path}: cannot be read ({type(exc).__name__}: {cause}). Check that it is a readable "
        f"file (its permissions, the disk). {fix}"
    )


def md5_file(path: Path, fix: str = "") -> str:
    """The md5 hex digest of a file, read in 1 MiB blocks (an ``OSError`` becomes
    :func:`read_error`'s error, naming the file and ``fix``)."""
    h = hashlib.md5()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise read_error(path, exc, fix) from exc
    return h.hexdigest()


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def allow_checksum_mismatch(value: bool | None = None) -> bool:
    """Whether files whose md5 differs from the published one may be read: ``value`` when
    given, else ``$LOP_BENCH_ALLOW_CHECKSUM_MISMATCH`` (``1``/``true``/``yes`` or
    ``0``/``false``/``no``/unset: no)."""
    if value is not None:
        if not isinstance(value, bool):
            raise InvalidConfigError(
                f"allow_checksum_mismatch must be true, false or None (then "
                f"${ALLOW_MISMATCH_ENV_VAR} decides), got {value!r}."
            )
        return value
    raw = os.environ.get(ALLOW_MISMATCH_ENV_VAR, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InvalidConfigError(
        f"${ALLOW_MISMATCH_ENV_VAR} must be 1 or 0 (true/false, yes/no), got "
        f"{os.environ[ALLOW_MISMATCH_ENV_VAR]!r}."
    )


def check_md5s(expected: Iterable[tuple[Path, str]], what: str, fix: str,
               allow_mismatch: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Compare each file's md5 with its published value, before anything reads the file.

    Returns the names of the files that match and of those that differ. A difference is a
    :class:`~lop_bench.errors.ChecksumError` naming the file, both md5s, ``fix`` and the
    opt-out, unless ``allow_mismatch`` (then the file is only listed: the caller records it).
    """
    matched: list[str] = []
    mismatched: list[str] = []
    for path, md5 in expected:
        got = md5_file(path, fix)
        if got == md5:
            matched.append(path.name)
            continue
        if not allow_mismatch:
            raise ChecksumError(
                f"{path}: md5 {got}, expected {md5} (the published {what} file {path.name!r}). "
                f"The file is corrupt, truncated or not the official one. {fix} If your copy "
                f"differs on purpose (re-saved, a subset, your own data), allow it with "
                f"allow_checksum_mismatch=True, `--allow-checksum-mismatch` or "
                f"{ALLOW_MISMATCH_ENV_VAR}=1; the files that differ are then recorded with "
                f"the data (md5_mismatches)."
            )
        mismatched.append(path.name)
    return tuple(matched), tuple(mismatched)


# ---------------------------------------------------------------------------------------
# the restricted unpickler


class _Refused(Exception):
    """Raised inside the unpickler for anything that is not plain data; :func:`load_pickle`
    turns it into UnsafeDataError (not into the error for a malformed file)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Sealed:
    """An allowed Python function as the unpickler hands it out: calling it calls ``func``;
    a state for it (the BUILD opcode) is refused, with which a file could otherwise set the
    function's own attributes (its defaults, its ``__dict__``) in this process."""

    __slots__ = ("_func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        self._func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._func(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"a state for {self._func.__module__}.{self._func.__qualname__}")


def _latin1_encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode`` as a pickle of ``bytes`` at protocol <= 2 calls it
    (``encode(str, "latin1")``), refusing every other codec (no codec is looked up)."""
    name = encoding.replace("-", "").replace("_", "").lower() if isinstance(encoding, str) else ""
    if not isinstance(obj, str) or name not in ("latin1", "iso88591") or errors != "strict":
        raise _Refused(f"_codecs.encode({type(obj).__name__}, {encoding!r}, {errors!r})")
    return obj.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """What numpy arrays, dtypes and scalars need, under the module names of numpy 1
    (``numpy.core``) and numpy 2 (``numpy._core``), resolved here once: the unpickler never
    imports a module by the name a file gives. (The types and C functions here cannot be
    changed by a file; the one Python function is :class:`_Sealed`.)"""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    out: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{core}.numeric", "_frombuffer")] = _Sealed(numeric._frombuffer)  # protocol 5
    return out


_PLAIN = ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "complex")
_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    **{(mod, name): getattr(builtins, name) for mod in ("builtins", "__builtin__")
       for name in _PLAIN},  # "__builtin__": Python 2 pickles, like CIFAR-100's
    ("_codecs", "encode"): _Sealed(_latin1_encode),
    **_numpy_globals(),
}


class DataUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data only: dicts, lists, tuples, sets, numbers,
    strings, bytes, numpy arrays, dtypes and scalars.

    Every other global a pickle names (a function, a class, a module: what a payload needs
    to run code) is refused before anything is called or imported; so are persistent ids
    and codecs other than latin-1. Use :func:`load_pickle`, which turns that into
    :class:`~lop_bench.errors.UnsafeDataError` naming the file.
    """

    def find_class(self, module: str, name: str) -> Any:
        """The allowed object named ``module.name``, never an import."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids refer to objects outside the file: never plain data."""
        raise _Refused(f"the persistent id {pid!r}")


def load_pickle(path: Path, what: str, fix: str) -> Any:
    """Unpickle the data file ``path`` with :class:`DataUnpickler` (``encoding="latin1"``,
    which reads Python 2 pickles such as CIFAR-100's and Imagenet32's).

    Raises:
        UnsafeDataError: the pickle asks for anything but plain data (nothing of it ran).
        ChecksumError: not a pickle, or a truncated one.
        DatasetReadError: the file cannot be read (DatasetNotFoundError: it vanished).
    The messages name the file, ``what`` it should be and ``fix``.
    """
    try:
        with open(path, "rb") as f:
            return DataUnpickler(f, encoding="latin1").load()
    except _Refused as exc:
        raise UnsafeDataError(
            f"{path}: the pickle asks for {exc.what}, which is not plain data: a data file "
            f"({what}) holds only containers, numbers, strings and numpy arrays. lop-bench "
            f"refused it and ran none of it: the file was altered or does not come from the "
            f"official source. {fix}"
        ) from None
    except OSError as exc:
        raise read_error(path, exc, fix) from exc
    except Exception as exc:  # UnpicklingError, EOFError, ValueError...: a broken file
        raise ChecksumError(
            f"{path}: not a readable {what} ({type(exc).__name__}: {exc}). {fix}"
        ) from None


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
