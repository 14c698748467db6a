"""Result files: schema, round trip, strict numbers, file rules, permissions, shown text."""

import json
import os
import re
import sys
import threading
import unicodedata
from pathlib import Path

import numpy as np
import pytest

import lop_bench
from lop_bench import results
from lop_bench.errors import InvalidResultError
from lop_bench.metrics import summarize

REG = "lop/SlowlyChangingRegression-v0"


@pytest.fixture(scope="module")
def result():
    return lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False)


def test_schema_is_published_and_declares_nondeterministic_fields():
    s = results.schema()
    assert s["$schema"].startswith("https://json-schema.org/")
    # the plasticity block is attached after the run (from another result): not the run's
    assert results.NONDETERMINISTIC_FIELDS == ("run_info", "plasticity")


def _block(n, score=None, **reference):
    per_task = [1.0 - 0.1 * i for i in range(n)]
    ref = {"agent": "fresh", "settings": "0123abcd",
           "file": "SlowlyChangingRegression-v0__smoke__fresh__0123abcd__seed0.json", **reference}
    return {"reference": ref, "per_task": per_task,
            "score": sum(per_task) / n if score is None else score}


def test_the_plasticity_block_is_validated_and_left_out_of_the_deterministic_part(tmp_path,
                                                                                 result):
    n = len(result.per_task)
    data = {**json.loads(result.to_json()), "plasticity": _block(n)}
    loaded = results.load(results.save(data, tmp_path / "r.json"))
    assert loaded.plasticity == data["plasticity"] and result.plasticity is None
    assert results.deterministic_part(loaded.data) == results.deterministic_part(result.data)
    from lop_bench.identity import result_identity

    assert result_identity(loaded.data) == result_identity(result.data)
    for bad, says in [
        (_block(n - 1), "plasticity.per_task has"),
        (_block(n, score=0.5), "plasticity.score is 0.5"),
        (_block(n, settings="xyz"), "plasticity/reference/settings"),
        ({**_block(n), "extra": 1}, "plasticity"),
        ({k: v for k, v in _block(n).items() if k != "score"}, "plasticity"),
        ({**_block(n), "per_task": []}, "plasticity/per_task"),
    ]:
        with pytest.raises(InvalidResultError, match=says):
            results.validate({**data, "plasticity": bad})


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


# -- values: finite numbers only ---------------------------------------------------------
SENTINEL = 123456.789


def _with_token(tmp_path, result, where: str, token: str):
    """The result's JSON with the number at ``where`` replaced by the raw ``token``."""
    data = json.loads(result.to_json())
    if where == "per_task":
        data["per_task"][3] = SENTINEL
    elif where == "diagnostics":
        data["diagnostics"]["measures"]["effective_rank"][2] = SENTINEL
    elif where == "summary":
        data["summary"]["final"] = SENTINEL
    else:
        data["run_info"]["wall_time_s"] = SENTINEL
    text = json.dumps(data, indent=1)
    assert text.count(str(SENTINEL)) == 1
    p = tmp_path / "r.json"
    p.write_text(text.replace(str(SENTINEL), token))
    return p


@pytest.mark.parametrize("where", ["per_task", "diagnostics", "summary", "run_info"])
@pytest.mark.parametrize("token, says", [
    ("NaN", "NaN, which is not a finite number"),
    ("Infinity", "Infinity, which is not a finite number"),
    ("-Infinity", "-Infinity, which is not a finite number"),
    ("1e400", "the number 1e400, which overflows a 64-bit float"),
    ("-2.5E+999", "the number -2.5E+999, which overflows"),
    ("1" + "0" * 400, "the integer 1000000000"),
])
def test_non_finite_numbers_are_refused_anywhere(tmp_path, result, where, token, says):
    with pytest.raises(InvalidResultError, match=re.escape(says)):
        results.load(_with_token(tmp_path, result, where, token))


def test_an_integer_too_long_to_read_is_refused_cleanly(tmp_path, result):
    with pytest.raises(InvalidResultError, match="not a valid result file"):
        results.load(_with_token(tmp_path, result, "per_task", "9" * 5000))


def test_non_finite_python_values_are_refused_and_never_written(tmp_path, result):
    data = json.loads(result.to_json())
    data["diagnostics"]["measures"]["effective_rank"][1] = float("nan")
    with pytest.raises(InvalidResultError, match=r"diagnostics/measures/effective_rank/1 is nan"):
        results.save(data, tmp_path / "x.json")
    data["diagnostics"]["measures"]["effective_rank"][1] = None  # a diverged network: null
    data["run_info"]["steps_per_s"] = 10**400
    with pytest.raises(InvalidResultError, match=r"run_info/steps_per_s .* finite 64-bit float"):
        results.validate(data)
    assert not (tmp_path / "x.json").exists()


def _with_curve(result, curve):
    data = json.loads(result.to_json())
    data["per_task"] = curve
    data["summary"] = summarize(curve, data["higher_is_better"])
    data["summary"]["num_tasks"] = len(curve)
    return data


def test_a_curve_whose_statistics_would_overflow_is_refused(tmp_path, result):
    n = len(result.per_task)
    with pytest.raises(InvalidResultError, match=r"per_task holds 1e\+308, beyond the largest"):
        results.validate({**_with_curve(result, [1.0] * n), "per_task": [1e308] * n})
    with pytest.raises(InvalidResultError, match="beyond the largest score"):
        results.validate(_with_curve(result, [1.0] * (n - 1) + [-1.1 * results.MAX_SCORE]))
    results.validate(_with_curve(result, [results.MAX_SCORE] * n))  # the largest allowed


def test_a_diverged_runs_null_diagnostics_load(tmp_path, result):
    data = json.loads(result.to_json())
    measures = data["diagnostics"]["measures"]
    for key in measures:
        measures[key] = [None] * len(measures[key])
    assert results.load(_write(tmp_path, data)).diagnostics["measures"] == measures


def test_repeated_keys_and_deep_nesting_are_refused(tmp_path, result):
    text = result.to_json()
    p = tmp_path / "r.json"
    p.write_text(text.replace('"seed": 0', '"seed": 0, "seed": 1', 1))
    with pytest.raises(InvalidResultError, match=r"the key 'seed' appears twice"):
        results.load(p)
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InvalidResultError, match="nested too deeply"):
        results.load(p)
    data = json.loads(text)
    deep: list = []
    for _ in range(5_000):
        deep = [deep]
    data["agent"]["hparams"] = {"deep": deep}
    with pytest.raises(InvalidResultError, match="nested too deeply"):
        results.validate(data)


def _bad_file(tmp_path, result, curve_value: str) -> Path:
    data = json.loads(result.to_json())
    data["per_task"][0] = SENTINEL
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data).replace(str(SENTINEL), curve_value))
    return p


@pytest.mark.parametrize("value, shown", [("1e400", "1e400"), ("NaN", "NaN"),
                                          ("1e308", "1e+308")])
def test_report_submit_and_build_give_a_clean_error(tmp_path, result, capsys, value, shown):
    from lop_bench.cli import main

    bad = _bad_file(tmp_path, result, value)
    board = tmp_path / "board"
    on_board = board / "submissions" / "SlowlyChangingRegression-v0" / "cpu" / "x__0" / "seed0.json"
    on_board.parent.mkdir(parents=True)
    on_board.write_bytes(bad.read_bytes())
    for argv in (["report", str(bad)], ["submit", str(bad), "--dir", str(tmp_path / "b2")],
                 ["leaderboard", "build", "--dir", str(board)]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("lop-bench: error:") and "Traceback" not in err, err
        assert shown in err and ("finite" in err or "overflow" in err), err


# -- files: regular files under the size cap ---------------------------------------------
def test_a_symlink_is_refused_before_it_is_read(tmp_path, result):
    real = result.save(tmp_path / "real.json")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(InvalidResultError, match=r"link\.json: is a symbolic link \(to .*real\.json\)"):
        results.load(link)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    with pytest.raises(InvalidResultError, match=r"symbolic link \(to /dev/zero\)"):
        results.load(zero)
    with pytest.raises(InvalidResultError, match="symbolic link"):
        results.load_many([tmp_path])  # found in a directory too


@pytest.mark.parametrize("make, says", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.symlink_to("/dev/null") or p, "symbolic link"),
])
def test_special_files_are_refused(tmp_path, make, says):
    p = tmp_path / "x.json"
    make(p)
    with pytest.raises(InvalidResultError, match=says):
        results.load(p)


def test_a_device_is_refused():
    with pytest.raises(InvalidResultError, match=r"/dev/null: is a character device; result "
                                                 r"files must be regular files"):
        results.load("/dev/null")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)
    errors: list[BaseException] = []

    def go():
        try:
            results.load(pipe)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "load blocked on a FIFO"
    assert "is a FIFO (named pipe)" in str(errors[0])


def test_a_file_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path, result,
                                                                      monkeypatch):
    real = result.save(tmp_path / "real.json")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p: lstat(real))  # the race: checked, then swapped
    with pytest.raises(InvalidResultError, match="cannot read the result file"):
        results.load(link)


def test_files_over_the_size_cap_are_refused_unread(tmp_path):
    assert results.MAX_RESULT_BYTES == 8 * 1024 * 1024
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(results.MAX_RESULT_BYTES + 1)  # sparse: no time spent writing it
    with pytest.raises(InvalidResultError, match=r"over the 8,388,608-byte cap"):
        results.load(big)


def test_a_result_of_the_largest_real_size_fits_under_the_cap(tmp_path, result):
    """A paper-tier Continual ImageNet run: 5,000 tasks, diagnostics at every task."""
    rng = np.random.default_rng(0)
    n = 5_000
    data = _with_curve(result, rng.random(n).tolist())
    data["diagnostics"]["tasks"] = list(range(n))
    data["diagnostics"]["measures"] = {k: rng.random(n).tolist()
                                       for k in data["diagnostics"]["measures"]}
    path = results.save(data, tmp_path / "big.json")
    size = path.stat().st_size
    assert 0.8e6 < size < results.MAX_RESULT_BYTES / 4, size
    assert len(results.load(path).per_task) == n


def test_non_utf8_bytes_are_refused(tmp_path):
    p = tmp_path / "r.json"
    p.write_bytes(b'{"x": "\xff"}')
    with pytest.raises(InvalidResultError, match="not UTF-8 text"):
        results.load(p)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_writes_get_the_usual_permissions(tmp_path, result, umask, mode):
    old = os.umask(umask)
    try:
        path = result.save(tmp_path / "r.json")
        page = results.atomic_write_text(tmp_path / "page.md", "é\n")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode and page.stat().st_mode & 0o777 == mode
    assert page.read_bytes() == "é\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.md", "r.json"]


# -- names: no control or format characters in text shown on the pages --------------------
def _set(field: str, value: str):
    def edit(data):
        if field == "hparams key":
            data["agent"]["hparams"][value] = 1
        elif field == "hparams value":
            data["agent"]["hparams"]["nested"] = {"list": [1, value]}
        elif field == "versions key":
            data["run_info"]["versions"][value] = "1.0"
        elif field == "versions value":
            data["run_info"]["versions"]["pkg"] = value
        elif field == "created":
            data["run_info"]["created"] = value
        elif field == "tier":
            data["tier"] = value
        else:
            data["agent"][field] = value
    return edit


TEXT_FIELDS = ["name", "preset", "hparams key", "hparams value", "tier", "versions key",
               "versions value", "created"]
BAD_CHARS = ["\x00", "\x07", "\x1b", "\n", "\t", "\x7f", "\x85", "\u00ad", "\u200b", "\u200e",
             "\u202e", "\u2066", "\ufeff", "\U000e0001"]


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("char", BAD_CHARS, ids=[f"U+{ord(c):04X}" for c in BAD_CHARS])
def test_control_and_format_characters_are_refused_in_shown_text(result, field, char):
    data = json.loads(result.to_json())
    _set(field, f"ab{char}cd")(data)
    with pytest.raises(InvalidResultError, match=rf"U\+{ord(char):04X} .* at position 2: text "
                                                 r"shown on the leaderboard"):
        results.validate(data)


def test_every_control_and_format_character_is_refused_and_other_text_is_not(result):
    data = json.loads(result.to_json())
    refused = [c for c in range(sys.maxunicode + 1)
               if unicodedata.category(chr(c)) in ("Cc", "Cf")]
    assert len(refused) > 200
    for c in refused:
        data["agent"]["name"] = f"x{chr(c)}"
        with pytest.raises(InvalidResultError, match=f"U\\+{c:04X}"):
            results.validate(data)
    for fine in ("é", "名前", "🙂", "a\u0301", "a\u00a0b", "Ω≈ç√", "<b>_x_ $y$ [a](b)</b>"):
        data["agent"]["name"] = fine
        results.validate(data)


@pytest.mark.parametrize("source", [
    "https://github.com/me/my-agent/tree/0123456789abcdef0123456789abcdef01234567",
    "https://github.com/me/my-agent/commit/0123abc",
    "https://gitlab.com/me/my-agent/-/tree/0123abcd/src?ref_type=heads",
    "https://example.org/code/archive/0123456789abcdef.tar.gz",
    "https://example.org/repo?rev=0123456789abcdef",
    "git+https://github.com/me/my-agent@0123456789abcdef",
    "http://localhost:8080/me/repo/0123abcd",
    "my-agent==1.2.0",
    "my_agent.core==2.0.0rc1",
    "my-agent==1!2.0+local.7",
])
def test_source_forms_accepted(result, source):
    results.check_source(source)
    data = json.loads(result.to_json())
    data["agent"]["source"] = source
    results.validate(data)


@pytest.mark.parametrize("source", [
    "https://github.com/me/my-agent",
    "https://github.com/me/my-agent/tree/main",
    "https://github.com/me/my-agent/tree/0123ab",  # 6 digits: not a commit id
    "ftp://example.org/0123456789abcdef",
    "javascript:alert(1)//0123456789abcdef",
    "https://x.org/0123456789abcdef\" onclick=\"x",
    "https://x.org/0123456789abcdef<script>",
    "https://x.org/a b/0123456789abcdef",
    "https://x.org/0123456789abcdef\n",
    "my-agent",
    "my-agent>=1.0",
    "my agent==1.0",
    "",
    "https://x.org/" + "a" * 500 + "/0123456789abcdef",
])
def test_source_forms_refused(result, source):
    with pytest.raises(InvalidResultError, match=r"agent\.source"):
        results.check_source(source)
    data = json.loads(result.to_json())
    data["agent"]["source"] = source
    with pytest.raises(InvalidResultError, match=r"agent/source"):
        results.validate(data)
