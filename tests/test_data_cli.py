"""``lop-bench data`` for CIFAR-100: download, verify and path dispatch to the right loader;
``--allow-checksum-mismatch`` reads a copy that differs from the published files (the
fixtures do), and a poisoned file never runs."""

from __future__ import annotations

import argparse

import pytest

from lop_bench.data import MEMORY, cifar100
from lop_bench.data._common import ALLOW_MISMATCH_ENV_VAR
from lop_bench.data.cli import add_cli
from lop_bench.errors import (
    ChecksumError,
    DatasetNotFoundError,
    InvalidConfigError,
    UnsafeDataError,
)
from tests import cifar_fixtures
from tests.poison import poisoned

ALLOW = "--allow-checksum-mismatch"


@pytest.fixture(autouse=True)
def _strict(monkeypatch):
    """md5 differences are errors unless a test passes the flag."""
    monkeypatch.delenv(ALLOW_MISMATCH_ENV_VAR, raising=False)
    MEMORY.clear()


def _cli(argv):
    parser = argparse.ArgumentParser(prog="lop-bench")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_verify_and_path_for_cifar100(tmp_path, capsys):
    root = str(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="lop-bench data download cifar100"):
        _cli(["data", "verify", "cifar100", "--root", root])
    cifar_fixtures.write_torchvision(tmp_path, *cifar_fixtures.fake_splits(3, 2))
    with pytest.raises(ChecksumError, match=f"train: md5 .*{ALLOW}"):  # not the published files
        _cli(["data", "verify", "cifar100", "--root", root])
    assert _cli(["data", "verify", "cifar100", "--root", root, ALLOW]) == 0
    out = capsys.readouterr().out
    fingerprint = cifar100.load_cifar100(root, use_cache=False,
                                         allow_checksum_mismatch=True).fingerprint
    assert "300 training and 200 test images" in out and fingerprint in out
    assert "md5 differs from the published file (allowed): train, test, meta" in out
    assert _cli(["data", "path", "cifar100", "--root", root]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cifar-100-python")
    with pytest.raises(InvalidConfigError, match="--source for cifar100"):
        _cli(["data", "verify", "cifar100", "--source", "npy", "--root", root])


def test_verify_says_when_the_data_is_not_the_official_cifar100(tmp_path, capsys, monkeypatch):
    cifar_fixtures.write_torchvision(tmp_path, *cifar_fixtures.fake_splits(3, 2))
    monkeypatch.setattr(cifar100, "CIFAR100_FINGERPRINT", "sha256:" + "0" * 64)
    monkeypatch.setenv(ALLOW_MISMATCH_ENV_VAR, "1")  # the variable works as the flag does
    assert _cli(["data", "verify", "cifar100", "--root", str(tmp_path)]) == 1
    assert "NOT the official CIFAR-100" in capsys.readouterr().out


def test_verify_never_runs_a_poisoned_pickle(tmp_path):
    """The report of issue 14: ``lop-bench data verify cifar100`` ran a poisoned ``train``."""
    marker = tmp_path / "ran"
    folder = cifar_fixtures.write_pickles(tmp_path / "cifar-100-python",
                                          *cifar_fixtures.fake_splits(3, 2))
    (folder / "train").write_bytes(poisoned({"fine_labels": [0]}, "data", marker, "os.system"))
    with pytest.raises(ChecksumError, match="train: md5"):
        _cli(["data", "verify", "cifar100", "--root", str(tmp_path)])
    with pytest.raises(UnsafeDataError, match="train: the pickle asks for posix.system"):
        _cli(["data", "verify", "cifar100", "--root", str(tmp_path), ALLOW])
    assert not marker.exists()


@pytest.mark.parametrize(("argv", "hf_id"), [
    ([], cifar100.HF_ID),  # each dataset's own hub id by default
    (["--hf-id", "me/my-cifar100"], "me/my-cifar100"),
])
def test_download_cifar100_fetches_then_verifies(tmp_path, monkeypatch, capsys, argv, hf_id):
    calls = []

    def fake_download(root, source, hf_id, allow_checksum_mismatch):
        calls.append((root, source, hf_id, allow_checksum_mismatch))
        cifar_fixtures.write_torchvision(tmp_path, *cifar_fixtures.fake_splits(3, 2))
        return tmp_path / "cifar-100-python"

    monkeypatch.setattr(cifar100, "download_cifar100", fake_download)
    assert _cli(["data", "download", "cifar100", "--root", str(tmp_path), "--source", "hf",
                 *argv, ALLOW]) == 0
    assert calls == [(str(tmp_path), "hf", hf_id, True)]
    out = capsys.readouterr().out
    assert f"CIFAR-100 is in {tmp_path / 'cifar-100-python'}" in out and "fingerprint:" in out


def test_unknown_datasets_are_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        _cli(["data", "download", "imagenet32"])
    assert "invalid choice: 'imagenet32'" in capsys.readouterr().err
