"""The board that reads well with many entries: the ranking statistics (probability of
improvement, rank groups, hyperparameters as a diff from the preset), reference entries,
the plasticity column, functional checks listed apart, links to the result files, a plot
whose legend stays off the curves with 12 entries, and byte-identical rebuilds."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import numpy as np
import pytest

from lop_bench import leaderboard as lb
from lop_bench import registration
from lop_bench.cli import build_parser
from lop_bench.errors import SubmissionRejected
from lop_bench.leaderboard import html_page, ranking
from lop_bench.leaderboard.entries import REFERENCE_MARK
from lop_bench.metrics import seed_stats, summarize
from lop_bench.registration import stream_spec
from lop_bench.results import Result
from tests.leaderboard_fixtures import REG, TIER, copy_entry, make_entry, ranked_mini_tier, rename


@pytest.fixture(scope="module", autouse=True)
def _mini_tier():
    with ranked_mini_tier(REG):
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory, _mini_tier):
    """Runs of the test agent with different learning rates (so, different curves)."""
    root = tmp_path_factory.mktemp("runs")
    return {lr: make_entry(root / f"lr{lr}", agent_kwargs={"lr": lr})
            for lr in (0.003, 0.01, 0.03, 0.1)}


def as_agent(runs: dict, lr: float, name: str, dst: Path) -> Path:
    return copy_entry(runs[lr], dst, rename(name))


def rows_of(readme: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the README table under ``heading``."""
    part = readme.split(heading, 1)[1]
    lines = [ln for ln in part.splitlines() if ln.startswith("| ")]
    header = lines[0][2:-2].split(" | ")
    body = []
    for ln in lines[1:]:
        if not ln.startswith("| ") or ln.startswith("| #"):
            break
        body.append(ln[2:-2].split(" | "))
    return header, body


# -- the statistics, by hand ----------------------------------------------------------
def test_probability_of_improvement_counts_pairs_by_hand():
    # x=[1,2,3], y=[0,2,5]: x wins (1,0) (2,0) (3,0) (3,2), ties (2,2): (4 + 0.5) / 9
    assert ranking.probability_of_improvement([1, 2, 3], [0, 2, 5]) == pytest.approx(4.5 / 9)
    # x=[3,4], y=[1,3,5]: wins (3,1) (4,1) (4,3), tie (3,3): 3.5 / 6
    assert ranking.probability_of_improvement([3, 4], [1, 3, 5]) == pytest.approx(3.5 / 6)
    # lower is better: wins (3,5) (4,5), tie (3,3): 2.5 / 6; the two directions sum to 1
    assert ranking.probability_of_improvement([3, 4], [1, 3, 5], higher_is_better=False) \
        == pytest.approx(2.5 / 6)
    assert ranking.probability_of_improvement([5, 6], [1, 2]) == 1.0
    assert ranking.probability_of_improvement([1, 2], [5, 6]) == 0.0
    assert ranking.probability_of_improvement([2, 2], [2]) == 0.5
    with pytest.raises(ValueError, match="finite"):
        ranking.probability_of_improvement([1, float("nan")], [0])
    with pytest.raises(ValueError, match="non-empty"):
        ranking.probability_of_improvement([], [0])


def test_improvement_interval_is_a_seeded_stratified_bootstrap():
    x, y = [0.9, 1.3, 1.1, 0.7], [0.8, 1.0, 0.6, 0.95, 0.5]
    p, low, high = ranking.improvement_ci(x, y)
    assert p == ranking.probability_of_improvement(x, y)
    assert 0 <= low <= p <= high <= 1 and low < high
    assert ranking.improvement_ci(x, y) == (p, low, high)  # the same bits again
    # the replicates by hand: resample each side's seeds, then the U statistic
    rng = np.random.default_rng(0)
    a, b = np.array(x), np.array(y)
    xs = a[rng.integers(0, 4, size=(2000, 4))]
    ys = b[rng.integers(0, 5, size=(2000, 5))]
    ps = [ranking.probability_of_improvement(xi, yi) for xi, yi in zip(xs, ys)]
    assert (low, high) == tuple(np.percentile(ps, [2.5, 97.5]))
    # every run better than every run: no resample can say otherwise
    assert ranking.improvement_ci([5, 6, 7], [1, 2]) == (1.0, 1.0, 1.0)
    # one seed each side, tied: 0.5 always
    assert ranking.improvement_ci([1], [1]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="reps"):
        ranking.improvement_ci(x, y, reps=0)


def test_rank_groups_join_when_the_interval_overlaps_the_group_leader():
    assert ranking.rank_groups([]) == []
    assert ranking.rank_groups([(0, 1)]) == [1]
    assert ranking.rank_groups([(0, 1), (0.5, 2), (2.5, 3), (2.9, 3.1)]) == [1, 1, 2, 2]
    assert ranking.rank_groups([(0, 1), (1, 2)]) == [1, 1]  # touching counts as overlap
    assert ranking.rank_groups([(0, 1), (1.01, 2), (3, 4)]) == [1, 2, 3]
    # no chains: the third overlaps the second but not the group's leader, so it opens group 2
    assert ranking.rank_groups([(0, 1), (0.9, 1.9), (1.8, 2.8)]) == [1, 1, 2]
    # ... and leads it: the fourth is compared with it, not with the entry of group 1
    assert ranking.rank_groups([(0, 1), (0.9, 1.9), (1.8, 2.8), (1.5, 1.85)]) == [1, 1, 2, 2]
    # a long table of overlapping neighbours is not one group (the board's regression case)
    assert ranking.rank_groups([(k, k + 1.5) for k in range(6)]) == [1, 1, 2, 2, 3, 3]
    # intervals of a lower-is-better stream come in any position: overlap is symmetric
    assert ranking.rank_groups([(2, 3), (1, 2.5), (-1, 0)]) == [1, 1, 2]
    with pytest.raises(ValueError, match="low above high"):
        ranking.rank_groups([(1, 0)])


def test_hparams_are_shown_as_the_difference_from_the_preset():
    preset = {"lr": 0.01, "hidden": [5], "optimizer": "sgd"}
    assert ranking.hparams_diff(preset, preset) == "same as preset"
    assert ranking.hparams_diff({"lr": 0.1, "hidden": [5], "optimizer": "sgd"}, preset) \
        == "lr=0.1 (preset 0.01)"
    assert ranking.hparams_diff({"lr": 0.01, "hidden": [5, 5], "beta": 0.9}, preset) \
        == "+beta=0.9, hidden=[5, 5] (preset [5]), -optimizer (preset sgd)"
    assert ranking.hparams_diff({"lr": 0.01}, None) == "custom agent"
    # 1 and 1.0 are one JSON number; true is not 1
    assert ranking.hparams_diff({"a": True}, {"a": 1}) == "a=true (preset 1)"


# -- entries built in memory --------------------------------------------------------------
def fake(agent: str, curves: list[list[float]], *, hparams=None, reference=False,
         env_id: str = REG, tier: str = TIER) -> lb.Entry:
    higher = stream_spec(env_id).higher_is_better
    results = tuple(
        Result({"seed": seed, "env_id": env_id, "tier": tier, "protocol_hash": "sha256:0",
                "per_task": curve, "summary": summarize(curve, higher),
                "run_info": {"created": "2026-11-29T00:00:00+00:00",
                             "versions": {"lop-bench": "0.1.0"}},
                "agent": {"name": agent, "preset": None, "hparams": hparams or {}}},
               check=False)
        for seed, curve in enumerate(curves))
    return lb.Entry(env_id, tier, agent, None, dict(hparams or {}), results, (), reference)


def flat(values: list[float], tasks: int = 10) -> list[list[float]]:
    """One curve per seed, constant at the seed's value (so ``final`` is that value)."""
    return [[v] * tasks for v in values]


def test_rank_groups_and_improvement_on_a_table():
    # regression: an error, lower is better
    a = fake("a", flat([0.10, 0.11, 0.12]))
    b = fake("b", flat([0.115, 0.125, 0.13]))
    c = fake("c", flat([5.0, 5.1, 5.2]))
    d = fake("d", flat([5.15]))  # one seed: its interval is its value
    (t,) = ranking.tables([c, d, b, a])
    assert [e.agent for e in t.entries] == ["a", "b", "c", "d"]
    intervals = [(s["ci_low"], s["ci_high"]) for s in
                 (seed_stats(e.stat("final")) for e in t.entries[:3])]
    assert intervals[0][1] >= intervals[1][0] and intervals[1][1] < intervals[2][0]
    assert intervals[2][0] <= 5.15 <= intervals[2][1]
    assert [r["rank"] for r in t.rows] == ["1", "1", "2", "2"] and t.groups == [1, 1, 2, 2]
    # P(a beats b) with lower better: a's 0.10 and 0.11 beat all of b, 0.12 beats two: 8/9
    assert t.rows[0]["poi"].startswith("0.89 [")
    assert t.rows[1]["poi"] == "1.00 [1.00, 1.00]"
    assert t.rows[3]["poi"] == ranking.DASH
    assert t.sort_keys[0]["poi"] == pytest.approx(8 / 9)
    assert [k["rank"] for k in t.sort_keys] == [0, 1, 2, 3]
    assert t.sort_keys[1]["final"] == pytest.approx(np.mean([0.115, 0.125, 0.13]))


def test_plasticity_against_the_fresh_reference_entry_only():
    fresh = fake("fresh", [[1.0, 2.0, 4.0], [2.0, 2.0, 2.0]], reference=True)
    agent = fake("backprop", [[2.0, 2.0, 2.0], [1.0, 4.0, 2.0]])
    # ratio fresh / agent per task (lower is better), mean over tasks, then over seeds
    s0 = np.mean([1 / 2, 2 / 2, 4 / 2])
    s1 = np.mean([2 / 1, 2 / 4, 2 / 2])
    (t,) = ranking.tables([fresh, agent])
    rows = {r["agent"]: r for r in t.rows}
    keys = {e.agent: k for e, k in zip(t.entries, t.sort_keys)}
    assert keys["backprop"]["plasticity"] == pytest.approx((s0 + s1) / 2)
    assert rows["backprop"]["plasticity"].startswith(f"{(s0 + s1) / 2:.4g} ±")
    assert rows["fresh"]["plasticity"].startswith("1 ±") or rows["fresh"]["plasticity"] == "1"
    # a fresh entry that is not the project's reference is not what scores are against
    unmarked = dataclasses.replace(fresh, reference=False)
    (t,) = ranking.tables([unmarked, agent])
    assert {r["plasticity"] for r in t.rows} == {ranking.DASH}
    # a seed where the ratio is undefined (an error of 0) is left out, and the cell says so
    zero = fake("backprop", [[2.0, 2.0, 2.0], [1.0, 0.0, 2.0]])
    (t,) = ranking.tables([fresh, zero])
    row = next(r for r in t.rows if r["agent"] == "backprop")
    assert row["plasticity"] == f"{s0:.4g} (1 of 2 seeds)"


def test_hyperparameter_cells_name_the_preset_a_reference_or_a_custom_agent():
    ref = fake("backprop", flat([1.0, 1.1]), hparams={"lr": 0.01, "hidden": [5]},
               reference=True)
    tuned = fake("backprop", flat([0.8, 0.9]), hparams={"lr": 0.1, "hidden": [5]})
    same = fake("backprop", flat([1.2, 1.25]), hparams={"lr": 0.01, "hidden": [5]})
    mine = fake("mine", flat([3.0, 3.1]), hparams={"width": 7})
    (t,) = ranking.tables([ref, tuned, same, mine])
    cells = [(r["agent"], r["hparams_full"], r["hparams"]) for r in t.rows]
    assert cells == [("backprop", "hidden=[5], lr=0.1", "lr=0.1 (preset 0.01)"),
                     ("backprop", "hidden=[5], lr=0.01", "preset"),
                     ("backprop", "hidden=[5], lr=0.01", "same as preset"),
                     ("mine", "width=7", "custom agent")]
    assert [r["legend"] for r in t.rows] == ["1 backprop: lr=0.1 (preset 0.01)",
                                             "1 backprop", "1 backprop",
                                             "2 mine"]


def test_functional_check_tiers_are_listed_by_name_without_ranks(monkeypatch):
    spec = dataclasses.replace(stream_spec(REG), functional_tiers={TIER: "10 short tasks"})
    monkeypatch.setitem(registration.registry, REG, spec)
    entries = [fake("zeta", flat([0.1, 0.2])), fake("alpha", flat([5.0, 5.1])),
               fake("mid", flat([1.0, 1.1]))]
    (t,) = ranking.tables(entries)
    assert not t.ranked and t.functional == "10 short tasks" and t.groups == []
    assert [e.agent for e in t.entries] == ["alpha", "mid", "zeta"]
    keys = [k for k, _ in t.columns]
    assert "rank" not in keys and "poi" not in keys and "final" in keys
    assert "not ranked" in t.about and "10 short tasks" in t.about
    page = html_page.index_html([t])
    assert "Functional checks, not ranked" in page and "functional check, not ranked" in page
    assert "<figure" not in page  # no plot: curves in an order would suggest one
    assert '<tr data-pos="0">' in page and 'class="g' not in page  # no rank groups


# -- a board on disk ----------------------------------------------------------------------
def test_a_board_with_reference_entries(tmp_path, runs):
    board = tmp_path / "board"
    ref = as_agent(runs, 0.01, "backprop", tmp_path / "ref")
    fresh = as_agent(runs, 0.03, "fresh", tmp_path / "fresh")
    written = lb.submit([ref, fresh], board, reference=True)
    marks = [p for p in written if p.name == REFERENCE_MARK]
    assert len(marks) == 2 and len(written) == 6
    tuned = as_agent(runs, 0.1, "backprop", tmp_path / "tuned")
    mine = as_agent(runs, 0.003, "mine", tmp_path / "mine")
    lb.submit([tuned, mine], board)
    entries = {(e.agent, e.hparams["lr"]): e for e in lb.load_board(board)}
    assert [k for k, e in sorted(entries.items()) if e.reference] == [("backprop", 0.01),
                                                                      ("fresh", 0.03)]
    folder = entries[("mine", 0.003)].files[0].rsplit("/", 1)[0]
    assert entries[("mine", 0.003)].files == (f"{folder}/seed0.json", f"{folder}/seed1.json")
    assert folder.startswith("submissions/SlowlyChangingRegression-v0/mini/mine__")

    readme, index = lb.build(board)
    text, page = readme.read_text(), index.read_text()
    header, rows = rows_of(text, "tier mini")
    col = {name: i for i, name in enumerate(header)}
    by_agent = {(r[col["agent"]], re.search(r"lr=([0-9.e-]+)</details>",
                                            r[col["hyperparameters"]]).group(1)): r
                for r in rows}
    hp = {k: re.match(r"<details><summary>(.*?)</summary>", r[col["hyperparameters"]]).group(1)
          for k, r in by_agent.items()}
    assert hp == {("backprop", "0.01"): "preset", ("fresh", "0.03"): "preset",
                  ("backprop", "0.1"): "lr=0.1 \\(preset 0.01\\)",  # Markdown-escaped
                  ("mine", "0.003"): "custom agent"}
    # plasticity: the recomputed mean over seeds of the ratio against fresh, seed by seed
    f = {r.seed: np.array(r.per_task) for r in entries[("fresh", 0.03)].results}
    for (agent, lr), e in entries.items():
        want = np.mean([np.mean(f[r.seed] / np.array(r.per_task)) for r in e.results])
        cell = by_agent[(agent, str(lr))][col["plasticity (1 = fresh)"]]
        assert cell.startswith(f"{want:.4g} ±"), (agent, lr, cell)
    # links to the result files, relative to the board's pages, which exist
    for e in entries.values():
        for rel in e.files:
            assert (board / rel).is_file()
            seed = rel.rsplit("seed", 1)[1].removesuffix(".json")
            assert f"[{seed}]({rel})" in text and f'<a href="{rel}">{seed}</a>' in page
    # the page: sortable numbers, the hyperparameters a click away, rank groups
    assert page.count("<details><summary>preset</summary>") == 2
    assert re.search(r'<td class="num" data-sort="[0-9.e-]+">', page)
    assert page.count('<tr data-pos="') == 4


def test_a_submitted_plasticity_block_is_accepted_and_not_trusted(tmp_path, runs):
    board = tmp_path / "board"
    lb.submit([as_agent(runs, 0.03, "fresh", tmp_path / "fresh")], board, reference=True)

    def boast(data, seed):
        data["agent"]["name"] = "boaster"
        data["plasticity"] = {"reference": {"agent": "fresh", "settings": "0123abcd",
                                            "file": "x.json"},
                              "per_task": [99.0] * len(data["per_task"]), "score": 99.0}
    lb.submit([copy_entry(runs[0.1], tmp_path / "boast", boast)], board)
    readme, _ = lb.build(board)
    header, rows = rows_of(readme.read_text(), "tier mini")
    cell = next(r for r in rows if r[1] == "boaster")[header.index("plasticity (1 = fresh)")]
    assert not cell.startswith("99") and re.match(r"[0-9.]+ ± ", cell), cell


def test_reference_marks_are_for_the_projects_agents_once(tmp_path, runs):
    board = tmp_path / "board"
    with pytest.raises(SubmissionRejected, match="not a reference agent"):
        lb.submit([as_agent(runs, 0.01, "mine", tmp_path / "mine")], board, reference=True)
    ref = as_agent(runs, 0.01, "backprop", tmp_path / "ref")
    lb.submit([ref], board)  # not marked
    assert not lb.load_board(board)[0].reference
    marked = lb.submit([ref], board, reference=True)  # the same results: marked now
    assert [p.name for p in marked] == [REFERENCE_MARK]
    assert lb.load_board(board)[0].reference
    assert lb.submit([ref], board, reference=True) == []  # idempotent
    with pytest.raises(SubmissionRejected, match="already has a reference entry"):
        lb.submit([as_agent(runs, 0.1, "backprop", tmp_path / "other")], board, reference=True)


def test_a_board_with_a_wrong_reference_mark_fails_the_build(tmp_path, runs):
    board = tmp_path / "board"
    lb.submit([as_agent(runs, 0.01, "mine", tmp_path / "mine")], board)
    (entry,) = lb.load_board(board)
    folder = board / entry.files[0].rsplit("/", 1)[0]
    (folder / REFERENCE_MARK).write_text("forged\n")
    with pytest.raises(SubmissionRejected, match="'mine' is not a reference agent"):
        lb.build(board)
    (folder / REFERENCE_MARK).unlink()
    stray = board / "submissions" / "SlowlyChangingRegression-v0" / "stray"
    stray.mkdir()
    (stray / REFERENCE_MARK).write_text("x\n")
    with pytest.raises(SubmissionRejected, match="holds no result files"):
        lb.build(board)
    (stray / REFERENCE_MARK).unlink()
    # two marked entries of one agent (marked by hand): the build names both
    lb.submit([as_agent(runs, 0.03, "backprop", tmp_path / "a")], board, reference=True)
    lb.submit([as_agent(runs, 0.1, "backprop", tmp_path / "b")], board)
    for e in lb.load_board(board):
        (board / e.files[0]).parent.joinpath(REFERENCE_MARK).write_text("x\n")
    with pytest.raises(SubmissionRejected, match="a second reference entry of 'backprop'"):
        lb.build(board)


def test_submit_reference_marks_reference_and_fresh_agents(tmp_path, runs):
    results = tmp_path / "results"
    as_agent(runs, 0.01, "backprop", results / "a")
    as_agent(runs, 0.03, "fresh", results / "b")
    as_agent(runs, 0.1, "mine", results / "c")
    board = tmp_path / "board"
    written = lb.submit_reference(results, board, tier=TIER)
    assert sum(p.name == REFERENCE_MARK for p in written) == 2
    assert sorted((e.agent, e.reference) for e in lb.load_board(board)) == [
        ("backprop", True), ("fresh", True)]
    assert lb.submit_reference(results, board, tier=TIER) == []


def test_cli_submit_reference(tmp_path, runs, capsys):
    board = tmp_path / "board"
    ref = as_agent(runs, 0.01, "backprop", tmp_path / "ref")
    args = build_parser().parse_args(["submit", str(ref), "--dir", str(board)])
    assert args.func(args) == 0
    args = build_parser().parse_args(["submit", str(ref), "--dir", str(board), "--reference"])
    assert args.func(args) == 0
    assert "marked as a reference entry" in capsys.readouterr().out
    assert lb.load_board(board)[0].reference


def test_rebuilds_are_byte_identical_whatever_the_listing_order(tmp_path, runs, monkeypatch):
    board = tmp_path / "board"
    lb.submit([as_agent(runs, 0.01, "backprop", tmp_path / "r"),
               as_agent(runs, 0.03, "fresh", tmp_path / "f")], board, reference=True)
    lb.submit([runs[0.1], runs[0.003]], board)
    readme, index = lb.build(board)
    first = readme.read_bytes(), index.read_bytes()
    readme.unlink()
    index.unlink()
    assert tuple(p.read_bytes() for p in lb.build(board)) == first

    original = Path.rglob

    def shuffled(self, pattern):
        found = list(original(self, pattern))
        random.Random(len(found)).shuffle(found)
        return iter(found[::-1])
    monkeypatch.setattr(Path, "rglob", shuffled)
    readme.unlink()
    index.unlink()
    assert tuple(p.read_bytes() for p in lb.build(board)) == first


# -- the plot with many entries -------------------------------------------------------------
def many_entries(n: int) -> list[lb.Entry]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        base = 0.5 + 0.08 * i
        curves = [list(base + 0.05 * rng.standard_normal(20) + np.linspace(0, 0.3, 20))
                  for _ in range(3)]
        out.append(fake(f"agent_with_a_long_name_{i:02d}", curves, hparams={"lr": 0.001 * i}))
    return out


def boxes_overlap(a, b) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5


@pytest.mark.parametrize("n", [12, 30])
def test_the_legend_of_many_entries_stays_off_the_curves_and_apart(n):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    (t,) = ranking.tables(many_entries(n))
    assert len({html_page.line_style(i) for i in range(40)}) == 40
    fig = html_page.plot_figure(t, 0)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    area = ax.patch.get_window_extent(renderer)
    legend = ax.get_legend()
    items = [Bbox.union([h.get_window_extent(renderer), x.get_window_extent(renderer)])
             for h, x in zip(legend.legend_handles, legend.get_texts())]
    assert len(items) == n
    assert [x.get_text() for x in legend.get_texts()] == [
        ranking_legend[:43] + "…" if len(ranking_legend) > 44 else ranking_legend
        for ranking_legend in (r["legend"] for r in t.rows)]
    figure_box = fig.bbox
    for i, box in enumerate(items):
        assert not boxes_overlap(box, area), f"legend entry {i} covers the plot"
        assert box.x0 >= figure_box.x0 and box.x1 <= figure_box.x1 + 0.5, f"entry {i} is cut"
        assert box.y0 >= figure_box.y0 and box.y1 <= figure_box.y1 + 0.5, f"entry {i} is cut"
        for j in range(i):
            assert not boxes_overlap(box, items[j]), f"legend entries {j} and {i} overlap"
    # and in the SVG: every entry's line and label carry their ids, in table order
    svg = html_page._svg(t, 0)
    assert svg.count('id="plot-area-0"') == 1
    assert [int(m) for m in re.findall(r'id="legend-0-(\d+)-text"', svg)] == list(range(n))
    dashed = re.findall(r"stroke-dasharray: ([0-9.,\s]+);", svg)
    assert dashed  # entries 11 and 12 are dashed (the 10 colours come round again)
