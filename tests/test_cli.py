import json
import re

import pytest

from lop_bench.cli import main, parse_seeds
from lop_bench.errors import LopBenchError

REG = "lop/SlowlyChangingRegression-v0"


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("0-2,9") == [0, 1, 2, 9]
    for bad in ("a", "3-1", "1,1", "-2", ""):
        with pytest.raises(LopBenchError, match="seed"):
            parse_seeds(bad)


def test_list_shows_streams_tiers_and_agents(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert REG in out and "cpu (10 seeds)" in out
    for agent in ("linear", "backprop", "l2", "shrink_perturb", "continual_backprop"):
        assert agent in out


@pytest.mark.parametrize("cmd", [[], ["run"], ["report"], ["reproduce"], ["submit"], ["leaderboard", "build"]])
def test_help_shows_an_example(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "lop-bench " in capsys.readouterr().out.split("example", 1)[1]


def test_run_then_report(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["run", REG, "--agent", "backprop", "--tier", "smoke", "--seeds", "0-1",
                 "--jobs", "1", "--out", str(out)]) == 0
    files = sorted(p.name for p in out.glob("*.json"))
    names = [re.fullmatch(r"SlowlyChangingRegression-v0__smoke__backprop__([0-9a-f]{8})__seed(\d)\.json", f)
             for f in files]
    assert all(names) and [m[2] for m in names] == ["0", "1"]
    assert names[0][1] == names[1][1]  # one settings hash for every seed of the run
    capsys.readouterr()
    plot = tmp_path / "curves.png"
    assert main(["report", str(out), "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "backprop" in text and "initial" in text and "final" in text
    assert plot.stat().st_size > 10_000


def test_run_vectorized_writes_the_same_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", REG, "--agent", "continual_backprop", "--tier", "smoke", "--jobs", "1",
                 "--out", str(a)]) == 0
    assert main(["run", REG, "--agent", "continual_backprop", "--tier", "smoke", "--jobs", "1",
                 "--vectorized", "--out", str(b)]) == 0
    for f in sorted(a.glob("*.json")):
        single, vec = json.loads(f.read_text()), json.loads((b / f.name).read_text())
        assert vec["agent"]["vectorized"] is True
        assert vec["per_task"] == pytest.approx(single["per_task"], rel=1e-4)


def test_reproduce_smoke_in_parallel(tmp_path, capsys):
    out = tmp_path / "repro"
    assert main(["reproduce", REG, "--tier", "smoke", "--jobs", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # the 5 reference agents and the fresh agent (the plasticity column), 2 seeds each
    assert len(list(out.glob("*.json"))) == 6 * 2
    assert (out / "plot.png").exists()
    assert "The paper's findings" in text and "continual_backprop" in text
    assert "plasticity (1 = fresh)" in text
    for f in out.glob("*__backprop__*.json"):  # reproduce recorded each file's plasticity
        assert json.loads(f.read_text())["plasticity"]["reference"]["agent"] == "fresh"


def test_reproduce_all_runs_the_more_agents_too(tmp_path, capsys):
    from lop_bench.registration import stream_spec

    spec = stream_spec(REG)
    assert "fresh" not in spec.reference_agents and "redo" in spec.more_agents
    assert spec.all_agents == (*spec.reference_agents, "fresh", *spec.more_agents)
    out = tmp_path / "all"
    assert main(["reproduce", REG, "--tier", "smoke", "--jobs", "2", "--seeds", "0",
                 "--agents", "all", "--out", str(out)]) == 0
    names = {json.loads(f.read_text())["agent"]["name"] for f in out.glob("*.json")}
    assert names == set(spec.all_agents)


def test_override_makes_the_run_custom(tmp_path):
    out = tmp_path / "c"
    assert main(["run", REG, "--agent", "linear", "--tier", "smoke", "--seeds", "0", "--jobs", "1",
                 "--set", "num_tasks=3", "--hp", "lr=0.02", "--out", str(out)]) == 0
    (f,) = out.glob("*.json")
    data = json.loads(f.read_text())
    assert data["custom"] is True and "__custom__" in f.name
    assert data["agent"]["hparams"]["lr"] == 0.02 and len(data["per_task"]) == 3


@pytest.mark.parametrize("argv, message", [
    (["run", "lop/SlowlyChangingRegresion-v0", "--agent", "backprop"], "Did you mean"),
    (["run", REG, "--agent", "backprob", "--tier", "smoke"], "unknown agent 'backprob'"),
    (["run", REG, "--agent", "backprop", "--tier", "tiny"], "unknown tier 'tiny'"),
    (["run", REG, "--agent", "backprop", "--tier", "smoke", "--set", "beta=2"], "beta must be"),
    (["run", REG, "--agent", "backprop", "--tier", "smoke", "--hp", "lr=-1"], "lr must be"),
    (["run", REG, "--agent", "backprop", "--tier", "smoke", "--hp", "lrr=1"], "unknown backprop hyperparameter"),
    (["run", REG, "--agent", "backprop", "--seeds", "x"], "--seeds"),
    (["report", "/nonexistent/result.json"], "no such result file"),
])
def test_bad_input_exits_1_with_a_named_error(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("lop-bench: error:") and message in err
    assert not list(tmp_path.glob("*.json"))  # nothing written
