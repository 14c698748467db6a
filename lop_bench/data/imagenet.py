"""Downsampled ImageNet 32x32 for Continual ImageNet: three formats, one class identity.

Every source gives the same thing: for each class index ``c`` (``0 .. K-1``) a uint8 array
``(n, 3, 32, 32)`` (channels R, G, B; ``n`` images per class, the same for every class).
**The class index is the position of the class's wnid in sorted wnid order**
(:data:`~lop_bench.data.imagenet_wnids.WNIDS`: ``0`` is ``n01440764`` tench), the order of
torchvision's ``ImageFolder`` and of the Hugging Face ImageNet sets, so a class means the same
thing in every format. The sources (PROTOCOLS.md, "Continual ImageNet" and "Data formats"):

- ``"npy"``, **the per-class layout the stream reads**: one file per class,
  ``<dir>/<c>.npy``, uint8 of shape ``(700, 3, 32, 32)`` for the paper (rows ``0..599`` are
  the class's training images, the last 100 its test images), opened with
  ``np.load(mmap_mode="r", allow_pickle=False)`` (only the images a batch needs are read).
  This is the layout of the paper's code (``data/classes/<index>.npy``, files of shape (700,
  3, 32, 32)); its mapping from file index to class is not documented, so lop-bench defines
  it as above. Files of another integer or float dtype (as the paper's own files may be)
  are accepted when every value is a whole number in 0..255, and converted to uint8 when a
  class is opened; any other dtype or value is refused, naming the file.
  Looked up in ``<root>/imagenet32/classes`` (where ``prepare`` writes), ``<root>/classes``
  (the paper's ``data/classes``) and ``<root>``.
- ``"imagenet32"``, the official Imagenet32 batches (``train_data_batch_1`` .. ``_10``, as
  pickles or ``.npz``; keys ``data``, N x 3072 uint8 in R, G, B planes like CIFAR, and
  ``labels``, 1..1000 in the devkit's ``map_clsloc.txt`` order,
  :data:`~lop_bench.data.imagenet_wnids.MAP_CLSLOC_WNIDS`). ``val_data`` (50 images per
  class) is not used. Looked up in ``<root>``, ``<root>/Imagenet32_train`` and
  ``<root>/Imagenet32_train_npz``.
- ``"hf"``, a Hugging Face ``datasets`` copy with the hub's schema (default id
  ``benjamin-paine/imagenet-1k-32x32``: columns ``image``, an encoded 32x32 image, and
  ``label``, 0..999 in sorted wnid order; its ``train`` split is read): a local
  ``save_to_disk`` directory or parquet files (``train-*.parquet``, as on the hub), or the
  hub id itself through ``datasets.load_dataset``. Its images were resized differently from
  Imagenet32's, so the two give similar, not identical, pixels.

**Which 700 images.** How the paper's per-class files chose 700 images per class is not
documented. Converting (``"imagenet32"`` or ``"hf"``, and :func:`prepare_imagenet32`) takes,
for every class, **the first 700 images of the training split in file order** (batch 1 to
10, row by row; the hub's parquet row order), so rows 0..599 become the class's training
images and rows 600..699 its test images. (Imagenet32's ``val_data`` has only 50 images per
class, too few for the 100 test images.) Every ImageNet-1k class has at least 732 training
images. A copy where some class has fewer than 700 gives ``n`` = its smallest class count
for every class, and a stream that needs more images than that says so.

**Fingerprint.** ``"sha256:" + sha256`` of the class arrays' bytes, class 0 first, each
array uint8 in C order (:func:`~lop_bench.data._common.fingerprint`); recorded in every result and part of the
stream's protocol hash. For the per-class layout it is cached next to the files
(``fingerprint.json``, keyed by the files' sizes and modification times); ``lop-bench data
verify imagenet32`` always recomputes it. The official value is unknown here
(:data:`IMAGENET32_FINGERPRINT` is ``None``).

``lop-bench data prepare imagenet32 --from DIR`` converts a copy in format ``"imagenet32"``
or ``"hf"`` once into the per-class layout (:func:`prepare_imagenet32`).

Pickled batches are read with lop-bench's restricted unpickler
(:class:`~lop_bench.data._common.DataUnpickler`): plain values and numpy arrays only; a
batch that asks for anything else raises :class:`~lop_bench.errors.UnsafeDataError` and
none of it runs. ``np.load`` never unpickles (``allow_pickle=False``). ``datasets``,
``pyarrow`` and PIL are imported only when a source needs them (the ``lop-bench[data]``
extra). Loading is :class:`~lop_bench.data._common.Loader`'s, with this dataset's hooks
(:class:`ImageNet32Loader`).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lop_bench.data._common import (
    Found,
    LoadedData,
    Loader,
    decode_images,
    fingerprint,
    hub_dataset,
    is_saved_dataset,
    load_pickle,
    not_found_error,
    parquet_files,
    read_error,
    require,
    root_flag,
)
from lop_bench.data.cache import MEMORY, data_root
from lop_bench.data.imagenet_wnids import CLSLOC_TO_SORTED, MAP_CLSLOC_WNIDS, WNIDS
from lop_bench.errors import ChecksumError, DatasetNotFoundError

__all__ = [
    "HF_ID",
    "SOURCES",
    "NUM_CLASSES",
    "IMAGE_SHAPE",
    "IMAGES_PER_CLASS",
    "TRAIN_PER_CLASS",
    "TEST_PER_CLASS",
    "PREPARE_COMMAND",
    "IMAGENET32_FINGERPRINT",
    "ImageNet32Data",
    "ImageNet32Loader",
    "load_imagenet32",
    "prepare_imagenet32",
    "read_batch",
]

HF_ID = "benjamin-paine/imagenet-1k-32x32"
"""The Hugging Face hub id of downsampled ImageNet 32x32 (columns ``image``, ``label``)."""

SOURCES = ("auto", "npy", "imagenet32", "hf")
"""Where :func:`load_imagenet32` reads from (see the module docstring). ``"auto"`` tries the
per-class layout, then Imagenet32 batches, then a local Hugging Face copy; never the network."""

NUM_CLASSES = 1000
IMAGE_SHAPE = (3, 32, 32)
IMAGES_PER_CLASS = 700
"""Images per class in the per-class layout (PROTOCOLS.md: 600 train + 100 test)."""
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100

PREPARE_COMMAND = "lop-bench data prepare imagenet32 --from DIR"
"""The command that builds the per-class layout (named by every "not found" error)."""

IMAGENET32_FINGERPRINT: str | None = None
"""The fingerprint of the paper's per-class files: unknown (no machine that built lop-bench
could download them). Results record their own fingerprint meanwhile."""

_LAYOUT = ("imagenet32", "classes")  # where ``prepare`` writes, under the root
_FINGERPRINT_FILE = "fingerprint.json"
_WNIDS_FILE = "wnids.txt"
_PIXELS = 3 * 32 * 32
_BATCH_RE = re.compile(r"^train_data_batch_(\d+)(\.npz)?$")


def _fix(root: Path | None = None) -> str:
    flag = "" if root is None else root_flag(root)
    return (f"Build the per-class layout from the Imagenet32 batches or a Hugging Face copy: "
            f"`{PREPARE_COMMAND}{flag}`.")


# ---------------------------------------------------------------------------------------
# the data


@dataclass(frozen=True, eq=False)
class ImageNet32Data(LoadedData):
    """Downsampled ImageNet: ``num_classes`` classes of ``images_per_class`` images each.

    ``class_images(c)`` is class ``c``'s read-only uint8 array ``(n, 3, 32, 32)`` (a
    memory map for the per-class layout: only the rows indexed are read); ``wnid(c)`` its
    WordNet id (sorted order). A class subset is a list of indices, never a copy. The
    fingerprint is of the class arrays, class 0 first; no md5s are published.
    """

    NAME = "ImageNet 32x32"
    OFFICIAL = "per-class files"
    OFFICIAL_CONSTANT = "lop_bench.data.imagenet.IMAGENET32_FINGERPRINT"

    num_classes: int
    images_per_class: int
    _get: Callable[[int], np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return self.num_classes

    def class_images(self, c: int) -> np.ndarray:
        """Class ``c``'s images, uint8 ``(images_per_class, 3, 32, 32)``, read-only."""
        c = int(c)
        if not 0 <= c < self.num_classes:
            raise IndexError(f"class {c} out of range 0..{self.num_classes - 1}")
        return self._get(c)

    def wnid(self, c: int) -> str:
        """The WordNet id of class ``c`` (the sorted wnid order)."""
        return WNIDS[int(c)]

    @property
    def official_fingerprint(self) -> str | None:
        """:data:`IMAGENET32_FINGERPRINT`."""
        return IMAGENET32_FINGERPRINT

    def summary(self) -> list[str]:
        lines = [f"ImageNet 32x32: {self.num_classes:,} classes of {self.images_per_class:,} "
                 f"images, read from {self.location} ({self.source})"]
        if self.num_classes < NUM_CLASSES or self.images_per_class < IMAGES_PER_CLASS:
            lines.append(f"  smaller than the paper's {NUM_CLASSES:,} x {IMAGES_PER_CLASS} "
                         "images: enough for custom or smoke runs only")
        return lines


def _readonly(a: np.ndarray) -> np.ndarray:
    a = a.view()
    a.flags.writeable = False
    return a


# ---------------------------------------------------------------------------------------
# (a) the per-class layout


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an ``.npy`` file from its header; checks that the data is all there."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except OSError as exc:
        raise read_error(path, exc, _fix()) from exc
    except (ValueError, SyntaxError) as exc:
        raise ChecksumError(f"{path}: not a readable .npy file ({exc}). {_fix()}") from None
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = path.stat().st_size
    if have < need:
        raise ChecksumError(
            f"{path}: truncated .npy file: its header declares {dtype} {shape} ({need:,} bytes "
            f"with the header) but it holds {have:,} bytes. {_fix()}"
        )
    return tuple(shape), dtype


def _class_files(directory: Path) -> dict[int, Path]:
    out = {}
    for p in directory.glob("*.npy"):
        if p.stem.isdigit():
            out[int(p.stem)] = p
    return out


def _check_layout(directory: Path) -> tuple[list[Path], int]:
    """The class files ``0.npy .. K-1.npy`` of a per-class layout and the images per class."""
    files = _class_files(directory)
    if not files:
        raise DatasetNotFoundError(f"{directory}: no per-class files (0.npy, 1.npy, ...). {_fix()}")
    k = max(files) + 1
    if k > NUM_CLASSES:
        raise ChecksumError(
            f"{directory}: class file {k - 1}.npy, but ImageNet has {NUM_CLASSES} classes "
            f"(0.npy .. {NUM_CLASSES - 1}.npy). {_fix()}"
        )
    missing = [c for c in range(k) if c not in files]
    if missing:
        shown = ", ".join(f"{c}.npy ({WNIDS[c]})" for c in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetNotFoundError(
            f"{directory}: missing classes: {shown}{more} (the files must be 0.npy .. "
            f"{k - 1}.npy without gaps, class c = the c-th wnid in sorted order). {_fix()}"
        )
    paths = [files[c] for c in range(k)]
    n = None
    for p in paths:
        shape, dtype = _npy_header(p)
        if dtype.kind not in _PIXEL_KINDS:
            raise ChecksumError(
                f"{p}: dtype {dtype}, expected pixel values 0..255 as uint8 (or another "
                f"integer or float dtype holding whole numbers 0..255). {_fix()}"
            )
        if len(shape) != 4 or shape[1:] != IMAGE_SHAPE:
            hint = (" (channels last: transpose to (n, 3, 32, 32))"
                    if len(shape) == 4 and shape[1:] == (32, 32, 3) else "")
            raise ChecksumError(
                f"{p}: shape {shape}, expected (n, 3, 32, 32) uint8 images{hint}. {_fix()}"
            )
        if shape[0] == 0:
            raise ChecksumError(f"{p}: the class has no images. {_fix()}")
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise ChecksumError(
                f"{p}: {shape[0]} images, but 0.npy has {n}: every class must have the same "
                f"number (the paper's files: {IMAGES_PER_CLASS}). {_fix()}"
            )
    return paths, int(n)


def _mmap(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as exc:
        raise read_error(path, exc, _fix()) from exc
    except ValueError as exc:
        raise ChecksumError(f"{path}: cannot be opened ({exc}). {_fix()}") from None


_PIXEL_KINDS = "uif"  # unsigned and signed integers, floats: the dtypes a class file may have


def _pixels(a: np.ndarray, path: Path) -> np.ndarray:
    """A class file's images as uint8: a uint8 file as it is (its memory map); another
    integer or float dtype converted (read-only, in memory) when every value is a whole
    number in 0..255, else :class:`~lop_bench.errors.ChecksumError` naming the file and
    the first offending value."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind not in _PIXEL_KINDS:
        raise ChecksumError(f"{path}: dtype {a.dtype}, expected pixel values 0..255. {_fix()}")
    x = np.asarray(a)
    bad = ~np.isfinite(x) if x.dtype.kind == "f" else np.zeros(x.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        bad |= (x < 0) | (x > 255)
        if x.dtype.kind == "f":
            bad |= x != np.round(x)
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), x.shape)
        v = x[i].item()
        hint = (" The values look normalized to 0..1: multiply by 255 and round."
                if x.dtype.kind == "f" and x.min() >= 0.0 and x.max() <= 1.0 else "")
        raise ChecksumError(
            f"{path}: {x.dtype} value {v!r} at image {i[0]}, index {tuple(map(int, i[1:]))}: "
            f"pixel values must be whole numbers in 0..255 (then any integer or float dtype "
            f"is read as uint8).{hint} {_fix()}"
        )
    out = x.astype(np.uint8)
    out.flags.writeable = False
    return out


def _class_array(path: Path) -> np.ndarray:
    """The class file at ``path``, opened and checked: uint8 ``(n, 3, 32, 32)``."""
    return _pixels(_mmap(path), path)


class _ClassMaps:
    """Memory maps of the class files, opened on demand; the last ``size`` are kept open
    (1,000 open maps would hold 1,000 file descriptors)."""

    def __init__(self, paths: list[Path], size: int = 32) -> None:
        self.paths = paths
        self.size = size
        self.open: OrderedDict[int, np.ndarray] = OrderedDict()

    def __call__(self, c: int) -> np.ndarray:
        a = self.open.get(c)
        if a is None:
            a = self.open[c] = _class_array(self.paths[c])
            while len(self.open) > self.size:
                self.open.popitem(last=False)
        else:
            self.open.move_to_end(c)
        return a


def _stat_list(paths: list[Path]) -> list[list[Any]]:
    out = []
    for p in paths:
        st = p.stat()
        out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def _layout_fingerprint(directory: Path, paths: list[Path], use_cache: bool, progress: bool) -> str:
    stat = _stat_list(paths)
    cache = directory / _FINGERPRINT_FILE
    if use_cache and cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            if saved.get("files") == stat and str(saved.get("fingerprint", "")).startswith("sha256:"):
                return str(saved["fingerprint"])
        except (OSError, ValueError):
            pass
    fp = fingerprint(_class_array(p) for p in _bar(paths, progress, "fingerprint", "class"))
    try:
        _write_atomic(cache, json.dumps({"fingerprint": fp, "files": stat}).encode())
    except OSError:  # a read-only copy: the fingerprint is recomputed next time
        pass
    return fp


def _find_layout(root: Path) -> Path | None:
    for d in (root / Path(*_LAYOUT), root / "classes", root):
        if (d / "0.npy").is_file():
            return d
    return None


# ---------------------------------------------------------------------------------------
# (b) the official Imagenet32 batches


_REFETCH_BATCH = "Fetch the Imagenet32 batch again from image-net.org (Imagenet32_train)."


def read_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one Imagenet32 batch (pickle, or ``.npz`` when the name ends so).

    Returns ``data`` as uint8 ``(N, 3, 32, 32)`` (the planar R, G, B rows reshaped) and
    ``labels`` as int64 **sorted-wnid class indices** 0..999 (converted from the file's
    1..1000 ``map_clsloc`` labels). A pickle goes through the restricted unpickler, an
    ``.npz`` through ``np.load(allow_pickle=False)``.

    Raises :class:`~lop_bench.errors.UnsafeDataError` for a pickle that asks for anything
    but plain data (none of it runs), :class:`~lop_bench.errors.ChecksumError` for a
    malformed batch (not a pickle or npz, missing keys, wrong dtype or shape, labels out of
    range) and :class:`~lop_bench.errors.DatasetReadError` for a file that cannot be read;
    each names the file.
    """
    path = Path(path)
    if path.suffix != ".npz":
        d = load_pickle(path, "Imagenet32 batch", _REFETCH_BATCH)
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except OSError as exc:
            raise read_error(path, exc, _REFETCH_BATCH) from exc
        except (ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise ChecksumError(f"{path}: not a readable Imagenet32 batch ({type(exc).__name__}: "
                                f"{exc}). {_REFETCH_BATCH}") from None
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        keys = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
        raise ChecksumError(f"{path}: keys {keys}, expected 'data' and 'labels' (an Imagenet32 batch).")
    data, labels = np.asarray(d["data"]), np.asarray(d["labels"])
    if data.dtype != np.uint8:
        raise ChecksumError(f"{path}: 'data' is {data.dtype}, expected uint8 pixel values.")
    if data.ndim != 2 or data.shape[1] != _PIXELS:
        raise ChecksumError(
            f"{path}: 'data' has shape {data.shape}, expected (N, 3072): 32x32 images as "
            "R, G, B planes (Imagenet32, not Imagenet64)."
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise ChecksumError(f"{path}: 'labels' is {labels.dtype} {labels.shape}, expected "
                            f"{len(data)} integer labels.")
    if len(labels):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 1 or hi > NUM_CLASSES:
            raise ChecksumError(
                f"{path}: labels range over {lo}..{hi}, expected 1..{NUM_CLASSES} (the devkit's "
                "map_clsloc order). Labels from 0 are a Hugging Face copy: use source 'hf'."
            )
    sorted_labels = np.asarray(CLSLOC_TO_SORTED, dtype=np.int64)[labels.astype(np.int64) - 1]
    return data.reshape(len(data), *IMAGE_SHAPE), sorted_labels


def _batch_files(directory: Path) -> list[Path]:
    """``train_data_batch_1 .. _k`` (the ``.npz`` when both exist), in batch order."""
    found: dict[int, Path] = {}
    for p in directory.iterdir() if directory.is_dir() else ():
        m = _BATCH_RE.match(p.name)
        if m and p.is_file():
            k = int(m.group(1))
            if k not in found or p.suffix == ".npz":
                found[k] = p
    if not found:
        return []
    missing = [k for k in range(1, max(found) + 1) if k not in found]
    if missing:
        raise DatasetNotFoundError(
            f"{directory}: missing Imagenet32 batches: "
            f"{', '.join(f'train_data_batch_{k}' for k in missing)} (found "
            f"{', '.join(sorted(p.name for p in found.values()))}). Copy all the batches there."
        )
    return [found[k] for k in sorted(found)]


def _find_batches(root: Path) -> tuple[Path, list[Path]] | None:
    for d in (root, root / "Imagenet32_train", root / "Imagenet32_train_npz"):
        files = _batch_files(d)
        if files:
            return d, files
    return None


def _batch_chunks(files: list[Path]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for p in files:
        yield read_batch(p)


# ---------------------------------------------------------------------------------------
# (c) Hugging Face copies


def _require(module: str) -> Any:
    return require(module, "ImageNet 32x32")


def _find_hf(directory: Path) -> tuple[str, list[Path]] | None:
    if not directory.is_dir():
        return None
    if is_saved_dataset(directory):
        return "saved", []
    files = parquet_files(directory, "train")
    return ("parquet", files) if files else None


_CHUNK = 4096  # rows decoded at once from a Hugging Face copy


def _decode_images(batch: Any, where: str, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from an arrow batch with the hub's
    schema: ``image`` an encoded image of any mode (read as RGB), ``label`` 0..999; rows
    are numbered from ``start``."""
    names = list(batch.column_names) if hasattr(batch, "column_names") else list(batch.schema.names)
    if "image" not in names or "label" not in names:
        raise ChecksumError(f"{where}: columns {names}, expected 'image' and 'label' (the schema "
                            f"of {HF_ID}).")
    labels = np.asarray(batch.column("label").to_numpy(zero_copy_only=False))
    if labels.dtype.kind not in "iu":
        raise ChecksumError(f"{where}: column 'label' is {labels.dtype}, expected integers.")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        bad = int(np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))[0])
        raise ChecksumError(
            f"{where}: row {start + bad} has label {int(labels[bad])}, expected 0..{NUM_CLASSES - 1} "
            "(sorted wnid order; the unlabelled 'test' split cannot be used)."
        )
    images = decode_images(batch, "image", where, dataset="ImageNet 32x32", size=(32, 32),
                           mode="RGB", convert=True, first_row=start, hf_id=HF_ID)
    return images.transpose(0, 3, 1, 2), labels


def _arrow_chunks(batches: Iterator[Any], where: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    start = 0
    for b in batches:
        x, y = _decode_images(b, where, start)
        start += len(y)
        yield x, y


def _hf_chunks(kind: str, location: Path | str, files: list[Path], root: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    where = str(location)
    if kind == "parquet":
        pq = _require("pyarrow.parquet")

        def batches() -> Iterator[Any]:
            for f in files:
                yield from pq.ParquetFile(f).iter_batches(batch_size=_CHUNK, columns=["image", "label"])

        return _arrow_chunks(batches(), where)
    datasets = _require("datasets")
    if kind == "saved":
        ds = datasets.load_from_disk(where)
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise DatasetNotFoundError(f"{where}: the saved dataset has splits {sorted(ds)}, "
                                           "not 'train'.")
            ds = ds["train"]
    else:
        ds = hub_dataset(datasets, where, "train", root,
                         "Without network access, copy its parquet files to a directory and run "
                         f"`{PREPARE_COMMAND}`.")
    return _arrow_chunks(ds.with_format("arrow").iter(batch_size=_CHUNK), where)


# ---------------------------------------------------------------------------------------
# conversion: the first ``per_class`` images of every class in file order


def _collect(chunks: Iterator[tuple[np.ndarray, np.ndarray]], where: str,
             per_class: int = IMAGES_PER_CLASS, on_rows: Callable[[int], None] | None = None) -> np.ndarray:
    """The first ``per_class`` images of each class in file order, ``(K, n, 3, 32, 32)``.

    One pass over the chunks; only the kept images are held (a buffer of at most 1,000 x
    ``per_class`` images, allocated lazily by the OS), never the whole split. Reading stops
    as soon as all 1,000 classes have ``per_class`` images.
    """
    buf = np.empty((NUM_CLASSES, per_class, *IMAGE_SHAPE), dtype=np.uint8)
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for x, y in chunks:
        if len(y):
            order = np.argsort(y, kind="stable")  # file order within each class
            ys = y[order]
            rank = np.arange(len(ys)) - np.searchsorted(ys, ys, side="left")
            slot = counts[ys] + rank
            keep = slot < per_class
            buf[ys[keep], slot[keep]] = x[order[keep]]
            counts += np.bincount(y, minlength=NUM_CLASSES)
        if on_rows is not None:
            on_rows(len(y))
        if counts.min() >= per_class:
            break
    present = np.flatnonzero(counts)
    if not len(present):
        raise ChecksumError(f"{where}: no images.")
    k = int(present[-1]) + 1
    missing = np.flatnonzero(counts[:k] == 0)
    if len(missing):
        shown = ", ".join(f"{int(c)} ({WNIDS[c]}, Imagenet32 label "
                          f"{MAP_CLSLOC_WNIDS.index(WNIDS[c]) + 1})" for c in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ChecksumError(
            f"{where}: missing classes: no images of class {shown}{more}. The classes present "
            f"must be 0 .. K-1 in sorted wnid order (all {NUM_CLASSES} for ImageNet); is the "
            "copy complete?"
        )
    n = int(min(per_class, counts[:k].min()))
    return buf[:k, :n]


def _convert(kind: str, location: Path | str, files: list[Path], root: Path,
             progress: bool = False) -> np.ndarray:
    if kind == "batches":
        chunks = _batch_chunks(_bar(files, progress, "read", "batch") if progress else files)
        return _collect(chunks, str(location))
    chunks = _hf_chunks(kind, location, files, root)
    bar = _bar(None, progress, "decode", "img")
    try:
        return _collect(chunks, str(location), on_rows=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def _bar(items: Any, progress: bool, desc: str, unit: str) -> Any:
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------
# loading


def _in_memory(arrays: np.ndarray, source: str, location: str) -> ImageNet32Data:
    k, n = arrays.shape[:2]
    arrays = _readonly(arrays)
    return ImageNet32Data(num_classes=k, images_per_class=n, _get=arrays.__getitem__,
                          fingerprint=fingerprint(arrays), source=source, location=location)


class ImageNet32Loader(Loader[ImageNet32Data]):
    """ImageNet 32x32's hooks of :class:`~lop_bench.data._common.Loader` (options:
    ``hf_id``, ``progress``). One load is kept in memory."""

    NAME = "ImageNet 32x32"
    SOURCES = SOURCES
    CACHE_SIZE = 1

    def locate(self, base: Path, source: str, allow: bool, *, hf_id: str = HF_ID,
               progress: bool = False) -> Found | None:
        """The first copy found: the per-class layout (its files checked), the Imagenet32
        batches, a local Hugging Face copy (at ``hf_id`` when it is a directory, then
        ``base``), or with ``source="hf"`` the hub id itself. Never the network."""
        if source in ("auto", "npy"):
            d = _find_layout(base)
            if d is not None:
                paths, n = _check_layout(d)
                return Found("npy", d, tuple(paths), detail=n)  # detail: images per class
        if source in ("auto", "imagenet32"):
            batches = _find_batches(base)
            if batches is not None:
                return Found("batches", batches[0], tuple(batches[1]))
        if source in ("auto", "hf"):
            for d in ((Path(hf_id),) if source == "hf" else ()) + (base,):
                hf = _find_hf(d)
                if hf is not None:
                    return Found(hf[0], d, tuple(hf[1]))
            if source == "hf":
                return Found("hub", hf_id)
        return None

    def read(self, base: Path, found: Found, *, checked: tuple[str, ...],
             mismatched: tuple[str, ...], use_cache: bool, hf_id: str = HF_ID,
             progress: bool = False) -> ImageNet32Data:
        location = found.location
        if found.kind == "npy":
            paths = list(found.files)
            return ImageNet32Data(
                num_classes=len(paths), images_per_class=found.detail,
                _get=_ClassMaps(paths), source="npy", location=str(location),
                fingerprint=_layout_fingerprint(location, paths, use_cache, progress),
            )
        arrays = _convert(found.kind, location, list(found.files), base, progress)
        return _in_memory(arrays, "imagenet32" if found.kind == "batches" else "hf", str(location))

    def not_found(self, base: Path, source: str, *, hf_id: str = HF_ID,
                  progress: bool = False) -> DatasetNotFoundError:
        looked = {
            "npy": f"the per-class layout (0.npy, 1.npy, ...) in {base / Path(*_LAYOUT)}, "
                   f"{base / 'classes'} or {base}",
            "imagenet32": f"Imagenet32 batches (train_data_batch_1 ...) in {base} or "
                          f"{base / 'Imagenet32_train'}",
            "hf": f"a Hugging Face copy (save_to_disk or train-*.parquet) in {base}",
        }
        return not_found_error(
            "ImageNet 32x32",
            [looked[s] for s in (("npy", "imagenet32", "hf") if source == "auto" else (source,))],
            _fix(base),
        )


_LOADER = ImageNet32Loader()


def load_imagenet32(
    root: str | os.PathLike[str] | None = None,
    source: str = "auto",
    *,
    hf_id: str = HF_ID,
    use_cache: bool = True,
    progress: bool = False,
) -> ImageNet32Data:
    """Load downsampled ImageNet 32x32 as per-class uint8 arrays (see the module docstring).

    Args:
        root: the directory to read (default: the cache, ``$LOP_BENCH_DATA`` or
            ``~/.cache/lop_bench``).
        source: ``"auto"``, ``"npy"``, ``"imagenet32"`` or ``"hf"``.
        hf_id: for ``source="hf"``: a hub id or a local directory (save_to_disk or parquet).
        use_cache: reuse a load of the same, unchanged files in this process
            (:data:`~lop_bench.data.cache.MEMORY`), and the per-class layout's cached
            fingerprint.
        progress: show progress bars (fingerprinting, converting).

    Raises:
        DatasetNotFoundError: no copy found, or class files missing (the message names
            ``lop-bench data prepare imagenet32 --from DIR``).
        ChecksumError: a malformed file (wrong shape or dtype, pixel values that are not
            whole numbers in 0..255, truncated, missing classes, labels out of range), named
            in the message. A per-class file's values are checked when the fingerprint is
            computed and when the class is first opened.
        UnsafeDataError: a pickled batch asks for anything but plain data (none of it runs).
        DatasetReadError: a file exists but cannot be read.
        DependencyNotInstalled: the source needs ``datasets``, ``pyarrow`` or PIL.
    """
    return _LOADER.load(root, source, hf_id=hf_id, use_cache=use_cache, progress=progress)


# ---------------------------------------------------------------------------------------
# prepare: convert once into the per-class layout


def _write_atomic(path: Path, payload: bytes | np.ndarray) -> None:
    """Write to ``<path>.tmp`` then ``os.replace`` it: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if isinstance(payload, np.ndarray):
            np.save(f, payload, allow_pickle=False)
        else:
            f.write(payload)
    os.replace(tmp, path)


def prepare_imagenet32(
    source_dir: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Convert Imagenet32 batches or a Hugging Face copy into the per-class layout.

    ``source_dir`` holds ``train_data_batch_1..10`` (pickle or ``.npz``; also looked for in
    ``Imagenet32_train/``), or a ``save_to_disk`` / parquet copy with the hub's schema; a
    hub id (``benjamin-paine/imagenet-1k-32x32``) is loaded with ``datasets``. Writes
    ``<root>/imagenet32/classes/<c>.npy`` (uint8 ``(700, 3, 32, 32)``: the first 700
    training images of class ``c`` in file order), ``wnids.txt`` (line ``c`` is class
    ``c``'s wnid) and ``fingerprint.json``; each file written to a temporary name and
    renamed. One pass over the source; memory holds the kept images (at most 2.2 GB) and
    one batch. Returns the layout's directory.
    """
    base = data_root(root)
    src = Path(os.path.expandvars(os.path.expanduser(os.fspath(source_dir))))
    found: tuple[str, Path | str, list[Path]] | None
    if src.is_dir():
        located = _LOADER.locate(src, "imagenet32", False)
        found = (located.kind, located.location, list(located.files)) if located else (
            ("saved", src, []) if is_saved_dataset(src) else
            ("parquet", src, parquet_files(src, "train")) if parquet_files(src, "train") else None)
    elif src.exists():
        raise DatasetNotFoundError(f"{src} is a file; give the directory that holds the batches.")
    elif "/" in os.fspath(source_dir) and not os.path.isabs(os.fspath(source_dir)) \
            and not os.fspath(source_dir).startswith("."):
        found = ("hub", os.fspath(source_dir), [])
    else:
        raise DatasetNotFoundError(
            f"{src}: no such directory. Give the directory holding the Imagenet32 batches "
            f"(train_data_batch_1 .. 10) or a Hugging Face copy: `{PREPARE_COMMAND}`."
        )
    if found is None:
        raise DatasetNotFoundError(
            f"{src}: neither Imagenet32 batches (train_data_batch_1 .. 10, pickle or .npz) nor a "
            f"Hugging Face copy (save_to_disk, or train-*.parquet with columns image, label). "
            f"Usage: `{PREPARE_COMMAND}`."
        )
    kind, location, files = found
    arrays = _convert(kind, location, files, base, progress)
    out = base / Path(*_LAYOUT)
    out.mkdir(parents=True, exist_ok=True)
    k = len(arrays)
    stale = [p for c, p in _class_files(out).items() if c >= k]
    for p in stale:  # a previous, larger layout: its extra classes would join this one
        p.unlink()
    for c in _bar(range(k), progress, "write", "class"):
        _write_atomic(out / f"{c}.npy", np.ascontiguousarray(arrays[c]))
    _write_atomic(out / _WNIDS_FILE, "".join(f"{WNIDS[c]}\n" for c in range(k)).encode())
    paths = [out / f"{c}.npy" for c in range(k)]
    fp = fingerprint(arrays)
    _write_atomic(out / _FINGERPRINT_FILE,
                  json.dumps({"fingerprint": fp, "files": _stat_list(paths)}).encode())
    MEMORY.clear(ImageNet32Loader.NAME)
    return out
