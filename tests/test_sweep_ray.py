"""``lop-bench sweep --backend ray`` on a local Ray cluster that this module starts (2 CPUs):
its result files equal the local backend's apart from ``run_info``; a job's error comes
back as on the local pool; the cluster leaves no process behind."""

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lop_bench.sweeps import sweep

ray = pytest.importorskip("ray")

REG = "lop/SlowlyChangingRegression-v0"
SPEC = f"""\
streams = ["{REG}"]
tiers = ["smoke"]
seeds = "0-1"

[agents.backprop]
lr = [0.01, 0.003]

[agents."tests.test_sweep:make_failing_agent"]
[run]
retries = 0
"""


def _session_processes(session_dir):
    """PIDs of the live processes whose command line names the Ray session directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if session_dir.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for the module; afterwards, no process of it is left."""
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    session = ray._private.worker._global_node.get_session_dir_path()
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
    if Path("/proc").exists():
        import time

        deadline = time.monotonic() + 15
        while _session_processes(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _session_processes(session), "Ray processes outlived ray.shutdown()"


@pytest.fixture(scope="module")
def both(cluster, tmp_path_factory):
    """The same spec through the local pool and through Ray."""
    tmp = tmp_path_factory.mktemp("ray")
    spec = tmp / "sweep.toml"
    spec.write_text(textwrap.dedent(SPEC))
    local = sweep(spec, out=tmp / "local", jobs=2, progress=False)
    on_ray = sweep(spec, out=tmp / "ray", backend="ray", progress=False)
    return local, on_ray


def _deterministic(path):
    data = json.loads(path.read_text())
    data.pop("run_info")
    return data


def test_ray_results_equal_the_local_backend_s_apart_from_run_info(both):
    local, on_ray = both
    assert on_ray.workers == 2 and on_ray.started == len(on_ray.plan.jobs) == 4
    names = sorted(p.name for p in local.out.glob("*.json"))
    assert names == sorted(p.name for p in on_ray.out.glob("*.json"))
    assert len(names) == 5  # 2 settings x 2 seeds of backprop, seed 0 of the failing agent
    for name in names:
        assert _deterministic(on_ray.out / name) == _deterministic(local.out / name), name
    assert (on_ray.out / "summary.csv").read_text() == (local.out / "summary.csv").read_text()


def test_a_job_s_error_on_ray_is_reported_as_on_the_local_pool(both):
    local, on_ray = both
    assert [str(f) for f in on_ray.failures] == [str(f) for f in local.failures]
    (failure,) = on_ray.failures
    assert "seed 1: " in str(failure) and "non-finite" in failure.error


def test_a_ray_sweep_run_again_runs_only_the_failed_job(both):
    _, on_ray = both
    spec = on_ray.out.parent / "sweep.toml"
    again = sweep(spec, out=on_ray.out, backend="ray", progress=False)
    assert again.started == 1 and len(again.plan.finished) == len(again.results) == 5
    assert [f.job["seeds"] for f in again.failures] == [[1]]


def test_reproduce_is_a_sweep_on_the_cluster(cluster, tmp_path, capsys):
    from lop_bench.cli import main

    out = tmp_path / "repro"
    assert main(["reproduce", REG, "--tier", "smoke", "--seeds", "0-1", "--agents",
                 "backprop,linear", "--backend", "ray", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert len(list(out.glob("*.json"))) == 4 and (out / "plot.png").exists()
    assert (out / "summary.csv").exists() and "The paper's findings" in text
    assert main(["reproduce", REG, "--tier", "smoke", "--seeds", "0-1", "--agents",
                 "backprop,linear", "--backend", "ray", "--out", str(out)]) == 0
    assert "Nothing to run: all 4 results are in" in capsys.readouterr().out


class CrashingAgent:
    """Kills its own process in task 1 the first time (a node lost, a preemption); learns
    nothing, predicts 0."""

    def __init__(self, action_space, marker):
        self.shape, self.marker = action_space.shape, Path(marker)

    def act(self, obs, info):
        if info["task"] == 1 and not self.marker.exists():
            self.marker.touch()
            os._exit(1)
        return np.zeros(self.shape, np.float32)

    def learn(self, *args):
        pass


def make_crashing_agent(env_spec, observation_space, action_space, seed, device, marker):
    return CrashingAgent(action_space, marker)


def test_a_job_whose_ray_worker_dies_is_run_again(cluster, tmp_path):
    # The marker travels as a hyperparameter: Ray's workers do not see this process's env.
    result = sweep({"streams": [REG], "tiers": ["smoke"], "seeds": [0], "agents": {
                        "tests.test_sweep_ray:make_crashing_agent": {"marker": str(tmp_path / "crashed")}}},
                   out=tmp_path / "out", backend="ray", progress=False)
    assert (tmp_path / "crashed").exists() and result.ok and result.started == 2
    [(job, error)] = result.retried
    assert "Ray lost it" in error and job["seeds"] == [0]
    assert len(list((tmp_path / "out").glob("*.json"))) == 1


def test_a_job_asking_for_a_gpu_the_cluster_lacks_is_refused_before_it_starts(cluster, tmp_path):
    from lop_bench.errors import LopBenchError

    with pytest.raises(LopBenchError, match="the Ray cluster has no GPU for a job that needs "
                                            "1 CPU, 1 GPU"):
        sweep({"streams": [REG], "tiers": ["smoke"], "seeds": [0], "agents": {"linear": {}}},
              out=tmp_path / "out", backend="ray", device="cuda", progress=False)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
