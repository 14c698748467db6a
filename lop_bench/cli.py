"""The ``lop-bench`` command: list, run, report, reproduce.

Every subcommand's ``--help`` shows an example.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lop_bench.errors import LopBenchError

__all__ = ["main", "parse_seeds"]

_DEFAULT_OUT = "results"
# Reference agents that take the longest per step (noise every step; generate-and-test).
_SLOWEST_FIRST = ("shrink_perturb", "continual_backprop", "ppo_cbp")


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0..4]; ``"0,3,7"``; ``"2"``; combinations like ``"0-2,9"``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
                seeds.extend(range(lo_i, hi_i + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise LopBenchError(
            f"--seeds {text!r} is not a seed list: use '0-4', '0,3,7' or '2' (seeds >= 0)."
        ) from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise LopBenchError(f"--seeds {text!r}: seeds must be distinct integers >= 0.")
    return seeds


def _parse_assignments(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when they can be (numbers, bools, lists)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LopBenchError(f"{flag} {item!r}: expected key=value, e.g. {flag} lr=0.003.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


# -- parallel runs -------------------------------------------------------------------
def _worker(job: dict[str, Any], queue: Any) -> list[dict[str, Any]]:
    """One job: one seed (``job["seeds"]`` of length 1) or, vectorized, several at once."""
    import torch

    torch.set_num_threads(1)
    from lop_bench.runner import run, run_vectorized

    common = dict(
        env_kwargs=job["env_kwargs"], agent_kwargs=job["agent_kwargs"],
        diagnostics=job["diagnostics"], diagnostics_every=job["diagnostics_every"],
        progress=(lambda n: queue.put(n)) if queue is not None else False, out=job["out"],
        device=job["device"],
    )
    if job["vectorized"]:
        results = run_vectorized(job["env_id"], job["agent"], tier=job["tier"],
                                 seeds=job["seeds"], **common)
    elif job.get("done"):  # --resume: this seed's result is already written
        from lop_bench.results import load

        results = [load(job["done"])]
        if queue is not None:
            queue.put(results[0].data["steps"])
    else:
        results = [run(job["env_id"], job["agent"], tier=job["tier"], seed=job["seeds"][0],
                       checkpoint_every=job["checkpoint_every"], resume=job["resume"], **common)]
    return [{"agent": job["agent"], "seed": r.seed, "summary": r.summary,
             "steps_per_s": r.data["run_info"]["steps_per_s"]} for r in results]


def run_jobs(jobs: list[dict[str, Any]], num_workers: int, total_steps: int) -> list[dict[str, Any]]:
    """Run jobs (one seed of one agent each) in ``num_workers`` processes, one progress bar."""
    from tqdm.auto import tqdm

    if num_workers <= 1 or len(jobs) == 1:
        import torch

        torch.set_num_threads(1)
        out = []
        with tqdm(total=total_steps, unit="seed-step", unit_scale=True, dynamic_ncols=True,
                  desc=f"{len(jobs)} runs") as bar:
            for job in jobs:
                out.extend(_worker(job, _BarQueue(bar)))
        return out

    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    queue = manager.Queue()
    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx) as pool, \
            tqdm(total=total_steps, unit="seed-step", unit_scale=True, dynamic_ncols=True,
                 desc=f"{len(jobs)} runs on {num_workers} processes") as bar:
        pending = {pool.submit(_worker, job, queue) for job in jobs}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5)
                while not queue.empty():
                    bar.update(queue.get_nowait())
                for fut in done:
                    results.extend(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        while not queue.empty():
            bar.update(queue.get_nowait())
    manager.shutdown()
    return results


class _BarQueue:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


def _supports_vectorized(env_id: str, agent: str, tier: str, env_kwargs: dict,
                         agent_kwargs: dict) -> bool:
    """Whether ``agent`` has a vectorized version for ``env_id`` (builds one for 1 seed)."""
    from lop_bench.agents import make_agent
    from lop_bench.errors import VectorizationNotSupported
    from lop_bench.registration import VECTOR_STREAMS, make_vec

    if env_id not in VECTOR_STREAMS:
        return False
    envs = make_vec(env_id, num_envs=1, tier=tier, seeds=(0,), **env_kwargs)
    try:
        agent_obj = make_agent(agent, envs, seed=(0,), **agent_kwargs)
    except VectorizationNotSupported:
        return False
    return bool(getattr(agent_obj, "vectorized", False))


def _jobs_for(env_id: str, agents: Sequence[str], tier: str, seeds: Sequence[int],
              env_kwargs: dict, agent_kwargs: dict, out: Path, args: argparse.Namespace,
              vectorized: str = "no", num_workers: int = 1) -> list[dict[str, Any]]:
    """Jobs for every (agent, seed). ``vectorized``: "no", "yes" (error if an agent has no
    vectorized version) or "auto" (vectorized where the agent has one). A vectorized agent's
    seeds are split into ``num_workers`` groups, one process each."""
    from lop_bench.agents import make_agent
    from lop_bench.errors import VectorizationNotSupported
    from lop_bench.registration import make

    # Fail fast, before any process starts: a bad config, an unknown agent or hyperparameter.
    env = make(env_id, tier=tier, **env_kwargs)
    for a in agents:
        make_agent(a, env, seed=seeds[0], device=args.device, **agent_kwargs)
    checkpointing = args.checkpoint_every is not None or args.resume
    if checkpointing and vectorized == "yes":
        raise LopBenchError("--checkpoint-every / --resume work with one process per seed; "
                            "drop --vectorized.")
    if checkpointing:
        vectorized = "no"
    base = {"env_id": env_id, "tier": tier, "env_kwargs": env_kwargs,
            "agent_kwargs": agent_kwargs, "diagnostics": not args.no_diagnostics,
            "diagnostics_every": args.diagnostics_every, "out": str(out),
            "device": args.device, "checkpoint_every": args.checkpoint_every,
            "resume": args.resume}
    jobs = []
    for a in agents:
        vec = vectorized != "no" and _supports_vectorized(env_id, a, tier, env_kwargs, agent_kwargs)
        if vectorized == "yes" and not vec:
            raise VectorizationNotSupported(
                f"agent {a!r} has no vectorized version for {env_id}; run it without --vectorized."
            )
        if vec:
            groups = max(1, min(num_workers, len(seeds)))
            for g in range(groups):
                chunk = list(seeds)[g::groups]
                jobs.append({**base, "agent": a, "seeds": chunk, "vectorized": True})
        else:
            for s in seeds:
                job = {**base, "agent": a, "seeds": [s], "vectorized": False}
                done = out / _filename(env_id, a, tier, s, custom=env.unwrapped.custom)
                if args.resume and done.is_file():
                    job["done"] = str(done)
                jobs.append(job)
    return jobs


# -- subcommands ----------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from lop_bench.agents import list_agents
    from lop_bench.registration import REFERENCE_AGENTS, VECTOR_STREAMS, env_class, list_envs

    print("Streams (lop_bench.make(ID, tier=...)):")
    for env_id in list_envs():
        cls = env_class(env_id)
        tiers = ", ".join(f"{t} ({c.num_seeds} seeds)" for t, c in cls.TIERS.items())
        print(f"  {env_id}\n    tiers: {tiers}")
        print(f"    reference agents: {', '.join(REFERENCE_AGENTS.get(env_id, ()))}")
        if env_id in VECTOR_STREAMS:
            print("    vectorized: yes (lop_bench.make_vec; lop-bench run ... --vectorized)")
    print("Agents (entry-point group lop_bench.agents):")
    for name in list_agents():
        print(f"  {name}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lop_bench.registration import make

    env_kwargs = _parse_assignments(args.set, "--set")
    agent_kwargs = _parse_assignments(args.hp, "--hp")
    env = make(args.env, tier=args.tier, **env_kwargs).unwrapped
    seeds = parse_seeds(args.seeds) if args.seeds else list(env.seeds)
    out = Path(args.out)
    jobs = _jobs_for(args.env, [args.agent], args.tier, seeds, env_kwargs, agent_kwargs, out, args,
                     vectorized="yes" if args.vectorized else "no", num_workers=args.jobs)
    start = time.perf_counter()
    done = run_jobs(jobs, min(args.jobs, len(jobs)), env.total_steps * len(seeds))
    for d in sorted(done, key=lambda d: d["seed"]):
        s = d["summary"]
        print(f"seed {d['seed']}: initial {s['initial']:.4g}  final {s['final']:.4g}  "
              f"drop {s['drop']:+.4g}  ({d['steps_per_s']:,.0f} steps/s)")
    print(f"{len(done)} result files in {out}/ ({time.perf_counter() - start:.0f} s). "
          f"Next: lop-bench report {out}")
    return 0


def _report(paths: Sequence[str], plot_path: str | None, order: Sequence[str] | None = None,
            bin_size: int | None = None) -> int:
    from lop_bench.report import check_findings, format_table, group_results, plot
    from lop_bench.results import load_many

    groups = group_results(load_many(paths))
    print(format_table(groups, order=order))
    text, verdicts = check_findings(groups)
    if text:
        print(text)
    if plot_path:
        p = plot(groups, plot_path, bin_size=bin_size, order=order)
        print(f"plot: {p}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    return _report(args.results, args.plot, bin_size=args.bin)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from lop_bench.registration import REFERENCE_AGENTS, make

    agents = args.agents.split(",") if args.agents else list(REFERENCE_AGENTS.get(args.env, ()))
    if not agents:
        raise LopBenchError(f"{args.env} has no reference agents yet; pass --agents a,b.")
    env = make(args.env, tier=args.tier).unwrapped
    seeds = parse_seeds(args.seeds) if args.seeds else list(env.seeds)
    out = Path(args.out) if args.out else Path(_DEFAULT_OUT) / f"{args.env.split('/')[-1]}-{args.tier}"
    mode = "no" if args.no_vectorized else "auto"
    jobs = _jobs_for(args.env, agents, args.tier, seeds, {}, {}, out, args, vectorized=mode,
                     num_workers=1)
    nvec = sum(1 for j in jobs if j["vectorized"])
    how = f"{nvec} vectorized jobs" if nvec else "one process per seed"
    print(f"Reproducing {args.env} [{args.tier}]: {len(agents)} agents x {len(seeds)} seeds "
          f"({env.total_steps:,} steps each; {how}) on {min(args.jobs, len(jobs))} processes -> {out}/")
    start = time.perf_counter()
    # Longest jobs first keeps the processes busy until the end (a stable sort).
    jobs.sort(key=lambda j: _SLOWEST_FIRST.index(j["agent"]) if j["agent"] in _SLOWEST_FIRST
              else len(_SLOWEST_FIRST))
    run_jobs(jobs, min(args.jobs, len(jobs)), env.total_steps * len(seeds) * len(agents))
    print(f"done in {time.perf_counter() - start:.0f} s\n")
    files = [out / _filename(args.env, a, args.tier, s) for a in agents for s in seeds]
    plot_path = args.plot or str(out / "plot.png")
    return _report([str(f) for f in files], plot_path, order=agents)


def _filename(env_id: str, agent: str, tier: str, seed: int, custom: bool = False) -> str:
    from lop_bench.results import result_filename

    return result_filename({"env_id": env_id, "agent": {"name": agent}, "custom": custom,
                            "tier": tier, "seed": seed})


# -- parser ---------------------------------------------------------------------------
def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lop-bench",
        formatter_class=_formatter,
        description="Benchmark suite for loss of plasticity in deep continual learning.",
        epilog=textwrap.dedent("""\
            examples:
              lop-bench list
              lop-bench reproduce lop/SlowlyChangingRegression-v0 --tier cpu
              lop-bench run lop/SlowlyChangingRegression-v0 --agent backprop --tier cpu --seeds 0-4
              lop-bench report results/ --plot curves.png
              lop-bench submit results/SlowlyChangingRegression-v0-cpu/*.json
              lop-bench leaderboard build
        """),
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sp = sub.add_parser("list", help="list streams, tiers and agents", formatter_class=_formatter,
                        epilog="example:\n  lop-bench list")
    sp.set_defaults(func=cmd_list)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--tier", default="cpu", help="smoke | cpu | paper (default: cpu)")
        sp.add_argument("--seeds", help="e.g. 0-4 or 0,3,7 (default: the tier's seed set)")
        sp.add_argument("--jobs", type=int, default=_default_jobs(),
                        help="parallel processes, one seed each (default: one per core)")
        sp.add_argument("--no-diagnostics", action="store_true",
                        help="skip dormant-unit / rank diagnostics (the curve is the same)")
        sp.add_argument("--diagnostics-every", type=int, default=1, metavar="K",
                        help="measure diagnostics every K tasks (default: 1)")
        sp.add_argument("--device", default="cpu",
                        help="torch device of the agents and, for image streams, of the data "
                             "(default: cpu; e.g. cuda)")
        sp.add_argument("--checkpoint-every", type=int, metavar="K",
                        help="write a checkpoint every K tasks beside each result "
                             "(<result>.ckpt.pt), so that --resume can continue a killed run")
        sp.add_argument("--resume", action="store_true",
                        help="skip seeds whose result exists; continue the others from their "
                             "checkpoint where there is one")

    sp = sub.add_parser(
        "run", help="run one agent on a stream for several seeds", formatter_class=_formatter,
        epilog=textwrap.dedent("""\
            examples:
              lop-bench run lop/SlowlyChangingRegression-v0 --agent backprop --tier cpu --seeds 0-4
              lop-bench run lop/SlowlyChangingRegression-v0 --agent continual_backprop --hp replacement_rate=1e-3
              lop-bench run lop/SlowlyChangingRegression-v0 --agent my_pkg.agents:make_agent --out my_results
              lop-bench run lop/SlowlyChangingRegression-v0 --agent backprop --tier paper --seeds 0-99 --vectorized
              lop-bench run lop/SlowlyChangingRegression-v0 --agent backprop --set num_tasks=50  # custom: unranked
              lop-bench run lop/IncrementalCIFAR100-v0 --agent backprop --tier paper --seeds 0 --device cuda --checkpoint-every 1
              lop-bench run lop/IncrementalCIFAR100-v0 --agent backprop --tier paper --seeds 0 --device cuda --resume
        """))
    sp.add_argument("env", metavar="ENV", help="stream id (lop-bench list)")
    sp.add_argument("--agent", required=True, help="registered name or package.module:function")
    common(sp)
    sp.add_argument("--out", default=_DEFAULT_OUT, help=f"result directory (default: {_DEFAULT_OUT})")
    sp.add_argument("--hp", action="append", metavar="KEY=VALUE", help="agent hyperparameter override")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="stream config override (makes the result custom, unranked)")
    sp.add_argument("--vectorized", action="store_true",
                    help="learn all seeds at once (make_vec + the agent's vectorized version); "
                         "seeds are split over --jobs processes")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser(
        "report", help="table and plot from result files", formatter_class=_formatter,
        epilog="examples:\n  lop-bench report results/ --plot curves.png\n"
               "  lop-bench report results/*backprop*.json")
    sp.add_argument("results", nargs="+", metavar="RESULTS", help="result files or directories")
    sp.add_argument("--plot", metavar="FILE", help="write a paper-style plot (png, pdf, svg)")
    sp.add_argument("--bin", type=int, metavar="TASKS", help="bin size in tasks for the plot")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser(
        "reproduce", help="every reference agent with its preset: results, table, plot",
        formatter_class=_formatter,
        epilog=textwrap.dedent("""\
            examples:
              lop-bench reproduce lop/SlowlyChangingRegression-v0 --tier cpu
              lop-bench reproduce lop/SlowlyChangingRegression-v0 --tier smoke --out /tmp/smoke
        """))
    sp.add_argument("env", metavar="ENV", help="stream id (lop-bench list)")
    common(sp)
    sp.add_argument("--out", help="result directory (default: results/<stream>-<tier>)")
    sp.add_argument("--agents", help="comma-separated subset of agents (default: all reference agents)")
    sp.add_argument("--plot", metavar="FILE", help="plot path (default: <out>/plot.png)")
    sp.add_argument("--no-vectorized", action="store_true",
                    help="one process per seed even where an agent has a vectorized version")
    sp.set_defaults(func=cmd_reproduce)

    from lop_bench.data.cli import add_cli as add_data_cli
    from lop_bench.leaderboard import add_cli

    add_cli(sub)
    add_data_cli(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lop-bench`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # `--agent my_module:make_agent` finds modules in the current directory, as `python -m`
    # would (a console script's sys.path starts at its own bin/ directory instead).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "jobs", 1) < 1:
        parser.error("--jobs must be >= 1")
    if getattr(args, "diagnostics_every", 1) < 1:
        parser.error("--diagnostics-every must be >= 1")
    try:
        return args.func(args)
    except LopBenchError as exc:
        print(f"lop-bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lop-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
