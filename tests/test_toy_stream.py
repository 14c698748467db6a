"""A stream from one file (``tests/toy_stream.py``): registered, it makes, runs, reports and
ranks with nothing else in lop-bench changed (STYLE.md rule 16)."""

from __future__ import annotations

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import lop_bench
from lop_bench import leaderboard, registration
from lop_bench.cli import main
from lop_bench.report import check_findings, format_table, group_results
from lop_bench.results import load_many


@pytest.fixture
def toy():
    """The toy stream, registered for one test."""
    from tests import toy_stream

    assert lop_bench.register(toy_stream.SPEC) is toy_stream.SPEC
    yield toy_stream
    registration.registry.pop(toy_stream.ENV_ID)
    gymnasium.registry.pop(toy_stream.ENV_ID, None)


def test_a_registered_stream_is_made_like_the_builtin_ones(toy):
    assert toy.ENV_ID in lop_bench.list_envs()
    env = lop_bench.make(toy.ENV_ID, tier="smoke")
    check_env(env.unwrapped, skip_render_check=True)
    assert env.spec.kwargs["tier"] == "smoke"
    assert gymnasium.make(toy.ENV_ID).unwrapped.tier == "cpu"  # gymnasium knows the id too


def test_a_registered_stream_runs_reports_and_ranks(toy, tmp_path, capsys):
    out = tmp_path / "runs"
    for agent in toy.SPEC.reference_agents:
        for seed in range(3):
            lop_bench.run(toy.ENV_ID, agent, tier="cpu", seed=seed, progress=False,
                          out=out / agent.rpartition(":")[2])
    groups = group_results(load_many([out]))
    table = format_table(groups, order=toy.SPEC.reference_agents)
    assert "lop/ToyConstant-v0  tier=cpu  metric=mse (lower is better" in table
    text, verdicts = check_findings(groups)
    assert [(f.text, v) for f, v in verdicts] == [("the learner ends below the frozen agent", "PASS")]
    assert main(["report", str(out)]) == 0
    assert "[PASS] the learner ends below the frozen agent" in capsys.readouterr().out

    board = tmp_path / "board"
    assert len(leaderboard.submit([out], board)) == 6
    readme, index = leaderboard.build(board)
    text = readme.read_text()
    assert "## lop/ToyConstant-v0 — tier cpu" in text
    assert "Metric: mse (squared error, lower is better); 3 seeds per entry" in text
    assert [e.agent for e in leaderboard.load_board(board)] == [toy.FROZEN, toy.LEARNER]
    ranked = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert "make\\_learner" in ranked[0]  # the learner ranks first
    assert "ToyConstant-v0" in index.read_text()


def test_a_registered_stream_is_listed(toy, capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert toy.ENV_ID in listed and toy.LEARNER in listed
