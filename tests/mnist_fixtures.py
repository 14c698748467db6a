"""Small MNIST fixtures in the real on-disk formats: IDX (+ .gz), save_to_disk, parquet."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def fake_mnist(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` learnable fake digits: a fixed random pattern per class plus noise.

    Returns images (n, 28, 28) uint8 and labels (n,) uint8.
    """
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(10, 28, 28))
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    noise = rng.integers(0, 256, size=(n, 28, 28))
    images = (0.75 * templates[labels] + 0.25 * noise).astype(np.uint8)
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    """An uint8 array in the IDX format: magic 00 00 08 ndim, big-endian sizes, data."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(directory: Path, images: np.ndarray, labels: np.ndarray, *, prefix: str = "train",
              gz: bool = False, extracted: bool = True) -> Path:
    """Write ``{prefix}-images-idx3-ubyte`` and ``{prefix}-labels-idx1-ubyte`` (and/or their
    ``.gz`` archives) into ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(arr)
        if extracted:
            (directory / name).write_bytes(data)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
    return directory


def write_torchvision(root: Path, images: np.ndarray, labels: np.ndarray, **kw) -> Path:
    """torchvision's layout: ``root/MNIST/raw/train-*-ubyte``. Returns ``root``."""
    write_idx(root / "MNIST" / "raw", images, labels, **kw)
    return root


def hf_dataset(images: np.ndarray, labels: np.ndarray):
    """A ``datasets.Dataset`` with the hub schema of ylecun/mnist (image: Image, label: ClassLabel)."""
    import datasets
    from PIL import Image

    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=[str(i) for i in range(10)]),
    })
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in images], "label": labels.tolist()},
        features=features,
    )


def write_saved(directory: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A ``save_to_disk`` copy of a DatasetDict with train and test splits."""
    import datasets

    ds = hf_dataset(images, labels)
    datasets.DatasetDict({"train": ds, "test": ds.select(range(10))}).save_to_disk(str(directory))
    return directory


def write_parquet(directory: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Parquet files in the hub's layout: ``directory/mnist/{train,test}-00000-of-00001.parquet``."""
    ds = hf_dataset(images, labels)
    (directory / "mnist").mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(directory / "mnist" / "train-00000-of-00001.parquet"))
    ds.select(range(10)).to_parquet(str(directory / "mnist" / "test-00000-of-00001.parquet"))
    return directory
