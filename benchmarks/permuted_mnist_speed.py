"""Speed of online permuted MNIST, in one run, on a synthetic MNIST-sized dataset (no
download needed): 60,000 fake 28 x 28 digits in torchvision's IDX layout, written to a
temporary directory. One torch thread, as `lop-bench reproduce` runs each process.

  (a) the env alone (random labels as actions): its own cost per step;
  (b) per reference agent, on the tier: a bare loop (act/learn on pre-gathered images:
      no env, no runner) against the single-seed run (``lop_bench.run``: env, runner,
      diagnostics);
  (c) many seeds in one process (``make_vec`` + the vectorized agents, ``run_vectorized``,
      diagnostics off) at N = 1, 5, 30, in seed-steps/s, against the single-seed run of
      the same net, at the cpu tier's width (784-100-100-100-10) and the paper's
      (784-2000-2000-2000-10, backprop);
  (d) the memory-traffic bound of the paper-width net here: the bytes one seed-step must
      move (every weight and bias read by the forward pass, the weights of layers 2..4
      read again to backpropagate the error, every weight and bias read and written by the
      update; plain SGD keeps no optimizer state) over the copy bandwidth measured now;
  (e) on a CUDA GPU, when there is one: eager against graph-replayed steps (stream and
      agent on the GPU), and the projected wall time of the paper tier (30 seeds x
      48,000,000 steps);
  (f) the estimated wall time of `lop-bench reproduce lop/PermutedMNIST-v0 --tier cpu`:
      each reference agent's seeds in one vectorized process (diagnostics on), the
      processes spread over --cores (measured alone: concurrent processes share the
      memory bandwidth, so expect somewhat more).

    python benchmarks/permuted_mnist_speed.py
    python benchmarks/permuted_mnist_speed.py --agents backprop --no-paper-width
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lop_bench
from lop_bench import registration
from lop_bench.runner import run, run_vectorized

ENV = "lop/PermutedMNIST-v0"
REGRESSION = "lop/SlowlyChangingRegression-v0"
AGENTS = ("linear", "backprop", "l2", "shrink_perturb", "continual_backprop")
CPU_WIDTH = (100, 100, 100)
PAPER_WIDTH = (2000, 2000, 2000)
SEEDS = (1, 5, 30)
PAPER = {"seeds": 30, "steps": 800 * 60_000}  # PROTOCOLS.md: 30 runs of 800 tasks x 60,000


def write_fixture(root: Path, n: int = 60_000) -> Path:
    """``n`` random fake digits in ``root/MNIST/raw`` (IDX, as torchvision leaves them).
    Unlike real digits (about four fifths of MNIST's pixels are 0), no pixel is blank: the
    GPU's input-major kernels skip nothing in the first layer here, so its rates are a
    lower bound for real data."""
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


# -- measurements ---------------------------------------------------------------------
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


def _short(root: Path, steps: int, device: str | None = None) -> dict:
    """One task of ``steps`` images: a custom stream for timing."""
    kw = {"root": str(root), "num_tasks": 1, "examples_per_task": steps}
    return kw if device is None else {**kw, "device": device}


def single_seed(root: Path, agent: str, hidden: tuple[int, ...] | None, steps: int,
                device: str = "cpu") -> float:
    """Steps/s of ``lop_bench.run`` (the single-seed agent), diagnostics off."""
    hp = {} if hidden is None else {"hidden": list(hidden)}
    r = run(ENV, agent, tier="cpu", seed=0, progress=False, diagnostics=False, device=device,
            env_kwargs=_short(root, steps), agent_kwargs=hp)
    return r.data["run_info"]["steps_per_s"]


def many_seeds(root: Path, agent: str, hidden: tuple[int, ...] | None, n: int, steps: int,
               device: str = "cpu", graphs: bool = True, kernels: str = "1",
               env: str = ENV, **hp: Any) -> float:
    """Seed-steps/s of ``run_vectorized`` with ``n`` seeds, diagnostics off (on a GPU the
    stream is there too; ``graphs``: CUDA-graph replay of the step; ``kernels``: the
    Triton kernels of baselines.core.rowsparse, as LOP_BENCH_TRITON: 1 all, rows the
    output-major row-sparse update alone, 0 none)."""
    if hidden is not None:
        hp["hidden"] = list(hidden)
    os.environ["LOP_BENCH_CUDA_GRAPHS"] = "1" if graphs else "0"
    os.environ["LOP_BENCH_TRITON"] = kernels
    env_kwargs = (_short(root, steps, None if device == "cpu" else device) if env == ENV
                  else {"num_tasks": 1, "change_period": steps,
                        **({} if device == "cpu" else {"device": device})})
    try:
        rs = run_vectorized(env, agent, tier="cpu", seeds=range(n), progress=False,
                            diagnostics=False, device=device, agent_kwargs=hp,
                            env_kwargs=env_kwargs)
    finally:
        os.environ.pop("LOP_BENCH_CUDA_GRAPHS", None)
        os.environ.pop("LOP_BENCH_TRITON", None)
    return rs[0].data["run_info"]["steps_per_s"]


def copy_bandwidth(device: str = "cpu", megabytes: int = 512) -> float:
    """Bytes/s of a large tensor copy (read + write counted), best of 5."""
    a = torch.ones(megabytes * 2**20 // 4, device=device)
    b = torch.empty_like(a)
    best = math.inf
    for _ in range(6):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        b.copy_(a)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * a.numel() * 4 / best


def bytes_per_seed_step(widths: tuple[int, ...]) -> int:
    """float32 bytes one batch-1 SGD step of the MLP ``widths`` must move: weights and
    biases read (forward), weights of layers 2.. read (backpropagation), weights and biases
    read and written (the in-place update, no gradient in memory, no optimizer state)."""
    weights = [a * b for a, b in zip(widths[:-1], widths[1:])]
    params = sum(weights) + sum(widths[1:])
    return 4 * (3 * params + sum(weights[1:]))


def _fmt_rate(x: float) -> str:
    return f"{x:>12,.0f}"


# -- report -------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", nargs="+", default=list(AGENTS))
    p.add_argument("--cores", type=int, default=2, help="processes of the reproduce estimate")
    p.add_argument("--tasks", type=int, default=2, help="cpu-tier tasks timed per agent in (f)")
    p.add_argument("--no-paper-width", action="store_true", help="skip the 784-2000x3-10 rows")
    p.add_argument("--gpu-only", action="store_true",
                   help="only the GPU section (e), with the paper width's bytes per seed-step")
    args = p.parse_args()
    torch.set_num_threads(1)
    ensure_registered()
    per_step = bytes_per_seed_step((784, *PAPER_WIDTH, 10))
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fixture(Path(tmp))
        cfg = registration.env_class(ENV).TIERS["cpu"]
        print(f"{ENV}: synthetic 60,000-image dataset, one torch thread; cpu tier "
              f"{cfg.num_tasks} tasks x {cfg.examples_per_task:,} images, {cfg.num_seeds} seeds")
        if not args.gpu_only:
            cpu_sections(args, root, per_step)
        gpu_section(root, per_step)
        if not args.gpu_only:
            reproduce_estimate(args, root, cfg)


def cpu_sections(args: argparse.Namespace, root: Path, per_step: int) -> None:
    """(a) to (d): the env alone, bare loop against the single-seed run, many seeds on the
    CPU at both widths, and the memory-traffic bound of the paper width here."""
    print(f"\n(a) env alone: {env_only(root, 'cpu', 20_000):,.0f} steps/s")

    print(f"\n(b) {'agent (cpu tier)':<22} {'bare loop':>12} {'single-seed run':>16} {'ratio':>6}")
    singles = {}
    for name in args.agents:
        bare = bare_loop(root, name, "cpu", 5000)
        singles[name] = single_seed(root, name, None, 5000)
        print(f"    {name:<22} {_fmt_rate(bare)}/s {_fmt_rate(singles[name])}/s "
              f"{singles[name] / bare:>6.2f}")

    print("\n(c) many seeds in one process: seed-steps/s (x: against the single-seed run)")
    print(f"    {'net':<16} {'agent':<20} {'single':>12} "
          + " ".join(f"{f'N={n}':>20}" for n in SEEDS))
    rows = [("784-100x3-10", name, None) for name in args.agents]
    if not args.no_paper_width:
        rows.append(("784-2000x3-10", "backprop", PAPER_WIDTH))
    paper_rates = {}
    for net, name, hidden in rows:
        wide = hidden is not None
        ref = single_seed(root, name, hidden, 60 if wide else 5000) if wide else singles[name]
        cells = []
        for n in SEEDS:
            steps = (max(12, 60 // n) if wide
                     else 1000 if name == "shrink_perturb" else 3000)
            rate = many_seeds(root, name, hidden, n, steps)
            if wide:
                paper_rates[n] = rate
            cells.append(f"{rate:>12,.0f} ({rate / ref:>4.1f}x)")
        print(f"    {net:<16} {name:<20} {_fmt_rate(ref)} " + " ".join(cells))
        if wide:
            paper_rates["single"] = ref

    bandwidth = copy_bandwidth()
    bound = bandwidth / per_step
    print(f"\n(d) memory-traffic bound of the 784-2000x3-10 net here: {per_step / 1e6:.1f} MB per "
          f"seed-step over a copy bandwidth of {bandwidth / 1e9:.1f} GB/s (one thread, read + "
          f"write) = {bound:,.0f} seed-steps/s")
    for key, rate in paper_rates.items():
        label = "single-seed run" if key == "single" else f"vectorized N={key}"
        print(f"    {label:<18} {rate:>8,.0f} seed-steps/s = {rate / bound:.2f} of the bound")
    if paper_rates:
        best = max(v for k, v in paper_rates.items() if k != "single")
        days = PAPER["seeds"] * PAPER["steps"] / best / 86400
        print(f"    paper tier (30 seeds x 48M steps) on one such core: {days:,.0f} days")


def gpu_section(root: Path, per_step: int) -> None:
    """(e): on a CUDA GPU, eager / graph-replayed / graph-replayed with the row-sparse
    Triton kernel, at N = 1, 5, 30 seeds, both widths, and the paper tier's projection."""
    print("\n(e) GPU:", end=" ")
    if not torch.cuda.is_available():
        print("no CUDA device on this machine: eager vs graph-replayed steps and the paper "
              "tier's projection not measured.")
        return
    from baselines.core import rowsparse

    print(torch.cuda.get_device_name(), f"(torch {torch.__version__}, Triton kernels "
          f"{'on' if rowsparse.available(torch.device('cuda')) else 'unavailable'})")
    gpu_bw = copy_bandwidth("cuda", 2048)
    bound = gpu_bw / per_step
    print(f"    copy bandwidth {gpu_bw / 1e9:,.0f} GB/s (read + write); paper-width dense "
          f"bound {bound:,.0f} seed-steps/s")
    print("    seed-steps/s; eager and graphs: cuBLAS; +rows: the row-sparse update kernel;"
          " +input-major: the input-major kernels (the default)")
    print(f"    {'stream / net':<30} {'N':>3} {'eager':>10} {'graphs':>10} {'+rows':>10} "
          f"{'+input-major':>13} {'best/eager':>10}")
    for hidden in (None, PAPER_WIDTH):  # warm-up: cuBLAS, the Triton kernels JIT-compiled
        for kernels in ("rows", "1"):
            many_seeds(root, "backprop", hidden, 2, 100, device="cuda", kernels=kernels)
    # The paper's permuted-MNIST continual backprop replaces at rate 1e-6 (the cpu tier's
    # preset, whose net is narrower, at 1e-4).
    paper_cbp = {"replacement_rate": 1e-6}
    rows = [(ENV, "784-100x3-10", None, "backprop", 3000, {}),
            (ENV, "784-2000x3-10", PAPER_WIDTH, "backprop", 1500, {}),
            (ENV, "784-2000x3-10", PAPER_WIDTH, "continual_backprop", 1500, paper_cbp),
            (REGRESSION, "regression 20-5-1", None, "backprop", 3000, {})]
    best_paper = {}
    for env, net, hidden, agent, steps, hp in rows:
        for n in SEEDS:
            if agent == "continual_backprop" and n != PAPER["seeds"]:
                continue
            rates = [many_seeds(root, agent, hidden, n, steps, "cuda", graphs=graphs,
                                kernels=kernels, env=env, **hp)
                     for graphs, kernels in ((False, "0"), (True, "0"), (True, "rows"),
                                             (True, "1"))]
            best = max(rates)
            print(f"    {net + ' ' + agent:<30} {n:>3} "
                  + " ".join(f"{r:>10,.0f}" for r in rates[:3]) + f" {rates[3]:>13,.0f} "
                  f"{best / rates[0]:>9.2f}x")
            if hidden is not None:
                best_paper[(agent, n)] = rates[3]  # the default: what a run gets
    for (agent, n), rate in best_paper.items():
        if n == PAPER["seeds"]:
            hours = PAPER["seeds"] * PAPER["steps"] / rate / 3600
            h100 = (f"; an H100 at 3.35/4.8 of this H200's bandwidth: {hours * 4.8 / 3.35:,.1f} h"
                    if "H200" in torch.cuda.get_device_name() else "")
            print(f"    paper tier, {agent}, 30 seeds x 48M steps in one process: {hours:,.1f} "
                  f"GPU-hours ({rate / bound:.2f} of the dense bound{h100})")


def reproduce_estimate(args: argparse.Namespace, root: Path, cfg: Any) -> None:
    """(f): the wall time of ``lop-bench reproduce`` at the cpu tier, from --tasks tasks."""
    print(f"\n(f) `lop-bench reproduce {ENV} --tier cpu` on {args.cores} processes "
          f"(each agent's {cfg.num_seeds} seeds vectorized, diagnostics on):")
    costs = {}
    # A process pays its first diagnostics' one-time costs (imports, LAPACK) once: here
    # before timing, so that --tasks tasks are not charged with them.
    run_vectorized(ENV, "backprop", tier="cpu", seeds=(0,), progress=False,
                   env_kwargs=_short(root, 10))
    for name in args.agents:
        rs = run_vectorized(ENV, name, tier="cpu", seeds=range(cfg.num_seeds), progress=False,
                            env_kwargs={"root": str(root), "num_tasks": args.tasks})
        wall = rs[0].data["run_info"]["wall_time_s"]
        costs[name] = wall * cfg.num_tasks / args.tasks
        print(f"    {name:<22} {costs[name] / 60:6.1f} min")
    loads = [0.0] * args.cores
    for c in sorted(costs.values(), reverse=True):  # longest job first
        loads[loads.index(min(loads))] += c
    print(f"    about {max(loads) / 60:.1f} min on {args.cores} processes")


if __name__ == "__main__":
    main()
