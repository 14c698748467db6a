"""What the dataset loaders (MNIST, CIFAR-100, ImageNet 32x32) share.

- :class:`Loader`, the one way a dataset is loaded (a source checked, its copy located or
  downloaded, md5s compared before anything is read, the arrays read and fingerprinted,
  a copy other than the official one warned of, the load kept in
  :data:`~lop_bench.data.cache.MEMORY`), each dataset a subclass with its hooks;
  :class:`LoadedData`, what every loader returns beside its arrays (the fingerprint,
  where the data came from, the md5s checked), and its ``lop-bench data verify`` report;
- :func:`fingerprint`, the one definition of a dataset's identity;
- optional imports, md5 checks against the published values (and the opt-out), the
  restricted unpickler every pickle-reading loader uses, ``datasets`` copies (parquet
  files, encoded image columns, the hub), and errors that name the file.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import io
import os
import pickle
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from lop_bench.data.cache import MEMORY, data_root
from lop_bench.errors import (
    ChecksumError,
    DatasetNotFoundError,
    DatasetReadError,
    DependencyNotInstalled,
    InvalidConfigError,
    LopBenchError,
    UnsafeDataError,
    did_you_mean,
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


def checksum_mismatch_allowed(value: bool | None = None) -> bool:
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
                f"allow_checksum_mismatch=True (lop_bench.make and the loaders), "
                f"`--allow-checksum-mismatch` (lop-bench data) or {ALLOW_MISMATCH_ENV_VAR}=1 "
                f"(everywhere, lop-bench run too); the files that differ are then recorded "
                f"with the data (md5_mismatches)."
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


def parquet_files(directory: Path, split: str) -> list[Path]:
    """Parquet files of ``split`` in ``directory`` or one level below (the hub's layout,
    ``data/train-00000-of-00001.parquet``): named after the split, or in a folder named so."""
    found = sorted(directory.glob("*.parquet")) + sorted(directory.glob("*/*.parquet"))
    return [p for p in found
            if p.name == f"{split}.parquet" or p.name.startswith((f"{split}-", f"{split}."))
            or (p.parent.name == split and p.parent != directory)]


def hub_dataset(datasets: Any, hf_id: str, split: str, root: Path, fix: str) -> Any:
    """``datasets.load_dataset(hf_id, split=split)`` (its cache under ``root/huggingface``),
    or :class:`~lop_bench.errors.DatasetNotFoundError` saying why and ``fix``."""
    try:
        return datasets.load_dataset(hf_id, split=split, cache_dir=str(root / "huggingface"))
    except Exception as exc:  # offline, unknown id, network: datasets raises many types
        raise DatasetNotFoundError(
            f"could not load {hf_id!r} (split {split!r}) with datasets: {type(exc).__name__}: "
            f"{exc}. {fix}"
        ) from exc


def decode_images(table: Any, column: str, where: str, *, dataset: str, size: tuple[int, int],
                  mode: str, convert: bool = False, first_row: int = 0, hf_id: str = "",
                  fix: str = "") -> np.ndarray:
    """The images of an arrow ``column`` holding a ``datasets`` Image feature (a struct of
    encoded ``bytes``, or a file ``path``), decoded with PIL: uint8 ``(N, height, width)``
    for ``mode="L"``, ``(N, height, width, 3)`` for ``"RGB"``. Every image must be ``size``
    (width, height) and in ``mode``, or (``convert``) is converted to it; else
    :class:`~lop_bench.errors.ChecksumError` names the row (``first_row`` + its index)."""
    col = table.column(column)
    if hasattr(col, "combine_chunks"):
        col = col.combine_chunks()
    try:
        blobs = col.field("bytes").to_pylist()
        paths = col.field("path").to_pylist()
    except (KeyError, AttributeError, TypeError):
        raise ChecksumError(
            f"{where}: column {column!r} is {col.type}, expected struct<bytes, path> (a "
            f"datasets Image feature, as in {hf_id})."
        ) from None
    Image = require("PIL.Image", dataset)
    channels = () if mode == "L" else (3,)
    images = np.empty((len(blobs), size[1], size[0], *channels), dtype=np.uint8)
    for i, (blob, path) in enumerate(zip(blobs, paths)):
        try:
            with Image.open(io.BytesIO(blob) if blob is not None else path) as im:
                if im.size != size or (im.mode != mode and not convert):
                    raise ChecksumError(
                        f"{where}: image {first_row + i} is {im.mode} {im.size[0]}x{im.size[1]}, "
                        f"expected {mode} {size[0]}x{size[1]}."
                    )
                images[i] = np.asarray(im if im.mode == mode else im.convert(mode))
        except ChecksumError:
            raise
        except Exception as exc:  # PIL raises many types for a broken image
            raise ChecksumError(
                f"{where}: image {first_row + i} cannot be decoded ({exc}). {fix}".rstrip()
            ) from None
    return images


# ---------------------------------------------------------------------------------------
# what a loader returns, and how it loads


def fingerprint(arrays: Iterable[Any]) -> str:
    """``"sha256:<hex>"`` of the arrays' bytes, one after the other, each as uint8 in C
    order: a dataset's identity, recorded in every result and part of its stream's protocol
    hash. The same whatever the format the arrays were read from: for arrays ``x, y``,
    ``"sha256:" + hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()``."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(memoryview(np.ascontiguousarray(a, dtype=np.uint8)).cast("B"))
    return "sha256:" + h.hexdigest()


class DatasetMismatchWarning(UserWarning):
    """The loaded dataset is not the official one (its fingerprint differs): runs go on, but
    their results record its fingerprint and are not ranked."""


@dataclass(frozen=True, eq=False, kw_only=True)
class LoadedData:
    """What every loader returns beside the dataset's arrays.

    A subclass names the dataset (:attr:`NAME`), what its official copy is
    (:attr:`OFFICIAL`, :attr:`OFFICIAL_CONSTANT`: where its fingerprint is recorded) and
    what the published md5s are of (:attr:`PUBLISHED`, None when there are none), and
    says what it holds (:meth:`summary`).
    """

    NAME: ClassVar[str]
    OFFICIAL: ClassVar[str]
    OFFICIAL_CONSTANT: ClassVar[str]
    PUBLISHED: ClassVar[str | None] = None

    fingerprint: str
    """``"sha256:..."`` of the decoded arrays (:func:`fingerprint`)."""
    source: str
    """The format actually read (``"torchvision"``, ``"hf"``, ``"dir"``, ``"npy"``, ...)."""
    location: str
    """The directory, file or hub id read."""
    checked_files: tuple[str, ...] = ()
    """The files whose md5 was checked and matched the published one."""
    md5_mismatches: tuple[str, ...] = ()
    """The files whose md5 differs from the published one, read because the caller allowed
    it (``allow_checksum_mismatch``); empty otherwise (a difference is an error)."""

    @property
    def official_fingerprint(self) -> str | None:
        """The official copy's fingerprint, when known (None: not recorded yet)."""
        return None

    @property
    def official(self) -> bool | None:
        """True/False when the official fingerprint is known, else None."""
        official = self.official_fingerprint
        return None if official is None else self.fingerprint == official

    def summary(self) -> list[str]:
        """What the data holds and where it was read from (the report's first lines)."""
        raise NotImplementedError

    def verify(self) -> tuple[int, list[str]]:
        """What ``lop-bench data verify`` prints, and its exit status (1 when the data is
        known not to be the official copy)."""
        lines = self.summary()
        if self.PUBLISHED is not None:
            if self.checked_files:
                lines.append(f"  md5 ok: {', '.join(self.checked_files)}")
            if self.md5_mismatches:
                lines.append(f"  md5 differs from the published {self.PUBLISHED} (allowed): "
                             f"{', '.join(self.md5_mismatches)} (the fingerprint below says "
                             "whether the arrays are the official ones)")
            if not self.checked_files and not self.md5_mismatches:
                lines.append(f"  md5: no published {self.PUBLISHED} here to check (the "
                             "fingerprint identifies the data)")
        lines.append(f"  fingerprint: {self.fingerprint}")
        official = self.official_fingerprint
        if official is None:
            lines.append(f"  official fingerprint: not recorded in this lop-bench version "
                         f"({self.OFFICIAL_CONSTANT}); results on this data record the "
                         "fingerprint above and are not ranked yet.")
            return 0, lines
        if self.fingerprint == official:
            lines.append(f"  the official {self.OFFICIAL}: results on this data can be ranked.")
            return 0, lines
        lines.append(f"  NOT the official {self.OFFICIAL} (official: {official}): runs work, "
                     "but their results record this fingerprint and the leaderboard does not "
                     "rank them.")
        return 1, lines


@dataclass(frozen=True)
class Found:
    """A copy of a dataset that a loader located: its ``kind`` (the format: ``"idx"``,
    ``"pickle"``, ``"saved"``, ``"parquet"``, ``"hub"``, ...), where it is (a directory, or
    a hub id), the files read (their sizes and times key the memory cache), and what the
    loader learned while locating it, for :meth:`Loader.read` (``detail``)."""

    kind: str
    location: Path | str
    files: tuple[Path, ...] = ()
    detail: Any = None


DataT = TypeVar("DataT", bound=LoadedData)


class Loader(ABC, Generic[DataT]):
    """The one way a dataset is loaded (:meth:`load`); a subclass is one dataset, with the
    hooks :meth:`locate`, :meth:`read` and :meth:`not_found` (and, where the dataset has
    them, :meth:`check_md5s` and :meth:`download`)."""

    NAME: ClassVar[str]
    """The dataset, in messages and as its kind in the memory cache."""
    SOURCES: ClassVar[tuple[str, ...]]
    """The ``source`` values :meth:`load` takes (``"auto"`` first)."""
    CACHE_SIZE: ClassVar[int] = 2
    """Loads of this dataset kept in memory."""

    def load(self, root: str | os.PathLike[str] | None, source: str, *, use_cache: bool = True,
             download: bool = False, allow_checksum_mismatch: bool | None = None,
             **options: Any) -> DataT:
        """Locate the copy ``source`` names under ``root`` (the cache directory when None),
        downloading it first when asked and missing, and read it: its published md5s
        compared before it is read (a difference is an error unless allowed), its arrays
        checked and fingerprinted, a copy other than the official one warned of
        (:class:`DatasetMismatchWarning`). A load of the same, unchanged files is reused
        (``use_cache``), unless it read files whose md5 differed and this one does not
        allow it."""
        if source not in self.SOURCES:
            raise InvalidConfigError(
                f"source must be one of {', '.join(map(repr, self.SOURCES))}, got {source!r}."
                + did_you_mean(str(source), self.SOURCES)
            )
        if not isinstance(download, bool):
            raise InvalidConfigError(f"download must be true or false, got {download!r}.")
        if download and source == "dir":
            raise InvalidConfigError(
                "download=True applies to source 'torchvision', 'hf' or 'auto'; a 'dir' is "
                "read as is."
            )
        allow = checksum_mismatch_allowed(allow_checksum_mismatch)
        base = data_root(root)
        found = self.locate(base, source, allow, **options)
        if found is None and download:
            self.download(base, allow)
            found = self.locate(base, "torchvision", allow, **options)
        if found is None:
            raise self.not_found(base, source, **options)
        key = self.cache_key(base, found, **options)
        cached = MEMORY.get(self.NAME, key) if use_cache else None
        if cached is not None:
            if cached.md5_mismatches and not allow:
                self.check_md5s(found, False)  # read before with the opt-out: this raises
            return cached
        checked, mismatched = self.check_md5s(found, allow)  # before anything is read
        data = self.read(base, found, checked=checked, mismatched=mismatched,
                         use_cache=use_cache, **options)
        if data.official is False:
            warnings.warn(DatasetMismatchWarning(
                f"{data.NAME} at {data.location} is not the official {data.OFFICIAL}: "
                f"fingerprint {data.fingerprint}, official {data.official_fingerprint}. Runs "
                "on it go on, but their results record its fingerprint and the leaderboard "
                "does not rank them."
            ), stacklevel=3)
        return MEMORY.put(self.NAME, key, data, self.CACHE_SIZE)

    def cache_key(self, base: Path, found: Found, **options: Any) -> Hashable:
        """What a load is kept under: the copy and its files' paths, sizes and times."""
        return found.kind, str(found.location), str(base), stat_key(list(found.files))

    @abstractmethod
    def locate(self, base: Path, source: str, allow: bool, **options: Any) -> Found | None:
        """The first copy of ``source`` under ``base``, or None."""

    @abstractmethod
    def read(self, base: Path, found: Found, *, checked: tuple[str, ...],
             mismatched: tuple[str, ...], use_cache: bool, **options: Any) -> DataT:
        """Read and check the copy ``found`` (its md5s already compared)."""

    @abstractmethod
    def not_found(self, base: Path, source: str, **options: Any) -> DatasetNotFoundError:
        """The error for no copy of ``source`` under ``base``: where it looked, and the
        command that fetches the data."""

    def check_md5s(self, found: Found, allow: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(matched, mismatched)``: the files of ``found`` that have a published md5,
        compared with it (:func:`check_md5s`). None by default."""
        return (), ()

    def download(self, base: Path, allow: bool) -> Path:
        """Fetch the dataset into ``base`` (torchvision's files)."""
        raise InvalidConfigError(f"{self.NAME} cannot be downloaded by lop-bench.")


def not_found_error(what: str, looked: Iterable[str], fix: str) -> DatasetNotFoundError:
    """The error for a dataset found nowhere: where it was looked for, how to get it."""
    return DatasetNotFoundError(
        f"{what} not found. Looked for: {'; '.join(looked)}. {fix} The cache directory is "
        f"$LOP_BENCH_DATA, default ~/.cache/lop_bench (`lop-bench data path`)."
    )
