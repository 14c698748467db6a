"""Speed of Continual ImageNet's ConvNet agents on synthetic data (no download needed).

Writes ``--classes`` fake classes of 700 uint8 images (3 x 32 x 32) in the real per-class
layout (``<root>/imagenet32/classes/<c>.npy``) to a temporary directory, then, for each
agent (the paper's ConvNet: backprop and continual backprop by default), measures training
images per second over the same ``--steps`` steps of the stream (test steps included, as
they come), best of ``--repeats``, interleaved:

  (a) bare loop: the agent's ``act``/``learn`` on the stream's batches gathered beforehand
      (the same tensors, on the same device), no env;
  (b) env + agent: the stepwise loop on ``lop_bench.make(...).unwrapped`` (the env gathers
      each batch, scores the prediction, reveals the labels);
  (c) optionally ``lop_bench.run`` on ``--run-tasks`` whole tasks (runner, diagnostics).

The overhead is (a)'s rate over (b)'s minus 1; at most 10% is required. The tier's batch
size and epochs are kept; the classes are fewer (``num_classes`` is overridden, a custom
stream), and only ``--steps`` steps run, never the tier's thousands of tasks.

    python benchmarks/imagenet_speed.py                           # cpu tier, 60 steps
    python benchmarks/imagenet_speed.py --tier paper --device cuda --steps 500
    python benchmarks/imagenet_speed.py --agents backprop --steps 20 --repeats 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lop_bench
from lop_bench import registration

ENV = "lop/ContinualImageNet-v0"
AGENTS = ("backprop", "continual_backprop")
IMAGES_PER_CLASS = 700


def write_fixture(root: Path, num_classes: int) -> Path:
    """``num_classes`` fake classes (700 images each: a class template plus noise) as
    ``root/imagenet32/classes/<c>.npy``, uint8 (700, 3, 32, 32): the real layout."""
    rng = np.random.default_rng(0)
    directory = root / "imagenet32" / "classes"
    directory.mkdir(parents=True, exist_ok=True)
    for c in range(num_classes):
        template = rng.integers(0, 256, size=(1, 3, 32, 32))
        noise = rng.integers(0, 256, size=(IMAGES_PER_CLASS, 3, 32, 32))
        np.save(directory / f"{c}.npy", (0.6 * template + 0.4 * noise).astype(np.uint8))
    return root


def agent_factory(name: str) -> str:
    """The registered agent ``name``, or (lop-bench not pip-installed, e.g. a bare source
    checkout on a GPU node) the reference agent's factory ``baselines.<name>:make_agent``."""
    from lop_bench.agents import list_agents

    return name if name in list_agents() or ":" in name else f"baselines.{name}:make_agent"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _copy(x: Any) -> Any:
    return x.clone() if torch.is_tensor(x) else np.array(x, copy=True)


def make_env(root: Path, args: argparse.Namespace) -> Any:
    env_device = None if args.device == "cpu" else args.device
    return lop_bench.make(ENV, tier=args.tier, root=str(root), device=env_device,
                          num_classes=args.classes)


def record(env: Any, steps: int) -> list[tuple[Any, dict, dict]]:
    """``steps`` steps of the stream (seed 0): ``(obs, its context, the step's info)``.
    The stream does not depend on the actions, so any labels do."""
    u = env.unwrapped
    obs, info = u.reset(seed=0)
    zeros = np.zeros(u.action_space.shape, dtype=np.int64)
    out = []
    for _ in range(steps):
        next_obs, _, _, _, next_info = u.step(zeros)
        out.append((_copy(obs), dict(info), dict(next_info)))
        obs, info = next_obs, next_info
    return out


def train_images(steps: list[tuple[Any, dict, dict]]) -> int:
    return sum(int(ctx.get("valid", 0)) for _, ctx, _ in steps if ctx["phase"] == "train")


def bare_loop(env: Any, name: str, steps: list, device: torch.device) -> float:
    """Seconds for the agent's act/learn on the recorded batches (no env)."""
    agent = lop_bench.make_agent(agent_factory(name), env, seed=0, device=str(device))
    act, learn = agent.act, agent.learn
    _sync(device)
    start = time.perf_counter()
    for obs, ctx, info in steps:
        a = act(obs, ctx)
        learn(obs, a, 0.0, obs, False, False, info)
    _sync(device)
    return time.perf_counter() - start


def env_loop(env: Any, name: str, num_steps: int, device: torch.device) -> float:
    """Seconds for the same steps through the env (``.unwrapped``) and the agent."""
    agent = lop_bench.make_agent(agent_factory(name), env, seed=0, device=str(device))
    u = env.unwrapped
    obs, info = u.reset(seed=0)
    act, learn, step = agent.act, agent.learn, u.step
    _sync(device)
    start = time.perf_counter()
    for _ in range(num_steps):
        a = act(obs, info)
        next_obs, reward, terminated, truncated, info = step(a)
        learn(obs, a, reward, next_obs, terminated, truncated, info)
        obs = next_obs
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tier", default="cpu", help="batch size and epochs of this tier (default cpu)")
    p.add_argument("--device", default="cpu", help="torch device of the agent and the env data")
    p.add_argument("--steps", type=int, default=60, help="steps per measurement")
    p.add_argument("--repeats", type=int, default=2, help="best of this many, interleaved")
    p.add_argument("--agents", nargs="+", default=list(AGENTS))
    p.add_argument("--classes", type=int, default=10, help="fake classes written (even)")
    p.add_argument("--run-tasks", type=int, default=None,
                   help="tasks of lop_bench.run per agent (default: 1 if a task is at most "
                        "200 steps, else 0 = skipped)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    registration.register_envs()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fixture(Path(tmp), args.classes)
        env = make_env(root, args)
        cfg = env.unwrapped.config
        steps = record(env, args.steps)
        n_images = train_images(steps)
        print(f"{ENV} [{args.tier}, num_classes={args.classes}]: batch {cfg.batch_size}, "
              f"{cfg.epochs} epochs x {cfg.train_batches} train batches + {cfg.test_batches} "
              f"test batches per task; {args.steps} steps ({n_images:,} training images), "
              f"device {device}, torch threads {torch.get_num_threads()}, best of {args.repeats}")
        run_tasks = args.run_tasks
        if run_tasks is None:
            run_tasks = 1 if cfg.steps_per_task <= 200 else 0
        header = f"{'agent':<20} {'(a) bare loop':>16} {'(b) env + agent':>16} {'overhead':>9}"
        if run_tasks:
            header += f" {'(c) lop_bench.run':>18}"
        print(header + "   [training images/s]")
        worst = 0.0
        for name in args.agents:
            bare = through = float("inf")
            for _ in range(args.repeats):
                bare = min(bare, bare_loop(env, name, steps, device))
                through = min(through, env_loop(env, name, args.steps, device))
            overhead = bare and through / bare - 1.0
            worst = max(worst, overhead)
            line = (f"{name:<20} {n_images / bare:>14,.0f}/s {n_images / through:>14,.0f}/s "
                    f"{overhead:>+8.1%}")
            if run_tasks:
                r = lop_bench.run(ENV, agent_factory(name), tier=args.tier, seed=0, progress=False,
                                  device=args.device,
                                  env_kwargs={"root": str(root), "num_classes": args.classes,
                                              "num_tasks": run_tasks})
                sps = r.data["run_info"]["steps_per_s"]
                per_step = cfg.epochs * cfg.train_batches * cfg.batch_size / cfg.steps_per_task
                line += f" {sps * per_step:>16,.0f}/s"
            print(line)
        verdict = "OK" if worst <= 0.10 else "OVER"
        print(f"worst overhead of the env over the bare loop: {worst:+.1%} (required <= 10%: {verdict})")
        if device.type != "cuda":
            if torch.cuda.is_available():
                print(f"GPU {torch.cuda.get_device_name()} available but not measured: rerun "
                      "with --tier paper --device cuda --steps 500 for the paper tier's rate.")
            else:
                print("GPU: none available on this machine, so no paper-tier GPU rate was "
                      "measured (rerun with --tier paper --device cuda where there is one).")


if __name__ == "__main__":
    main()
