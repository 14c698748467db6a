"""Seed-steps/s of the vectorized path (make_vec + vectorized agents) against the
single-seed runner, on slowly-changing regression, in one run.

For backprop and continual backprop: ``lop_bench.run`` on one seed (the reference), then
``run_vectorized`` with N seeds for N in --seeds (stream generation, runner and
diagnostics included). Then a per-step breakdown at N=100 (env step, act, learn) and
the peak memory (RSS) of a 100-seed run, measured in a fresh process.

    python benchmarks/vectorized_speed.py                  # N in 1 10 100 1000
    python benchmarks/vectorized_speed.py --seeds 1 10 --steps 2000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

import lop_bench
from lop_bench.runner import run, run_vectorized

ENV = "lop/SlowlyChangingRegression-v0"
AGENTS = ("backprop", "continual_backprop")


def single(agent: str, steps: int) -> float:
    r = run(ENV, agent, tier="cpu", seed=0, progress=False,
            env_kwargs={"num_tasks": 1, "change_period": steps})
    return r.data["run_info"]["steps_per_s"]


def vectorized(agent: str, n: int, steps: int) -> float:
    rs = run_vectorized(ENV, agent, tier="cpu", seeds=range(n), progress=False,
                        env_kwargs={"num_tasks": 1, "change_period": steps})
    return rs[0].data["run_info"]["steps_per_s"]


def breakdown(agent_name: str, n: int, steps: int) -> dict[str, float]:
    """Microseconds per step of env.step, agent.act and agent.learn at N seeds."""
    envs = lop_bench.make_vec(ENV, num_envs=n, tier="cpu", change_period=steps * 3, num_tasks=1)
    venv = envs.unwrapped
    agent = lop_bench.make_agent(agent_name, envs, seed=tuple(range(n)))
    obs, infos = venv.reset()
    t_env = t_act = t_learn = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        a = agent.act(obs, infos)
        t1 = time.perf_counter()
        nobs, r, te, tr, infos = venv.step(a)
        t2 = time.perf_counter()
        agent.learn(obs, a, r, nobs, te, tr, infos)
        t3 = time.perf_counter()
        t_act += t1 - t0
        t_env += t2 - t1
        t_learn += t3 - t2
        obs = nobs
    return {"env.step": t_env / steps * 1e6, "act": t_act / steps * 1e6,
            "learn": t_learn / steps * 1e6}


_RSS = """
import resource, json, torch
torch.set_num_threads(1)
from lop_bench.runner import run_vectorized
run_vectorized("lop/SlowlyChangingRegression-v0", "continual_backprop", tier="cpu",
               seeds=range(100), progress=False, env_kwargs={"num_tasks": 2})
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--steps", type=int, default=10_000, help="steps per measurement")
    p.add_argument("--no-rss", action="store_true", help="skip the 100-seed memory measurement")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"slowly-changing regression, {args.steps:,} steps per measurement, torch threads 1")
    print(f"{'agent':20s} {'path':>18s} {'seed-steps/s':>14s} {'vs single':>10s}")
    for agent in AGENTS:
        ref = single(agent, args.steps)
        print(f"{agent:20s} {'single-seed run':>18s} {ref:14,.0f} {1.0:9.2f}x")
        for n in args.seeds:
            steps = args.steps if n <= 100 else max(1000, args.steps // 5)
            v = vectorized(agent, n, steps)
            print(f"{agent:20s} {f'vectorized N={n}':>18s} {v:14,.0f} {v / ref:9.2f}x")
    print("\nwhere the time goes at N=100 (microseconds per step, all 100 seeds):")
    for agent in AGENTS:
        b = breakdown(agent, 100, min(args.steps, 5000))
        total = sum(b.values())
        parts = "  ".join(f"{k} {v:6.1f} ({v / total:4.0%})" for k, v in b.items())
        print(f"  {agent:20s} {parts}  total {total:6.1f} -> {100e6 / total:,.0f} seed-steps/s")
    if not args.no_rss:
        out = subprocess.run([sys.executable, "-c", _RSS], capture_output=True, text=True, check=True)
        print(f"\npeak RSS of a 100-seed continual-backprop run (2 tasks): "
              f"{json.loads(out.stdout.strip().splitlines()[-1]):.0f} MiB")


if __name__ == "__main__":
    main()
