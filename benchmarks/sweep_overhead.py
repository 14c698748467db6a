"""Scheduling overhead of ``lop-bench sweep``: 100 smoke-tier jobs through the local worker
pool and through Ray, against the same jobs run one after another in this process.

Every job is one seed of backprop on slowly-changing regression's smoke tier (2,000 steps,
diagnostics on, no checkpoints): short enough that the scheduling shows. Measured, in one
run:

  (a) the reference: the jobs' own work, run in this process by ``run_job``: no sweep, no
      worker, no scheduling;
  (b) ``sweep(backend="local")`` on W worker processes;
  (c) ``sweep(backend="ray")`` on a local Ray cluster of W CPUs, started before the sweep
      (its start is printed apart).

For (b) and (c), "run" is the jobs' phase of the sweep (workers' start, sending jobs and
results, the live view), apart from the planning (the spec checked, every result path
checked) and the report (table, plot, summary.csv), printed as fixed costs. Overhead per
job = (W x run - reference work) / jobs: the worker-seconds a job costs beyond its own
work. On a machine shared with other work, W > 1 cannot get W free cores and its overhead
reads high: the load average is printed, and W = 1 shows the overhead alone. The result
files of all of them are the same apart from ``run_info`` (checked).

    python benchmarks/sweep_overhead.py                      # 100 jobs on 1 and 2 workers
    python benchmarks/sweep_overhead.py --jobs 20 --workers 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from lop_bench.sweeps import sweep
from lop_bench.sweeps.pool import run_job

ENV = "lop/SlowlyChangingRegression-v0"


def spec(num_jobs: int, agent: str) -> dict:
    """``num_jobs`` jobs: one seed each of ``agent`` on the smoke tier."""
    return {"streams": [ENV], "tiers": ["smoke"], "seeds": f"0-{num_jobs - 1}",
            "agents": {agent: {}}, "run": {"vectorized": False, "checkpoint_every": False}}


def same_results(a: Path, b: Path) -> bool:
    """Whether two directories hold the same result files apart from ``run_info``."""
    def load(path: Path) -> dict:
        data = json.loads(path.read_text())
        data.pop("run_info")
        return data

    names = sorted(p.name for p in a.glob("*.json"))
    return names == sorted(p.name for p in b.glob("*.json")) and \
        all(load(a / n) == load(b / n) for n in names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100, help="number of jobs (seeds)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                   help="worker processes / Ray CPUs to measure")
    p.add_argument("--agent", default="backprop")
    args = p.parse_args()
    torch.set_num_threads(1)
    n = args.jobs
    grid = spec(n, args.agent)
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plan = sweep(grid, out=root / "reference", dry_run=True).plan
        assert len(plan.jobs) == n
        start = time.perf_counter()
        for job in plan.jobs:
            run_job(job, None)
        work = time.perf_counter() - start
        rows.append(("(a) in-process, one after another", 1, work, None))

        for w in args.workers:
            result = sweep(grid, out=root / f"local{w}", jobs=w, progress=False)
            assert result.ok and result.started == n
            rows.append((f"(b) local pool, {w} process{'es' if w > 1 else ''}", w,
                         result.timings["run"], result))

        import ray

        ray_start = {}
        for w in args.workers:
            start = time.perf_counter()
            ray.init(num_cpus=w, include_dashboard=False, logging_level=logging.WARNING)
            ray_start[w] = time.perf_counter() - start
            try:
                result = sweep(grid, out=root / f"ray{w}", backend="ray", progress=False)
            finally:
                ray.shutdown()
            assert result.ok and result.started == n
            rows.append((f"(c) Ray, local cluster of {w} CPU{'s' if w > 1 else ''}", w,
                         result.timings["run"], result))
        dirs = [root / "reference", *(root / f"{b}{w}" for b in ("local", "ray")
                                      for w in args.workers)]
        identical = all(same_results(dirs[0], d) for d in dirs[1:])

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{n} jobs, each one seed of {args.agent} on {ENV} [smoke] ({work / n * 1000:.0f} ms "
          f"of work); {cores} cores, load average {load:.2f} at the start; torch threads 1")
    print(f"{'':38s} {'run s':>6s} {'jobs/s':>7s} {'overhead/job':>13s} {'plan s':>7s} "
          f"{'report s':>9s}")
    for name, w, wall, result in rows:
        overhead = (w * wall - work) / n
        fixed = (f"{result.timings['plan']:7.2f} {result.timings['report']:9.2f}"
                 if result else f"{'-':>7s} {'-':>9s}")
        print(f"{name:38s} {wall:6.1f} {n / wall:7.2f} {overhead * 1000:10.0f} ms {fixed}")
    print("Ray cluster start (not counted): "
          + ", ".join(f"{ray_start[w]:.1f} s ({w} CPU{'s' if w > 1 else ''})" for w in args.workers))
    print(f"result files identical apart from run_info: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    main()
