"""lop-bench submit / leaderboard build: checks, all-or-nothing copies, escaping, determinism."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import lop_bench
from lop_bench import leaderboard as lb
from lop_bench.errors import InvalidResultError, LopBenchError, SubmissionRejected
from lop_bench.metrics import summarize
from tests.helpers import make_mean_agent

REG = "lop/SlowlyChangingRegression-v0"
SCRIPT = "<script>alert(1)</script>"


def make_entry(out: Path, tier: str = "smoke", seeds=None, **run_kwargs) -> Path:
    """Run the mean agent on every seed of ``tier`` (or ``seeds``) and save into ``out``."""
    cls = lop_bench.make(REG, tier=tier).unwrapped
    for s in range(cls.config.num_seeds) if seeds is None else seeds:
        lop_bench.run(REG, make_mean_agent, tier=tier, seed=s, progress=False,
                      diagnostics=False, out=out, **run_kwargs)
    return out


def copy_entry(src: Path, dst: Path, edit=None, only=None) -> Path:
    """Copy an entry's files, applying ``edit(data, seed)`` and keeping seeds in ``only``."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.json")):
        data = json.loads(f.read_text())
        if only is not None and data["seed"] not in only:
            continue
        if edit is not None:
            edit(data, data["seed"])
        (dst / f.name).write_text(json.dumps(data, indent=1, sort_keys=True))
    return dst


def rename(name):
    def edit(data, seed):
        data["agent"]["name"] = name
    return edit


def snapshot(board: Path) -> dict[str, bytes]:
    return {str(p.relative_to(board)): p.read_bytes()
            for p in sorted(board.rglob("*")) if p.is_file()} if board.exists() else {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        "good": make_entry(root / "good"),
        "fast": make_entry(root / "fast", agent_kwargs={"lr": 0.1}),
        "custom": make_entry(root / "custom", env_kwargs={"change_period": 100}),
    }


def refused(board: Path, paths, match: str) -> SubmissionRejected:
    before = snapshot(board)
    with pytest.raises(SubmissionRejected, match=match) as info:
        lb.submit(paths, board)
    assert snapshot(board) == before, "a refused submission must copy nothing"
    assert info.value.reasons and isinstance(info.value, InvalidResultError)
    return info.value


# -- submit ---------------------------------------------------------------------------
def test_valid_submission_is_accepted(tmp_path, runs):
    board = tmp_path / "board"
    written = lb.submit([runs["good"]], board)
    assert [p.name for p in written] == ["seed0.json", "seed1.json"]
    assert all(p.is_relative_to(board / "submissions" / "SlowlyChangingRegression-v0" / "smoke")
               for p in written)
    for p in written:
        data = json.loads(p.read_text())
        original = json.loads(next(runs["good"].glob(f"*seed{data['seed']}.json")).read_text())
        assert data == original
    assert not [p for p in (board / "submissions").iterdir() if p.name.startswith(".")]
    (entry,) = lb.load_board(board)
    assert entry.seeds == [0, 1] and entry.hparams == {"lr": 0.01}


def test_dry_run_copies_nothing(tmp_path, runs):
    board = tmp_path / "board"
    (entry,) = lb.check_submission([runs["good"]], board)
    assert entry.seeds == [0, 1]
    assert lb.submit([runs["good"]], board, dry_run=True) == []
    assert not board.exists()


def test_summary_edited_without_its_curve_is_refused(tmp_path, runs):
    def edit(data, seed):
        if seed == 1:
            data["summary"]["final"] = data["summary"]["final"] / 2
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    e = refused(tmp_path / "board", [bad], r"summary\.final .* the per-task curve gives")
    assert [w for w, _ in e.reasons] == [str(next(bad.glob("*seed1.json")))]


def test_curve_edited_without_its_summary_is_refused(tmp_path, runs):
    def edit(data, seed):
        data["per_task"][-1] /= 2
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    refused(tmp_path / "board", [bad], r"summary and the curve disagree")


def test_consistent_but_truncated_curve_is_refused(tmp_path, runs):
    def edit(data, seed):
        data["per_task"] = data["per_task"][:8]
        data["summary"] = summarize(data["per_task"], data["higher_is_better"])
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    refused(tmp_path / "board", [bad], r"curve has 8 tasks but the 'smoke' tier has 10")


def test_wrong_tier_hash_is_refused(tmp_path, runs):
    def edit(data, seed):
        data["protocol_hash"] = "sha256:" + "0" * 64
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    refused(tmp_path / "board", [bad], r"protocol_hash sha256:0+ is not the 'smoke' tier's hash")


def test_forged_dataset_fingerprint_is_refused(tmp_path, runs):
    def edit(data, seed):
        data["dataset_fingerprint"] = "sha256:" + "1" * 64
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    refused(tmp_path / "board", [bad], r"dataset_fingerprint")


def test_unknown_env_and_tier_are_refused(tmp_path, runs):
    def env(data, seed):
        data["env_id"] = "lop/SlowlyChangingRegresion-v0"
    bad = copy_entry(runs["good"], tmp_path / "env", env)
    e = refused(tmp_path / "board", [bad], r"unknown env id .*Did you mean")
    assert "lop/SlowlyChangingRegression-v0" in str(e)

    def tier(data, seed):
        data["tier"] = "smoky"
    bad = copy_entry(runs["good"], tmp_path / "tier", tier)
    refused(tmp_path / "board", [bad], r"unknown tier 'smoky'")


def test_missing_seed_is_refused(tmp_path, runs):
    half = copy_entry(runs["good"], tmp_path / "half", only={0})
    refused(tmp_path / "board", [half], r"seed\(s\) \[1\] missing: the tier's seed set is 0\.\.1")


def test_seed_outside_the_tier_seed_set_is_refused(tmp_path, runs):
    def edit(data, seed):
        data["seed"] = seed + 5
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    refused(tmp_path / "board", [bad], r"seed 5 is outside the 'smoke' tier's seed set 0\.\.1")


def test_custom_settings_are_refused(tmp_path, runs):
    refused(tmp_path / "board", [runs["custom"]],
            r"custom \(overridden\) settings are not ranked: change_period=100 \(tier 'smoke': 200\)")

    def unmark(data, seed):  # custom: false, but the config is still not the tier's
        data["custom"] = False
    bad = copy_entry(runs["custom"], tmp_path / "unmarked", unmark)
    refused(tmp_path / "board", [bad], r"custom \(overridden\) settings")

    def mark(data, seed):
        data["custom"] = True
    bad = copy_entry(runs["good"], tmp_path / "marked", mark)
    refused(tmp_path / "board", [bad], r"the file is marked custom")


def test_duplicates_are_refused(tmp_path, runs):
    board = tmp_path / "board"
    lb.submit([runs["good"]], board)
    refused(board, [runs["good"]], r"duplicate of .*seed0\.json, already on the leaderboard")
    # the same entry again with other numbers (e.g. a rerun elsewhere) is refused too
    def edit(data, seed):
        data["per_task"][0] += 1.0
        data["summary"] = summarize(data["per_task"], data["higher_is_better"])
    rerun = copy_entry(runs["good"], tmp_path / "rerun", edit)
    refused(board, [rerun], r"already on the leaderboard")
    # a file given twice in one command
    f = next(runs["fast"].glob("*seed0.json"))
    refused(board, [runs["fast"], f], r"duplicate of .* in the same submission")


def test_a_file_that_is_not_json_refuses_the_whole_submission(tmp_path, runs):
    junk = tmp_path / "junk.json"
    junk.write_text("this is not {json")
    e = refused(tmp_path / "board", [runs["good"], junk], r"not valid JSON")
    assert [w for w, _ in e.reasons] == [str(junk)]  # the good files were fine, yet not copied
    refused(tmp_path / "board", [tmp_path / "nowhere.json"], r"no such file")


def test_every_problem_is_listed(tmp_path, runs):
    def edit(data, seed):
        data["protocol_hash"] = "sha256:" + "0" * 64
    bad = copy_entry(runs["good"], tmp_path / "bad", edit, only={0})
    custom = copy_entry(runs["custom"], tmp_path / "custom", rename("other"))
    e = refused(tmp_path / "board", [bad, custom], r"nothing was copied")
    text = str(e)
    assert "protocol_hash" in text and "missing" in text and "custom" in text


def test_check_result(runs):
    data = json.loads(next(runs["good"].glob("*seed0.json")).read_text())
    lb.check_result(data)
    data["summary"]["mean"] += 1
    with pytest.raises(SubmissionRejected, match="summary.mean"):
        lb.check_result(data)


def test_tampered_board_fails_the_build(tmp_path, runs):
    board = tmp_path / "board"
    (f, _) = lb.submit([runs["good"]], board)
    data = json.loads(f.read_text())
    data["summary"]["final"] = 0.0
    f.write_text(json.dumps(data))
    with pytest.raises(SubmissionRejected, match=r"(?s)fail the checks.*summary\.final"):
        lb.build(board)


# -- build ----------------------------------------------------------------------------
def _table_agents(readme: str) -> list[tuple[str, str]]:
    rows = [line for line in readme.splitlines() if line.startswith("| ") and line[2].isdigit()]
    return [(cells[1], cells[3]) for cells in (r.split(" | ") for r in rows)]


def test_build_ranks_by_final_and_is_byte_identical(tmp_path, runs):
    board = tmp_path / "board"
    lb.submit([runs["good"]], board)
    lb.submit([runs["fast"]], board)
    readme, index = lb.build(board)
    first = (readme.read_bytes(), index.read_bytes())
    readme2, index2 = lb.build(board)
    assert (readme2.read_bytes(), index2.read_bytes()) == first

    # another checkout of the same submissions builds the same bytes
    other = tmp_path / "other"
    shutil.copytree(board / "submissions", other / "submissions")
    r3, i3 = lb.build(other)
    assert (r3.read_bytes(), i3.read_bytes()) == first

    entries = lb.load_board(board)
    finals = {e.hparams["lr"]: sum(e.stat("final")) / 2 for e in entries}
    best = min(finals, key=finals.get)  # regression: the error, lower is better
    text = readme.read_text()
    assert [hp for _, hp in _table_agents(text)] == [f"lr={best}", f"lr={max(finals, key=finals.get)}"]
    assert "lower is better" in text
    assert "| # | agent | preset | hyperparameters | seeds | final | final IQM |" in text
    created = max(json.loads(f.read_text())["run_info"]["created"]
                  for f in runs["good"].glob("*.json"))
    assert created[:10] in text and "lop-bench 0.1.0" in text
    html = index.read_text()
    assert html.count("<svg") == 1 and html.count("<table") == 1
    assert "<script" not in html and "src=" not in html and "<link" not in html
    assert "http-equiv=\"Content-Security-Policy\"" in html


def _fake_entry(agent: str, finals: list[float]) -> lb.Entry:
    results = []
    for seed, final in enumerate(finals):
        r = lb.Result({"seed": seed, "summary": {"final": final}, "env_id": REG, "tier": "x",
                       "agent": {"name": agent, "preset": None, "hparams": {}}}, check=False)
        results.append(r)
    return lb.Entry(REG, "x", agent, None, {}, tuple(results))


def test_ranking_respects_higher_is_better():
    a, b, c = _fake_entry("a", [1.0, 3.0]), _fake_entry("b", [0.5, 0.5]), _fake_entry("c", [2.0, 2.0])
    assert [e.agent for e in lb.rank_entries([a, b, c], higher_is_better=True)] == ["a", "c", "b"]
    assert [e.agent for e in lb.rank_entries([a, b, c], higher_is_better=False)] == ["b", "a", "c"]


def test_submitted_strings_are_escaped(tmp_path, runs):
    board = tmp_path / "board"
    evil = copy_entry(runs["good"], tmp_path / "evil", rename(SCRIPT))

    def preset(data, seed):
        data["agent"]["name"] = "odd $x^{ name\\$ with\nnewline & `ticks` *stars*"
        data["agent"]["preset"] = "<b>bold</b> | pipe"
        data["agent"]["hparams"] = {"<img src=x onerror=alert(2)>": "$\\alpha$"}
    worse = copy_entry(runs["fast"], tmp_path / "worse", preset)
    lb.submit([evil, worse], board)
    readme, index = lb.build(board)
    for text in (readme.read_text(), index.read_text()):
        assert SCRIPT not in text and "<img" not in text and "<b>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "&lt;img src=x onerror=alert(2)&gt;" in text
    assert "<script" not in index.read_text()
    assert "&lt;b&gt;bold&lt;/b&gt; \\| pipe" in readme.read_text()  # the table stays a table
    assert "odd $x^{ name\\\\$ with newline &amp; \\`ticks\\` \\*stars\\*" in readme.read_text()
    assert all(len(line.split(" | ")) == 11 for line in readme.read_text().splitlines()
               if line.startswith("| ") and line[2].isdigit())


def test_iqm_with_ten_seeds(tmp_path, monkeypatch):
    cls = lop_bench.make(REG, tier="smoke").unwrapped.__class__
    monkeypatch.setitem(cls.TIERS, "smoke10", dataclasses.replace(cls.TIERS["smoke"], num_seeds=10))
    runs = make_entry(tmp_path / "runs", tier="smoke10")
    board = tmp_path / "board"
    assert len(lb.submit([runs], board)) == 10
    readme, index = lb.build(board)
    first = readme.read_bytes(), index.read_bytes()
    (row,) = [line for line in readme.read_text().splitlines() if line.startswith("| 1 |")]
    iqm_cell = row.split(" | ")[6]
    assert iqm_cell.count("[") == 1 and iqm_cell.endswith("]"), row
    readme.unlink()
    assert (lb.build(board)[0].read_bytes(), index.read_bytes()) == first


def test_empty_board_builds(tmp_path):
    readme, index = lb.build(tmp_path / "board")
    assert "No submissions yet." in readme.read_text()
    assert "No submissions yet." in index.read_text()


def test_submit_reference(tmp_path, runs):
    results = tmp_path / "results"
    copy_entry(runs["good"], results / "a", rename("backprop"))
    copy_entry(runs["fast"], results / "b", rename("not_a_reference_agent"))
    board = tmp_path / "board"
    written = lb.submit_reference(results, board, tier="smoke")
    assert len(written) == 2 and (board / "README.md").is_file()
    assert [e.agent for e in lb.load_board(board)] == ["backprop"]
    assert lb.submit_reference(results, board, tier="smoke") == []  # idempotent
    with pytest.raises(LopBenchError, match="no result of a reference agent on tier 'cpu'"):
        lb.submit_reference(results, board, tier="cpu")


# -- command line -----------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lop-bench")
    lb.add_cli(p.add_subparsers(dest="command", metavar="COMMAND"))
    return p


def _run(argv) -> int:
    args = _parser().parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.mark.parametrize("argv", [["submit", "--help"], ["leaderboard", "build", "--help"]])
def test_help_shows_an_example(argv, capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(argv)
    assert info.value.code == 0
    assert "lop-bench " + argv[0] in capsys.readouterr().out.split("example")[1]


def test_cli_submit_and_build(tmp_path, runs, capsys):
    board = tmp_path / "board"
    assert _run(["submit", runs["good"], "--dir", board, "--dry-run"]) == 0
    assert "pass every check" in capsys.readouterr().out and not board.exists()
    assert _run(["submit", runs["good"], "--dir", board]) == 0
    assert "accepted 2 result file(s) in 1 entry" in capsys.readouterr().out
    with pytest.raises(SubmissionRejected, match="duplicate"):
        _run(["submit", *sorted(runs["good"].glob("*.json")), "--dir", board])
    assert _run(["leaderboard", "build", "--dir", board]) == 0
    assert (board / "README.md").is_file() and (board / "index.html").is_file()
    assert _run(["leaderboard"]) == 2


def test_committed_leaderboard_is_valid_and_up_to_date(tmp_path):
    """The repository's own board: every submission passes the checks and the pages are
    what a build makes of them (rebuild after submitting)."""
    import shutil
    from pathlib import Path

    from lop_bench.leaderboard import build, load_board

    repo_board = Path(__file__).resolve().parents[1] / "leaderboard"
    copy = tmp_path / "board"
    shutil.copytree(repo_board, copy)
    entries = load_board(copy)
    agents = {e.agent for e in entries}
    assert {"linear", "backprop", "l2", "shrink_perturb", "continual_backprop"} <= agents
    build(copy)
    for name in ("README.md", "index.html"):
        assert (copy / name).read_bytes() == (repo_board / name).read_bytes(), (
            f"leaderboard/{name} is stale: run `lop-bench leaderboard build`"
        )


# -- incremental CIFAR-100: ranked by the last task, with the gap to from_scratch ------
CIFAR = "lop/IncrementalCIFAR100-v0"


def _cifar_entry(agent: str, per_task: list[list[float]]) -> lb.Entry:
    results = tuple(
        lb.Result({"seed": seed, "env_id": CIFAR, "tier": "smoke", "protocol_hash": "h",
                   "per_task": scores, "run_info": {"created": "2026-11-29T00:00:00+00:00",
                                                    "versions": {"lop-bench": "0.1.0"}},
                   "summary": {"final": sum(scores) / len(scores), "initial": scores[0],
                               "drop": scores[0] - scores[-1]},
                   "agent": {"name": agent, "preset": None, "hparams": {}}}, check=False)
        for seed, scores in enumerate(per_task)
    )
    return lb.Entry(CIFAR, "smoke", agent, None, {}, results)


def test_incremental_cifar_ranks_by_the_last_task_and_shows_the_gap_to_from_scratch():
    # `final` (here a mean over tasks) would rank them the other way round
    early = _cifar_entry("early_peak", [[0.9, 0.9, 0.40], [0.9, 0.9, 0.44]])
    late = _cifar_entry("late_bloomer", [[0.1, 0.1, 0.60], [0.1, 0.1, 0.64]])
    scratch = _cifar_entry("from_scratch", [[0.5, 0.5, 0.50], [0.5, 0.5, 0.50]])
    assert lb.rank_stat(CIFAR) == "last" and lb.rank_stat(REG) == "final"
    (table,) = lb._tables([early, scratch, late])
    assert [e.agent for e in table.entries] == ["late_bloomer", "from_scratch", "early_peak"]
    keys = [k for k, _ in table.columns]
    assert "gap" in keys and "initial" not in keys and "drop" not in keys
    assert dict(table.columns)["final"] == "final (all classes)"
    rows = {r["agent"]: r for r in table.rows}
    assert rows["late_bloomer"]["final"].startswith("0.62 ±")
    assert rows["late_bloomer"]["gap"].startswith("+0.12 ±")  # paired: (0.10 + 0.14) / 2
    assert rows["early_peak"]["gap"].startswith("-0.08 ±")
    assert rows["from_scratch"]["gap"] == "0"


def test_the_gap_needs_a_from_scratch_entry_and_shared_seeds():
    alone = _cifar_entry("backprop", [[0.5, 0.3], [0.5, 0.4]])
    (table,) = lb._tables([alone])
    assert table.rows[0]["gap"] == "—"
    scratch_seed0 = _cifar_entry("from_scratch", [[0.5, 0.5]])
    (table,) = lb._tables([alone, scratch_seed0])
    rows = {r["agent"]: r for r in table.rows}
    assert rows["backprop"]["gap"] == "-0.2"  # one shared seed: no interval


def test_a_cifar_board_builds_with_the_last_task_table(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    for agent in ("backprop", "from_scratch"):
        for seed in (0, 1):
            result = lop_bench.run(CIFAR, agent, tier="smoke", seed=seed, progress=False,
                                   out=out / agent)
    # the session's fixture stands in for the official CIFAR-100 (whose fingerprint the
    # leaderboard requires)
    from lop_bench.envs.incremental_cifar import IncrementalCIFAR100Env

    monkeypatch.setattr(IncrementalCIFAR100Env, "DATASET_FINGERPRINT",
                        result.data["dataset_fingerprint"])
    board = tmp_path / "board"
    lb.submit([out / "backprop", out / "from_scratch"], board)
    readme, index = lb.build(board)
    text = readme.read_text()
    assert "| final (all classes) | gap to from_scratch |" in text
    entries = {e.agent: e for e in lb.load_board(board)}
    mine, ref = entries["backprop"].stat("last"), entries["from_scratch"].stat("last")
    gap = sum(m - r for m, r in zip(mine, ref)) / 2
    row = next(line for line in text.splitlines() if line.startswith("| ") and "| backprop |" in line)
    assert (f"| {gap:+.4g}" in row) or (gap == 0 and "| +0" in row)
