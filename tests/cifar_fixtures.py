"""Small CIFAR-100 fixtures in the real on-disk formats: torchvision's pickles (and tarball),
a ``save_to_disk`` copy and the hub's parquet layout, all with the schema of the real files."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

NAMES = [f"class_{i:02d}" for i in range(100)]


def fake_cifar(per_class: int = 10, seed: int = 0, shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` learnable fake images of each of the 100 classes: a fixed random
    pattern per class plus noise, in a shuffled file order (like the real files).

    Returns images (N, 3, 32, 32) uint8 and fine labels (N,) uint8, N = 100 * per_class.
    """
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(1234).integers(0, 256, size=(100, 3, 32, 32))
    labels = np.repeat(np.arange(100), per_class).astype(np.uint8)
    if shuffle:
        labels = labels[rng.permutation(len(labels))]
    noise = rng.integers(0, 256, size=(len(labels), 3, 32, 32))
    images = (0.7 * templates[labels] + 0.3 * noise).astype(np.uint8)
    return images, labels


def fake_splits(train_per_class: int = 10, test_per_class: int = 5):
    """Train and test splits: ``((x_train, y_train), (x_test, y_test))``."""
    return fake_cifar(train_per_class, seed=0), fake_cifar(test_per_class, seed=1)


def pickle_bytes(images: np.ndarray, labels: np.ndarray, name: str = "train") -> bytes:
    """A split as the official pickle holds it: a dict with ``data`` (N, 3072) uint8 in R, G,
    B planes, ``fine_labels`` and ``coarse_labels`` lists, ``filenames``, ``batch_label``."""
    obj = {
        "filenames": [f"img_{i}.png" for i in range(len(labels))],
        "batch_label": f"{name} batch",
        "fine_labels": [int(v) for v in labels],
        "coarse_labels": [int(v) // 5 for v in labels],
        "data": images.reshape(len(images), 3072),
    }
    return pickle.dumps(obj, protocol=2)


def meta_bytes() -> bytes:
    return pickle.dumps({"fine_label_names": NAMES, "coarse_label_names": [f"c{i}" for i in range(20)]},
                        protocol=2)


def write_pickles(directory: Path, train, test) -> Path:
    """``directory/{train,test,meta}``; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train").write_bytes(pickle_bytes(*train, "train"))
    (directory / "test").write_bytes(pickle_bytes(*test, "test"))
    (directory / "meta").write_bytes(meta_bytes())
    return directory


def write_torchvision(root: Path, train, test) -> Path:
    """torchvision's layout: ``root/cifar-100-python/{train,test,meta}``. Returns ``root``."""
    write_pickles(root / "cifar-100-python", train, test)
    return root


def write_tarball(root: Path, train, test) -> Path:
    """Only the tarball ``root/cifar-100-python.tar.gz`` (as downloaded, not extracted)."""
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tf:
        for name, blob in (("train", pickle_bytes(*train, "train")),
                           ("test", pickle_bytes(*test, "test")), ("meta", meta_bytes())):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return root / "cifar-100-python.tar.gz"


def hf_dataset(images: np.ndarray, labels: np.ndarray):
    """A ``datasets.Dataset`` with the hub schema of uoft-cs/cifar100 (img: Image,
    fine_label and coarse_label: ClassLabel)."""
    import datasets
    from PIL import Image

    features = datasets.Features({
        "img": datasets.Image(),
        "fine_label": datasets.ClassLabel(names=NAMES),
        "coarse_label": datasets.ClassLabel(names=[f"c{i}" for i in range(20)]),
    })
    return datasets.Dataset.from_dict(
        {"img": [Image.fromarray(a.transpose(1, 2, 0)) for a in images],
         "fine_label": labels.tolist(), "coarse_label": (labels // 5).tolist()},
        features=features,
    )


def write_saved(directory: Path, train, test) -> Path:
    """A ``save_to_disk`` copy of a DatasetDict with train and test splits."""
    import datasets

    datasets.DatasetDict({"train": hf_dataset(*train), "test": hf_dataset(*test)}).save_to_disk(str(directory))
    return directory


def write_parquet(directory: Path, train, test) -> Path:
    """Parquet in the hub's layout: ``directory/cifar100/{train,test}-00000-of-00001.parquet``."""
    (directory / "cifar100").mkdir(parents=True, exist_ok=True)
    hf_dataset(*train).to_parquet(str(directory / "cifar100" / "train-00000-of-00001.parquet"))
    hf_dataset(*test).to_parquet(str(directory / "cifar100" / "test-00000-of-00001.parquet"))
    return directory
