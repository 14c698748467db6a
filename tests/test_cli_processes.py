"""``lop-bench run --jobs 2``'s worker processes: they exit with their parent, even one
killed with SIGKILL, and leave nothing behind; Ctrl-C stops the run cleanly and keeps what
was finished (results and checkpoints).

The runs use :func:`make_sleepy_agent`: seed 0 learns at full speed, the other seeds sleep
at every step from task 3 on, so a test can act while they are surely running."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from lop_bench.checkpoint import load_checkpoint
from lop_bench.results import load

from .helpers import MeanAgent

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists() or os.name != "posix",
                                reason="finds processes through /proc and signals (Linux)")

REG = "lop/SlowlyChangingRegression-v0"
ROOT = Path(__file__).resolve().parent.parent
_STARTED = "LOP_BENCH_TEST_STARTED"  # a directory: each agent writes seed<k> there when built


class SleepyAgent(MeanAgent):
    """A mean learner that, on any seed but 0, sleeps at every step from task 3 on."""

    def __init__(self, action_space, seed):
        super().__init__(action_space)
        self.sleepy = seed != 0

    def act(self, obs, info):
        if self.sleepy and info["task"] >= 3:
            time.sleep(0.05)
        return super().act(obs, info)

    def state_dict(self):
        return {"mean": self.mean.clone()}

    def load_state_dict(self, state):
        self.mean.copy_(state["mean"])


def make_sleepy_agent(env_spec, observation_space, action_space, seed, device):
    (Path(os.environ[_STARTED]) / f"seed{seed}").touch()
    return SleepyAgent(action_space, seed)


def _processes_with(marker):
    """PIDs of the live processes whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:  # gone, or not ours
            pass
    return found


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _start(tmp_path, seeds, *extra):
    """``lop-bench run`` of the sleepy agent on 2 processes, with a unique marker in the
    environment that every process it starts inherits."""
    marker = f"LOP_BENCH_TEST_MARKER={uuid.uuid4().hex}"
    started = tmp_path / "started"
    started.mkdir()
    env = {**os.environ, _STARTED: str(started), "OMP_NUM_THREADS": "1",
           marker.split("=")[0]: marker.split("=")[1]}
    cmd = [sys.executable, "-m", "lop_bench.cli", "run", REG, "--tier", "smoke",
           "--agent", "tests.test_cli_processes:make_sleepy_agent", "--seeds", seeds,
           "--jobs", "2", "--out", str(tmp_path / "out"), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, marker, started


def _kill_leftovers(marker):
    for pid in _processes_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    proc, marker, started = _start(tmp_path, "1,2")
    try:
        # The agents of both worker processes are built (seed 1 and 2 are running).
        _wait_for(lambda: {p.name for p in started.iterdir()} >= {"seed1", "seed2"}, 60,
                  "both workers to start their seed")
        assert len(_processes_with(marker)) >= 3  # the parent and two workers at least
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
                for pid in _processes_with(marker) if Path(f"/proc/{pid}").exists()}
        assert not left, f"processes left 10 s after the parent was killed: {left}"
        assert not list((tmp_path / "out").glob("*.json"))  # no orphan wrote a result
    finally:
        _kill_leftovers(marker)
        proc.kill()
        proc.wait()


def test_ctrl_c_stops_the_run_and_keeps_finished_results_and_checkpoints(tmp_path):
    proc, marker, started = _start(tmp_path, "0,1", "--checkpoint-every", "1")
    out = tmp_path / "out"
    try:
        # Seed 0 finishes; seed 1 sleeps in task 3, after its checkpoint of task 2's end.
        _wait_for(lambda: list(out.glob("*__seed0.json")) and list(out.glob("*__seed1.ckpt.pt"))
                  and load_checkpoint(next(out.glob("*__seed1.ckpt.pt")))["loop"]["steps"] >= 600,
                  60, "seed 0's result and seed 1's checkpoint of task 3")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 130, err
        assert "lop-bench: interrupted" in err and "Traceback" not in err, err
        (seed0,) = out.glob("*__seed0.json")
        assert np.isfinite(load(seed0).summary["final"])
        assert not list(out.glob("*__seed1.json"))
        (ckpt,) = out.glob("*__seed1.ckpt.pt")
        assert load_checkpoint(ckpt)["loop"]["steps"] == 600  # the start of task 3
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
        _wait_for(lambda: not _processes_with(marker), 10, "the workers to exit")
    finally:
        _kill_leftovers(marker)
        proc.kill()
        proc.wait()


class _Failing(MeanAgent):
    """Seed 1 answers NaN (the env refuses it), seed 2 raises a bug of its own."""

    def __init__(self, action_space, seed):
        super().__init__(action_space)
        self.seed = seed

    def act(self, obs, info):
        if self.seed == 2 and info["task"] == 1:
            raise ZeroDivisionError("a bug in the agent")
        action = super().act(obs, info)
        return action * np.nan if self.seed == 1 else action


def make_failing_agent(env_spec, observation_space, action_space, seed, device):
    return _Failing(action_space, seed)


def test_an_error_in_a_worker_stops_the_run_with_its_message(tmp_path, capsys):
    from lop_bench.cli import main

    base = ["run", REG, "--tier", "smoke", "--agent",
            "tests.test_cli_processes:make_failing_agent", "--jobs", "2"]
    assert main([*base, "--seeds", "0,1", "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "lop-bench: error:" in err and "non-finite" in err and "Traceback" not in err, err
    # An unexpected exception keeps the worker's traceback as its cause.
    with pytest.raises(ZeroDivisionError, match="a bug in the agent") as e:
        main([*base, "--seeds", "0,2", "--out", str(tmp_path / "b")])
    assert "in act" in str(e.value.__cause__) and "a bug in the agent" in str(e.value.__cause__)
