"""Report tables and findings: streams ranked by their last task get the leaderboard's view."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lop_bench
from lop_bench.agents import resolve_factory
from lop_bench.fresh import fresh
from lop_bench.metrics import seed_stats
from lop_bench.plasticity import plasticity_score, plasticity_scores
from lop_bench.report import attach_plasticity, check_findings, format_table, group_results
from lop_bench.results import deterministic_part, load

CIFAR = "lop/IncrementalCIFAR100-v0"
REG = "lop/SlowlyChangingRegression-v0"


@pytest.fixture(scope="module")
def cifar_groups():
    results = [lop_bench.run(CIFAR, agent, tier="smoke", seed=seed, progress=False)
               for agent in ("backprop", "from_scratch", "continual_backprop")
               for seed in (0, 1)]
    return group_results(results)


def test_incremental_cifar_table_shows_the_last_task_and_the_gap(cifar_groups):
    text = format_table(cifar_groups, order=["backprop", "continual_backprop", "from_scratch"])
    header = next(line for line in text.splitlines() if line.startswith("agent"))
    # from_scratch is also the stream's fresh reference: the plasticity column is shown
    assert header.split() == ["agent", "seeds", "last", "(all", "classes)", "gap", "to",
                              "from_scratch", "mean", "plasticity", "(1", "=", "fresh)"]
    assert "drop" not in text and "initial" not in text  # 5-class vs 100-class: meaningless
    groups = {g.agent: g for g in cifar_groups}
    last = {a: g.stat("last") for a, g in groups.items()}
    assert last["backprop"] == {s: r.per_task[-1] for s, r in zip((0, 1), groups["backprop"].results)}
    gap = sum(last["backprop"][s] - last["from_scratch"][s] for s in (0, 1)) / 2
    row = next(line for line in text.splitlines() if line.startswith("backprop "))
    scratch_row = next(line for line in text.splitlines() if line.startswith("from_scratch"))
    assert f"{gap:+.4g}" in row
    assert scratch_row.split()[-7] == "0"  # the reference's gap to itself
    assert scratch_row.split()[-3:] == ["1", "±", "0"]  # and its plasticity, exactly 1
    # backprop's: the seed mean of its mean per-task accuracy ratio to from_scratch
    ratio = [np.mean(np.array(b.per_task) / np.array(f.per_task))
             for b, f in zip(groups["backprop"].results, groups["from_scratch"].results)]
    half = (seed_stats(ratio)["ci_high"] - seed_stats(ratio)["ci_low"]) / 2
    assert row.endswith(f"{np.mean(ratio):.4g} ± {half:.2g}")
    assert "plasticity (1 = fresh): per task, a ratio" in text


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


def _fresh_backprop():
    factory = fresh(resolve_factory("backprop")[1], name="backprop")
    factory.agent_name = "fresh"  # as the stream's fresh reference agent is registered
    return factory


@pytest.fixture(scope="module")
def reg_dir(tmp_path_factory):
    """Regression smoke results: backprop and linear on seeds 0 and 1, fresh on seed 0 and 1
    in the directory; a copy of backprop's seed-0 result alone in another directory."""
    d = tmp_path_factory.mktemp("reg")
    for seed in (0, 1):
        for agent in ("backprop", "linear", _fresh_backprop()):
            lop_bench.run(REG, agent, tier="smoke", seed=seed, progress=False, out=d,
                          diagnostics=False)
    lop_bench.run(REG, "backprop", tier="smoke", seed=2, progress=False, out=d,
                  diagnostics=False)
    return d


def _copy(src, dst_dir):
    dst_dir.mkdir(exist_ok=True)
    dst = dst_dir / src.name
    dst.write_bytes(src.read_bytes())
    return dst


def test_without_the_fresh_agent_the_table_says_how_to_get_the_column():
    r = lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False)
    text = format_table(group_results([r]))
    assert "plasticity (1 = fresh): no results of fresh" in text
    assert f"lop-bench reproduce {REG} --tier smoke --agents <the agents>,fresh" in text
    header = next(line for line in text.splitlines() if line.startswith("agent"))
    assert "plasticity" not in header


def test_the_plasticity_column_is_the_seed_mean_of_the_per_seed_scores(reg_dir):
    rs = [load(p) for p in sorted(reg_dir.glob("*.json"))]
    text = format_table(group_results(rs))
    header = next(line for line in text.splitlines() if line.startswith("agent"))
    assert header.endswith("plasticity (1 = fresh)")
    by = {(r.agent_name, r.seed): r for r in rs}
    scores = [plasticity_score(by["linear", s].per_task, by["fresh", s].per_task,
                               higher_is_better=False) for s in (0, 1)]
    # hand-computed: fresh's error over linear's, per task
    assert scores[0] == pytest.approx(np.mean(np.array(by["fresh", 0].per_task)
                                              / np.array(by["linear", 0].per_task)), rel=1e-12)
    stats = seed_stats(scores)
    row = next(line for line in text.splitlines() if line.startswith("linear "))
    assert row.endswith(f"{stats['mean']:.4g} ± {(stats['ci_high'] - stats['ci_low']) / 2:.2g}")
    fresh_row = next(line for line in text.splitlines() if line.startswith("fresh "))
    assert fresh_row.endswith("1 ± 0")
    # backprop has seed 2 too, which has no fresh counterpart: scored on the 2 others
    bp_row = next(line for line in text.splitlines() if line.startswith("backprop "))
    assert bp_row.endswith("(2 seeds)")


def test_attach_plasticity_records_the_block_atomically_and_only_once(reg_dir, tmp_path):
    d = tmp_path / "results"
    for p in reg_dir.glob("*.json"):
        _copy(p, d)
    before = {p.name: load(p) for p in d.glob("*.json")}
    record = attach_plasticity([d])
    assert len(record.written) == 6 and record.current == []
    assert len(record.skipped) == 1 and "seed 2" in record.skipped[0]
    fresh0 = next(p for p in d.glob("*__fresh__*seed0.json"))
    for path in record.written:
        r = load(path)
        old = before[path.name]
        ref = load(d / r.plasticity["reference"]["file"])
        assert ref.agent_name == "fresh" and ref.seed == r.seed
        expected = plasticity_scores(r.per_task, ref.per_task, higher_is_better=False)
        assert r.plasticity["per_task"] == expected.tolist()
        assert r.plasticity["score"] == float(np.mean(expected))
        # the run itself is unchanged: same identity, same deterministic part
        assert deterministic_part(r.data) == deterministic_part(old.data)
        assert r.data["run_info"] == old.data["run_info"]
    assert load(fresh0).plasticity["per_task"] == [1.0] * 10
    assert load(fresh0).plasticity["reference"] == {
        "agent": "fresh", "settings": fresh0.name.split("__")[3], "file": fresh0.name}
    again = attach_plasticity([d])
    assert again.written == [] and len(again.current) == 6
    assert "6 result files (0 written, 6 already up to date)" in again.describe()
    # no temporary files left behind
    assert sorted(p.name for p in d.iterdir()) == sorted(before)


def test_a_reference_in_another_directory_is_not_used(reg_dir, tmp_path):
    alone = _copy(next(reg_dir.glob("*__backprop__*seed0.json")), tmp_path / "alone")
    _copy(next(reg_dir.glob("*__fresh__*seed0.json")), tmp_path / "elsewhere")
    record = attach_plasticity([tmp_path / "alone", tmp_path / "elsewhere"])
    assert load(alone).plasticity is None and record.written == [
        tmp_path / "elsewhere" / next(reg_dir.glob("*__fresh__*seed0.json")).name]


def test_report_command_records_plasticity_when_asked(reg_dir, tmp_path, capsys):
    from lop_bench.cli import main

    d = tmp_path / "r"
    for p in reg_dir.glob("*seed0.json"):
        _copy(p, d)
    assert main(["report", str(d)]) == 0
    out = capsys.readouterr().out
    assert "plasticity (1 = fresh)" in out and "recorded" not in out
    assert all(load(p).plasticity is None for p in d.glob("*.json"))  # read-only by default
    assert main(["report", str(d), "--record-plasticity"]) == 0
    assert "plasticity recorded in 3 result files (3 written" in capsys.readouterr().out
    linear = load(next(d.glob("*__linear__*")))
    assert json.dumps(linear.plasticity["reference"]["agent"]) == '"fresh"'


def test_the_summary_file_has_the_plasticity_columns(reg_dir, tmp_path):
    import csv

    from lop_bench.report import write_summary

    rs = [load(p) for p in sorted(reg_dir.glob("*.json"))]
    rows = {r["agent"]: r for r in csv.DictReader(write_summary(group_results(rs),
                                                                tmp_path / "s.csv").open())}
    by = {(r.agent_name, r.seed): r for r in rs}
    scores = [plasticity_score(by["linear", s].per_task, by["fresh", s].per_task,
                               higher_is_better=False) for s in (0, 1)]
    stats = seed_stats(scores)
    assert float(rows["linear"]["plasticity"]) == pytest.approx(stats["mean"], rel=1e-12)
    assert float(rows["linear"]["plasticity_ci_low"]) == pytest.approx(stats["ci_low"], rel=1e-12)
    assert rows["linear"]["plasticity_seeds"] == "2" and rows["backprop"]["plasticity_seeds"] == "2"
    assert float(rows["fresh"]["plasticity"]) == 1.0
    alone = write_summary(group_results([by["linear", 0]]), tmp_path / "alone.csv")
    (row,) = csv.DictReader(alone.open())
    assert (row["plasticity"], row["plasticity_seeds"]) == ("", "0")
