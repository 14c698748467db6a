"""CIFAR-100: where its files live, their checksums, and the fingerprint of the decoded arrays.

Three sources give the same arrays (PROTOCOLS.md, "Data formats"):

- ``"torchvision"``: torchvision's layout ``<root>/cifar-100-python/{train,test,meta}``, the
  pickles of the official tarball (``data`` is N x 3072 uint8 in R, G, B planes,
  ``fine_labels`` the 100-class labels), read with lop-bench's restricted unpickler
  (:func:`read_pickle`): plain data only, never code. When only the tarball
  ``<root>/cifar-100-python.tar.gz`` is there, it is checked and extracted.
  ``download=True`` fetches it with ``torchvision.datasets.CIFAR100``.
- ``"hf"``: a Hugging Face ``datasets`` id (default ``uoft-cs/cifar100``: columns ``img``, a
  PNG, ``fine_label`` and ``coarse_label``), loaded with ``datasets.load_dataset`` (its cache
  under ``<root>/huggingface``); or the copy that ``lop-bench data download cifar100 --source
  hf`` saves to ``<root>/CIFAR100/hf``.
- ``"dir"``: a directory the user names, holding either format: the pickles (directly or in
  ``cifar-100-python/``), a ``save_to_disk`` copy, or parquet files with the hub's schema
  (``train-*.parquet`` and ``test-*.parquet``, directly or one folder down, as on the hub).

``"auto"`` (the default) tries ``<root>/cifar-100-python``, then ``<root>/CIFAR100/hf``, then
``<root>`` itself as a ``"dir"``, and never touches the network. ``root`` defaults to the
cache directory (:func:`~lop_bench.data.cache.data_root`).

**Checksums.** The tarball and the pickles (``train``, ``test``, ``meta``) have published
md5s (:data:`CIFAR100_MD5`), checked **before** anything is unpickled or extracted: a file
that differs raises :class:`~lop_bench.errors.ChecksumError` naming it. A copy that differs
on purpose (re-pickled, a subset, your own data in this format) is read only when allowed:
``allow_checksum_mismatch=True``, ``--allow-checksum-mismatch`` on ``lop-bench data``, or
``LOP_BENCH_ALLOW_CHECKSUM_MISMATCH=1`` (for ``make`` and ``lop-bench run``); the files that
differ are then listed in :attr:`CIFAR100Data.md5_mismatches` (those that match in
:attr:`CIFAR100Data.checked_files`). Custom data that needs no opt-out: a ``save_to_disk``
or parquet copy. Whatever the md5s, a pickle that asks for anything but plain data raises
:class:`~lop_bench.errors.UnsafeDataError` and none of it runs. A file that is not a
CIFAR-100 pickle, or arrays of the wrong shape, dtype or label range, raise
:class:`~lop_bench.errors.ChecksumError`. What identifies the data is the sha256 of the
decoded arrays (:func:`cifar_fingerprint`, over both splits), which every result records
and which enters the stream's protocol hash; when the official value is known
(:data:`CIFAR100_FINGERPRINT`) a copy that differs gets a
:class:`~lop_bench.data.mnist.DatasetMismatchWarning`.

torchvision, ``datasets`` and PIL are imported only when a source needs them (the
``lop-bench[data]`` extra); ``import lop_bench`` never imports them.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lop_bench.data._common import allow_checksum_mismatch as _allow_mismatch
from lop_bench.data._common import check_md5s, load_pickle, lru_put, require, save_hub_copy
from lop_bench.data._common import is_saved_dataset as _is_saved_dataset
from lop_bench.data._common import root_flag as _root_flag
from lop_bench.data._common import stat_key as _stat_key
from lop_bench.data.cache import data_root
from lop_bench.data.mnist import DatasetMismatchWarning
from lop_bench.errors import (
    ChecksumError,
    DatasetNotFoundError,
    InvalidConfigError,
    did_you_mean,
)

__all__ = [
    "HF_ID",
    "SOURCES",
    "SPLITS",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "CIFAR100_MD5",
    "CIFAR100_FINGERPRINT",
    "CIFAR100_SIZES",
    "DOWNLOAD_COMMAND",
    "FOLDER",
    "TARBALL",
    "CIFAR100Split",
    "CIFAR100Data",
    "read_pickle",
    "cifar_fingerprint",
    "load_cifar100",
    "download_cifar100",
    "verify_cifar100",
    "clear_cache",
]

HF_ID = "uoft-cs/cifar100"
"""The Hugging Face hub id of CIFAR-100 (columns ``img``, ``fine_label``, ``coarse_label``)."""

SOURCES = ("auto", "torchvision", "hf", "dir")
"""Where :func:`load_cifar100` reads CIFAR-100 from (see the module docstring)."""

SPLITS = ("train", "test")
IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 100
CIFAR100_SIZES = {"train": 50_000, "test": 10_000}
"""Images per split in the official dataset (500 and 100 per class)."""

FOLDER = "cifar-100-python"
TARBALL = "cifar-100-python.tar.gz"
DOWNLOAD_COMMAND = "lop-bench data download cifar100"
"""The command that fetches CIFAR-100 into the cache (named by every "not found" error)."""

CIFAR100_MD5: dict[str, str] = {
    # PROTOCOLS.md, "Data formats" (torchvision.datasets.CIFAR100's tgz_md5, train_list,
    # test_list and meta).
    TARBALL: "eb9058c3a382ffc7106e4002c42a8d85",
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
"""md5 of the official tarball and of the pickles it holds."""

CIFAR100_FINGERPRINT: str | None = None
"""The fingerprint (:func:`cifar_fingerprint`) of the official training and test sets.

TODO: must be filled in once computed on real CIFAR-100 (``lop-bench data verify cifar100``
prints it): no machine that built lop-bench could download it. While it is ``None`` every
result of ``lop/IncrementalCIFAR100-v0`` records its own fingerprint and the leaderboard
refuses them. The torchvision pickles and the ``uoft-cs/cifar100`` parquet should give the
same value (PNG is lossless; the order should be the same): check both when filling it in.
"""

_HF_COPY = ("CIFAR100", "hf")  # where ``download --source hf`` saves its copy, under the root
_REFETCH = f"Delete it and fetch CIFAR-100 again: {DOWNLOAD_COMMAND}."


@dataclass(frozen=True, eq=False)
class CIFAR100Split:
    """One split, decoded: ``images`` ``(N, 3, 32, 32)`` uint8 (channels R, G, B),
    ``labels`` ``(N,)`` uint8 fine labels in 0..99, in the files' order; both read-only."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True, eq=False)
class CIFAR100Data:
    """CIFAR-100 decoded: both splits, their fingerprint and where they came from.

    The arrays are shared by every env that loads the same files in this process (a class
    subset is an index into them, never a copy).
    """

    train: CIFAR100Split
    test: CIFAR100Split
    fingerprint: str
    """``"sha256:..."`` of the decoded arrays of both splits (:func:`cifar_fingerprint`)."""
    source: str
    """``"torchvision"``, ``"hf"`` or ``"dir"``: the format actually read."""
    location: str
    """The directory or hub id read."""
    class_names: tuple[str, ...] | None = None
    """The 100 fine-label names (from ``meta`` or the hub's ClassLabel), when present."""
    checked_files: tuple[str, ...] = field(default=())
    """Files whose md5 was checked and matched the published one."""
    md5_mismatches: tuple[str, ...] = field(default=())
    """Files whose md5 differs from the published one, read because the caller allowed it
    (``allow_checksum_mismatch``); empty otherwise (a difference is an error)."""

    @property
    def official(self) -> bool | None:
        """True/False when the official fingerprint is known, else None."""
        if CIFAR100_FINGERPRINT is None:
            return None
        return self.fingerprint == CIFAR100_FINGERPRINT


def cifar_fingerprint(train_images: np.ndarray, train_labels: np.ndarray,
                      test_images: np.ndarray, test_labels: np.ndarray) -> str:
    """``"sha256:<hex>"`` over the decoded arrays, as uint8 in C order, in this order: train
    images ``(N, 3, 32, 32)`` (image by image, R, G, B planes, each row-major), train fine
    labels, test images, test fine labels. The same value whatever the files' format."""
    h = hashlib.sha256()
    for a in (train_images, train_labels, test_images, test_labels):
        h.update(memoryview(np.ascontiguousarray(a, dtype=np.uint8)).cast("B"))
    return "sha256:" + h.hexdigest()


def _require(module: str) -> Any:
    return require(module, "CIFAR-100")


# ---------------------------------------------------------------------------------------
# the pickles


def read_pickle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one CIFAR-100 pickle (``train``, ``test`` or ``meta``; ``encoding="latin1"``, as
    torchvision) with the restricted unpickler: plain data and numpy arrays only.

    Raises :class:`~lop_bench.errors.UnsafeDataError` when the file asks for anything else
    (nothing of it runs), :class:`~lop_bench.errors.ChecksumError` when it is not a pickled
    dict, :class:`~lop_bench.errors.DatasetReadError` when it cannot be read; each names
    the file. (This reads the file as it is: :func:`load_cifar100` checks its md5 first.)
    """
    path = Path(path)
    obj = load_pickle(path, "CIFAR-100 pickle", _REFETCH)
    if not isinstance(obj, dict):
        raise ChecksumError(f"{path}: holds a {type(obj).__name__}, expected the dict of a "
                            f"CIFAR-100 pickle. {_REFETCH}")
    return obj


def _split_from_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = read_pickle(path)
    if "data" not in obj or "fine_labels" not in obj:
        raise ChecksumError(
            f"{path}: keys {sorted(map(str, obj))}, expected 'data' and 'fine_labels' (a "
            f"CIFAR-100 pickle; CIFAR-10's have 'labels'). {_REFETCH}"
        )
    data = np.asarray(obj["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ChecksumError(
            f"{path}: 'data' is {data.dtype} of shape {data.shape}, expected uint8 (N, 3072): "
            f"32 x 32 images in R, G, B planes. {_REFETCH}"
        )
    try:
        labels = np.asarray(obj["fine_labels"], dtype=np.int64)
    except (TypeError, ValueError):
        raise ChecksumError(f"{path}: 'fine_labels' is not a list of integers. {_REFETCH}") from None
    return data.reshape(-1, *IMAGE_SHAPE), labels


def _names_from_meta(path: Path) -> tuple[str, ...] | None:
    if not path.is_file():
        return None
    obj = read_pickle(path)
    names = obj.get("fine_label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise ChecksumError(f"{path}: no list of {NUM_CLASSES} 'fine_label_names': not the "
                            f"CIFAR-100 meta file. {_REFETCH}")
    return tuple(str(n) for n in names)


def _check_split(images: np.ndarray, labels: np.ndarray, where: str) -> CIFAR100Split:
    """Validate decoded arrays; return them as uint8, read-only."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ChecksumError(f"{where}: the images are {images.dtype} of shape {images.shape}, "
                            f"expected uint8 (N, 3, 32, 32). {_REFETCH}")
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise ChecksumError(f"{where}: the labels are {labels.dtype} of shape {labels.shape}, "
                            f"expected integers of shape (N,). {_REFETCH}")
    if len(labels) != len(images):
        raise ChecksumError(f"{where}: {len(images):,} images but {len(labels):,} labels. {_REFETCH}")
    if len(labels) == 0:
        raise ChecksumError(f"{where}: the split is empty. {_REFETCH}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= NUM_CLASSES:
        raise ChecksumError(f"{where}: fine labels range over {lo}..{hi}, expected 0..99. {_REFETCH}")
    x = np.ascontiguousarray(images)
    y = labels.astype(np.uint8)
    for a in (x, y):
        a.flags.writeable = False
    return CIFAR100Split(x, y)


# ---------------------------------------------------------------------------------------
# Hugging Face ``datasets`` copies (save_to_disk, parquet, hub)


def _parquet_files(directory: Path, split: str) -> list[Path]:
    """Parquet files of ``split`` in ``directory`` or one level below (the hub's layout
    ``cifar100/train-00000-of-00001.parquet``)."""
    found = sorted(directory.glob("*.parquet")) + sorted(directory.glob("*/*.parquet"))
    return [p for p in found
            if p.name == f"{split}.parquet" or p.name.startswith(f"{split}-")
            or p.name.startswith(f"{split}.") or (p.parent.name == split and p.parent != directory)]


def _decode_table(table: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and fine labels from an arrow table with the hub's schema:
    ``img`` a struct of PNG ``bytes`` (or a file ``path``), ``fine_label`` an integer."""
    names = list(table.column_names)
    if "img" not in names or "fine_label" not in names:
        raise ChecksumError(
            f"{where}: columns {names}, expected 'img' and 'fine_label' (the schema of {HF_ID})."
        )
    col = table.column("img").combine_chunks()
    try:
        blobs = col.field("bytes").to_pylist()
        paths = col.field("path").to_pylist()
    except (KeyError, AttributeError, TypeError):
        raise ChecksumError(
            f"{where}: column 'img' is {col.type}, expected struct<bytes, path> (a datasets "
            f"Image feature, as in {HF_ID})."
        ) from None
    Image = _require("PIL.Image")
    images = np.empty((len(blobs), 32, 32, 3), dtype=np.uint8)
    for i, (blob, path) in enumerate(zip(blobs, paths)):
        try:
            with Image.open(io.BytesIO(blob) if blob is not None else path) as im:
                if im.mode != "RGB" or im.size != (32, 32):
                    raise ChecksumError(f"{where}: image {i} is {im.mode} {im.size[0]}x{im.size[1]}, "
                                        "expected RGB 32x32.")
                images[i] = np.asarray(im)
        except ChecksumError:
            raise
        except Exception as exc:  # PIL raises many types for a broken image
            raise ChecksumError(f"{where}: image {i} cannot be decoded ({exc}). {_REFETCH}") from None
    labels = np.asarray(table.column("fine_label").to_numpy(zero_copy_only=False))
    return images.transpose(0, 3, 1, 2), labels


def _class_names(features: Any) -> tuple[str, ...] | None:
    feat = getattr(features, "get", lambda k: None)("fine_label")
    names = getattr(feat, "names", None)
    return tuple(names) if names and len(names) == NUM_CLASSES else None


def _dataset_split(ds: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    return _decode_table(ds.with_format("arrow")[:], where)


def _read_saved(directory: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Any]:
    datasets = _require("datasets")
    dd = datasets.load_from_disk(str(directory))
    if not isinstance(dd, datasets.DatasetDict) or not set(SPLITS) <= set(dd):
        have = sorted(dd) if isinstance(dd, datasets.DatasetDict) else "a single split"
        raise DatasetNotFoundError(
            f"{directory}: the saved dataset has {have}; CIFAR-100 needs 'train' and 'test' "
            f"(save the DatasetDict of {HF_ID})."
        )
    return {s: _dataset_split(dd[s], f"{directory} [{s}]") for s in SPLITS}, _class_names(dd["train"].features)


def _parquet_names(schema: Any) -> tuple[str, ...] | None:
    """The fine-label names from the ``datasets`` features stored in a parquet schema."""
    import json

    try:
        meta = json.loads((schema.metadata or {})[b"huggingface"])
        names = meta["info"]["features"]["fine_label"]["names"]
    except (KeyError, TypeError, ValueError):
        return None
    return tuple(map(str, names)) if isinstance(names, list) and len(names) == NUM_CLASSES else None


def _read_parquet(directory: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Any]:
    pq = _require("pyarrow.parquet")
    pa = _require("pyarrow")
    out, names = {}, None
    for split in SPLITS:
        files = _parquet_files(directory, split)
        if not files:
            raise DatasetNotFoundError(f"{directory}: no {split}-*.parquet file; CIFAR-100 needs "
                                       f"both splits. ({DOWNLOAD_COMMAND})")
        tables = [pq.read_table(f) for f in files]
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        out[split] = _decode_table(table, f"{directory} [{split}]")
        names = names or _parquet_names(tables[0].schema)
    return out, names


def _read_hub(hf_id: str, root: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Any]:
    datasets = _require("datasets")
    out, names = {}, None
    for split in SPLITS:
        try:
            ds = datasets.load_dataset(hf_id, split=split, cache_dir=str(root / "huggingface"))
        except Exception as exc:  # offline, unknown id, network: datasets raises many types
            raise DatasetNotFoundError(
                f"could not load {hf_id!r} (split {split!r}) with datasets: {type(exc).__name__}: "
                f"{exc}. Fetch it with `{DOWNLOAD_COMMAND} --source hf{_root_flag(root)}` (saves "
                f"a copy under {root / Path(*_HF_COPY)}), or use torchvision's files: "
                f"`{DOWNLOAD_COMMAND}{_root_flag(root)}`."
            ) from exc
        out[split] = _dataset_split(ds, f"{hf_id} [{split}]")
        names = names or _class_names(ds.features)
    return out, names


# ---------------------------------------------------------------------------------------
# finding and loading

_CACHE: OrderedDict[tuple, CIFAR100Data] = OrderedDict()
_CACHE_SIZE = 2


def clear_cache() -> None:
    """Forget the decoded arrays kept in memory (each process keeps the last two loads)."""
    _CACHE.clear()


def _has_pickles(d: Path) -> bool:
    return all((d / s).is_file() for s in SPLITS)


def _check_md5s(paths: list[Path], allow_mismatch: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(matched, mismatched)`` names of the published files among ``paths``, each md5
    compared before it is read; a difference raises ChecksumError unless allowed."""
    return check_md5s(((p, CIFAR100_MD5[p.name]) for p in paths), "CIFAR-100", _REFETCH,
                      allow_mismatch)


def _extract(tarball: Path, into: Path, allow_mismatch: bool) -> None:
    """Extract the tarball (md5-checked first) into ``into`` (creates cifar-100-python/)."""
    _check_md5s([tarball], allow_mismatch)
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse unsafe members
                tf.extractall(into, filter="data")
            else:  # pragma: no cover - older Pythons
                tf.extractall(into)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ChecksumError(f"{tarball}: cannot be extracted ({exc}). {_REFETCH}") from None


def _not_found(root: Path, source: str) -> DatasetNotFoundError:
    looked = {
        "torchvision": f"{root / FOLDER}/{{train,test,meta}} or {root / TARBALL} (torchvision's layout)",
        "hf": f"{root / Path(*_HF_COPY)} (a saved `datasets` copy)",
        "dir": f"CIFAR-100 files in {root} (the train/test pickles, a save_to_disk copy, or "
               "train-*.parquet and test-*.parquet)",
    }
    where = [looked[s] for s in (("torchvision", "hf", "dir") if source == "auto" else (source,))]
    flag = _root_flag(root)
    return DatasetNotFoundError(
        f"CIFAR-100 not found. Looked for: {'; '.join(where)}. Fetch it with "
        f"`{DOWNLOAD_COMMAND}{flag}` (torchvision's files; or `{DOWNLOAD_COMMAND} --source hf"
        f"{flag}`), or pass root= a directory holding the pickles or a `datasets` copy "
        f"(columns img, fine_label). The cache directory is $LOP_BENCH_DATA, default "
        f"~/.cache/lop_bench (`lop-bench data path`)."
    )


def _locate(root: Path, source: str, allow_mismatch: bool = False) -> tuple[str, Path, list[Path]] | None:
    """``(kind, location, files)`` of the first CIFAR-100 copy found, or None. ``kind`` is
    ``"pickle"``, ``"saved"`` or ``"parquet"``. Extracts a lone tarball (md5-checked)."""
    candidates: list[tuple[str, Path]] = []
    if source in ("auto", "torchvision"):
        candidates.append(("pickle", root / FOLDER))
    if source in ("auto", "hf"):
        candidates.append(("saved", root / Path(*_HF_COPY)))
    if source in ("auto", "dir"):
        candidates += [("pickle", root), ("saved", root), ("parquet", root)]
        if source == "dir":
            candidates += [("pickle", root / FOLDER), ("saved", root / Path(*_HF_COPY))]
    if source in ("auto", "torchvision", "dir") and not _has_pickles(root / FOLDER):
        if (root / TARBALL).is_file():
            _extract(root / TARBALL, root, allow_mismatch)
    for kind, d in candidates:
        if not d.is_dir():
            continue
        if kind == "pickle":
            if _has_pickles(d):
                files = [d / s for s in (*SPLITS, "meta") if (d / s).is_file()]
                return kind, d, files
        elif kind == "saved":
            if _is_saved_dataset(d):
                return kind, d, sorted(p for p in d.rglob("*") if p.is_file())
        else:
            files = _parquet_files(d, "train") + _parquet_files(d, "test")
            if _parquet_files(d, "train") and _parquet_files(d, "test"):
                return kind, d, files
    return None


def load_cifar100(
    root: str | os.PathLike[str] | None = None,
    source: str = "auto",
    *,
    download: bool = False,
    hf_id: str = HF_ID,
    use_cache: bool = True,
    allow_checksum_mismatch: bool | None = None,
) -> CIFAR100Data:
    """Load CIFAR-100 (both splits) as uint8 arrays, with its fingerprint.

    Args:
        root: the directory to read (default: the cache, ``$LOP_BENCH_DATA`` or
            ``~/.cache/lop_bench``). For ``source="dir"``, the directory holding the files.
        source: ``"auto"``, ``"torchvision"``, ``"hf"`` or ``"dir"`` (module docstring).
        download: fetch the files when they are missing (``"torchvision"`` or ``"auto"``:
            torchvision's download into ``root``). The ``"hf"`` source always goes through
            ``datasets.load_dataset``, which uses its cache and the network as Hugging
            Face's settings allow (``HF_HUB_OFFLINE=1``: cache only).
        hf_id: the hub id, or a local directory of parquet files, for ``source="hf"``.
        use_cache: reuse arrays already decoded in this process from the same, unchanged
            files.
        allow_checksum_mismatch: read the tarball and pickles even when their md5 differs
            from the published one, listing them in ``md5_mismatches`` (for a copy that
            differs on purpose). None (default): ``$LOP_BENCH_ALLOW_CHECKSUM_MISMATCH``
            decides (unset: no).

    Raises:
        DatasetNotFoundError: the files are missing (the message names the command that
            fetches them).
        ChecksumError: the md5 of the tarball or of a pickle differs from the published one
            (checked before reading it), or a file is truncated or malformed (not a pickle,
            wrong shapes, labels outside 0..99).
        UnsafeDataError: a pickle asks for anything but plain data (none of it runs).
        DatasetReadError: a file exists but cannot be read.
        DependencyNotInstalled: the source needs torchvision, datasets or PIL.
    """
    if source not in SOURCES:
        raise InvalidConfigError(
            f"source must be one of {', '.join(map(repr, SOURCES))}, got {source!r}."
            + did_you_mean(str(source), SOURCES)
        )
    if not isinstance(download, bool):
        raise InvalidConfigError(f"download must be true or false, got {download!r}.")
    if download and source == "dir":
        raise InvalidConfigError(
            "download=True applies to source 'torchvision', 'hf' or 'auto'; a 'dir' is read as is."
        )
    allow = _allow_mismatch(allow_checksum_mismatch)
    base = data_root(root)
    if source == "hf" and (hf_id != HF_ID or not _is_saved_dataset(base / Path(*_HF_COPY))):
        key = ("hub", hf_id, str(base))
        if use_cache and key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        arrays, names = _read_hub(hf_id, base)
        return _finish(key, _build(arrays, "hf", hf_id, names))

    found = _locate(base, source, allow)
    if found is None and download:
        download_cifar100(base, source="torchvision", allow_checksum_mismatch=allow)
        found = _locate(base, "torchvision", allow)
    if found is None:
        raise _not_found(base, source)
    kind, location, files = found
    if kind == "pickle" and location.name == FOLDER and (location.parent / TARBALL).is_file():
        files = [location.parent / TARBALL, *files]
    key = (kind, _stat_key(files))
    if use_cache and key in _CACHE:
        cached = _CACHE[key]
        if cached.md5_mismatches and not allow:
            _check_md5s(files, False)  # read before with the opt-out: raises, naming the file
        _CACHE.move_to_end(key)
        return cached
    names: tuple[str, ...] | None = None
    checked: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()
    if kind == "pickle":
        checked, mismatched = _check_md5s(files, allow)  # before anything is unpickled
        arrays = {s: _split_from_pickle(location / s) for s in SPLITS}
        names = _names_from_meta(location / "meta")
    elif kind == "saved":
        arrays, names = _read_saved(location)
    else:
        arrays, names = _read_parquet(location)
    tv_layout = kind == "pickle" and location == base / FOLDER
    hf_layout = kind == "saved" and location == base / Path(*_HF_COPY)
    src = "torchvision" if tv_layout else "hf" if hf_layout else "dir"
    data = _build(arrays, src, str(location), names, checked, mismatched)
    return _finish(key, data)


def _build(arrays: dict[str, tuple[np.ndarray, np.ndarray]], source: str, location: str,
           names: tuple[str, ...] | None, checked: tuple[str, ...] = (),
           mismatched: tuple[str, ...] = ()) -> CIFAR100Data:
    train = _check_split(*arrays["train"], f"{location} [train]")
    test = _check_split(*arrays["test"], f"{location} [test]")
    fp = cifar_fingerprint(train.images, train.labels, test.images, test.labels)
    return CIFAR100Data(train, test, fp, source, location, names, checked, mismatched)


def _finish(key: tuple, data: CIFAR100Data) -> CIFAR100Data:
    if data.official is False:
        warnings.warn(
            DatasetMismatchWarning(
                f"CIFAR-100 at {data.location} is not the official dataset: fingerprint "
                f"{data.fingerprint}, official {CIFAR100_FINGERPRINT}. Runs on it go on, but "
                "their results record its fingerprint and the leaderboard does not rank them."
            ),
            stacklevel=3,
        )
    return lru_put(_CACHE, key, data, _CACHE_SIZE)


def download_cifar100(
    root: str | os.PathLike[str] | None = None,
    source: str = "torchvision",
    hf_id: str = HF_ID,
    allow_checksum_mismatch: bool | None = None,
) -> Path:
    """Fetch CIFAR-100 into ``root`` (default: the cache directory); returns where it lies.

    ``source="torchvision"``: ``torchvision.datasets.CIFAR100(root, download=True)``, which
    fetches the tarball into ``root``, checks its md5 and extracts ``<root>/cifar-100-python``
    (nothing is fetched when the files are there); the tarball's md5 is checked again here
    (a difference is an error unless ``allow_checksum_mismatch``, see :func:`load_cifar100`).
    ``source="hf"``: ``datasets.load_dataset(hf_id)`` (cache under ``<root>/huggingface``),
    saved with ``save_to_disk`` to ``<root>/CIFAR100/hf``, which ``source="auto"`` then reads
    without any network access.
    """
    base = data_root(root)
    if source == "torchvision":
        tv = _require("torchvision.datasets")
        try:
            for train in (True, False):
                tv.CIFAR100(str(base), train=train, download=True)
        except Exception as exc:  # URLError, RuntimeError, OSError
            raise DatasetNotFoundError(
                f"could not download CIFAR-100 into {base}: {type(exc).__name__}: {exc}. Without "
                f"network access, copy {TARBALL} (or the extracted {FOLDER}/ folder) there by "
                f"hand, or point root= at a directory holding it."
            ) from exc
        if (base / TARBALL).is_file():
            _check_md5s([base / TARBALL], _allow_mismatch(allow_checksum_mismatch))
        return base / FOLDER
    if source == "hf":
        return save_hub_copy(_require("datasets"), hf_id, base, base / Path(*_HF_COPY),
                             DOWNLOAD_COMMAND)
    raise InvalidConfigError(f"download source must be 'torchvision' or 'hf', got {source!r}.")


def verify_cifar100(
    root: str | os.PathLike[str] | None = None,
    source: str = "auto",
    hf_id: str = HF_ID,
    allow_checksum_mismatch: bool | None = None,
) -> tuple[int, list[str]]:
    """What ``lop-bench data verify cifar100`` prints, and its exit status.

    Loads the data as the stream does (without the in-memory cache), so missing, broken or
    unsafe files and md5 differences raise the loader's errors (``allow_checksum_mismatch``
    as in :func:`load_cifar100`). Returns ``(status, lines)``: status 1 when the data is
    known not to be the official dataset, else 0.
    """
    data = load_cifar100(root, source, hf_id=hf_id, use_cache=False,
                         allow_checksum_mismatch=allow_checksum_mismatch)
    lines = [
        f"CIFAR-100: {len(data.train):,} training and {len(data.test):,} test images, read "
        f"from {data.location} ({data.source})"
    ]
    if data.checked_files:
        lines.append(f"  md5 ok: {', '.join(data.checked_files)}")
    if data.md5_mismatches:
        lines.append(f"  md5 differs from the published file (allowed): "
                     f"{', '.join(data.md5_mismatches)} (the fingerprint below says whether "
                     "the arrays are the official ones)")
    if not data.checked_files and not data.md5_mismatches:
        lines.append("  md5: no published file here to check (the fingerprint identifies the data)")
    lines.append(f"  fingerprint: {data.fingerprint}")
    official = CIFAR100_FINGERPRINT
    if official is None:
        lines.append("  official fingerprint: not recorded in this lop-bench version "
                     "(lop_bench.data.cifar100.CIFAR100_FINGERPRINT); results on this data record "
                     "the fingerprint above and are not ranked yet.")
        return 0, lines
    if data.fingerprint == official:
        lines.append("  the official CIFAR-100: results on it can be ranked.")
        return 0, lines
    lines.append(f"  NOT the official CIFAR-100 (official: {official}): runs work, but their "
                 "results record this fingerprint and the leaderboard does not rank them.")
    return 1, lines
