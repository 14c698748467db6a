"""lop_bench.data.cifar100: CIFAR-100 from torchvision's pickles (or tarball), a datasets
copy, parquet or a hub id; md5 checks, fingerprints, errors and what ``lop-bench data verify
cifar100`` prints. Everything on small fixtures written in the real formats; nothing touches
the network."""

import hashlib
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

from lop_bench.data import cifar100
from lop_bench.data.mnist import DatasetMismatchWarning
from lop_bench.errors import ChecksumError, DatasetNotFoundError, InvalidConfigError
from tests.cifar_fixtures import (
    NAMES,
    fake_splits,
    pickle_bytes,
    write_parquet,
    write_pickles,
    write_saved,
    write_tarball,
    write_torchvision,
)

TRAIN, TEST = fake_splits(4, 2)  # 400 training and 200 test images
FP = "sha256:" + hashlib.sha256(
    TRAIN[0].tobytes() + TRAIN[1].tobytes() + TEST[0].tobytes() + TEST[1].tobytes()
).hexdigest()


@pytest.fixture(autouse=True)
def _fresh_cache():
    cifar100.clear_cache()
    yield
    cifar100.clear_cache()


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """The same fake CIFAR-100 in every supported format."""
    base = tmp_path_factory.mktemp("cifar")
    return {
        "torchvision": write_torchvision(base / "tv", TRAIN, TEST),
        "pickles": write_pickles(base / "pickles", TRAIN, TEST),
        "saved": write_saved(base / "saved", TRAIN, TEST),
        "parquet": write_parquet(base / "parquet", TRAIN, TEST),
    }


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _assert_fixture(data):
    assert data.train.images.shape == (400, 3, 32, 32) and data.train.images.dtype == np.uint8
    assert data.train.labels.shape == (400,) and data.train.labels.dtype == np.uint8
    assert np.array_equal(data.train.images, TRAIN[0]) and np.array_equal(data.train.labels, TRAIN[1])
    assert np.array_equal(data.test.images, TEST[0]) and np.array_equal(data.test.labels, TEST[1])
    assert data.fingerprint == FP
    for a in (data.train.images, data.train.labels, data.test.images, data.test.labels):
        assert not a.flags.writeable


# -- sources -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, source, expected_source",
    [
        ("torchvision", "auto", "torchvision"),
        ("torchvision", "torchvision", "torchvision"),
        ("torchvision", "dir", "torchvision"),  # its layout under a named directory
        ("pickles", "dir", "dir"),
        ("pickles", "auto", "dir"),
        ("saved", "dir", "dir"),
        ("saved", "auto", "dir"),
        ("parquet", "dir", "dir"),
        ("parquet", "auto", "dir"),
    ],
)
def test_every_source_gives_the_same_images_labels_and_fingerprint(copies, name, source, expected_source):
    data = cifar100.load_cifar100(copies[name], source)
    assert data.source == expected_source
    _assert_fixture(data)
    assert data.class_names == tuple(NAMES)  # from meta, or the hub's ClassLabel names


def test_the_planar_rows_become_rgb_images():
    """``data`` rows are 1024 R, then 1024 G, then 1024 B values, each plane row-major."""
    x, _ = TRAIN
    row = x.reshape(len(x), 3072)[7]
    assert x[7, 1, 2, 5] == row[1024 + 2 * 32 + 5] and x[7, 2, 31, 0] == row[2048 + 31 * 32]


def test_hf_source_loads_a_hub_id_with_datasets(copies, tmp_path):
    # Offline, a local directory in the hub's parquet layout stands for the hub id.
    data = cifar100.load_cifar100(tmp_path, "hf", hf_id=str(copies["parquet"]))
    assert data.source == "hf" and data.location == str(copies["parquet"])
    _assert_fixture(data)
    assert (tmp_path / "huggingface").is_dir()  # the datasets cache lives under the root


def test_the_saved_hub_copy_under_the_root_is_found(tmp_path):
    write_saved(tmp_path / "CIFAR100" / "hf", TRAIN, TEST)  # where `download --source hf` saves
    for source in ("auto", "hf"):
        data = cifar100.load_cifar100(tmp_path, source, use_cache=False)
        assert data.source == "hf"
        _assert_fixture(data)


def test_a_lone_tarball_is_checked_and_extracted(tmp_path, monkeypatch):
    tarball = write_tarball(tmp_path, TRAIN, TEST)
    with pytest.raises(ChecksumError) as err:  # a fixture, not the published tarball
        cifar100.load_cifar100(tmp_path)
    assert str(tarball) in str(err.value) and "eb9058c3a382ffc7106e4002c42a8d85" in str(err.value)
    assert _md5(tarball) in str(err.value) and not (tmp_path / "cifar-100-python").exists()
    monkeypatch.setitem(cifar100.CIFAR100_MD5, "cifar-100-python.tar.gz", _md5(tarball))
    data = cifar100.load_cifar100(tmp_path)
    assert data.source == "torchvision" and (tmp_path / "cifar-100-python" / "train").is_file()
    assert data.checked_files[0] == "cifar-100-python.tar.gz"
    _assert_fixture(data)


def test_pickle_md5s_are_compared_and_reported(copies, monkeypatch):
    data = cifar100.load_cifar100(copies["torchvision"])
    assert data.md5_mismatches == ("train", "test", "meta") and data.checked_files == ()
    folder = copies["torchvision"] / "cifar-100-python"
    for name in ("train", "test", "meta"):
        monkeypatch.setitem(cifar100.CIFAR100_MD5, name, _md5(folder / name))
    data = cifar100.load_cifar100(copies["torchvision"], use_cache=False)
    assert data.checked_files == ("train", "test", "meta") and data.md5_mismatches == ()


def test_published_md5s_are_the_protocols_values():
    assert cifar100.CIFAR100_MD5 == {
        "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    }
    assert cifar100.CIFAR100_FINGERPRINT is None  # not computed on the real data yet


def test_fingerprint_is_sha256_of_both_splits_as_uint8():
    assert cifar100.cifar_fingerprint(*TRAIN, *TEST) == FP
    assert cifar100.cifar_fingerprint(TRAIN[0], TRAIN[1].astype(np.int64), *TEST) == FP
    assert cifar100.cifar_fingerprint(*TEST, *TRAIN) != FP  # the order is part of the data


def test_a_subset_runs_with_its_own_fingerprint(tmp_path):
    sub = (TRAIN[0][:100], TRAIN[1][:100])
    write_torchvision(tmp_path, sub, TEST)
    data = cifar100.load_cifar100(tmp_path)
    assert len(data.train) == 100 and data.fingerprint == cifar100.cifar_fingerprint(*sub, *TEST)


def test_the_decoded_arrays_are_shared_not_reloaded(copies):
    a = cifar100.load_cifar100(copies["torchvision"])
    assert cifar100.load_cifar100(copies["torchvision"]) is a
    assert cifar100.load_cifar100(copies["torchvision"], use_cache=False) is not a


# -- malformed files ---------------------------------------------------------------------
def _write_train(tmp_path, blob):
    folder = write_pickles(tmp_path / "cifar-100-python", TRAIN, TEST)
    (folder / "train").write_bytes(blob)
    return folder / "train"


@pytest.mark.parametrize(
    "blob, match",
    [
        (b"not a pickle at all", "not a CIFAR-100 pickle"),
        (pickle_bytes(*TRAIN)[:-100], "not a CIFAR-100 pickle"),  # truncated
        (pickle.dumps([1, 2, 3]), "holds a list"),
        (pickle.dumps({"data": TRAIN[0].reshape(400, 3072), "labels": TRAIN[1].tolist()}),
         "expected 'data' and 'fine_labels'"),  # a CIFAR-10 pickle
        (pickle.dumps({"data": TRAIN[0].reshape(400, 3072)[:, :3000], "fine_labels": TRAIN[1].tolist()}),
         r"shape \(400, 3000\), expected uint8 \(N, 3072\)"),
        (pickle.dumps({"data": TRAIN[0].reshape(400, 3072).astype(np.float32),
                       "fine_labels": TRAIN[1].tolist()}), "'data' is float32"),
        (pickle.dumps({"data": TRAIN[0].reshape(400, 3072), "fine_labels": TRAIN[1].tolist()[:-1]}),
         "400 images but 399 labels"),
        (pickle.dumps({"data": TRAIN[0].reshape(400, 3072), "fine_labels": [*TRAIN[1].tolist()[:-1], 100]}),
         r"range over 0\.\.100, expected 0\.\.99"),
    ],
)
def test_malformed_pickles_are_named(tmp_path, blob, match):
    path = _write_train(tmp_path, blob)
    with pytest.raises(ChecksumError, match=match) as err:
        cifar100.load_cifar100(tmp_path)
    assert str(path.parent) in str(err.value)
    assert "lop-bench data download cifar100" in str(err.value)


def test_a_malformed_meta_file_is_named(tmp_path):
    folder = write_pickles(tmp_path / "cifar-100-python", TRAIN, TEST)
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": ["a", "b"]}))
    with pytest.raises(ChecksumError, match="fine_label_names"):
        cifar100.load_cifar100(tmp_path)


def test_hub_schema_is_checked(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "cifar100").mkdir()
    for split in ("train", "test"):
        pq.write_table(pa.table({"image": [b"x"], "label": [1]}), tmp_path / "cifar100" / f"{split}-0.parquet")
    with pytest.raises(ChecksumError, match="'img' and 'fine_label'"):
        cifar100.load_cifar100(tmp_path, "dir")


def test_a_saved_copy_without_a_test_split_is_named(tmp_path):
    import datasets

    from tests.cifar_fixtures import hf_dataset

    datasets.DatasetDict({"train": hf_dataset(*TRAIN)}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DatasetNotFoundError, match="needs 'train' and 'test'"):
        cifar100.load_cifar100(tmp_path / "d", "dir")


# -- missing data, download, verify -------------------------------------------------------
def test_a_missing_dataset_names_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LOP_BENCH_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="`lop-bench data download cifar100`") as err:
        cifar100.load_cifar100()
    assert str(tmp_path / "cifar-100-python") in str(err.value)
    with pytest.raises(DatasetNotFoundError,
                       match=f"lop-bench data download cifar100 --root {tmp_path / 'x'}"):
        cifar100.load_cifar100(tmp_path / "x", "torchvision")
    with pytest.raises(InvalidConfigError, match="source must be one of"):
        cifar100.load_cifar100(tmp_path, "torchvison")
    with pytest.raises(InvalidConfigError, match="download=True applies"):
        cifar100.load_cifar100(tmp_path, "dir", download=True)


def test_an_unreachable_hub_names_the_command(tmp_path):
    # conftest sets HF_HUB_OFFLINE=1: the hub id cannot be fetched here
    with pytest.raises(DatasetNotFoundError, match="lop-bench data download cifar100 --source hf"):
        cifar100.load_cifar100(tmp_path, "hf")


class _FakeTorchvision:
    """Stands for torchvision.datasets: CIFAR100(root, train, download) writes the fixture."""

    calls: list = []

    class CIFAR100:
        def __init__(self, root, train=True, download=False):
            from pathlib import Path

            _FakeTorchvision.calls.append((root, train, download))
            if download:
                write_torchvision(Path(root), TRAIN, TEST)


@pytest.fixture
def fake_torchvision(monkeypatch):
    real = cifar100._require
    _FakeTorchvision.calls = []
    monkeypatch.setattr(
        cifar100, "_require", lambda m: _FakeTorchvision if m == "torchvision.datasets" else real(m)
    )
    return _FakeTorchvision.calls


def test_download_fetches_with_torchvision_into_the_root(tmp_path, fake_torchvision):
    data = cifar100.load_cifar100(tmp_path, download=True)
    assert fake_torchvision == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert data.source == "torchvision"
    _assert_fixture(data)
    assert cifar100.download_cifar100(tmp_path) == tmp_path / "cifar-100-python"


def test_hf_download_saves_a_copy_that_auto_reads_offline(copies, tmp_path):
    where = cifar100.download_cifar100(tmp_path, "hf", hf_id=str(copies["parquet"]))
    assert where == tmp_path / "CIFAR100" / "hf"
    data = cifar100.load_cifar100(tmp_path)  # auto: no network, the saved copy
    assert data.source == "hf"
    _assert_fixture(data)


def test_verify_reports_files_fingerprint_and_status(copies, monkeypatch):
    status, lines = cifar100.verify_cifar100(copies["torchvision"])
    text = "\n".join(lines)
    assert status == 0 and "400 training and 200 test images" in text
    assert str(copies["torchvision"] / "cifar-100-python") in text and "(torchvision)" in text
    assert f"fingerprint: {FP}" in text and "md5 differs from the published file: train, test, meta" in text
    assert "not recorded in this lop-bench version" in text
    monkeypatch.setattr(cifar100, "CIFAR100_FINGERPRINT", FP)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        status, lines = cifar100.verify_cifar100(copies["torchvision"])
    assert status == 0 and "the official CIFAR-100" in lines[-1]
    monkeypatch.setattr(cifar100, "CIFAR100_FINGERPRINT", "sha256:" + "0" * 64)
    with pytest.warns(DatasetMismatchWarning, match="not the official dataset"):
        status, lines = cifar100.verify_cifar100(copies["torchvision"])
    assert status == 1 and "NOT the official CIFAR-100" in lines[-1]
    with pytest.raises(DatasetNotFoundError, match="lop-bench data download cifar100"):
        cifar100.verify_cifar100(copies["torchvision"] / "nowhere")


def test_import_does_not_load_torchvision_or_datasets(copies):
    code = (
        "import sys, lop_bench, lop_bench.data;"
        "from lop_bench.envs.incremental_cifar import IncrementalCIFAR100Env;"
        f"IncrementalCIFAR100Env('smoke', root={str(copies['torchvision'])!r}, train_per_class=2,"
        " val_per_class=1, held_out_per_class=1, test_per_class=2).reset(seed=0);"
        "print([m for m in ('torchvision', 'datasets', 'PIL', 'pyarrow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
