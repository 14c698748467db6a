"""Shared fixtures. Tests never touch the network."""

import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# The dataset fixtures cannot have the published files' md5s: read them as a user with a
# copy that differs on purpose would (the data loaders' own tests unset it to check the
# strict default). Child processes inherit it.
os.environ.setdefault("LOP_BENCH_ALLOW_CHECKSUM_MISMATCH", "1")

REG = "lop/SlowlyChangingRegression-v0"


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session", autouse=True)
def _fixture_datasets(tmp_path_factory):
    """A small MNIST in torchvision's real on-disk layout as the session's data cache, so
    every stream runs offline (tests that need another root pass their own)."""
    from tests import cifar_fixtures
    from tests.imagenet_fixtures import fake_imagenet
    from tests.imagenet_fixtures import write_layout_root as write_imagenet_layout
    from tests.mnist_fixtures import fake_mnist, write_torchvision

    root = tmp_path_factory.mktemp("lop_bench_data")
    images, labels = fake_mnist(300)
    write_torchvision(root, images, labels)
    write_imagenet_layout(root, fake_imagenet(4, 30))  # Continual ImageNet's smoke tier
    cifar_fixtures.write_torchvision(root, *cifar_fixtures.fake_splits(10, 5))  # CIFAR-100 smoke
    old = os.environ.get("LOP_BENCH_DATA")
    os.environ["LOP_BENCH_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("LOP_BENCH_DATA", None)
    else:
        os.environ["LOP_BENCH_DATA"] = old
