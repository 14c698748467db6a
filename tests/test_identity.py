"""A result's identity: file names that never collide across settings, and the refusal of a
file that holds another run (DESIGN.md section 7)."""

import json
import re

import pytest

import lop_bench
from lop_bench.errors import IdentityMismatchError, InvalidResultError
from lop_bench.identity import (
    IDENTITY_FIELDS,
    check_identity,
    identity_differences,
    result_filename,
    result_identity,
    run_identity,
    settings_hash,
)
from lop_bench.results import load

from .helpers import make_mean_agent

REG = "lop/SlowlyChangingRegression-v0"


def _identity(**changes):
    base = {"env_id": REG, "tier": "smoke", "config": {"num_tasks": 10}, "agent": "backprop",
            "preset": "backprop/x/smoke", "hparams": {"lr": 0.01}, "seed": 0,
            "diagnostics_every": 1}
    return {**base, **changes}


def test_the_identity_a_run_computes_is_the_one_its_result_file_holds(tmp_path):
    env = lop_bench.make(REG, tier="smoke", num_tasks=3)
    agent = lop_bench.make_agent("backprop", env, seed=2, lr=0.02)
    want = run_identity(env.unwrapped, "backprop", agent, {"lr": 0.02}, seed=2,
                        diagnostics=True, diagnostics_every=2)
    result = lop_bench.run(REG, "backprop", tier="smoke", seed=2, progress=False, out=tmp_path,
                           env_kwargs={"num_tasks": 3}, agent_kwargs={"lr": 0.02},
                           diagnostics_every=2)
    assert set(want) == set(IDENTITY_FIELDS)
    assert result_identity(result.data) == want
    (path,) = tmp_path.glob("*.json")
    assert path.name == result_filename(want, custom=True)
    assert result_identity(load(path).data) == want


def test_diagnostics_off_is_part_of_the_identity_even_for_agents_without_features(tmp_path):
    """An agent without features() records no diagnostics either way: the setting itself is
    recorded (run_info.diagnostics_every), so the two runs are told apart."""
    on = lop_bench.run(REG, make_mean_agent, tier="smoke", progress=False, out=tmp_path)
    off = lop_bench.run(REG, make_mean_agent, tier="smoke", progress=False, out=tmp_path,
                        diagnostics=False)
    assert on.diagnostics is None and off.diagnostics is None
    assert result_identity(on.data)["diagnostics_every"] == 1
    assert result_identity(off.data)["diagnostics_every"] is None
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_a_result_of_lop_bench_0_1_is_read_from_its_diagnostics_table():
    data = {"env_id": REG, "tier": "cpu", "config": {}, "agent": {"name": "a", "preset": None,
            "hparams": {}}, "seed": 3, "diagnostics": {"every": 4}, "run_info": {}}
    assert result_identity(data)["diagnostics_every"] == 4
    assert result_identity({**data, "diagnostics": None})["diagnostics_every"] is None


def test_the_settings_hash_covers_every_field_but_the_seed():
    base = _identity()
    assert settings_hash(base) == settings_hash(_identity(seed=7))
    for change in ({"env_id": "lop/PermutedMNIST-v0"}, {"tier": "cpu"},
                   {"config": {"num_tasks": 11}}, {"agent": "l2"}, {"preset": None},
                   {"hparams": {"lr": 0.003}}, {"diagnostics_every": None},
                   {"diagnostics_every": 2}):
        assert settings_hash(_identity(**change)) != settings_hash(base), change
    assert re.fullmatch(r"[0-9a-f]{8}", settings_hash(base))


def test_file_names_carry_the_stream_tier_agent_hash_and_seed():
    name = result_filename(_identity(agent="my_pkg.agents:make/agent", seed=4))
    assert re.fullmatch(r"SlowlyChangingRegression-v0__smoke__my_pkg.agents_make_agent__"
                        r"[0-9a-f]{8}__seed4\.json", name)
    assert "__custom__" in result_filename(_identity(), custom=True)


def test_differences_name_each_field_and_key():
    diffs = identity_differences(_identity(hparams={"lr": 0.003, "beta": 1}),
                                 _identity(hparams={"lr": 0.03}, seed=1))
    assert diffs == ["hparams.beta: 1 there, (missing) here",
                     "hparams.lr: 0.003 there, 0.03 here", "seed: 0 there, 1 here"]
    assert identity_differences(_identity(), _identity()) == []


def test_check_identity_names_the_file_the_difference_and_the_fix(tmp_path):
    path = tmp_path / "r.json"
    with pytest.raises(IdentityMismatchError) as e:
        check_identity(path, _identity(), _identity(hparams={"lr": 0.03}))
    text = str(e.value)
    assert str(path) in text and "hparams.lr: 0.01 there, 0.03 here" in text
    assert "another --out" in text and "delete" in text
    with pytest.raises(IdentityMismatchError, match="Resume with the same"):
        check_identity(path, _identity(), _identity(seed=3), what="checkpoint")


def test_runs_with_other_settings_never_overwrite_each_other(tmp_path):
    a = lop_bench.run(REG, "backprop", tier="smoke", progress=False, out=tmp_path,
                      agent_kwargs={"lr": 0.003})
    b = lop_bench.run(REG, "backprop", tier="smoke", progress=False, out=tmp_path,
                      agent_kwargs={"lr": 0.03})
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 2
    lrs = sorted(json.loads(f.read_text())["agent"]["hparams"]["lr"] for f in files)
    assert lrs == [0.003, 0.03] and a.per_task != b.per_task


def test_resume_returns_the_finished_result_of_this_run_only(tmp_path):
    first = lop_bench.run(REG, "backprop", tier="smoke", progress=False, out=tmp_path)
    (path,) = tmp_path.glob("*.json")
    before = path.read_bytes()
    again = lop_bench.run(REG, "backprop", tier="smoke", progress=False, out=tmp_path,
                          resume=True)
    assert path.read_bytes() == before and again.data == first.data
    # A file under this run's name that holds another run (edited, or a hash collision)
    # is refused, never reported as this run, with or without --resume.
    data = json.loads(before)
    data["agent"]["hparams"]["lr"] = 0.5
    path.write_text(json.dumps(data))
    for resume in (True, False):
        with pytest.raises(IdentityMismatchError, match=r"hparams\.lr: 0\.5 there, 0\.01 here"):
            lop_bench.run(REG, "backprop", tier="smoke", progress=False, out=tmp_path,
                          resume=resume)
    assert json.loads(path.read_text())["agent"]["hparams"]["lr"] == 0.5  # never overwritten


def test_a_json_out_is_never_overwritten_by_another_run_or_by_a_non_result(tmp_path):
    target = tmp_path / "mine.json"
    target.write_text('{"my": "notes"}')
    with pytest.raises(InvalidResultError, match="mine.json.*choose another --out"):
        lop_bench.run(REG, "backprop", tier="smoke", progress=False, out=target)
    assert target.read_text() == '{"my": "notes"}'
    target.unlink()
    lop_bench.run(REG, "backprop", tier="smoke", progress=False, out=target)
    with pytest.raises(IdentityMismatchError, match="agent: \"backprop\" there, \"l2\" here"):
        lop_bench.run(REG, "l2", tier="smoke", progress=False, out=target)
    assert load(target).agent_name == "backprop"


def test_vectorized_runs_write_the_same_names_and_refuse_other_runs(tmp_path):
    single = lop_bench.run(REG, "backprop", tier="smoke", seed=1, progress=False, out=tmp_path)
    (path,) = tmp_path.glob("*.json")
    results = lop_bench.run_vectorized(REG, "backprop", tier="smoke", seeds=(0, 1),
                                       progress=False, out=tmp_path)
    assert sorted(tmp_path.glob("*.json"))[1] == path  # seed 1 replaced under its own name
    assert result_identity(results[1].data) == result_identity(single.data)
    with pytest.raises(IdentityMismatchError):
        lop_bench.run_vectorized(REG, "l2", tier="smoke", seeds=(0,), progress=False,
                                 out=tmp_path / path.name)
