"""``lop-bench sweep`` on the local backend: results in ``run``'s layout and a report per
configuration; a sweep run again starts no job; a worker killed with SIGKILL is replaced
and its job resumed from its checkpoint, giving the result of an uninterrupted run; a job
that keeps failing is reported while the others go on; nothing starts when a result in
the way is another run's."""

import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import lop_bench
from lop_bench.checkpoint import load_checkpoint
from lop_bench.cli import main
from lop_bench.errors import DependencyNotInstalled, IdentityMismatchError
from lop_bench.sweeps import sweep

from .helpers import MeanAgent

REG = "lop/SlowlyChangingRegression-v0"
_PID_FILE = "LOP_BENCH_TEST_WORKER_PID"  # where the sleepy agent writes its process id


def _spec(tmp_path, body, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _deterministic(path):
    data = json.loads(Path(path).read_text())
    data.pop("run_info")
    return data


# -- a grid on the local pool ------------------------------------------------------------
GRID = f"""\
streams = ["{REG}"]
tiers = ["smoke"]
seeds = "0-1"

[agents.backprop]
lr = [0.01, 0.003]

[agents.linear]
"""


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    spec = _spec(tmp, GRID)
    return spec, tmp / "out", sweep(spec, out=tmp / "out", jobs=2, progress=False)


def test_the_local_backend_writes_run_s_results_and_a_report(grid_run):
    _, out, result = grid_run
    assert result.ok and result.started == 3 and len(result.plan.jobs) == 3
    names = sorted(p.name for p in out.glob("*.json"))
    assert len(names) == 6 and all(n.startswith("SlowlyChangingRegression-v0__smoke__") for n in names)
    # The same file, bit for bit apart from run_info, as lop-bench run's for that setting.
    one = lop_bench.run(REG, "backprop", tier="smoke", seed=1, agent_kwargs={"lr": 0.003},
                        progress=False, out=out.parent / "single")
    single = next((out.parent / "single").glob("*.json"))
    assert (out / single.name).exists()
    swept = _deterministic(out / single.name)
    assert swept["per_task"] == pytest.approx(one.per_task, rel=1e-4)  # vectorized in the sweep
    assert swept["agent"]["vectorized"] is True
    # The report: a row per configuration, the best setting of backprop marked.
    lines = result.table.splitlines()
    rows = [line for line in lines if line.startswith(("backprop", "linear"))]
    assert [r.split("  ")[0].rstrip(" *") for r in rows] == \
        ["backprop (lr=0.003)", "backprop (lr=0.01)", "linear"]
    assert sum(r.split("  ")[0].endswith(" *") for r in rows) == 1
    assert "* the best setting of its agent by the seed mean of 'final'" in result.table
    assert result.plot == out / "plot.png" and result.plot.stat().st_size > 10_000


def test_the_summary_has_one_row_per_configuration_with_mean_and_ci(grid_run):
    import csv

    from lop_bench.metrics import seed_stats
    from lop_bench.results import load

    _, out, result = grid_run
    rows = list(csv.DictReader(result.summary.open()))
    assert [r["label"] for r in rows] == ["backprop (lr=0.003)", "backprop (lr=0.01)", "linear"]
    for row in rows:
        finals = [load(p).summary["final"] for p in out.glob(f"*__{row['settings']}__seed*.json")]
        stats = seed_stats(finals)
        assert row["statistic"] == "final" and row["seeds"] == "2"
        assert float(row["mean"]) == pytest.approx(stats["mean"])
        assert float(row["ci_low"]) == pytest.approx(stats["ci_low"])
        assert float(row["ci_high"]) == pytest.approx(stats["ci_high"])
    backprop = [r for r in rows if r["agent"] == "backprop"]
    best = min(backprop, key=lambda r: float(r["mean"]))  # mse: lower is better
    assert [r["best"] for r in backprop] == [str(r is best) for r in backprop]
    assert [r["hp.lr"] for r in backprop] == ["0.003", "0.01"]


def test_a_sweep_run_again_starts_no_job(grid_run, capsys):
    spec, out, _ = grid_run
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    again = sweep(spec, out=out, jobs=2, progress=False)
    assert again.started == 0 and again.plan.jobs == [] and len(again.plan.finished) == 6
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")} == before
    assert main(["sweep", str(spec), "--out", str(out), "--quiet"]) == 0
    assert "Nothing to run: all 6 results are in" in capsys.readouterr().out


def test_a_result_of_another_run_in_the_way_stops_the_sweep_before_any_job(grid_run, tmp_path):
    spec, out, _ = grid_run
    files = sorted(out.glob("*__backprop__*__seed0.json"))
    other = tmp_path / "other"
    other.mkdir()
    # Under the name of lr=0.003's seed 0: lr=0.01's result (a forged or edited file).
    (other / files[0].name).write_bytes(files[1].read_bytes())
    with pytest.raises(IdentityMismatchError, match="hparams.lr"):
        sweep(spec, out=other, jobs=2, progress=False)
    assert [p.name for p in other.iterdir()] == [files[0].name]


def test_the_ray_backend_without_ray_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(DependencyNotInstalled, match=r"pip install 'lop-bench\[ray\]'"):
        sweep(_spec(tmp_path, GRID), out=tmp_path / "out", backend="ray", progress=False)
    assert not list((tmp_path / "out").glob("*.json")) if (tmp_path / "out").exists() else True


# -- a worker killed mid-run --------------------------------------------------------------
class SleepyAgent(MeanAgent):
    """A mean learner that writes its process id at its first step and sleeps in task 3,
    so that a test can kill its worker there, after the checkpoint of task 2's end."""

    def __init__(self, action_space):
        super().__init__(action_space)
        self._told = False

    def act(self, obs, info):
        if not self._told:
            Path(os.environ[_PID_FILE]).write_text(str(os.getpid()))
            self._told = True
        if info["task"] == 3:
            time.sleep(0.01)
        return super().act(obs, info)

    def state_dict(self):
        return {"mean": self.mean.clone()}

    def load_state_dict(self, state):
        self.mean.copy_(state["mean"])


def make_sleepy_agent(env_spec, observation_space, action_space, seed, device):
    return SleepyAgent(action_space)


def test_a_killed_worker_s_job_is_retried_and_resumed_from_its_checkpoint(tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    monkeypatch.setenv(_PID_FILE, str(pid_file))
    spec = _spec(tmp_path, f"""\
        streams = ["{REG}"]
        tiers = ["smoke"]
        seeds = [1]
        [agents."tests.test_sweep:make_sleepy_agent"]
        [run]
        checkpoint_every = 1
        retries = 1
        """)
    out = tmp_path / "out"
    killed = []

    def kill_in_task_3():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ckpts = list(out.glob("*.ckpt.pt"))
            try:
                if ckpts and load_checkpoint(ckpts[0])["loop"]["steps"] >= 600 and pid_file.exists():
                    pid = int(pid_file.read_text())
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            except Exception:  # a checkpoint being replaced: look again
                pass
            time.sleep(0.02)

    killer = threading.Thread(target=kill_in_task_3, daemon=True)
    killer.start()
    result = sweep(spec, out=out, jobs=1, progress=False)
    killer.join(5)
    assert killed, "the worker was never killed"
    assert result.ok and result.started == 2
    [(job, error)] = result.retried
    assert "killed by signal 9 (SIGKILL)" in error and job["seeds"] == [1]
    (path,) = out.glob("*__seed1.json")
    data = json.loads(path.read_text())
    assert data["run_info"]["resumed_at_step"] >= 600  # continued from a checkpoint
    assert not list(out.glob("*.ckpt.pt"))
    reference = lop_bench.run(REG, "tests.test_sweep:make_sleepy_agent", tier="smoke", seed=1,
                              progress=False, out=tmp_path / "uninterrupted")
    assert _deterministic(path) == _deterministic(next((tmp_path / "uninterrupted").glob("*.json")))
    assert reference.per_task == data["per_task"]


# -- failing jobs ---------------------------------------------------------------------------
_ATTEMPTS = "LOP_BENCH_TEST_ATTEMPTS"


class FailingAgent(MeanAgent):
    """Seed 1 predicts NaN (the stream refuses it: not retried); seed 2 raises a bug of its
    own at every attempt (retried, then reported); seed 0 learns."""

    def __init__(self, action_space, seed):
        super().__init__(action_space)
        self.seed = seed

    def act(self, obs, info):
        if self.seed == 2 and info["task"] == 1:
            with open(os.environ[_ATTEMPTS], "a") as f:
                f.write("attempt\n")
            raise ZeroDivisionError("a bug in the agent")
        action = super().act(obs, info)
        return action * np.nan if self.seed == 1 else action


def make_failing_agent(env_spec, observation_space, action_space, seed, device):
    return FailingAgent(action_space, seed)


def test_failing_jobs_are_reported_while_the_others_finish(tmp_path, monkeypatch, capsys):
    attempts = tmp_path / "attempts"
    monkeypatch.setenv(_ATTEMPTS, str(attempts))
    spec = _spec(tmp_path, f"""\
        streams = ["{REG}"]
        tiers = ["smoke"]
        seeds = [0, 1, 2]
        [agents."tests.test_sweep:make_failing_agent"]
        [run]
        retries = 1
        checkpoint_every = false
        """)
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--jobs", "2", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert [p.name.rsplit("__", 1)[1] for p in out.glob("*.json")] == ["seed0.json"]
    assert attempts.read_text().count("attempt") == 2  # the first run and one retry
    assert "2 jobs failed:" in captured.err
    failed = [line for line in captured.err.splitlines() if line.startswith("  ")]
    assert any("seed 1: " in f and "non-finite" in f and "(after 1 attempt)" in f for f in failed)
    assert any("seed 2: ZeroDivisionError: a bug in the agent (after 2 attempts)" in f
               for f in failed)
    assert "run the same command again" in captured.err
    assert "1 of 3 jobs finished" in captured.out and "summary:" in captured.out


def test_the_live_view_counts_jobs_and_gives_an_eta(tmp_path):
    import io

    log = io.StringIO()
    result = sweep(_spec(tmp_path, GRID.replace('seeds = "0-1"', "seeds = [0]")),
                   out=tmp_path / "out", jobs=1, progress=log)
    assert result.ok
    lines = log.getvalue().splitlines()
    assert lines[0] == "3 jobs (6,000 seed-steps) on 1 worker; 0 results already finished."
    assert lines[-1].startswith("jobs: 3 done, 0 running, 0 failed, 0 left | 100% of 6.0k")
    assert "ETA 0s" in lines[-1]


# -- the driver stopped -------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent


def test_a_sweep_stopped_by_ctrl_c_keeps_its_checkpoints_and_resumes(tmp_path, monkeypatch):
    import subprocess

    pid_file = tmp_path / "pid"
    monkeypatch.setenv(_PID_FILE, str(tmp_path / "pid_of_the_resumed_run"))
    spec = _spec(tmp_path, f"""\
        streams = ["{REG}"]
        tiers = ["smoke"]
        seeds = [2]
        [agents."tests.test_sweep:make_sleepy_agent"]
        [run]
        checkpoint_every = 1
        """)
    out = tmp_path / "out"
    env = {**os.environ, _PID_FILE: str(pid_file), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lop_bench.cli", "sweep", str(spec), "--out", str(out),
           "--jobs", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and list(out.glob("*.ckpt.pt"))):
            assert time.monotonic() < deadline, "the job never checkpointed"
            time.sleep(0.05)
        time.sleep(0.3)  # in task 3 by now
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "lop-bench: interrupted" in err, err
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{worker}").exists(), "the worker outlived the sweep"
    assert list(out.glob("*.ckpt.pt")) and not list(out.glob("*.json"))
    result = sweep(spec, out=out, jobs=1, progress=False)
    assert result.ok, result.failures
    (path,) = out.glob("*__seed2.json")
    assert json.loads(path.read_text())["run_info"]["resumed_at_step"] >= 200


def test_workers_that_cannot_start_stop_the_sweep_with_the_reason(tmp_path):
    import subprocess

    script = (f"from lop_bench.sweeps import sweep\n"
              f"sweep({{'streams': ['{REG}'], 'tiers': ['smoke'], 'seeds': [0, 1],"
              f" 'agents': {{'linear': {{}}}}, 'run': {{'vectorized': False}}}},"
              f" out={str(tmp_path / 'out')!r}, jobs=2, progress=False)\n")
    done = subprocess.run([sys.executable, "-"], input=script, cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert "before it could run a job" in done.stderr and "script file" in done.stderr
    assert not list((tmp_path / "out").glob("*.json"))
