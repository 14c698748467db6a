"""Speed of online permuted MNIST on a synthetic MNIST-sized dataset (no download needed).

Writes 60,000 fake 28 x 28 digits in torchvision's IDX layout to a temporary directory,
then prints steps/s of
  (a) the env alone (random labels as actions): its own overhead per step;
  (b) for each reference agent, a bare loop (the agent's act/learn on the same images,
      pre-gathered, no env, no runner) and ``lop_bench.run`` on the same tier (env +
      runner + diagnostics at task starts), one torch thread, as `lop-bench reproduce`
      runs them;
  (c) the estimated wall time of `lop-bench reproduce lop/PermutedMNIST-v0 --tier cpu`
      (every reference agent x the tier's seeds, on --cores processes) from (b).

    python benchmarks/permuted_mnist_speed.py                   # 2 cpu-tier tasks per agent
    python benchmarks/permuted_mnist_speed.py --tasks 1 --agents backprop
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import lop_bench
from lop_bench import registration

ENV = "lop/PermutedMNIST-v0"
AGENTS = ("linear", "backprop", "l2", "shrink_perturb", "continual_backprop")


def write_fixture(root: Path, n: int = 60_000) -> Path:
    """``n`` random fake digits in ``root/MNIST/raw`` (IDX, as torchvision leaves them)."""
    import struct

    rng = np.random.default_rng(0)
    templates = rng.integers(0, 256, size=(10, 28, 28))
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = (0.75 * templates[labels] + 0.25 * rng.integers(0, 256, size=(n, 28, 28))).astype(np.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, arr in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (raw / name).write_bytes(header + arr.tobytes())
    return root


def ensure_registered() -> None:
    registration.register_envs()


def env_only(root: Path, tier: str, steps: int) -> float:
    env = lop_bench.make(ENV, tier=tier, root=root).unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 10, size=(steps, *env.action_space.shape))
    start = time.perf_counter()
    for i in range(steps):
        _, _, _, _, info = env.step(actions[i])
        if info["stream_done"]:
            env.reset(seed=0)
    return steps / (time.perf_counter() - start)


def bare_loop(root: Path, agent_name: str, tier: str, steps: int) -> float:
    env = lop_bench.make(ENV, tier=tier, root=root)
    agent = lop_bench.make_agent(agent_name, env, seed=0)
    u = env.unwrapped
    u.reset(seed=0)
    X = u.probe(steps).reshape(steps, 1, -1)
    Y = u._Y[:steps]
    info = {"task": 0, "phase": "train", "epoch": 0, "stream_done": False}
    act, learn = agent.act, agent.learn
    start = time.perf_counter()
    for i in range(steps):
        a = act(X[i], info)
        learn(X[i], a, 0.0, X[i], False, False, {**info, "target": Y[i], "task_end": False})
    return steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tier", default="cpu")
    p.add_argument("--tasks", type=int, default=2, help="tasks per lop_bench.run measurement")
    p.add_argument("--agents", nargs="+", default=list(AGENTS))
    p.add_argument("--cores", type=int, default=2, help="processes of the reproduce estimate")
    args = p.parse_args()
    torch.set_num_threads(1)
    ensure_registered()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fixture(Path(tmp))
        cls = registration.env_class(ENV)
        cfg = cls.TIERS[args.tier]
        steps = min(cfg.examples_per_task, 5000)
        print(f"{ENV} [{args.tier}]: {cfg.num_tasks} tasks x {cfg.examples_per_task:,} images, "
              f"batch {cfg.batch_size}, {cfg.num_seeds} seeds; synthetic 60,000-image dataset")
        print(f"(a) env alone: {env_only(root, args.tier, 20_000):,.0f} steps/s")
        print(f"(b) {'agent':<20} {'bare loop':>12} {'lop_bench.run':>14} {'ratio':>6}")
        seconds_per_seed = 0.0
        for name in args.agents:
            bare = bare_loop(root, name, args.tier, steps)
            r = lop_bench.run(ENV, name, tier=args.tier, seed=0, progress=False,
                              env_kwargs={"root": str(root), "num_tasks": args.tasks})
            sps = r.data["run_info"]["steps_per_s"]
            seconds_per_seed += cfg.num_steps / sps
            print(f"    {name:<20} {bare:>10,.0f}/s {sps:>12,.0f}/s {sps / bare:>6.2f}")
        total = seconds_per_seed * cfg.num_seeds / args.cores
        print(f"(c) one seed of {len(args.agents)} agents: {seconds_per_seed:,.0f} s; "
              f"{cfg.num_seeds} seeds on {args.cores} processes: about {total / 60:.1f} min")


if __name__ == "__main__":
    main()
