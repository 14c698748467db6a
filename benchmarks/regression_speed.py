"""Speed of the single-seed path on slowly-changing regression: runner overhead.

Prints steps/s of
  (a) a bare loop that generates the same data (the stream's own task generator) and
      calls the same agent's act/learn directly, with no env, no runner;
  (b) ``lop_bench.run`` with backprop (env + runner + diagnostics at task starts);
  (c) ``lop_bench.run`` with continual backprop, next to its own bare loop (a').
Ratios are against the bare loop of the same agent, measured in the same run
(best of --repeats, interleaved), so machine noise largely cancels.

    python benchmarks/regression_speed.py            # 50,000 steps per measurement
    python benchmarks/regression_speed.py --tasks 2 --repeats 1
"""

from __future__ import annotations

import argparse
import time

import torch

import lop_bench
from lop_bench.envs.regression import TIERS, _SeedStream

ENV = "lop/SlowlyChangingRegression-v0"


def bare_loop(agent_name: str, num_tasks: int) -> float:
    """Steps/s of the agent on the stream's data without env or runner."""
    env = lop_bench.make(ENV, tier="cpu", num_tasks=num_tasks)
    agent = lop_bench.make_agent(agent_name, env, seed=0)
    cfg = TIERS["cpu"]
    stream = _SeedStream(cfg, 0)
    T = cfg.change_period
    info = {"task": 0, "phase": "train", "epoch": 0, "stream_done": False}
    act, learn = agent.act, agent.learn
    start = time.perf_counter()
    for _ in range(num_tasks):
        x, y = stream.task_data()
        X, Y = x.reshape(T, 1, -1), y.reshape(T, 1, 1)
        for i in range(T):
            a = act(X[i], info)
            learn(X[i], a, 0.0, X[i], False, False, {"target": Y[i]})
        stream.next_task()
    return num_tasks * T / (time.perf_counter() - start)


def runner(agent_name: str, num_tasks: int) -> float:
    r = lop_bench.run(ENV, agent_name, tier="cpu", seed=0, progress=False,
                      env_kwargs={"num_tasks": num_tasks})
    return r.data["run_info"]["steps_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=5, help="tasks of 10,000 steps per measurement")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = {k: 0.0 for k in ("a", "b", "a2", "c")}
    for _ in range(args.repeats):
        rows["a"] = max(rows["a"], bare_loop("backprop", args.tasks))
        rows["b"] = max(rows["b"], runner("backprop", args.tasks))
        rows["a2"] = max(rows["a2"], bare_loop("continual_backprop", args.tasks))
        rows["c"] = max(rows["c"], runner("continual_backprop", args.tasks))
    steps = args.tasks * 10_000
    print(f"slowly-changing regression, one seed, {steps:,} steps, best of {args.repeats}, "
          f"torch threads 1")
    print(f"{'measurement':52s} {'steps/s':>10s} {'vs bare loop':>13s}")
    table = [
        ("(a)  bare loop, backprop (reference)", rows["a"], rows["a"]),
        ("(b)  lop_bench.run, backprop", rows["b"], rows["a"]),
        ("(a') bare loop, continual backprop (reference)", rows["a2"], rows["a2"]),
        ("(c)  lop_bench.run, continual backprop", rows["c"], rows["a2"]),
    ]
    for name, v, ref in table:
        slower = (ref / v - 1) * 100
        print(f"{name:52s} {v:10,.0f} {v / ref:8.3f}x ({slower:+.1f}% time)")


if __name__ == "__main__":
    main()
