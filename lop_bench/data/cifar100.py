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
decoded arrays (:func:`~lop_bench.data._common.fingerprint` of both splits), which every
result records and which enters the stream's protocol hash; when the official value is
known (:data:`CIFAR100_FINGERPRINT`) a copy that differs gets a
:class:`~lop_bench.data._common.DatasetMismatchWarning`.

torchvision, ``datasets`` and PIL are imported only when a source needs them (the
``lop-bench[data]`` extra); ``import lop_bench`` never imports them. Loading is
:class:`~lop_bench.data._common.Loader`'s, with CIFAR-100's hooks (:class:`CIFAR100Loader`).
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lop_bench.data._common import (
    Found,
    LoadedData,
    Loader,
    check_md5s,
    checksum_mismatch_allowed,
    decode_images,
    fingerprint,
    hub_dataset,
    is_saved_dataset,
    load_pickle,
    not_found_error,
    parquet_files,
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
    "NUM_CLASSES",
    "CIFAR100_MD5",
    "CIFAR100_FINGERPRINT",
    "CIFAR100_SIZES",
    "DOWNLOAD_COMMAND",
    "FOLDER",
    "TARBALL",
    "CIFAR100Split",
    "CIFAR100Data",
    "CIFAR100Loader",
    "read_pickle",
    "load_cifar100",
    "download_cifar100",
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
"""The fingerprint of the official training and test sets (:class:`CIFAR100Data`).

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
class CIFAR100Data(LoadedData):
    """CIFAR-100 decoded: both splits, their fingerprint and where they came from.

    The arrays are shared by every env that loads the same files in this process (a class
    subset is an index into them, never a copy). The fingerprint is of the training images,
    the training fine labels, the test images and the test fine labels, in this order, each
    as uint8 in C order (images ``(N, 3, 32, 32)``: R, G, B planes, each row-major). The
    md5s checked are of the tarball and the pickles.
    """

    NAME = "CIFAR-100"
    OFFICIAL = "CIFAR-100"
    OFFICIAL_CONSTANT = "lop_bench.data.cifar100.CIFAR100_FINGERPRINT"
    PUBLISHED = "file"

    train: CIFAR100Split
    test: CIFAR100Split
    class_names: tuple[str, ...] | None = None
    """The 100 fine-label names (from ``meta`` or the hub's ClassLabel), when present."""

    @property
    def official_fingerprint(self) -> str | None:
        """:data:`CIFAR100_FINGERPRINT`."""
        return CIFAR100_FINGERPRINT

    def summary(self) -> list[str]:
        return [f"CIFAR-100: {len(self.train):,} training and {len(self.test):,} test images, "
                f"read from {self.location} ({self.source})"]


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


def _decode_table(table: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and fine labels from an arrow table with the hub's schema:
    ``img`` a struct of PNG ``bytes`` (or a file ``path``), ``fine_label`` an integer."""
    names = list(table.column_names)
    if "img" not in names or "fine_label" not in names:
        raise ChecksumError(
            f"{where}: columns {names}, expected 'img' and 'fine_label' (the schema of {HF_ID})."
        )
    images = decode_images(table, "img", where, dataset="CIFAR-100", size=(32, 32), mode="RGB",
                           hf_id=HF_ID, fix=_REFETCH)
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
        files = parquet_files(directory, split)
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
    flag = root_flag(root)
    fix = (f"Fetch it with `{DOWNLOAD_COMMAND} --source hf{flag}` (saves a copy under "
           f"{root / Path(*_HF_COPY)}), or use torchvision's files: `{DOWNLOAD_COMMAND}{flag}`.")
    out, names = {}, None
    for split in SPLITS:
        ds = hub_dataset(datasets, hf_id, split, root, fix)
        out[split] = _dataset_split(ds, f"{hf_id} [{split}]")
        names = names or _class_names(ds.features)
    return out, names


# ---------------------------------------------------------------------------------------
# finding and loading


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


class CIFAR100Loader(Loader[CIFAR100Data]):
    """CIFAR-100's hooks of :class:`~lop_bench.data._common.Loader` (option: ``hf_id``)."""

    NAME = "CIFAR-100"
    SOURCES = SOURCES

    def locate(self, base: Path, source: str, allow: bool, *, hf_id: str = HF_ID) -> Found | None:
        """The first copy found: torchvision's pickles (extracting a lone tarball, its md5
        checked first), the saved hub copy, then ``base`` itself as a directory of either
        format; with ``source="hf"``, the hub id when it is not the default or no copy was
        saved. A tarball beside the pickles is among their files (its md5 is checked)."""
        if source == "hf" and (hf_id != HF_ID or not is_saved_dataset(base / Path(*_HF_COPY))):
            return Found("hub", hf_id)
        candidates: list[tuple[str, Path]] = []
        if source in ("auto", "torchvision"):
            candidates.append(("pickle", base / FOLDER))
        if source in ("auto", "hf"):
            candidates.append(("saved", base / Path(*_HF_COPY)))
        if source in ("auto", "dir"):
            candidates += [("pickle", base), ("saved", base), ("parquet", base)]
            if source == "dir":
                candidates += [("pickle", base / FOLDER), ("saved", base / Path(*_HF_COPY))]
        if source in ("auto", "torchvision", "dir") and not _has_pickles(base / FOLDER):
            if (base / TARBALL).is_file():
                _extract(base / TARBALL, base, allow)
        for kind, d in candidates:
            if not d.is_dir():
                continue
            if kind == "pickle":
                if _has_pickles(d):
                    files = [d / s for s in (*SPLITS, "meta") if (d / s).is_file()]
                    if d.name == FOLDER and (d.parent / TARBALL).is_file():
                        files.insert(0, d.parent / TARBALL)
                    return Found(kind, d, tuple(files))
            elif kind == "saved":
                if is_saved_dataset(d):
                    return Found(kind, d, tuple(sorted(p for p in d.rglob("*") if p.is_file())))
            else:
                train, test = parquet_files(d, "train"), parquet_files(d, "test")
                if train and test:
                    return Found(kind, d, tuple(train + test))
        return None

    def check_md5s(self, found: Found, allow: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The tarball and the pickles, before anything is unpickled."""
        return _check_md5s(list(found.files), allow) if found.kind == "pickle" else ((), ())

    def read(self, base: Path, found: Found, *, checked: tuple[str, ...],
             mismatched: tuple[str, ...], use_cache: bool, hf_id: str = HF_ID) -> CIFAR100Data:
        location = found.location
        names: tuple[str, ...] | None = None
        if found.kind == "hub":
            arrays, names = _read_hub(hf_id, base)
        elif found.kind == "pickle":
            arrays = {s: _split_from_pickle(location / s) for s in SPLITS}
            names = _names_from_meta(location / "meta")
        elif found.kind == "saved":
            arrays, names = _read_saved(location)
        else:
            arrays, names = _read_parquet(location)
        if found.kind == "hub" or (found.kind == "saved" and location == base / Path(*_HF_COPY)):
            source = "hf"
        else:
            source = "torchvision" if found.kind == "pickle" and location == base / FOLDER else "dir"
        train = _check_split(*arrays["train"], f"{location} [train]")
        test = _check_split(*arrays["test"], f"{location} [test]")
        return CIFAR100Data(
            train=train, test=test, class_names=names, source=source, location=str(location),
            fingerprint=fingerprint((train.images, train.labels, test.images, test.labels)),
            checked_files=checked, md5_mismatches=mismatched,
        )

    def not_found(self, base: Path, source: str, *, hf_id: str = HF_ID) -> DatasetNotFoundError:
        looked = {
            "torchvision": f"{base / FOLDER}/{{train,test,meta}} or {base / TARBALL} "
                           "(torchvision's layout)",
            "hf": f"{base / Path(*_HF_COPY)} (a saved `datasets` copy)",
            "dir": f"CIFAR-100 files in {base} (the train/test pickles, a save_to_disk copy, or "
                   "train-*.parquet and test-*.parquet)",
        }
        flag = root_flag(base)
        return not_found_error(
            "CIFAR-100",
            [looked[s] for s in (("torchvision", "hf", "dir") if source == "auto" else (source,))],
            f"Fetch it with `{DOWNLOAD_COMMAND}{flag}` (torchvision's files; or "
            f"`{DOWNLOAD_COMMAND} --source hf{flag}`), or pass root= a directory holding the "
            "pickles or a `datasets` copy (columns img, fine_label).",
        )

    def download(self, base: Path, allow: bool) -> Path:
        return download_cifar100(base, source="torchvision", allow_checksum_mismatch=allow)


_LOADER = CIFAR100Loader()


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
        use_cache: reuse the arrays already decoded in this process from the same, unchanged
            files (:data:`~lop_bench.data.cache.MEMORY`).
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
    return _LOADER.load(root, source, hf_id=hf_id, download=download, use_cache=use_cache,
                        allow_checksum_mismatch=allow_checksum_mismatch)


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
            _check_md5s([base / TARBALL], checksum_mismatch_allowed(allow_checksum_mismatch))
        return base / FOLDER
    if source == "hf":
        return save_hub_copy(_require("datasets"), hf_id, base, base / Path(*_HF_COPY),
                             DOWNLOAD_COMMAND)
    raise InvalidConfigError(f"download source must be 'torchvision' or 'hf', got {source!r}.")
