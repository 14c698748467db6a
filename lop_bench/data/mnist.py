"""MNIST: where its files live, their checksums, and the fingerprint of the decoded arrays.

Three sources give the same arrays (PROTOCOLS.md, "Data formats"):

- ``"torchvision"``: torchvision's layout ``<root>/MNIST/raw/{train,t10k}-{images-idx3,
  labels-idx1}-ubyte`` (the IDX files, or their ``.gz`` archives), read by :func:`read_idx`
  (big-endian header, uint8 data); ``download=True`` fetches them with
  ``torchvision.datasets.MNIST``.
- ``"hf"``: a Hugging Face ``datasets`` id (default ``ylecun/mnist``: columns ``image``, a
  PNG, and ``label``), loaded with ``datasets.load_dataset`` (its cache under
  ``<root>/huggingface``); or the copy that ``lop-bench data download mnist --source hf``
  saves to ``<root>/MNIST/hf``.
- ``"dir"``: a directory the user names, holding either format: IDX files (directly, in
  ``raw/`` or in ``MNIST/raw/``), a ``save_to_disk`` copy, or parquet files with the hub's
  schema (``train-*.parquet``, as on the hub).

``"auto"`` (the default) tries ``<root>/MNIST/raw``, then ``<root>/MNIST/hf``, then
``<root>`` itself as a ``"dir"``, and never touches the network. ``root`` defaults to the
cache directory (:func:`~lop_bench.data.cache.data_root`: ``$LOP_BENCH_DATA`` or
``~/.cache/lop_bench``).

**Checksums.** The ``.gz`` archives, when present, are checked against the published md5s
(:data:`MNIST_MD5`); a mismatch raises :class:`~lop_bench.errors.ChecksumError` naming the
file, the expected and the actual md5, unless allowed (``allow_checksum_mismatch=True``,
``--allow-checksum-mismatch`` or ``LOP_BENCH_ALLOW_CHECKSUM_MISMATCH=1``: the archives that
differ are then listed in :attr:`MNISTData.md5_mismatches`). A truncated or malformed IDX
file raises it too; a file that cannot be read raises
:class:`~lop_bench.errors.DatasetReadError` naming it.
torchvision itself only checks that the extracted files exist, so lop-bench identifies the
data by the sha256 of the decoded arrays (:func:`~lop_bench.data._common.fingerprint`),
which every result records and which enters the stream's protocol hash. A dataset other than the official one (a
subset, a modified copy) runs, but its results carry its own fingerprint and are not
ranked; when the official fingerprint is known (:data:`MNIST_TRAIN_FINGERPRINT`) a
:class:`DatasetMismatchWarning` says so at load time.

torchvision, ``datasets`` and PIL are imported only when a source needs them (the
``lop-bench[data]`` extra); ``import lop_bench`` never imports them. Loading is
:class:`~lop_bench.data._common.Loader`'s, with MNIST's hooks (:class:`MNISTLoader`).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lop_bench.data._common import (
    DatasetMismatchWarning,
    Found,
    LoadedData,
    Loader,
    check_md5s,
    checksum_mismatch_allowed,
    decode_images,
    fingerprint,
    hub_dataset,
    is_saved_dataset,
    not_found_error,
    parquet_files,
    read_error,
    require,
    root_flag,
    save_hub_copy,
)
from lop_bench.data.cache import data_root
from lop_bench.errors import ChecksumError, DatasetNotFoundError, InvalidConfigError

__all__ = [
    "HF_ID",
    "SOURCES",
    "SPLITS",
    "IMAGE_SHAPE",
    "MNIST_MD5",
    "MNIST_TRAIN_FINGERPRINT",
    "MNIST_TRAIN_SIZE",
    "DOWNLOAD_COMMAND",
    "DatasetMismatchWarning",
    "MNISTData",
    "MNISTLoader",
    "read_idx",
    "parse_idx",
    "load_mnist",
    "download_mnist",
]

HF_ID = "ylecun/mnist"
"""The Hugging Face hub id of MNIST (columns ``image``, ``label``)."""

SOURCES = ("auto", "torchvision", "hf", "dir")
"""Where :func:`load_mnist` reads MNIST from (see the module docstring)."""

SPLITS = {"train": "train", "test": "t10k"}
"""Split name -> the IDX files' prefix."""

IMAGE_SHAPE = (28, 28)
MNIST_TRAIN_SIZE = 60_000
DOWNLOAD_COMMAND = "lop-bench data download mnist"
"""The command that fetches MNIST into the cache (named by every "not found" error)."""

MNIST_MD5: dict[str, str] = {
    # The published archives (PROTOCOLS.md; torchvision.datasets.MNIST.resources).
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
"""md5 of the official ``.gz`` archives, checked whenever an archive is present."""

MNIST_TRAIN_FINGERPRINT: str | None = None
"""The fingerprint (:func:`~lop_bench.data._common.fingerprint` of the images, then the
labels) of the official 60,000-image training set.

TODO: must be filled in once computed on real MNIST (``lop-bench data verify`` prints it):
no machine that built lop-bench could download MNIST. While it is ``None`` the official
fingerprint is unknown: every MNIST result records its own fingerprint and the leaderboard
refuses them (the stream's declaration names this constant). The torchvision
files and the ``ylecun/mnist`` parquet should give the same value (PNG is lossless, the
order is the same); check both when filling it in.
"""

_HF_COPY = ("MNIST", "hf")  # where ``download --source hf`` saves its copy, under the root
_TV_RAW = ("MNIST", "raw")  # torchvision's layout, under the root


@dataclass(frozen=True, eq=False)
class MNISTData(LoadedData):
    """One MNIST split, decoded: the arrays, their fingerprint and where they came from.

    ``images`` is ``(N, 784)`` uint8 (rows are the 28 x 28 images, row-major), ``labels``
    ``(N,)`` uint8 in 0..9; both read-only and shared by every env that loads the same
    files in this process (a task permutes an index into them, never a copy). The md5s
    checked are of the ``.gz`` archives, when present.
    """

    NAME = "MNIST"
    OFFICIAL = "MNIST training set"
    OFFICIAL_CONSTANT = "lop_bench.data.mnist.MNIST_TRAIN_FINGERPRINT"
    PUBLISHED = "archive"

    images: np.ndarray
    labels: np.ndarray
    split: str = "train"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def official_fingerprint(self) -> str | None:
        """:data:`MNIST_TRAIN_FINGERPRINT` for the training split (the test split's is not
        recorded)."""
        return MNIST_TRAIN_FINGERPRINT if self.split == "train" else None

    def summary(self) -> list[str]:
        return [f"MNIST {self.split}: {len(self):,} images, read from {self.location} "
                f"({self.source})"]


# ---------------------------------------------------------------------------------------
# IDX files

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(buf: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode an IDX buffer: magic ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes,
    then the data (big-endian). Returns a read-only array (native byte order).

    Raises :class:`~lop_bench.errors.ChecksumError` naming ``name`` when the buffer is not
    an IDX file, is truncated or has trailing bytes.
    """
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES:
        raise ChecksumError(
            f"{name}: not an IDX file (the first bytes are {bytes(buf[:4]).hex() or 'missing'}, "
            f"expected 0000 then a type code and the number of dimensions). {_REFETCH}"
        )
    ndim = buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ChecksumError(f"{name}: truncated IDX file ({len(buf)} bytes, shorter than its "
                            f"header of {header} bytes). {_REFETCH}")
    dims = struct.unpack(f">{ndim}I", bytes(buf[4:header]))
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    count = math.prod(dims)
    need, have = count * dtype.itemsize, len(buf) - header
    if have != need:
        what = "truncated IDX file" if have < need else "IDX file with trailing bytes"
        raise ChecksumError(
            f"{name}: {what}: its header declares shape {tuple(dims)} ({need:,} bytes of data) "
            f"but it holds {have:,}. {_REFETCH}"
        )
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=header).reshape(dims)
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    arr.flags.writeable = False
    return arr


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, or its gzip archive when the name ends in ``.gz`` (:func:`parse_idx`).

    A file that cannot be read raises :class:`~lop_bench.errors.DatasetReadError` (or
    :class:`~lop_bench.errors.DatasetNotFoundError` when it is missing) naming it.
    """
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise read_error(path, exc, _REFETCH) from exc
    if path.suffix == ".gz":
        try:
            buf = gzip.decompress(buf)
        except (OSError, EOFError, zlib.error) as exc:
            raise ChecksumError(f"{path}: corrupt gzip archive ({exc}). {_REFETCH}") from None
    return parse_idx(buf, str(path))


_REFETCH = f"Delete it and fetch MNIST again: {DOWNLOAD_COMMAND}."


def _check_archives(directory: Path, allow_mismatch: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(matched, mismatched)`` names of the published archives present in ``directory``."""
    present = [(directory / n, md5) for n, md5 in MNIST_MD5.items() if (directory / n).is_file()]
    return check_md5s(present, "MNIST archive", _REFETCH, allow_mismatch)


def _idx_file(directory: Path, base: str) -> Path | None:
    for p in (directory / base, directory / f"{base}.gz"):
        if p.is_file():
            return p
    return None


def _idx_pair(directory: Path, split: str) -> tuple[Path, Path] | None:
    prefix = SPLITS[split]
    images = _idx_file(directory, f"{prefix}-images-idx3-ubyte")
    labels = _idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    return (images, labels) if images and labels else None


def _check_arrays(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate decoded MNIST arrays; return images (N, 784) and labels (N,), uint8, read-only."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ChecksumError(
            f"{where}: the images are {images.dtype} of shape {images.shape}, expected uint8 "
            f"(N, 28, 28): not MNIST images. {_REFETCH}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise ChecksumError(f"{where}: the labels are {labels.dtype} of shape {labels.shape}, "
                            f"expected integers of shape (N,). {_REFETCH}")
    if len(labels) != len(images):
        raise ChecksumError(f"{where}: {len(images):,} images but {len(labels):,} labels. {_REFETCH}")
    if len(labels) == 0:
        raise ChecksumError(f"{where}: the dataset is empty. {_REFETCH}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > 9:
        raise ChecksumError(f"{where}: labels range over {lo}..{hi}, expected 0..9. {_REFETCH}")
    x = images.reshape(len(images), -1)
    y = labels.astype(np.uint8, copy=False)
    for a in (x, y):
        a.flags.writeable = False
    return x, y


# ---------------------------------------------------------------------------------------
# Hugging Face ``datasets`` copies (save_to_disk, parquet, hub)


def _require(module: str) -> Any:
    return require(module, "MNIST")


def _decode_table(table: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels from an arrow table with the hub's schema:
    ``image`` a struct of PNG ``bytes`` (or a file ``path``) and ``label`` an integer."""
    names = list(table.column_names)
    if "image" not in names or "label" not in names:
        raise ChecksumError(
            f"{where}: columns {names}, expected 'image' and 'label' (the schema of {HF_ID})."
        )
    images = decode_images(table, "image", where, dataset="MNIST", size=IMAGE_SHAPE, mode="L",
                           hf_id=HF_ID, fix=_REFETCH)
    labels = np.asarray(table.column("label").to_numpy(zero_copy_only=False))
    return images, labels


def _read_parquet(files: list[Path], where: str) -> tuple[np.ndarray, np.ndarray]:
    pq = _require("pyarrow.parquet")
    pa = _require("pyarrow")
    tables = []
    for f in files:
        t = pq.read_table(f)
        tables.append(t.select(["image", "label"]) if {"image", "label"} <= set(t.column_names) else t)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return _decode_table(table, where)


def _dataset_arrays(ds: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode a ``datasets.Dataset`` through its arrow rows (the PNG bytes, not PIL objects)."""
    table = ds.with_format("arrow")[:]
    return _decode_table(table, where)


def _read_saved(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    datasets = _require("datasets")
    ds = datasets.load_from_disk(str(directory))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DatasetNotFoundError(
                f"{directory}: the saved dataset has splits {sorted(ds)}, not {split!r}."
            )
        ds = ds[split]
    return _dataset_arrays(ds, str(directory))


def _read_hub(hf_id: str, split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    flag = root_flag(root)
    ds = hub_dataset(_require("datasets"), hf_id, split, root,
                     f"Fetch it with `{DOWNLOAD_COMMAND} --source hf{flag}` (saves a copy under "
                     f"{root / Path(*_HF_COPY)}), or use the torchvision files: "
                     f"`{DOWNLOAD_COMMAND}{flag}`.")
    return _dataset_arrays(ds, hf_id)


# ---------------------------------------------------------------------------------------
# finding and loading


class MNISTLoader(Loader[MNISTData]):
    """MNIST's hooks of :class:`~lop_bench.data._common.Loader` (options: ``split``,
    ``hf_id``)."""

    NAME = "MNIST"
    SOURCES = SOURCES

    def locate(self, base: Path, source: str, allow: bool, *, split: str = "train",
               hf_id: str = HF_ID) -> Found | None:
        """The first copy found: torchvision's IDX files, the saved hub copy, then ``base``
        itself as a directory of either format; with ``source="hf"``, the hub id when it is
        not the default or no copy was saved."""
        if source == "hf" and (hf_id != HF_ID or not is_saved_dataset(base / Path(*_HF_COPY))):
            return Found("hub", hf_id)
        candidates: list[tuple[str, Path]] = []
        if source in ("auto", "torchvision"):
            candidates.append(("idx", base / Path(*_TV_RAW)))
        if source in ("auto", "hf"):
            candidates.append(("saved", base / Path(*_HF_COPY)))
        if source in ("auto", "dir"):
            candidates += [("idx", base), ("idx", base / "raw"), ("saved", base),
                           ("parquet", base)]
            if source == "dir":
                candidates += [("idx", base / Path(*_TV_RAW)), ("saved", base / Path(*_HF_COPY))]
        for kind, d in candidates:
            if not d.is_dir():
                continue
            if kind == "idx":
                pair = _idx_pair(d, split)
                if pair:  # and the archives whose md5 is checked, which then key the cache too
                    archives = [d / n for n in MNIST_MD5 if (d / n).is_file() and d / n not in pair]
                    return Found(kind, d, (*pair, *archives))
            elif kind == "saved":
                if is_saved_dataset(d):
                    return Found(kind, d, tuple(sorted(p for p in d.rglob("*") if p.is_file())))
            else:
                files = parquet_files(d, split)
                if files:
                    return Found(kind, d, tuple(files))
        return None

    def cache_key(self, base: Path, found: Found, *, split: str = "train",
                  hf_id: str = HF_ID) -> Hashable:
        """The copy, its files, and the split."""
        return (*super().cache_key(base, found), split)

    def check_md5s(self, found: Found, allow: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The published ``.gz`` archives present beside IDX files."""
        return _check_archives(found.location, allow) if found.kind == "idx" else ((), ())

    def read(self, base: Path, found: Found, *, checked: tuple[str, ...],
             mismatched: tuple[str, ...], use_cache: bool, split: str = "train",
             hf_id: str = HF_ID) -> MNISTData:
        where = str(found.location)
        if found.kind == "hub":
            images, labels = _read_hub(hf_id, split, base)
        elif found.kind == "idx":  # the images' and the labels' files come first
            images, labels = read_idx(found.files[0]), read_idx(found.files[1])
        elif found.kind == "saved":
            images, labels = _read_saved(found.location, split)
        else:
            images, labels = _read_parquet(list(found.files), where)
        x, y = _check_arrays(images, labels, where)
        if found.kind == "hub" or found.location == base / Path(*_HF_COPY):
            source = "hf"
        else:
            source = "torchvision" if found.location == base / Path(*_TV_RAW) else "dir"
        return MNISTData(images=x, labels=y, split=split, fingerprint=fingerprint((x, y)),
                         source=source, location=where, checked_files=checked,
                         md5_mismatches=mismatched)

    def not_found(self, base: Path, source: str, *, split: str = "train",
                  hf_id: str = HF_ID) -> DatasetNotFoundError:
        prefix = SPLITS[split]
        tv = base / Path(*_TV_RAW)
        looked = {
            "torchvision": f"{tv}/{prefix}-{{images-idx3,labels-idx1}}-ubyte[.gz] (torchvision's "
                           "layout)",
            "hf": f"{base / Path(*_HF_COPY)} (a saved `datasets` copy)",
            "dir": f"MNIST files in {base} (IDX files, a save_to_disk copy, or "
                   f"{split}-*.parquet)",
        }
        flag = root_flag(base)
        return not_found_error(
            f"MNIST ({split})",
            [looked[s] for s in (("torchvision", "hf", "dir") if source == "auto" else (source,))],
            f"Fetch it with `{DOWNLOAD_COMMAND}{flag}` (torchvision's files; or "
            f"`{DOWNLOAD_COMMAND} --source hf{flag}`), or pass root= a directory holding the IDX "
            "files or a `datasets` copy (columns image, label).",
        )

    def download(self, base: Path, allow: bool) -> Path:
        return download_mnist(base, source="torchvision", allow_checksum_mismatch=allow)


_LOADER = MNISTLoader()


def load_mnist(
    root: str | os.PathLike[str] | None = None,
    source: str = "auto",
    *,
    split: str = "train",
    download: bool = False,
    hf_id: str = HF_ID,
    use_cache: bool = True,
    allow_checksum_mismatch: bool | None = None,
) -> MNISTData:
    """Load one MNIST split as uint8 arrays, with its fingerprint (see the module docstring).

    Args:
        root: the directory to read (default: the cache, ``$LOP_BENCH_DATA`` or
            ``~/.cache/lop_bench``). For ``source="dir"``, the directory holding the files.
        source: ``"auto"``, ``"torchvision"``, ``"hf"`` or ``"dir"``.
        split: ``"train"`` (the 60,000 images the streams use) or ``"test"``.
        download: fetch the files when they are missing (``"torchvision"`` or ``"auto"``:
            torchvision's download into ``root``). The ``"hf"`` source always goes through
            ``datasets.load_dataset``, which uses its cache and the network as Hugging
            Face's settings allow (``HF_HUB_OFFLINE=1``: cache only).
        hf_id: the hub id, or a local directory of parquet files, for ``source="hf"``.
        use_cache: reuse the arrays already decoded in this process from the same, unchanged
            files (:data:`~lop_bench.data.cache.MEMORY`).
        allow_checksum_mismatch: read ``.gz`` archives whose md5 differs from the published
            one, listing them in ``md5_mismatches``. None (default):
            ``$LOP_BENCH_ALLOW_CHECKSUM_MISMATCH`` decides (unset: no).

    Raises:
        DatasetNotFoundError: the files are missing (the message names the command that
            fetches them).
        ChecksumError: an archive's md5 differs from the published one, or a file is
            truncated or malformed.
        DatasetReadError: a file exists but cannot be read (the message names it).
        DependencyNotInstalled: the source needs torchvision, datasets or PIL.
    """
    if split not in SPLITS:
        raise InvalidConfigError(f"split must be 'train' or 'test', got {split!r}.")
    return _LOADER.load(root, source, split=split, hf_id=hf_id, download=download,
                        use_cache=use_cache, allow_checksum_mismatch=allow_checksum_mismatch)


def download_mnist(
    root: str | os.PathLike[str] | None = None,
    source: str = "torchvision",
    *,
    hf_id: str = HF_ID,
    allow_checksum_mismatch: bool | None = None,
) -> Path:
    """Fetch MNIST into ``root`` (default: the cache directory); returns where it lies.

    ``source="torchvision"``: ``torchvision.datasets.MNIST(root, download=True)`` for both
    splits, into ``<root>/MNIST/raw`` (torchvision checks the archives' md5s; nothing is
    fetched when the files are there; lop-bench checks them again, a difference being an
    error unless ``allow_checksum_mismatch``, see :func:`load_mnist`). ``source="hf"``: ``datasets.load_dataset(hf_id)``
    (cache under ``<root>/huggingface``), saved with ``save_to_disk`` to ``<root>/MNIST/hf``,
    which ``source="auto"`` then reads without any network access.
    """
    base = data_root(root)
    if source == "torchvision":
        tv = _require("torchvision.datasets")
        try:
            for train in (True, False):
                tv.MNIST(str(base), train=train, download=True)
        except Exception as exc:  # URLError, RuntimeError from the mirrors, OSError
            raise DatasetNotFoundError(
                f"could not download MNIST into {base / Path(*_TV_RAW)}: {type(exc).__name__}: "
                f"{exc}. Without network access, copy the four files "
                f"{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte.gz there by hand, or point "
                f"root= at a directory holding them."
            ) from exc
        raw = base / Path(*_TV_RAW)
        _check_archives(raw, checksum_mismatch_allowed(allow_checksum_mismatch))
        return raw
    if source == "hf":
        return save_hub_copy(_require("datasets"), hf_id, base, base / Path(*_HF_COPY),
                             DOWNLOAD_COMMAND)
    raise InvalidConfigError(f"download source must be 'torchvision' or 'hf', got {source!r}.")
