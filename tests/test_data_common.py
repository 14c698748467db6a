"""lop_bench.data._common: the restricted unpickler every pickle-reading loader uses, the
md5 check against published values with its opt-out, and errors that name the file."""

from __future__ import annotations

import codecs
import io
import os
import pickle
import sys

import numpy as np
import pytest

from lop_bench.data import _common
from lop_bench.data._common import (
    ALLOW_MISMATCH_ENV_VAR,
    DataUnpickler,
    check_md5s,
    checksum_mismatch_allowed,
    load_pickle,
)
from lop_bench.errors import (
    ChecksumError,
    DatasetNotFoundError,
    DatasetReadError,
    InvalidConfigError,
    UnsafeDataError,
)
from tests.poison import PAYLOADS, Payload, payload, poisoned

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)
FIX = "Fetch it again: lop-bench data download x."

PLAIN = {
    "data": np.arange(24, dtype=np.uint8).reshape(2, 12),
    "strided": np.arange(12, dtype=np.int64).reshape(3, 4).T,  # not C-contiguous
    "floats": np.array([1.5, -2.0], dtype=">f8"),  # big-endian
    "zero_d": np.array(7, dtype=np.int16),
    "text": np.array(["ab", "c"]),
    "scalars": [np.int64(3), np.float32(0.5), np.uint8(255)],
    "labels": [1, 2, 3],
    "names": ("a", "b"),
    "bytes": b"\x00\xffxy",
    "empty": b"",
    "buf": bytearray(b"z"),
    "sets": {1, 2},
    "frozen": frozenset({"x"}),
    "numbers": (1, 2.5, 1 + 2j, 10**30, True, None),
}


def _load(blob: bytes) -> object:
    return DataUnpickler(io.BytesIO(blob), encoding="latin1").load()


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


# -- plain data loads --------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_data_and_numpy_arrays_load_as_pickle_loads_them(protocol):
    blob = pickle.dumps(PLAIN, protocol=protocol)
    assert _same(_load(blob), pickle.loads(blob, encoding="latin1"))
    assert _same(_load(blob)["data"], PLAIN["data"]) and _load(blob)["bytes"] == b"\x00\xffxy"


def test_numpy_1_module_names_load_too():
    """Pickles written by numpy 1 (the official CIFAR-100 and Imagenet32 files) name
    ``numpy.core.multiarray``; numpy 2 renamed it ``numpy._core``."""
    blob = pickle.dumps({"data": PLAIN["data"], "x": np.float32(2)}, protocol=2)
    old = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != blob and b"numpy._core" not in old
    assert _same(_load(old), {"data": PLAIN["data"], "x": np.float32(2)})


# A Python 2 cPickle (protocol 2) of {'data': uint8 array [0, 1, 2, 3], 'fine_labels': [1, 2]}
# as numpy 1 wrote it, like the official CIFAR-100 files: py2 ``str`` (SHORT_BINSTRING)
# keys and pixel bytes, ``numpy.core.multiarray._reconstruct``.
PY2_PICKLE = (
    b"\x80\x02}q\x00(U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray"
    b"\nq\x03K\x00\x85U\x01b\x87Rq\x04(K\x01K\x04\x85cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01"
    b"\x87Rq\x06(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x04\x00\x01"
    b"\x02\x03tbU\x0bfine_labelsq\x07]q\x08(K\x01K\x02eu."
)


def test_python_2_pickles_load_with_latin1_strings():
    out = _load(PY2_PICKLE)
    assert _same(out, {"data": np.arange(4, dtype=np.uint8), "fine_labels": [1, 2]})


# -- anything else is refused, and never runs ---------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", PAYLOADS)
def test_a_payload_is_refused_and_never_runs(tmp_path, kind, protocol):
    marker = tmp_path / "ran"
    path = tmp_path / "train"
    path.write_bytes(poisoned({"labels": [1, 2]}, "data", marker, kind, protocol))
    with pytest.raises(UnsafeDataError) as err:
        load_pickle(path, "CIFAR-100 pickle", FIX)
    msg = str(err.value)
    assert str(path) in msg and ("exec" in msg or "system" in msg) and FIX in msg
    assert "ran none of it" in msg and not marker.exists()
    pickle.loads(path.read_bytes())  # the full unpickler runs it: the payload is live
    assert marker.exists()


def test_a_payload_inside_an_object_array_is_refused(tmp_path):
    marker = tmp_path / "ran"
    arr = np.array([payload(marker), 1], dtype=object)
    with pytest.raises(UnsafeDataError, match=r"__builtin__\.exec"):
        _common.load_pickle(_write(tmp_path, pickle.dumps({"data": arr}, protocol=2)), "x", FIX)
    assert not marker.exists()


def test_no_module_is_imported_by_the_name_a_file_gives(tmp_path):
    assert "antigravity" not in sys.modules  # importing it would open a web browser
    blob = b"\x80\x02cantigravity\ngeohash\nq\x00."
    with pytest.raises(UnsafeDataError, match="antigravity.geohash"):
        load_pickle(_write(tmp_path, blob), "x", FIX)
    assert "antigravity" not in sys.modules


def test_only_the_latin1_codec_is_allowed(tmp_path):
    ok = pickle.dumps(b"\xffbytes", protocol=2)  # _codecs.encode('\xffbytes', 'latin1')
    assert b"_codecs" in ok and load_pickle(_write(tmp_path, ok), "x", FIX) == b"\xffbytes"
    other = pickle.dumps(Payload(codecs.encode, "abc", "rot13"), protocol=2)
    with pytest.raises(UnsafeDataError, match=r"_codecs.encode\(str, 'rot13'"):
        load_pickle(_write(tmp_path, other), "x", FIX)


def test_a_file_cannot_change_the_allowed_functions(tmp_path):
    """BUILD with a slot state on an allowed function would set its attributes (here the
    defaults of ``_codecs.encode``'s stand-in) for the rest of the process."""
    blob = (b"\x80\x02c_codecs\nencode\nN}X\x0c\x00\x00\x00__defaults__X\x06\x00\x00\x00latin1"
            b"\x85s\x86b.")
    with pytest.raises(UnsafeDataError, match="a state for lop_bench.data._common._latin1_encode"):
        load_pickle(_write(tmp_path, blob), "x", FIX)
    assert _common._latin1_encode.__defaults__ == ("utf-8", "strict")
    frombuffer = blob.replace(b"c_codecs\nencode", b"cnumpy._core.numeric\n_frombuffer")
    with pytest.raises(UnsafeDataError, match="a state for numpy._core.numeric._frombuffer"):
        load_pickle(_write(tmp_path, frombuffer), "x", FIX)


def test_persistent_ids_are_refused(tmp_path):
    class WithIds(pickle.Pickler):
        def persistent_id(self, obj):
            return "outside" if obj == "ref" else None

    buf = io.BytesIO()
    WithIds(buf, protocol=2).dump({"data": "ref"})
    with pytest.raises(UnsafeDataError, match="persistent id 'outside'"):
        load_pickle(_write(tmp_path, buf.getvalue()), "x", FIX)


# -- broken and unreadable files ------------------------------------------------------------
@pytest.mark.parametrize("blob", [b"", b"not a pickle", pickle.dumps(PLAIN, protocol=4)[:-50]])
def test_a_broken_pickle_is_a_checksum_error_naming_the_file(tmp_path, blob):
    path = _write(tmp_path, blob)
    with pytest.raises(ChecksumError, match="not a readable CIFAR-100 pickle") as err:
        load_pickle(path, "CIFAR-100 pickle", FIX)
    assert str(path) in str(err.value) and FIX in str(err.value)


def test_unreadable_and_missing_files_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "train").mkdir()  # a directory where the file should be
    with pytest.raises(DatasetReadError, match="cannot be read") as err:
        load_pickle(tmp_path / "train", "x", FIX)
    assert str(tmp_path / "train") in str(err.value) and FIX in str(err.value)
    assert isinstance(err.value, OSError)
    with pytest.raises(DatasetNotFoundError, match="no such file") as err:
        load_pickle(tmp_path / "gone", "x", FIX)
    assert str(tmp_path / "gone") in str(err.value)
    with pytest.raises(DatasetReadError, match="cannot be read"):
        check_md5s([(tmp_path / "train", "0" * 32)], "X", FIX, allow_mismatch=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, not root")
def test_a_file_without_read_permission_is_named(tmp_path):
    path = _write(tmp_path, pickle.dumps(PLAIN))
    path.chmod(0)
    try:
        with pytest.raises(DatasetReadError, match="PermissionError") as err:
            load_pickle(path, "x", FIX)
    finally:
        path.chmod(0o644)
    assert str(path) in str(err.value)


# -- md5 against the published value, and the opt-out ---------------------------------------
def test_md5s_are_compared_and_a_difference_is_an_error_unless_allowed(tmp_path):
    good, bad = _write(tmp_path, b"published", "a"), _write(tmp_path, b"changed", "b")
    md5 = _common.md5_file(good)
    assert check_md5s([(good, md5)], "X", FIX, allow_mismatch=False) == (("a",), ())
    with pytest.raises(ChecksumError) as err:
        check_md5s([(good, md5), (bad, md5)], "CIFAR-100", FIX, allow_mismatch=False)
    msg = str(err.value)
    assert str(bad) in msg and md5 in msg and _common.md5_file(bad) in msg and FIX in msg
    assert "allow_checksum_mismatch=True" in msg and "--allow-checksum-mismatch" in msg
    assert f"{ALLOW_MISMATCH_ENV_VAR}=1" in msg
    assert check_md5s([(good, md5), (bad, md5)], "X", FIX, allow_mismatch=True) == (("a",), ("b",))


@pytest.mark.parametrize(("value", "expected"), [
    (None, False), ("", False), ("0", False), ("no", False), ("false", False),
    ("1", True), ("true", True), ("YES", True), (" on ", True),
])
def test_the_opt_out_reads_the_environment_when_not_given(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(ALLOW_MISMATCH_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(ALLOW_MISMATCH_ENV_VAR, value)
    assert checksum_mismatch_allowed() is expected
    assert checksum_mismatch_allowed(True) is True and checksum_mismatch_allowed(False) is False


def test_a_bad_opt_out_value_is_named(monkeypatch):
    monkeypatch.setenv(ALLOW_MISMATCH_ENV_VAR, "maybe")
    with pytest.raises(InvalidConfigError, match=f"{ALLOW_MISMATCH_ENV_VAR} must be 1 or 0.*'maybe'"):
        checksum_mismatch_allowed()
    with pytest.raises(InvalidConfigError, match="allow_checksum_mismatch must be true, false"):
        checksum_mismatch_allowed("yes")  # type: ignore[arg-type]


def _write(tmp_path, blob: bytes, name: str = "train"):
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def test_the_memory_cache_keeps_the_last_values_of_each_kind_and_forgets_on_clear():
    from lop_bench.data.cache import MemoryCache

    memory = MemoryCache()
    for i in range(3):
        memory.put("a", i, str(i), size=2)
    memory.put("b", 0, "x", size=1)
    assert memory.get("a", 0) is None and memory.get("a", 2) == "2" and len(memory) == 3
    assert memory.get("a", 1) == "1"  # now the most recently used
    memory.put("a", 3, "3", size=2)
    assert memory.get("a", 2) is None and memory.get("a", 1) == "1"
    memory.clear("a")
    assert len(memory) == 1 and memory.get("b", 0) == "x"
    memory.clear()
    assert len(memory) == 0
