"""Report tables and findings: streams ranked by their last task get the leaderboard's view."""

from __future__ import annotations

import pytest

import lop_bench
from lop_bench.report import check_findings, format_table, group_results

CIFAR = "lop/IncrementalCIFAR100-v0"


@pytest.fixture(scope="module")
def cifar_groups():
    results = [lop_bench.run(CIFAR, agent, tier="smoke", seed=seed, progress=False)
               for agent in ("backprop", "from_scratch", "continual_backprop")
               for seed in (0, 1)]
    return group_results(results)


def test_incremental_cifar_table_shows_the_last_task_and_the_gap(cifar_groups):
    text = format_table(cifar_groups, order=["backprop", "continual_backprop", "from_scratch"])
    header = next(line for line in text.splitlines() if line.startswith("agent"))
    assert header.split() == ["agent", "seeds", "last", "(all", "classes)", "gap", "to",
                              "from_scratch", "mean"]
    assert "drop" not in text and "initial" not in text  # 5-class vs 100-class: meaningless
    groups = {g.agent: g for g in cifar_groups}
    last = {a: g.stat("last") for a, g in groups.items()}
    assert last["backprop"] == {s: r.per_task[-1] for s, r in zip((0, 1), groups["backprop"].results)}
    gap = sum(last["backprop"][s] - last["from_scratch"][s] for s in (0, 1)) / 2
    row = next(line for line in text.splitlines() if line.startswith("backprop "))
    scratch_row = next(line for line in text.splitlines() if line.startswith("from_scratch"))
    assert f"{gap:+.4g}" in row
    assert scratch_row.split()[-4] == "0"  # the reference's gap to itself


def test_other_streams_keep_initial_final_drop():
    r = lop_bench.run("lop/SlowlyChangingRegression-v0", "backprop", tier="smoke", seed=0,
                      progress=False)
    header = next(line for line in format_table(group_results([r])).splitlines()
                  if line.startswith("agent"))
    assert header.split() == ["agent", "seeds", "initial", "final", "drop", "mean"]


def test_image_stream_findings_warn_that_short_tiers_cannot_show_them(cifar_groups):
    text, verdicts = check_findings(cifar_groups)
    assert "smoke tier is a seconds-long functional check" in text
    assert [f.left for f, _ in verdicts] == [("backprop", "last"), ("continual_backprop", "last")]
    assert all(v in ("PASS", "weak", "FAIL") for _, v in verdicts)
    from lop_bench.report import Group

    as_cpu = [Group(g.env_id, "cpu", g.agent, g.results) for g in cifar_groups]
    text, _ = check_findings(as_cpu)
    assert "the cpu tier, 4 blocks of 4 epochs, is a functional check" in text
