import json
import os

import pytest

import lop_bench
from lop_bench import results
from lop_bench.errors import InvalidResultError

REG = "lop/SlowlyChangingRegression-v0"


@pytest.fixture(scope="module")
def result():
    return lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False)


def test_schema_is_published_and_declares_nondeterministic_fields():
    s = results.schema()
    assert s["$schema"].startswith("https://json-schema.org/")
    assert results.NONDETERMINISTIC_FIELDS == ("run_info",)


def test_roundtrip(tmp_path, result):
    path = result.save(tmp_path)
    assert path.name == "SlowlyChangingRegression-v0__smoke__backprop__seed0.json"
    loaded = results.load(path)
    assert loaded.data == json.loads(result.to_json())
    assert loaded.summary == result.summary


def _write(tmp_path, data):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(data))
    return p


def test_corrupt_truncated_and_forged_files_are_rejected(tmp_path, result):
    good = json.loads(result.to_json())
    p = tmp_path / "trunc.json"
    p.write_text(result.to_json()[:200])
    with pytest.raises(InvalidResultError, match="not valid JSON"):
        results.load(p)
    p.write_text("")
    with pytest.raises(InvalidResultError, match="not valid JSON"):
        results.load(p)
    with pytest.raises(InvalidResultError, match="no such"):
        results.load(tmp_path / "missing.json")

    edited = json.loads(json.dumps(good))
    edited["summary"]["final"] = 0.01
    with pytest.raises(InvalidResultError, match="summary.final"):
        results.load(_write(tmp_path, edited))

    cut = json.loads(json.dumps(good))
    cut["per_task"] = cut["per_task"][:-1]
    with pytest.raises(InvalidResultError, match="num_tasks"):
        results.load(_write(tmp_path, cut))

    curve = json.loads(json.dumps(good))
    curve["per_task"][0] *= 0.5
    with pytest.raises(InvalidResultError, match="disagree"):
        results.load(_write(tmp_path, curve))

    missing = json.loads(json.dumps(good))
    del missing["seed"]
    with pytest.raises(InvalidResultError, match="seed"):
        results.load(_write(tmp_path, missing))

    bad_hash = json.loads(json.dumps(good))
    bad_hash["protocol_hash"] = "md5:123"
    with pytest.raises(InvalidResultError, match="protocol_hash"):
        results.load(_write(tmp_path, bad_hash))

    with pytest.raises(InvalidResultError, match="JSON object"):
        results.load(_write(tmp_path, [1, 2]))


def test_failed_write_leaves_previous_file_intact(tmp_path, result, monkeypatch):
    path = tmp_path / "out.json"
    result.save(path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        result.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp file left


def test_invalid_result_is_never_written(tmp_path, result):
    bad = json.loads(result.to_json())
    bad["summary"]["mean"] = 123.0
    with pytest.raises(InvalidResultError):
        results.save(bad, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
