"""Datasets of the lop-bench streams: the cache directory, loaders, checksums, fingerprints.

>>> from lop_bench.data import MEMORY, load_mnist
>>> mnist = load_mnist()            # $LOP_BENCH_DATA or ~/.cache/lop_bench
>>> mnist.images.shape, mnist.fingerprint
((60000, 784), 'sha256:...')
>>> print("\n".join(mnist.verify()[1]))   # what `lop-bench data verify` prints
>>> MEMORY.clear()                  # forget the datasets decoded in this process

The command line: ``lop-bench data download mnist``, ``lop-bench data prepare imagenet32
--from DIR``, ``lop-bench data verify [imagenet32]``, ``lop-bench data path``. Nothing here
imports torchvision or ``datasets`` until a source needs them (the ``lop-bench[data]``
extra).
"""

from __future__ import annotations

from lop_bench.data._common import DatasetMismatchWarning, LoadedData, fingerprint
from lop_bench.data.cache import ENV_VAR, MEMORY, data_root
from lop_bench.data.cifar100 import (
    CIFAR100_FINGERPRINT,
    CIFAR100_MD5,
    CIFAR100Data,
    download_cifar100,
    load_cifar100,
)
from lop_bench.data.imagenet import (
    IMAGENET32_FINGERPRINT,
    ImageNet32Data,
    load_imagenet32,
    prepare_imagenet32,
)
from lop_bench.data.imagenet_wnids import WNIDS
from lop_bench.data.mnist import (
    MNIST_MD5,
    MNIST_TRAIN_FINGERPRINT,
    MNISTData,
    download_mnist,
    load_mnist,
    read_idx,
)

__all__ = [
    "ENV_VAR",
    "MEMORY",
    "data_root",
    "DatasetMismatchWarning",
    "LoadedData",
    "fingerprint",
    "CIFAR100_FINGERPRINT",
    "CIFAR100_MD5",
    "CIFAR100Data",
    "download_cifar100",
    "load_cifar100",
    "MNIST_MD5",
    "MNIST_TRAIN_FINGERPRINT",
    "MNISTData",
    "download_mnist",
    "load_mnist",
    "read_idx",
    "IMAGENET32_FINGERPRINT",
    "ImageNet32Data",
    "load_imagenet32",
    "prepare_imagenet32",
    "WNIDS",
]
