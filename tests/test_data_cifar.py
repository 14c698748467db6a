"""lop_bench.data.cifar100: CIFAR-100 from torchvision's pickles (or tarball), a datasets
copy, parquet or a hub id; md5 checks before unpickling (and their opt-out), the restricted
unpickler, fingerprints, errors and what ``lop-bench data verify cifar100`` prints.
Everything on small fixtures written in the real formats; nothing touches the network.

The fixture's pickles stand for the published files: ``_published`` sets the published
md5s to theirs, so every load here takes the default, strict path unless a test says
otherwise."""

import hashlib
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

from lop_bench.data import MEMORY, DatasetMismatchWarning, cifar100, fingerprint
from lop_bench.data._common import ALLOW_MISMATCH_ENV_VAR
from lop_bench.errors import (
    ChecksumError,
    DatasetNotFoundError,
    InvalidConfigError,
    UnsafeDataError,
)
from tests.cifar_fixtures import (
    NAMES,
    fake_splits,
    meta_bytes,
    pickle_bytes,
    write_parquet,
    write_pickles,
    write_saved,
    write_tarball,
    write_torchvision,
)
from tests.poison import poisoned

TRAIN, TEST = fake_splits(4, 2)  # 400 training and 200 test images
FP = "sha256:" + hashlib.sha256(
    TRAIN[0].tobytes() + TRAIN[1].tobytes() + TEST[0].tobytes() + TEST[1].tobytes()
).hexdigest()


PUBLISHED = dict(cifar100.CIFAR100_MD5)  # the real published md5s
FIXTURE_MD5 = {name: hashlib.md5(blob).hexdigest() for name, blob in (
    ("train", pickle_bytes(*TRAIN, "train")), ("test", pickle_bytes(*TEST, "test")),
    ("meta", meta_bytes()))}


@pytest.fixture(autouse=True)
def _fresh_cache():
    MEMORY.clear()
    yield
    MEMORY.clear()


@pytest.fixture(autouse=True)
def _published(monkeypatch):
    """The fixture's pickles are "the published files"; the opt-out is off."""
    monkeypatch.setattr(cifar100, "CIFAR100_MD5", {**PUBLISHED, **FIXTURE_MD5})
    monkeypatch.delenv(ALLOW_MISMATCH_ENV_VAR, raising=False)


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


def test_pickle_md5s_are_checked_and_a_difference_is_an_error(copies, monkeypatch):
    data = cifar100.load_cifar100(copies["torchvision"])
    assert data.checked_files == ("train", "test", "meta") and data.md5_mismatches == ()
    monkeypatch.setattr(cifar100, "CIFAR100_MD5", PUBLISHED)  # the real values: all differ
    folder = copies["torchvision"] / "cifar-100-python"
    for source in ("auto", "torchvision", "dir"):
        with pytest.raises(ChecksumError) as err:
            cifar100.load_cifar100(copies["torchvision"], source, use_cache=False)
        msg = str(err.value)
        assert str(folder / "train") in msg and PUBLISHED["train"] in msg
        assert FIXTURE_MD5["train"] in msg and "lop-bench data download cifar100" in msg
        assert "allow_checksum_mismatch=True" in msg and ALLOW_MISMATCH_ENV_VAR in msg


def test_the_opt_out_reads_a_differing_copy_and_records_it(copies, monkeypatch):
    monkeypatch.setattr(cifar100, "CIFAR100_MD5", PUBLISHED)
    data = cifar100.load_cifar100(copies["torchvision"], allow_checksum_mismatch=True)
    assert data.md5_mismatches == ("train", "test", "meta") and data.checked_files == ()
    _assert_fixture(data)  # the same arrays: the fingerprint says which data it is
    with pytest.raises(ChecksumError, match="md5"):  # the cached load does not slip through
        cifar100.load_cifar100(copies["torchvision"])
    assert cifar100.load_cifar100(copies["torchvision"], allow_checksum_mismatch=True) is data
    monkeypatch.setenv(ALLOW_MISMATCH_ENV_VAR, "1")  # for make() and `lop-bench run`
    assert cifar100.load_cifar100(copies["torchvision"], use_cache=False).md5_mismatches \
        == ("train", "test", "meta")
    with pytest.raises(ChecksumError, match="md5"):  # an explicit False wins
        cifar100.load_cifar100(copies["torchvision"], allow_checksum_mismatch=False)


def test_published_md5s_are_the_protocols_values():
    assert PUBLISHED == {
        "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    }
    assert cifar100.CIFAR100_FINGERPRINT is None  # not computed on the real data yet


def test_fingerprint_is_sha256_of_both_splits_as_uint8():
    assert fingerprint((*TRAIN, *TEST)) == FP
    assert fingerprint((TRAIN[0], TRAIN[1].astype(np.int64), *TEST)) == FP
    assert fingerprint((*TEST, *TRAIN)) != FP  # the order is part of the data


def test_a_subset_runs_with_its_own_fingerprint_when_allowed(tmp_path):
    sub = (TRAIN[0][:100], TRAIN[1][:100])
    write_torchvision(tmp_path, sub, TEST)
    with pytest.raises(ChecksumError, match="train"):
        cifar100.load_cifar100(tmp_path)
    data = cifar100.load_cifar100(tmp_path, allow_checksum_mismatch=True)
    assert len(data.train) == 100 and data.fingerprint == fingerprint((*sub, *TEST))
    assert data.md5_mismatches == ("train",) and data.checked_files == ("test", "meta")


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
        (b"not a pickle at all", "not a readable CIFAR-100 pickle"),
        (pickle_bytes(*TRAIN)[:-100], "not a readable CIFAR-100 pickle"),  # truncated
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
    with pytest.raises(ChecksumError, match="md5"):  # first of all, not the published file
        cifar100.load_cifar100(tmp_path)
    with pytest.raises(ChecksumError, match=match) as err:
        cifar100.load_cifar100(tmp_path, allow_checksum_mismatch=True)
    assert str(path.parent) in str(err.value)
    assert "lop-bench data download cifar100" in str(err.value)


def test_a_malformed_meta_file_is_named(tmp_path):
    folder = write_pickles(tmp_path / "cifar-100-python", TRAIN, TEST)
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": ["a", "b"]}))
    with pytest.raises(ChecksumError, match="fine_label_names"):
        cifar100.load_cifar100(tmp_path, allow_checksum_mismatch=True)


# -- poisoned pickles: refused by the md5 check, and by the unpickler ---------------------
_TEMPLATES = {
    "train": ({"fine_labels": TRAIN[1].tolist(), "coarse_labels": [0] * 400}, "data"),
    "test": ({"fine_labels": TEST[1].tolist(), "coarse_labels": [0] * 200}, "data"),
    "meta": ({"coarse_label_names": ["c"] * 20}, "fine_label_names"),
}


@pytest.mark.parametrize("name", ["train", "test", "meta"])
def test_a_poisoned_pickle_never_runs(tmp_path, name):
    marker = tmp_path / "ran"
    folder = write_pickles(tmp_path / "cifar-100-python", TRAIN, TEST)
    (folder / name).write_bytes(poisoned(*_TEMPLATES[name], marker))
    with pytest.raises(ChecksumError, match=f"{folder / name}: md5"):  # before unpickling
        cifar100.load_cifar100(tmp_path)
    assert not marker.exists()
    with pytest.raises(UnsafeDataError, match="__builtin__.exec") as err:  # opted out
        cifar100.load_cifar100(tmp_path, allow_checksum_mismatch=True)
    assert str(folder / name) in str(err.value) and not marker.exists()
    with pytest.raises(UnsafeDataError):
        cifar100.read_pickle(folder / name)
    assert not marker.exists()


def test_a_poisoned_file_never_runs_through_make(tmp_path, monkeypatch):
    """The report of issue 14: a poisoned ``train`` in ``$LOP_BENCH_DATA`` ran a shell
    command on ``make("lop/IncrementalCIFAR100-v0")``."""
    import lop_bench

    marker = tmp_path / "ran"
    folder = write_pickles(tmp_path / "cifar-100-python", TRAIN, TEST)
    (folder / "train").write_bytes(poisoned(*_TEMPLATES["train"], marker, "os.system"))
    monkeypatch.setenv("LOP_BENCH_DATA", str(tmp_path))
    with pytest.raises(ChecksumError, match="md5"):
        lop_bench.make("lop/IncrementalCIFAR100-v0", tier="smoke")
    monkeypatch.setenv(ALLOW_MISMATCH_ENV_VAR, "1")
    with pytest.raises(UnsafeDataError, match="posix.system"):
        lop_bench.make("lop/IncrementalCIFAR100-v0", tier="smoke")
    assert not marker.exists()


def test_a_poisoned_tarball_is_refused_unextracted_and_never_runs(tmp_path, monkeypatch):
    import io
    import tarfile

    marker = tmp_path / "ran"
    blob = poisoned(*_TEMPLATES["train"], marker)
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tf:
        for name, data in (("train", blob), ("test", pickle_bytes(*TEST, "test")),
                           ("meta", meta_bytes())):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ChecksumError, match="cifar-100-python.tar.gz: md5"):
        cifar100.load_cifar100(tmp_path)
    assert not (tmp_path / "cifar-100-python").exists()  # nothing extracted
    with pytest.raises(UnsafeDataError, match="train"):
        cifar100.load_cifar100(tmp_path, allow_checksum_mismatch=True)
    assert not marker.exists()


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
    status, lines = cifar100.load_cifar100(copies["torchvision"], use_cache=False).verify()
    text = "\n".join(lines)
    assert status == 0 and "400 training and 200 test images" in text
    assert str(copies["torchvision"] / "cifar-100-python") in text and "(torchvision)" in text
    assert f"fingerprint: {FP}" in text and "md5 ok: train, test, meta" in text
    assert "not recorded in this lop-bench version" in text
    monkeypatch.setattr(cifar100, "CIFAR100_MD5", PUBLISHED)
    with pytest.raises(ChecksumError, match="md5"):
        cifar100.load_cifar100(copies["torchvision"], use_cache=False).verify()
    _, lines = cifar100.load_cifar100(copies["torchvision"], allow_checksum_mismatch=True,
                                      use_cache=False).verify()
    assert "md5 differs from the published file (allowed): train, test, meta" in "\n".join(lines)
    monkeypatch.setattr(cifar100, "CIFAR100_MD5", {**PUBLISHED, **FIXTURE_MD5})
    monkeypatch.setattr(cifar100, "CIFAR100_FINGERPRINT", FP)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        status, lines = cifar100.load_cifar100(copies["torchvision"], use_cache=False).verify()
    assert status == 0 and "the official CIFAR-100" in lines[-1]
    monkeypatch.setattr(cifar100, "CIFAR100_FINGERPRINT", "sha256:" + "0" * 64)
    with pytest.warns(DatasetMismatchWarning, match="not the official CIFAR-100"):
        status, lines = cifar100.load_cifar100(copies["torchvision"], use_cache=False).verify()
    assert status == 1 and "NOT the official CIFAR-100" in lines[-1]
    with pytest.raises(DatasetNotFoundError, match="lop-bench data download cifar100"):
        cifar100.load_cifar100(copies["torchvision"] / "nowhere", use_cache=False).verify()


def test_import_does_not_load_torchvision_or_datasets(copies):
    code = (
        "import sys, lop_bench, lop_bench.data;"
        "from lop_bench.envs.incremental_cifar import IncrementalCIFAR100Env;"
        f"IncrementalCIFAR100Env('smoke', root={str(copies['torchvision'])!r}, train_per_class=2,"
        " val_per_class=1, held_out_per_class=1, test_per_class=2).reset(seed=0);"
        "print([m for m in ('torchvision', 'datasets', 'PIL', 'pyarrow') if m in sys.modules])"
    )
    env = {**os.environ, ALLOW_MISMATCH_ENV_VAR: "1"}  # the fixture is not the published data
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    assert out.stdout.strip() == "[]"


def test_make_takes_the_checksum_opt_out(tmp_path, monkeypatch):
    import lop_bench
    from tests import cifar_fixtures

    monkeypatch.delenv(ALLOW_MISMATCH_ENV_VAR, raising=False)
    cifar_fixtures.write_torchvision(tmp_path, *cifar_fixtures.fake_splits(10, 5))
    env_id = "lop/IncrementalCIFAR100-v0"
    with pytest.raises(ChecksumError, match=r"allow_checksum_mismatch=True \(lop_bench.make"):
        lop_bench.make(env_id, tier="smoke", root=str(tmp_path))
    env = lop_bench.make(env_id, tier="smoke", root=str(tmp_path), allow_checksum_mismatch=True)
    assert set(env.unwrapped.dataset.md5_mismatches) >= {"train", "test"}
