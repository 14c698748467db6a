"""``report`` groups results by configuration (an agent and its settings), so that a sweep's
settings of one agent sit side by side, labelled by the hyperparameters in which they
differ, the best of each agent marked; summary rows give each configuration's mean and 95%
CI of the ranked statistic."""

import pytest

from lop_bench.cli import main
from lop_bench.errors import LopBenchError
from lop_bench.metrics import seed_stats
from lop_bench.report import check_findings, format_table, group_results, plot, summary_rows
from lop_bench.runner import run_vectorized

REG = "lop/SlowlyChangingRegression-v0"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("configs")
    found = []
    for agent, hps, every in (("backprop", {"lr": 0.01}, 1), ("backprop", {"lr": 0.003}, 1),
                              ("continual_backprop", {}, 1), ("continual_backprop", {}, 2)):
        found += run_vectorized(REG, agent, tier="smoke", seeds=[0, 1], agent_kwargs=hps,
                                diagnostics_every=every, progress=False, out=out)
    return out, found


def _final_mean(group):
    return seed_stats(list(group.stat("final").values()))["mean"]


def test_settings_of_one_agent_are_separate_configurations_labelled_by_their_differences(results):
    _, found = results
    groups = group_results(found)
    assert sorted(g.name for g in groups) == [
        "backprop (lr=0.003)", "backprop (lr=0.01)",
        "continual_backprop (diagnostics_every=1)", "continual_backprop (diagnostics_every=2)",
    ]
    assert all(g.seeds == [0, 1] for g in groups)
    assert len({g.settings for g in groups}) == 4


def test_the_best_setting_of_each_agent_is_marked(results):
    _, found = results
    groups = group_results(found)
    for agent in ("backprop", "continual_backprop"):
        mine = [g for g in groups if g.agent == agent]
        best = min(mine, key=_final_mean)  # mse: lower is better
        assert [g.best for g in mine] == [g is best for g in mine]
    table = format_table(groups)
    marked = [line.split("  ")[0] for line in table.splitlines() if line.split("  ")[0].endswith(" *")]
    assert sorted(marked) == sorted(f"{g.name} *" for g in groups if g.best)
    assert "* the best setting of its agent by the seed mean of 'final'" in table


def test_the_best_is_the_highest_where_higher_is_better(results, monkeypatch):
    from lop_bench.registration import env_class

    _, found = results
    monkeypatch.setattr(env_class(found[0].env_id), "HIGHER_IS_BETTER", True)
    backprop = [g for g in group_results(found) if g.agent == "backprop"]
    best = max(backprop, key=_final_mean)
    assert [g.best for g in backprop] == [g is best for g in backprop]


def test_one_setting_per_agent_is_labelled_by_the_agent_alone(results):
    _, found = results
    groups = group_results([r for r in found if r.agent_name == "backprop"][:2])
    assert [(g.name, g.best) for g in groups] == [("backprop", False)]
    assert "*" not in format_table(groups)


def test_a_result_given_twice_is_still_an_error(results):
    _, found = results
    with pytest.raises(LopBenchError, match=r"seed\(s\) \[0\] appear twice with the same settings"):
        group_results([found[0], found[0]])


def test_findings_compare_one_setting_per_agent(results):
    _, found = results
    text, verdicts = check_findings(group_results(found))
    assert "(2 settings of backprop: the findings compare one per agent)" in text
    assert {v for _, v in verdicts} == {"skip"}


def test_summary_rows_give_mean_and_ci_of_the_ranked_statistic(results):
    _, found = results
    groups = group_results(found)
    rows = summary_rows(groups)
    assert len(rows) == 4 and [r["label"] for r in rows] == sorted(r["label"] for r in rows)
    for row in rows:
        g = next(g for g in groups if g.settings == row["settings"])
        stats = seed_stats(list(g.stat("final").values()))
        assert (row["statistic"], row["seeds"], row["best"]) == ("final", 2, g.best)
        assert (row["mean"], row["ci_low"], row["ci_high"]) == \
            (stats["mean"], stats["ci_low"], stats["ci_high"])
    assert [r["hp.lr"] for r in rows if r["agent"] == "backprop"] == [0.003, 0.01]
    assert [r["hp.diagnostics_every"] for r in rows if r["agent"] == "continual_backprop"] == [1, 2]


def test_the_plot_names_each_configuration_and_its_best(results, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    _, found = results
    legends = []
    real = Figure.savefig

    def keep_legend(fig, *args, **kwargs):
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep_legend)
    groups = group_results(found)
    plot(groups, tmp_path / "p.png")
    best = {g.name for g in groups if g.best}
    assert sorted(legends[0]) == sorted(f"{g.name}{' (best)' if g.name in best else ''} (n=2)"
                                        for g in groups)


def test_report_reads_a_directory_of_several_settings(results, capsys):
    out, _ = results
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "backprop (lr=0.003)" in text and "backprop (lr=0.01)" in text
