"""Small downsampled-ImageNet fixtures in the real on-disk formats: the per-class ``.npy``
layout, Imagenet32 batches (pickle and ``.npz``, 1-based ``map_clsloc`` labels) and Hugging
Face copies (``save_to_disk``, parquet) with the hub's schema."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from lop_bench.data.imagenet_wnids import MAP_CLSLOC_WNIDS, WNIDS


def fake_imagenet(k: int = 4, n: int = 30, seed: int = 0) -> np.ndarray:
    """``k`` learnable fake classes of ``n`` images each: a fixed random pattern per class
    plus noise. Returns uint8 ``(k, n, 3, 32, 32)``; class ``c`` stands for ``WNIDS[c]``."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(k, 1, 3, 32, 32))
    noise = rng.integers(0, 256, size=(k, n, 3, 32, 32))
    return (0.7 * templates + 0.3 * noise).astype(np.uint8)


def clsloc_label(c: int) -> int:
    """The Imagenet32 (map_clsloc, 1-based) label of sorted class ``c``."""
    return MAP_CLSLOC_WNIDS.index(WNIDS[c]) + 1


def write_npy_layout(directory: Path, arrays: np.ndarray) -> Path:
    """The per-class layout: ``directory/<c>.npy`` of shape (n, 3, 32, 32). Returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for c, a in enumerate(arrays):
        np.save(directory / f"{c}.npy", np.ascontiguousarray(a))
    return directory


def write_layout_root(root: Path, arrays: np.ndarray) -> Path:
    """The layout where ``prepare`` writes it: ``root/imagenet32/classes``. Returns ``root``."""
    write_npy_layout(root / "imagenet32" / "classes", arrays)
    return root


def file_order(arrays: np.ndarray, seed: int = 1, extra: dict[int, np.ndarray] | None = None):
    """Interleave the classes in a random file order that keeps each class's own order.

    Returns images (N, 3, 32, 32) uint8 and sorted class indices (N,). ``extra`` maps a
    class to images appended at the very end (later in file order than all the others).
    """
    k, n = arrays.shape[:2]
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(k), n))
    rows = np.zeros(k, dtype=np.int64)
    images = np.empty((k * n, 3, 32, 32), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i] = arrays[c, rows[c]]
        rows[c] += 1
    for c, x in (extra or {}).items():
        images = np.concatenate([images, x])
        labels = np.concatenate([labels, np.full(len(x), c)])
    return images, labels.astype(np.int64)


def write_imagenet32(directory: Path, images: np.ndarray, labels: np.ndarray, *,
                     fmt: str = "pickle", num_batches: int = 2) -> Path:
    """Imagenet32 batches ``train_data_batch_1..num_batches`` (pickle, or ``.npz``): ``data``
    (N, 3072) uint8 planar R, G, B, ``labels`` 1..1000 in map_clsloc order, ``mean``."""
    directory.mkdir(parents=True, exist_ok=True)
    data = images.reshape(len(images), -1)
    clsloc = np.array([clsloc_label(int(c)) for c in labels], dtype=np.int64)
    for b, idx in enumerate(np.array_split(np.arange(len(data)), num_batches), start=1):
        d = {"data": data[idx], "labels": clsloc[idx].tolist(),
             "mean": data.mean(axis=0).astype(np.float32)}
        if fmt == "npz":
            np.savez(directory / f"train_data_batch_{b}.npz", data=d["data"],
                     labels=np.asarray(d["labels"]), mean=d["mean"])
        else:
            with open(directory / f"train_data_batch_{b}", "wb") as f:
                pickle.dump(d, f, protocol=2)
    return directory


def hf_dataset(images: np.ndarray, labels: np.ndarray):
    """A ``datasets.Dataset`` with the hub schema of benjamin-paine/imagenet-1k-32x32
    (image: Image, PNG-encoded; label: ClassLabel over the 1,000 sorted wnids)."""
    import datasets
    from PIL import Image

    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(WNIDS)),
    })
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a.transpose(1, 2, 0)) for a in images],
         "label": [int(c) for c in labels]},
        features=features,
    )


def write_hf_saved(directory: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A ``save_to_disk`` copy of a DatasetDict with train and validation splits."""
    import datasets

    ds = hf_dataset(images, labels)
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(5))}).save_to_disk(str(directory))
    return directory


def write_hf_parquet(directory: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Parquet files in the hub's layout: ``directory/data/train-0000{0,1}-of-00002.parquet``."""
    ds = hf_dataset(images, labels)
    (directory / "data").mkdir(parents=True, exist_ok=True)
    half = len(ds) // 2
    ds.select(range(half)).to_parquet(str(directory / "data" / "train-00000-of-00002.parquet"))
    ds.select(range(half, len(ds))).to_parquet(str(directory / "data" / "train-00001-of-00002.parquet"))
    ds.select(range(5)).to_parquet(str(directory / "data" / "validation-00000-of-00001.parquet"))
    return directory
