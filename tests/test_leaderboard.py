"""lop-bench submit / leaderboard build: checks, copies, all-or-nothing writes, escaping,
determinism, concurrent submits."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import lop_bench
from lop_bench import leaderboard as lb
from lop_bench import registration
from lop_bench.cli import build_parser
from lop_bench.errors import InvalidResultError, LopBenchError, SubmissionRejected
from lop_bench.leaderboard import checks, ranking, submission
from lop_bench.metrics import summarize
from lop_bench.registration import stream_spec
from lop_bench.results import Result
from tests.leaderboard_fixtures import (
    REG,
    SCRIPT,
    TIER,
    copy_entry,
    make_entry,
    ranked_mini_tier,
    rename,
)

CIFAR = "lop/IncrementalCIFAR100-v0"
SOURCE = "https://github.com/me/my-agent/tree/0123456789abcdef0123456789abcdef01234567"


def snapshot(board: Path) -> dict[str, bytes]:
    return {str(p.relative_to(board)): p.read_bytes()
            for p in sorted(board.rglob("*")) if p.is_file() and p.name != ".lock"
            } if board.exists() else {}


@pytest.fixture(scope="module", autouse=True)
def _mini_tier():
    with ranked_mini_tier(REG, CIFAR):
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory, _mini_tier):
    root = tmp_path_factory.mktemp("runs")
    return {
        "good": make_entry(root / "good"),
        "fast": make_entry(root / "fast", agent_kwargs={"lr": 0.1}),
        "slow": make_entry(root / "slow", agent_kwargs={"lr": 0.003}),
        "custom": make_entry(root / "custom", env_kwargs={"change_period": 100}),
    }


def refused(board: Path, paths, match: str, **kwargs) -> SubmissionRejected:
    before = snapshot(board)
    with pytest.raises(SubmissionRejected, match=match) as info:
        lb.submit(paths, board, **kwargs)
    assert snapshot(board) == before, "a refused submission must copy nothing"
    assert info.value.reasons and isinstance(info.value, InvalidResultError)
    return info.value


def seed_file(entry: Path, seed: int) -> Path:
    return next(entry.glob(f"*seed{seed}.json"))


def recompute(data: dict) -> None:
    data["summary"] = summarize(data["per_task"], data["higher_is_better"])


# -- submit ---------------------------------------------------------------------------
def test_valid_submission_is_accepted(tmp_path, runs):
    board = tmp_path / "board"
    written = lb.submit([runs["good"]], board)
    assert [p.name for p in written] == ["seed0.json", "seed1.json"]
    assert all(p.is_relative_to(board / "submissions" / "SlowlyChangingRegression-v0" / TIER)
               for p in written)
    for p in written:
        data = json.loads(p.read_text())
        assert data == json.loads(seed_file(runs["good"], data["seed"]).read_text())
    assert not [p for p in (board / "submissions").iterdir()
                if p.name.startswith(".") and p.name != ".lock"]
    (entry,) = lb.load_board(board)
    assert entry.seeds == [0, 1] and entry.hparams == {"lr": 0.01} and entry.source is None


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
    assert [w for w, _ in e.reasons] == [str(seed_file(bad, 1))]


def test_curve_edited_without_its_summary_is_refused(tmp_path, runs):
    def edit(data, seed):
        data["per_task"][-1] /= 2
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    refused(tmp_path / "board", [bad], r"summary and the curve disagree")


def test_consistent_but_truncated_curve_is_refused(tmp_path, runs):
    def edit(data, seed):
        data["per_task"] = data["per_task"][:8]
        recompute(data)
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    refused(tmp_path / "board", [bad], rf"curve has 8 tasks but the '{TIER}' tier has 10")


def test_wrong_tier_hash_is_refused(tmp_path, runs):
    def edit(data, seed):
        data["protocol_hash"] = "sha256:" + "0" * 64
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    refused(tmp_path / "board", [bad], rf"protocol_hash sha256:0+ is not the '{TIER}' tier's hash")


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
    e = refused(tmp_path / "board", [bad], r"unknown tier 'smoky'")
    assert "Ranked tiers: cpu, paper" in str(e) and "smoke," not in str(e)


def test_missing_seed_is_refused(tmp_path, runs):
    half = copy_entry(runs["good"], tmp_path / "half", only={0})
    refused(tmp_path / "board", [half], r"seed\(s\) \[1\] missing: the tier's seed set is 0\.\.1")


def test_seed_outside_the_tier_seed_set_is_refused(tmp_path, runs):
    def edit(data, seed):
        data["seed"] = seed + 5
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    refused(tmp_path / "board", [bad], rf"seed 5 is outside the '{TIER}' tier's seed set 0\.\.1")


def test_custom_settings_are_refused(tmp_path, runs):
    refused(tmp_path / "board", [runs["custom"]],
            rf"custom \(overridden\) settings are not ranked: change_period=100 \(tier '{TIER}': 200\)")

    def unmark(data, seed):  # custom: false, but the config is still not the tier's
        data["custom"] = False
    bad = copy_entry(runs["custom"], tmp_path / "unmarked", unmark)
    refused(tmp_path / "board", [bad], r"custom \(overridden\) settings")

    def mark(data, seed):
        data["custom"] = True
    bad = copy_entry(runs["good"], tmp_path / "marked", mark)
    refused(tmp_path / "board", [bad], r"the file is marked custom")


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
    data = json.loads(seed_file(runs["good"], 0).read_text())
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


# -- copies -----------------------------------------------------------------------------
@pytest.mark.parametrize("disguise", ["name", "preset", "hparams", "everything"])
def test_a_curve_already_on_the_board_is_refused_whatever_the_entry(tmp_path, runs, disguise):
    board = tmp_path / "board"
    lb.submit([runs["good"]], board)

    def edit(data, seed):
        if disguise in ("name", "everything"):
            data["agent"]["name"] = "my_brand_new_agent"
        if disguise in ("preset", "everything"):
            data["agent"]["preset"] = "tuned"
        if disguise in ("hparams", "everything"):
            data["agent"]["hparams"] = {"lr": 0.5, "width": 7}
        data["run_info"] = {"created": "2030-01-01T00:00:00+00:00"}
    copy = copy_entry(runs["good"], tmp_path / "copy", edit)
    e = refused(board, [copy], r"the per-task curve equals, bit for bit, the one of")
    (held,) = lb.load_board(board)
    for seed in (0, 1):  # each file names the board's file that holds its curve
        why = dict(e.reasons)[str(seed_file(copy, seed))]
        assert f"{held.key[2]!r}" in why and f"seed{seed}.json" in why
        assert str(board / "submissions") in why


def test_one_copied_seed_is_enough_to_refuse(tmp_path, runs):
    board = tmp_path / "board"
    lb.submit([runs["good"]], board)

    def graft(data, seed):  # a new run's seed 0, with seed 1 taken from the board's entry
        if seed == 1:
            data["per_task"] = json.loads(seed_file(runs["good"], 1).read_text())["per_task"]
            recompute(data)
    mixed = copy_entry(runs["fast"], tmp_path / "mixed", graft)
    e = refused(board, [mixed], r"bit for bit")
    assert [w for w, _ in e.reasons] == [str(seed_file(mixed, 1))]


def test_a_copy_inside_one_submission_is_refused(tmp_path, runs):
    copy = copy_entry(runs["good"], tmp_path / "copy", rename("twin"))
    e = refused(tmp_path / "board", [runs["good"], copy], r"bit for bit")
    assert {w for w, _ in e.reasons} == {str(seed_file(copy, s)) for s in (0, 1)}


def test_seed_files_copied_from_one_run_are_refused(tmp_path, runs):
    def clone(data, seed):  # seed 1's file is seed 0's with the seed changed
        if seed == 1:
            data.update({k: v for k, v in json.loads(seed_file(runs["good"], 0).read_text()).items()
                         if k != "seed"})
    bad = copy_entry(runs["good"], tmp_path / "clone", clone)
    refused(tmp_path / "board", [bad], r"seed 1 equals, bit for bit, the one of .*seed 0\) in "
                                       r"the same entry: seed files copied from one run")


def test_a_flipped_sign_of_zero_hides_no_copy(tmp_path, runs):
    board = tmp_path / "board"

    def zero(data, seed):
        data["per_task"][0] = 0.0
        recompute(data)
    lb.submit([copy_entry(runs["good"], tmp_path / "zero", zero)], board)

    def negative_zero(data, seed):
        zero(data, seed)
        data["per_task"][0] = -0.0
        data["agent"]["name"] = "other"
    copy = copy_entry(runs["good"], tmp_path / "copy", negative_zero)
    assert "-0.0" in seed_file(copy, 0).read_text()
    refused(board, [copy], r"bit for bit")


@pytest.mark.parametrize("curve, compared", [
    ([0.5] * 10, False),  # chance from the start
    ([0.62] + [0.5] * 9, False),  # diverged after its first task
    ([0.62, 0.55] + [0.5] * 8, False),
    ([0.62, 0.55, 0.51] + [0.5] * 7, True),  # four distinct values: compared
])
def test_curves_of_a_network_that_stopped_learning_are_not_copies(tmp_path, runs, curve,
                                                                  compared):
    """A diverged network scores chance on every task: independent runs share such curves."""
    def stalled(name):
        def edit(data, seed):
            data["agent"]["name"] = name
            data["per_task"] = list(curve)
            recompute(data)
        return edit
    a = copy_entry(runs["good"], tmp_path / "a", stalled("a"))  # its two seeds alike
    b = copy_entry(runs["good"], tmp_path / "b", stalled("b"))  # and entry b like entry a
    if compared:
        refused(tmp_path / "board", [a, b], r"bit for bit")
    else:
        assert len(lb.submit([a, b], tmp_path / "board")) == 4


def test_the_board_itself_is_checked_for_copies(tmp_path, runs):
    """Files that reach the board another way (a pull request) are checked by the build."""
    board = tmp_path / "board"
    lb.submit([runs["good"]], board)
    copy = copy_entry(runs["good"], tmp_path / "copy", rename("copycat"))
    folder = board / "submissions" / "SlowlyChangingRegression-v0" / TIER / "copycat__0"
    folder.mkdir()
    for seed in (0, 1):
        shutil.copy(seed_file(copy, seed), folder / f"seed{seed}.json")
    with pytest.raises(SubmissionRejected, match=r"(?s)fail the checks.*copycat__0.*bit for bit"):
        lb.build(board)


# -- steps, diagnostics, smoke ----------------------------------------------------------
@pytest.mark.parametrize("steps", [0, 1999, 2001, 10**12])
def test_steps_that_are_not_the_tiers_are_refused(tmp_path, runs, steps):
    def edit(data, seed):
        data["steps"] = steps
    bad = copy_entry(runs["good"], tmp_path / "bad", edit)
    refused(tmp_path / "board", [bad],
            rf"steps is {steps:,} but a run of the '{TIER}' tier takes 2,000 env steps")


def test_episodic_streams_may_finish_their_episodes():
    """The Ant changes task at an episode end: a run takes from num_steps to num_steps plus
    max_episode_steps - 1 per task (the committed cpu results took 151,672 to 153,214)."""
    from lop_bench.envs.ant import TIERS, ChangingFrictionAntEnv

    assert ChangingFrictionAntEnv.step_bounds(TIERS["cpu"]) == (150_000, 150_000 + 5 * 999)
    env = lop_bench.make(REG, tier="cpu").unwrapped
    assert env.step_bounds(env.config) == (1_500_000,) * 2
    ant = next(Path(__file__).resolve().parents[1].glob(
        "leaderboard/submissions/ChangingFrictionAnt-v0/cpu/*/seed0.json"))
    data = json.loads(ant.read_text())
    for steps, ok in ((150_000, True), (154_995, True), (149_999, False), (154_996, False)):
        data["steps"] = steps
        problems = [p for p in checks.problems(data) if p.startswith("steps is")]
        assert problems == ([] if ok else [
            f"steps is {steps:,} but a run of the 'cpu' tier takes between 150,000 and 154,995 "
            "env steps: an unfinished, truncated or invented run."])


def test_missing_diagnostics_are_refused(tmp_path, runs):
    no_diag = make_entry(tmp_path / "nodiag", agent_kwargs={"lr": 0.2}, diagnostics=False)
    e = refused(tmp_path / "board", [no_diag], r"no diagnostics: .*not --no-diagnostics")
    assert "features(x)" in str(e)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["diagnostics"]["tasks"].pop(), r"diagnostics\.tasks is not the runner's schedule"),
    (lambda d: d["diagnostics"]["tasks"].pop(3), r"diagnostics\.tasks is not the runner's schedule"),
    (lambda d: d["diagnostics"].update(every=3), r"schedule for every=3"),
    (lambda d: d["diagnostics"].update(measures={}), r"diagnostics\.measures is empty"),
    (lambda d: d["diagnostics"]["measures"]["effective_rank"].pop(),
     r"measures \['effective_rank'\] do not hold one value per measured task"),
])
def test_diagnostics_that_are_not_the_runners_are_refused(tmp_path, runs, edit, match):
    bad = copy_entry(runs["good"], tmp_path / "bad", lambda data, seed: edit(data))
    refused(tmp_path / "board", [bad], match)


def test_diagnostics_may_lack_task_0_and_hold_nulls(tmp_path, runs):
    """An RL agent has no probe before it has seen a state (no task 0); a diverged network's
    diagnostics are null."""
    def edit(data, seed):
        diag = data["diagnostics"]
        diag["tasks"] = diag["tasks"][1:]
        diag["measures"] = {k: [None] + v[2:] for k, v in diag["measures"].items()}
    ok = copy_entry(runs["good"], tmp_path / "ok", edit)
    assert len(lb.submit([ok], tmp_path / "board")) == 2


def test_the_smoke_tier_is_never_ranked(tmp_path):
    smoke = make_entry(tmp_path / "smoke", tier="smoke")
    e = refused(tmp_path / "board", [smoke], r"the 'smoke' tier is never ranked")
    assert "--tier cpu" in str(e)
    # a smoke entry put on the board by hand is not shown: the build refuses it
    board = tmp_path / "board"
    folder = board / "submissions" / "SlowlyChangingRegression-v0" / "smoke" / "x__0"
    folder.mkdir(parents=True)
    for f in smoke.glob("*.json"):
        shutil.copy(f, folder / f"seed{json.loads(f.read_text())['seed']}.json")
    with pytest.raises(SubmissionRejected, match="never ranked"):
        lb.build(board)
    assert not (board / "README.md").exists()


# -- resubmissions ----------------------------------------------------------------------
def test_the_same_files_again_are_left_as_they_are(tmp_path, runs, capsys):
    board = tmp_path / "board"
    lb.submit([runs["good"]], board)
    before = snapshot(board)
    assert lb.submit([runs["good"]], board) == []  # not an error, nothing written
    assert snapshot(board) == before
    # with a new entry beside it, only the new one is written
    written = lb.submit([runs["good"], runs["fast"]], board)
    assert len(written) == 2 and len(lb.load_board(board)) == 2
    assert all(json.loads(p.read_text())["agent"]["hparams"] == {"lr": 0.1} for p in written)
    capsys.readouterr()
    assert _run(["submit", runs["good"], "--dir", board]) == 0
    out = capsys.readouterr().out
    assert "accepted 0 result file(s)" in out and "left as it is" in out


def test_the_same_entry_with_other_results_is_refused(tmp_path, runs):
    board = tmp_path / "board"
    lb.submit([runs["good"]], board)

    def edit(data, seed):  # a rerun elsewhere, with other numbers
        data["per_task"][0] += 1.0
        recompute(data)
    rerun = copy_entry(runs["good"], tmp_path / "rerun", edit)
    e = refused(board, [rerun], r"already on the leaderboard .* with other results")
    assert "remove" in str(e)
    f = seed_file(runs["fast"], 0)  # a file given twice in one command
    refused(board, [runs["fast"], f], r"a duplicate of .*seed0")


# -- agent.source -----------------------------------------------------------------------
def test_source_is_recorded_and_linked(tmp_path, runs):
    board = tmp_path / "board"
    written = lb.submit([runs["good"]], board, source=SOURCE)
    assert all(json.loads(p.read_text())["agent"]["source"] == SOURCE for p in written)
    lb.submit([runs["fast"]], board, source="my-agent==1.2.0")
    lb.submit([runs["slow"]], board)
    assert lb.submit([runs["good"]], board, source=SOURCE) == []  # the same again
    readme, index = lb.build(board)
    text, page = readme.read_text(), index.read_text()
    short = "github.com/me/my-agent/tree/0123456789ab"
    assert f"[{short}](<{SOURCE}>)" in text
    assert f'<a href="{SOURCE}" rel="nofollow noopener noreferrer">{short}</a>' in page
    assert "| my-agent==1.2.0 |" in text and ">my-agent==1.2.0</td>" in page  # text, no link
    assert "*no source*" in text and '<span class="nosrc">no source</span>' in page
    assert page.count('<a href="http') == 1 and text.count("](<") == 1  # only the URL links


@pytest.mark.parametrize("source", [
    "https://github.com/me/my-agent",  # no commit
    "https://github.com/me/my-agent/tree/main",
    "javascript:alert(1)//0123456789abcdef",
    "https://github.com/me/x/tree/0123456789abcdef\" onmouseover=\"alert(1)",
    "https://github.com/me/x/tree/0123456789abcdef\n",
    "data:text/html,<script>0123456789abcdef",
    "my-agent",  # no version
    "my-agent>=1.0",
    "",
])
def test_a_source_not_in_form_is_refused(tmp_path, runs, source):
    e = refused(tmp_path / "board", [runs["good"]], r"--source: agent\.source", source=source)
    assert "a URL with a commit" in str(e) or "control character" in str(e)


def test_a_file_naming_another_source_is_refused(tmp_path, runs):
    def edit(data, seed):
        data["agent"]["source"] = "other-agent==0.1"
    other = copy_entry(runs["good"], tmp_path / "other", edit)
    refused(tmp_path / "board", [other], r"agent\.source is 'other-agent==0\.1', not the "
                                         r"--source", source=SOURCE)

    def one_seed(data, seed):
        if seed == 1:
            data["agent"]["source"] = "other-agent==0.1"
    mixed = copy_entry(runs["good"], tmp_path / "mixed", one_seed)
    refused(tmp_path / "board", [mixed], r"seeds name different agent\.source values")


def test_cli_submit_source(tmp_path, runs, capsys):
    board = tmp_path / "board"
    assert _run(["submit", runs["good"], "--dir", board, "--source", "my-agent==1.2.0"]) == 0
    (entry,) = lb.load_board(board)
    assert entry.source == "my-agent==1.2.0"


# -- files ------------------------------------------------------------------------------
def test_a_symlink_to_dev_zero_on_the_board_fails_the_build_at_once(tmp_path, runs):
    board = tmp_path / "board"
    (f, _) = lb.submit([runs["good"]], board)
    evil = f.parent / "seed7.json"
    evil.symlink_to("/dev/zero")
    with pytest.raises(SubmissionRejected, match=r"seed7\.json: is a symbolic link \(to /dev/zero\)"):
        lb.build(board)
    # the same file among the files to submit is refused, not read
    refused(tmp_path / "other", [evil], r"is a symbolic link")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_among_the_submissions_is_refused_without_blocking(tmp_path, runs):
    pipe = tmp_path / "in" / "seed0.json"
    pipe.parent.mkdir()
    os.mkfifo(pipe)
    result: list[BaseException] = []

    def go():
        try:
            lb.submit([pipe.parent], tmp_path / "board")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "submit blocked on a FIFO"
    assert isinstance(result[0], SubmissionRejected) and "is a FIFO" in str(result[0])


def test_submitted_files_and_pages_get_the_usual_permissions(tmp_path, runs):
    old = os.umask(0o027)
    try:
        board = tmp_path / "board"
        written = lb.submit([runs["good"]], board)
        pages = lb.build(board)
    finally:
        os.umask(old)
    for p in (*written, *pages):
        assert p.stat().st_mode & 0o777 == 0o640, p
    assert written[0].parent.stat().st_mode & 0o777 == 0o750


# -- concurrent submits -----------------------------------------------------------------
def _slow_writes(monkeypatch, seconds=0.3):
    write = submission._write

    def slow(*args):
        threading.Event().wait(seconds)
        return write(*args)
    monkeypatch.setattr(submission, "_write", slow)


def _in_threads(*calls):
    out: dict[int, object] = {}

    def go(i, call):
        try:
            out[i] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out[i] = exc
    threads = [threading.Thread(target=go, args=(i, c)) for i, c in enumerate(calls)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    return [out[i] for i in range(len(calls))]


def test_racing_submits_of_one_entry_write_it_once(tmp_path, runs, monkeypatch):
    board = tmp_path / "board"
    _slow_writes(monkeypatch)
    a, b = _in_threads(lambda: lb.submit([runs["good"]], board),
                       lambda: lb.submit([runs["good"]], board))
    assert sorted([len(a), len(b)]) == [0, 2], (a, b)  # one wrote it, the other found it
    assert len(lb.load_board(board)) == 1


def test_racing_submits_of_two_entries_both_land(tmp_path, runs, monkeypatch):
    board = tmp_path / "board"
    _slow_writes(monkeypatch)
    a, b = _in_threads(lambda: lb.submit([runs["good"]], board),
                       lambda: lb.submit([runs["fast"]], board))
    assert len(a) == 2 and len(b) == 2, (a, b)
    assert len(lb.load_board(board)) == 2


def test_racing_copies_are_refused(tmp_path, runs, monkeypatch):
    """Without the lock both would check an empty board and both land."""
    board = tmp_path / "board"
    copy = copy_entry(runs["good"], tmp_path / "copy", rename("copycat"))
    _slow_writes(monkeypatch)
    results = _in_threads(lambda: lb.submit([runs["good"]], board),
                          lambda: lb.submit([copy], board))
    assert sum(isinstance(r, SubmissionRejected) for r in results) == 1, results
    assert len(lb.load_board(board)) == 1


def test_a_submit_gives_up_cleanly_on_a_lock_held_by_another_process(tmp_path, runs, monkeypatch):
    pytest.importorskip("fcntl")
    board = tmp_path / "board"
    lock = board / "submissions" / ".lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(submission, "LOCK_TIMEOUT_S", 0.3)
        with pytest.raises(LopBenchError, match=r"another `lop-bench submit` .* still holds its "
                                                r"lock .* Nothing was copied"):
            lb.submit([runs["good"]], board)
        assert snapshot(board) == {}
    finally:
        holder.kill()
        holder.wait()
    assert len(lb.submit([runs["good"]], board)) == 2  # a dead holder's lock is released


def test_an_unwritable_board_gives_a_clean_error(tmp_path, runs):
    board = tmp_path / "board"
    board.write_text("a file, not a directory")
    with pytest.raises(LopBenchError, match=r"cannot take the lock .* is the leaderboard "
                                            r"directory writable"):
        lb.submit([runs["good"]], board)


# -- build ----------------------------------------------------------------------------
def _table_rows(readme: str) -> list[list[str]]:
    rows = [line for line in readme.splitlines() if line.startswith("| ") and line[2].isdigit()]
    return [row[2:-2].split(" | ") for row in rows]


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
    hp = [row[2] for row in _table_rows(text)]
    assert [h.endswith(f"lr={lr}</details>") for h, lr in
            zip(hp, [best, max(finals, key=finals.get)])] == [True, True], hp
    # no reference entry of the agent on this board: nothing to diff against
    assert all(h.startswith("<details><summary>custom agent</summary>") for h in hp)
    assert "lower is better" in text
    assert ("| # | agent | hyperparameters | source | seeds | final | P(> next) | final IQM | "
            "plasticity (1 = fresh) | initial | drop | versions | date | result files (by seed) |"
            in text)
    created = max(json.loads(f.read_text())["run_info"]["created"]
                  for f in runs["good"].glob("*.json"))
    assert created[:10] in text and "lop-bench 0.1.0" in text
    html = index.read_text()
    assert html.count('<svg class="swatch"') == 2  # one per row
    assert html.count("<svg") == 3 and html.count("<table") == 1
    assert_only_the_sort_script(html)


def assert_only_the_sort_script(html: str) -> None:
    """The page runs one inline script, the sorter, allowed by its hash and nothing else; it
    loads nothing."""
    import base64
    import hashlib

    from lop_bench.leaderboard.html_page import SORT_SCRIPT

    assert html.count("<script") == 1 and f"<script>{SORT_SCRIPT}</script>" in html
    digest = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
    assert (f"content=\"default-src 'none'; style-src 'unsafe-inline'; "
            f"script-src 'sha256-{digest}'\"") in html
    assert "src=" not in html.replace("script-src", "").replace("default-src", "").replace(
        "style-src", "")
    assert "<link" not in html and "url(http" not in html and "@import" not in html


def _fake_entry(agent: str, finals: list[float]) -> lb.Entry:
    results = []
    for seed, final in enumerate(finals):
        r = Result({"seed": seed, "summary": {"final": final}, "env_id": REG, "tier": "x",
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
        data["agent"]["name"] = "odd $x^{ name\\$ with  spaces & `ticks` *stars*"
        data["agent"]["preset"] = "<b>bold</b> | pipe"
        data["agent"]["hparams"] = {"<img src=x onerror=alert(2)>": "$\\alpha$"}
    worse = copy_entry(runs["fast"], tmp_path / "worse", preset)
    lb.submit([evil, worse], board)
    readme, index = lb.build(board)
    for text in (readme.read_text(), index.read_text()):
        assert SCRIPT not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in readme.read_text()
    assert "&lt;img src=x onerror=alert\\(2\\)&gt;" in readme.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index.read_text()
    assert "&lt;img src=x onerror=alert(2)&gt;" in index.read_text()
    assert_only_the_sort_script(index.read_text().replace("&lt;img src=x", ""))
    assert "&lt;b&gt;bold&lt;/b&gt; \\| pipe" in readme.read_text()  # the table stays a table
    assert ("odd &#36;x^{ name\\\\&#36; with spaces &amp; \\`ticks\\` \\*stars\\*"
            in readme.read_text())
    assert all(len(row) == 14 for row in _table_rows(readme.read_text()))


# Characters that start Markdown syntax on GitHub: each must come escaped out of a name.
_MD_META = set("\\`*_~[]()|:@#!")


def _unescaped_markdown(cell: str) -> list[str]:
    """Markdown metacharacters in ``cell`` not escaped by a backslash, raw ``$ < >``, and
    GitHub autolink triggers (``http://``, ``www.``)."""
    bad, i = [], 0
    while i < len(cell):
        ch = cell[i]
        if ch == "\\":
            i += 2  # an escaped character
            continue
        if ch in _MD_META or ch in "$<>":
            bad.append(ch)
        i += 1
    bad += re.findall(r"(?i)https?://|www\.", cell)
    return bad


NAMES = ["_x_", "~~x~~", "$x$", "[a](b)", "http://x.org", "<x>", "a|b", "*x*", "`x`",
         "www.x.org", "me@x.org", "![i](http://x/i.png)", "# h", "\\_x\\_", "&#95;x&#95;",
         "$$x$$", ":smile:", "<https://x.org>"]


def test_markdown_syntax_in_names_renders_as_text(tmp_path, runs):
    board = tmp_path / "board"
    entries = []
    for i, name in enumerate(NAMES):
        def edit(data, seed, i=i, name=name):
            data["agent"]["name"] = name
            data["agent"]["preset"] = name
            data["agent"]["hparams"] = {name: name}
            data["per_task"] = [v + i for v in data["per_task"]]  # a curve of its own
            recompute(data)
        entries.append(copy_entry(runs["good"], tmp_path / f"e{i}", edit))
    lb.submit(entries, board)
    readme, _ = lb.build(board)
    rows = _table_rows(readme.read_text())
    assert len(rows) == len(NAMES) and all(len(row) == 14 for row in rows)
    for row in rows:
        agent, hparams = row[1], row[2]
        # the cell's own markup: the hyperparameters open with a click
        assert hparams.startswith("<details><summary>custom agent</summary>preset ")
        assert hparams.endswith("</details>")
        hparams = hparams.removeprefix("<details><summary>custom agent</summary>")
        hparams = hparams.removesuffix("</details>")
        for cell in (agent, hparams):
            assert _unescaped_markdown(cell.replace("&#36;", "").replace("&lt;", "")
                                       .replace("&gt;", "").replace("&amp;", "")) == [], cell
    names = {html_unescape_md(row[1]) for row in rows}
    assert names == set(NAMES)


def html_unescape_md(cell: str) -> str:
    """What a Markdown renderer shows for an escaped cell: backslash escapes and entities
    resolved (a cell holds no other syntax)."""
    import html

    return html.unescape(re.sub(r"\\(.)", r"\1", cell))


def test_iqm_with_ten_seeds(tmp_path, monkeypatch):
    cls = lop_bench.make(REG, tier="smoke").unwrapped.__class__
    monkeypatch.setitem(cls.TIERS, "smoke10", dataclasses.replace(cls.TIERS["smoke"], num_seeds=10))
    runs = make_entry(tmp_path / "runs", tier="smoke10")
    board = tmp_path / "board"
    assert len(lb.submit([runs], board)) == 10
    readme, index = lb.build(board)
    first = readme.read_bytes(), index.read_bytes()
    (row,) = [line for line in readme.read_text().splitlines() if line.startswith("| 1 |")]
    iqm_cell = row.split(" | ")[7]
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
    written = lb.submit_reference(results, board, tier=TIER)
    assert [p.name for p in written] == ["seed0.json", "seed1.json", "REFERENCE"]
    assert (board / "README.md").is_file()
    assert [(e.agent, e.reference) for e in lb.load_board(board)] == [("backprop", True)]
    assert lb.submit_reference(results, board, tier=TIER) == []  # idempotent
    with pytest.raises(LopBenchError, match="no result of a reference agent on tier 'cpu'"):
        lb.submit_reference(results, board, tier="cpu")


# -- command line -----------------------------------------------------------------------
def _run(argv) -> int:
    args = build_parser().parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.mark.parametrize("argv", [["submit", "--help"], ["leaderboard", "build", "--help"]])
def test_help_shows_an_example(argv, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 0
    assert "lop-bench " + argv[0] in capsys.readouterr().out.split("example")[1]


def test_cli_submit_and_build(tmp_path, runs, capsys):
    board = tmp_path / "board"
    assert _run(["submit", runs["good"], "--dir", board, "--dry-run"]) == 0
    assert "pass every check" in capsys.readouterr().out and not board.exists()
    assert _run(["submit", runs["good"], "--dir", board]) == 0
    assert "accepted 2 result file(s) in 1 entry" in capsys.readouterr().out
    copy = copy_entry(runs["good"], tmp_path / "copy", rename("copycat"))
    with pytest.raises(SubmissionRejected, match="bit for bit"):
        _run(["submit", copy, "--dir", board])
    assert _run(["leaderboard", "build", "--dir", board]) == 0
    assert (board / "README.md").is_file() and (board / "index.html").is_file()
    assert _run(["leaderboard"]) == 2


def test_committed_leaderboard_is_valid_and_up_to_date(tmp_path):
    """The repository's own board: every submission passes the checks and the pages are
    what a build makes of them (rebuild after submitting)."""
    repo_board = Path(__file__).resolve().parents[1] / "leaderboard"
    copy = tmp_path / "board"
    shutil.copytree(repo_board, copy)
    entries = lb.load_board(copy)
    agents = {e.agent for e in entries}
    assert {"linear", "backprop", "l2", "shrink_perturb", "continual_backprop"} <= agents
    lb.build(copy)
    for name in ("README.md", "index.html"):
        assert (copy / name).read_bytes() == (repo_board / name).read_bytes(), (
            f"leaderboard/{name} is stale: run `lop-bench leaderboard build`"
        )


# -- incremental CIFAR-100: ranked by the last task, with the gap to from_scratch ------
def _cifar_entry(agent: str, per_task: list[list[float]]) -> lb.Entry:
    results = tuple(
        Result({"seed": seed, "env_id": CIFAR, "tier": "smoke", "protocol_hash": "h",
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
    assert stream_spec(CIFAR).rank_by == "last" and stream_spec(REG).rank_by == "final"
    (table,) = ranking.tables([early, scratch, late])
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
    (table,) = ranking.tables([alone])
    assert table.rows[0]["gap"] == "—"
    scratch_seed0 = _cifar_entry("from_scratch", [[0.5, 0.5]])
    (table,) = ranking.tables([alone, scratch_seed0])
    rows = {r["agent"]: r for r in table.rows}
    assert rows["backprop"]["gap"] == "-0.2"  # one shared seed: no interval


def test_a_cifar_board_builds_with_the_last_task_table(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    for agent in ("backprop", "from_scratch"):
        for seed in (0, 1):
            result = lop_bench.run(CIFAR, agent, tier=TIER, seed=seed, progress=False,
                                   out=out / agent)
    # the session's fixture stands in for the official CIFAR-100 (whose fingerprint the
    # leaderboard requires)
    official = dataclasses.replace(stream_spec(CIFAR),
                                   dataset_fingerprint=result.data["dataset_fingerprint"])
    monkeypatch.setitem(registration.registry, CIFAR, official)
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
