"""lop_bench.data: MNIST from torchvision's IDX files, a datasets copy or a directory; md5
checks, fingerprints, errors, the cache directory and the ``lop-bench data`` commands.
Everything on small fixtures written in the real formats; nothing touches the network."""

import argparse
import errno
import gzip
import hashlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

from lop_bench.data import cache, mnist
from lop_bench.data._common import ALLOW_MISMATCH_ENV_VAR, fingerprint
from lop_bench.data.cache import MEMORY
from lop_bench.data.cli import add_cli
from lop_bench.errors import (
    ChecksumError,
    DatasetNotFoundError,
    DatasetReadError,
    InvalidConfigError,
)
from tests.mnist_fixtures import (
    fake_mnist,
    idx_bytes,
    write_idx,
    write_parquet,
    write_saved,
    write_torchvision,
)

X, Y = fake_mnist(300)
FP = "sha256:" + hashlib.sha256(X.tobytes() + Y.tobytes()).hexdigest()


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.delenv(ALLOW_MISMATCH_ENV_VAR, raising=False)  # md5 differences are errors
    MEMORY.clear()
    yield
    MEMORY.clear()


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """The same 300 fake digits in every supported format."""
    base = tmp_path_factory.mktemp("mnist")
    return {
        "torchvision": write_torchvision(base / "tv", X, Y),
        "gz_only": write_torchvision(base / "gz", X, Y, gz=True, extracted=False),
        "idx_dir": write_idx(base / "idx", X, Y),
        "saved": write_saved(base / "saved", X, Y),
        "parquet": write_parquet(base / "parquet", X, Y),
    }


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- IDX ---------------------------------------------------------------------------------
def test_idx_reader_decodes_the_big_endian_header_and_uint8_data(tmp_path):
    path = tmp_path / "a-idx3-ubyte"
    path.write_bytes(idx_bytes(X))
    arr = mnist.read_idx(path)
    assert arr.dtype == np.uint8 and arr.shape == (300, 28, 28) and np.array_equal(arr, X)
    gz = tmp_path / "a-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(idx_bytes(Y)))
    assert np.array_equal(mnist.read_idx(gz), Y)
    # a non-uint8 IDX type (big-endian int32) comes back in native order
    header = bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big")
    vals = np.array([1, -2, 70000], dtype=">i4")
    assert mnist.parse_idx(header + vals.tobytes()).tolist() == [1, -2, 70000]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b[:-7], "truncated IDX file"),
        (lambda b: b[:6], "truncated IDX file"),
        (lambda b: b + b"\0", "trailing bytes"),
        (lambda b: b"\x08\x03" + b[2:], "not an IDX file"),
        (lambda b: b"", "not an IDX file"),
    ],
)
def test_a_truncated_or_malformed_idx_file_is_named(tmp_path, mutate, match):
    write_torchvision(tmp_path, X, Y)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(ChecksumError, match=match) as err:
        mnist.load_mnist(tmp_path)
    assert str(path) in str(err.value) and "lop-bench data download mnist" in str(err.value)


def test_corrupt_gzip_and_wrong_shapes_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MNIST_MD5", {})  # past the md5 check, to the gzip reader
    raw = tmp_path / "a" / "MNIST" / "raw"
    write_idx(raw, X, Y, gz=True, extracted=False)
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(ChecksumError, match="corrupt gzip"):
        mnist.load_mnist(tmp_path / "a")
    write_idx(tmp_path / "b", X[:, :27], Y)  # 27 x 28 images
    with pytest.raises(ChecksumError, match=r"\(N, 28, 28\)"):
        mnist.load_mnist(tmp_path / "b", "dir")
    write_idx(tmp_path / "c", X, Y[:299])
    with pytest.raises(ChecksumError, match="300 images but 299 labels"):
        mnist.load_mnist(tmp_path / "c", "dir")
    bad = Y.copy()
    bad[5] = 10
    write_idx(tmp_path / "d", X, bad)
    with pytest.raises(ChecksumError, match="0..10, expected 0..9"):
        mnist.load_mnist(tmp_path / "d", "dir")


# -- sources -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, source, expected_source",
    [
        ("torchvision", "auto", "torchvision"),
        ("torchvision", "torchvision", "torchvision"),
        ("gz_only", "auto", "torchvision"),
        ("torchvision", "dir", "torchvision"),  # torchvision's layout under a named directory
        ("idx_dir", "dir", "dir"),
        ("idx_dir", "auto", "dir"),
        ("saved", "dir", "dir"),
        ("saved", "auto", "dir"),
        ("parquet", "dir", "dir"),
        ("parquet", "auto", "dir"),
    ],
)
def test_every_source_gives_the_same_arrays_and_fingerprint(
    copies, name, source, expected_source, monkeypatch
):
    if name == "gz_only":
        monkeypatch.setattr(mnist, "MNIST_MD5", {})  # the fixture's archives are not published ones
    data = mnist.load_mnist(copies[name], source)
    assert data.source == expected_source
    assert data.images.shape == (300, 784) and data.images.dtype == np.uint8
    assert data.labels.shape == (300,) and data.labels.dtype == np.uint8
    assert np.array_equal(data.images, X.reshape(300, 784)) and np.array_equal(data.labels, Y)
    assert data.fingerprint == FP == fingerprint((X, Y))
    assert not data.images.flags.writeable and not data.labels.flags.writeable


def test_hf_source_loads_a_hub_id_with_datasets(copies, tmp_path):
    # Offline, a local directory in the hub's parquet layout stands for the hub id.
    data = mnist.load_mnist(tmp_path, "hf", hf_id=str(copies["parquet"]))
    assert data.source == "hf" and data.fingerprint == FP
    assert (tmp_path / "huggingface").is_dir()  # the datasets cache lives under the root
    test = mnist.load_mnist(tmp_path, "hf", hf_id=str(copies["parquet"]), split="test")
    assert len(test) == 10 and np.array_equal(test.labels, Y[:10])


def test_the_saved_hub_copy_under_the_root_is_found(tmp_path):
    write_saved(tmp_path / "MNIST" / "hf", X, Y)  # where `data download mnist --source hf` saves
    for source in ("auto", "hf"):
        data = mnist.load_mnist(tmp_path, source, use_cache=False)
        assert data.source == "hf" and data.fingerprint == FP


def test_a_subset_runs_with_its_own_fingerprint(tmp_path):
    write_torchvision(tmp_path, X[:200], Y[:200])
    data = mnist.load_mnist(tmp_path)
    assert len(data) == 200 and data.fingerprint != FP
    assert data.fingerprint == fingerprint((X[:200], Y[:200]))


def test_fingerprint_is_sha256_of_the_images_then_the_labels_as_uint8():
    x, y = X.reshape(300, 784), Y.astype(np.int64)
    assert fingerprint((x, y)) == fingerprint((X, Y)) == FP
    assert fingerprint((X[::-1], Y[::-1])) != FP  # the order is part of the data


def test_the_decoded_arrays_are_shared_not_reloaded(copies):
    a = mnist.load_mnist(copies["torchvision"])
    assert mnist.load_mnist(copies["torchvision"]) is a
    assert mnist.load_mnist(copies["torchvision"], use_cache=False) is not a


def test_hub_schema_is_checked(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "mnist").mkdir()
    pq.write_table(pa.table({"img": [b"x"], "label": [1]}), tmp_path / "mnist" / "train-0.parquet")
    with pytest.raises(ChecksumError, match="'image' and 'label'"):
        mnist.load_mnist(tmp_path, "dir")


# -- checksums ---------------------------------------------------------------------------
def test_an_archive_whose_md5_differs_from_the_published_one_is_refused(tmp_path):
    write_torchvision(tmp_path, X, Y, gz=True)  # a fixture, not the published archive
    gz = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    with pytest.raises(ChecksumError) as err:
        mnist.load_mnist(tmp_path)
    msg = str(err.value)
    assert str(gz) in msg and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg and _md5(gz) in msg
    assert "lop-bench data download mnist" in msg and "--allow-checksum-mismatch" in msg


def test_the_opt_out_reads_differing_archives_and_records_them(tmp_path, monkeypatch):
    write_torchvision(tmp_path, X, Y, gz=True, extracted=False)
    data = mnist.load_mnist(tmp_path, allow_checksum_mismatch=True)
    assert data.fingerprint == FP and data.checked_files == ()
    assert data.md5_mismatches == ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    with pytest.raises(ChecksumError, match="md5"):  # the arrays in memory do not slip through
        mnist.load_mnist(tmp_path)
    monkeypatch.setenv(ALLOW_MISMATCH_ENV_VAR, "1")  # for make() and `lop-bench run`
    assert mnist.load_mnist(tmp_path).md5_mismatches == data.md5_mismatches


def test_make_takes_the_opt_out_its_checksum_error_names(tmp_path, monkeypatch):
    """The error says ``allow_checksum_mismatch=True``: ``make`` takes it (MNIST and
    CIFAR-100, the streams whose files have published md5s)."""
    import lop_bench
    from lop_bench.errors import InvalidConfigError

    monkeypatch.delenv(ALLOW_MISMATCH_ENV_VAR, raising=False)
    write_torchvision(tmp_path, X, Y, gz=True, extracted=False)
    env_id = "lop/PermutedMNIST-v0"
    with pytest.raises(ChecksumError, match=r"allow_checksum_mismatch=True \(lop_bench.make"):
        lop_bench.make(env_id, tier="smoke", root=tmp_path)
    env = lop_bench.make(env_id, tier="smoke", root=tmp_path, allow_checksum_mismatch=True)
    assert env.unwrapped.dataset.md5_mismatches == (
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    envs = lop_bench.make_vec(env_id, tier="smoke", seeds=[0, 1], root=tmp_path,
                              allow_checksum_mismatch=True)
    assert envs.unwrapped.reset()[0].shape[0] == 2
    with pytest.raises(InvalidConfigError, match="allow_checksum_mismatch must be true, false"):
        lop_bench.make(env_id, tier="smoke", root=tmp_path, allow_checksum_mismatch="yes")


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte.gz"])
def test_an_io_error_reading_an_idx_file_names_the_file_and_the_fix(tmp_path, monkeypatch, name):
    write_torchvision(tmp_path, X, Y, gz=name.endswith(".gz"), extracted=not name.endswith(".gz"))
    monkeypatch.setattr(mnist, "MNIST_MD5", {})  # the fixture's archives are not published ones
    real = type(tmp_path).read_bytes

    def failing(path):
        if path.name == name:
            raise OSError(errno.EIO, "Input/output error")
        return real(path)

    monkeypatch.setattr(type(tmp_path), "read_bytes", failing)
    path = tmp_path / "MNIST" / "raw" / name
    with pytest.raises(DatasetReadError) as err:
        mnist.load_mnist(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "Input/output error" in msg
    assert "lop-bench data download mnist" in msg and isinstance(err.value, OSError)


def test_read_idx_names_a_missing_or_unreadable_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="gone-idx3-ubyte: no such file") as err:
        mnist.read_idx(tmp_path / "gone-idx3-ubyte")
    assert "lop-bench data download mnist" in str(err.value)
    (tmp_path / "dir-idx3-ubyte").mkdir()
    with pytest.raises(DatasetReadError, match="dir-idx3-ubyte: cannot be read.*IsADirectoryError"):
        mnist.read_idx(tmp_path / "dir-idx3-ubyte")


def test_archives_with_the_expected_md5_pass_and_are_reported(tmp_path, monkeypatch):
    raw = write_torchvision(tmp_path, X, Y, gz=True) / "MNIST" / "raw"
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        monkeypatch.setitem(mnist.MNIST_MD5, name, _md5(raw / name))
    data = mnist.load_mnist(tmp_path)
    assert data.checked_files == ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    assert data.fingerprint == FP
    # a corrupted archive is caught on the next load, even with the arrays in memory
    blob = bytearray((raw / "train-labels-idx1-ubyte.gz").read_bytes())
    blob[-1] ^= 0xFF
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte.gz: md5"):
        mnist.load_mnist(tmp_path)


def test_published_md5s_are_the_protocols_values():
    assert mnist.MNIST_MD5 == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }


# -- the official fingerprint ------------------------------------------------------------
def test_a_copy_other_than_the_official_one_is_reported(copies, monkeypatch):
    assert mnist.load_mnist(copies["torchvision"]).official is None  # not known yet
    monkeypatch.setattr(mnist, "MNIST_TRAIN_FINGERPRINT", "sha256:" + "0" * 64)
    with pytest.warns(mnist.DatasetMismatchWarning, match="not the official MNIST training set"):
        data = mnist.load_mnist(copies["torchvision"], use_cache=False)
    assert data.official is False and data.fingerprint == FP
    monkeypatch.setattr(mnist, "MNIST_TRAIN_FINGERPRINT", FP)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mnist.load_mnist(copies["torchvision"], use_cache=False).official is True


# -- missing data, download --------------------------------------------------------------
def test_a_missing_dataset_names_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LOP_BENCH_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="`lop-bench data download mnist`") as err:
        mnist.load_mnist()
    assert str(tmp_path / "MNIST" / "raw") in str(err.value)
    with pytest.raises(DatasetNotFoundError, match=f"lop-bench data download mnist --root {tmp_path / 'x'}"):
        mnist.load_mnist(tmp_path / "x", "torchvision")
    with pytest.raises(InvalidConfigError, match="source must be one of"):
        mnist.load_mnist(tmp_path, "torchvison")


class _FakeTorchvision:
    """Stands for torchvision.datasets: MNIST(root, train, download) writes the fixture."""

    calls: list = []

    class MNIST:
        def __init__(self, root, train=True, download=False):
            from pathlib import Path

            _FakeTorchvision.calls.append((root, train, download))
            if download:
                prefix = "train" if train else "t10k"
                write_idx(Path(root) / "MNIST" / "raw", X, Y, prefix=prefix)


@pytest.fixture
def fake_torchvision(monkeypatch):
    real = mnist._require
    _FakeTorchvision.calls = []
    monkeypatch.setattr(
        mnist, "_require", lambda m: _FakeTorchvision if m == "torchvision.datasets" else real(m)
    )
    return _FakeTorchvision.calls


def test_download_true_fetches_with_torchvision_into_the_root(tmp_path, fake_torchvision):
    data = mnist.load_mnist(tmp_path, download=True)
    assert fake_torchvision == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert data.source == "torchvision" and data.fingerprint == FP
    assert (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    with pytest.raises(InvalidConfigError, match="download=True applies"):
        mnist.load_mnist(tmp_path, "dir", download=True)


def test_hf_download_saves_a_copy_that_auto_reads_offline(copies, tmp_path):
    where = mnist.download_mnist(tmp_path, "hf", hf_id=str(copies["parquet"]))
    assert where == tmp_path / "MNIST" / "hf"
    data = mnist.load_mnist(tmp_path)  # auto: no network, the saved copy
    assert data.source == "hf" and data.fingerprint == FP


def test_an_unreachable_hub_names_the_command(tmp_path):
    # conftest sets HF_HUB_OFFLINE=1: the hub id cannot be fetched here
    with pytest.raises(DatasetNotFoundError, match="lop-bench data download mnist --source hf"):
        mnist.load_mnist(tmp_path, "hf")


# -- cache directory and command line ----------------------------------------------------
def test_data_root_is_the_argument_then_the_variable_then_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("LOP_BENCH_DATA", raising=False)
    assert cache.data_root() == cache.DEFAULT_ROOT.expanduser()
    monkeypatch.setenv("LOP_BENCH_DATA", str(tmp_path))
    assert cache.data_root() == tmp_path
    assert cache.data_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.data_root("~/d") == tmp_path / "d"


def _cli(argv):
    parser = argparse.ArgumentParser(prog="lop-bench")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_data_commands(tmp_path, monkeypatch, capsys, fake_torchvision):
    monkeypatch.setenv("LOP_BENCH_DATA", str(tmp_path))
    assert _cli(["data", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="lop-bench data download mnist"):
        _cli(["data", "verify"])
    assert _cli(["data", "download", "mnist"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "MNIST" / "raw") in out and FP in out
    assert _cli(["data", "verify", "mnist", "--source", "dir", "--root", str(tmp_path / "MNIST" / "raw")]) == 0
    assert FP in capsys.readouterr().out
    monkeypatch.setattr(mnist, "MNIST_TRAIN_FINGERPRINT", "sha256:" + "0" * 64)
    with pytest.warns(mnist.DatasetMismatchWarning):
        assert _cli(["data", "verify"]) == 1  # known not to be the official set
    assert "NOT the official" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["data"], ["data", "download"], ["data", "verify"], ["data", "path"]])
def test_every_data_command_help_shows_an_example(argv, capsys):
    with pytest.raises(SystemExit):
        _cli([*argv, "--help"])
    assert "examples:\n  lop-bench data" in capsys.readouterr().out


def test_import_does_not_load_torchvision_or_datasets(copies):
    code = (
        "import sys, lop_bench, lop_bench.data;"
        "from lop_bench.envs.permuted_mnist import PermutedMNISTEnv;"
        f"PermutedMNISTEnv('smoke', root={str(copies['torchvision'])!r});"
        "print([m for m in ('torchvision', 'datasets', 'PIL', 'pyarrow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
