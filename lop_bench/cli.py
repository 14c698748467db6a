"""The ``lop-bench`` command: list, run, report, reproduce.

Every subcommand's ``--help`` shows an example. ``run`` and ``reproduce`` check their
paths, device and seeds before any work starts, and never overwrite the result of another
run (:mod:`lop_bench.identity`). Parallel seeds run in worker processes that exit within
seconds when the ``lop-bench`` process dies (:func:`run_jobs`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lop_bench.errors import LopBenchError
from lop_bench.runner import MAX_SEED

__all__ = ["main", "parse_seeds", "run_jobs"]

_DEFAULT_OUT = "results"
MAX_SEEDS = 10_000
"""The most seeds one command runs (the paper tiers need at most 100)."""
# Reference agents that take the longest per step (noise every step; generate-and-test).
_SLOWEST_FIRST = ("shrink_perturb", "continual_backprop", "ppo_cbp")
# How long a stopped run waits for its workers before killing them (seconds).
_STOP_TIMEOUT_S = 5.0


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0..4]; ``"0,3,7"``; ``"2"``; combinations like ``"0-2,9"``.

    Seeds are distinct integers from 0 to ``MAX_SEED`` (2**32 - 1), at most ``MAX_SEEDS``
    of them."""
    usage = f"use '0-4', '0,3,7' or '2' (distinct seeds from 0 to {MAX_SEED})"
    ranges = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            ranges.append((int(lo), int(hi) if sep else int(lo)))
    except ValueError:
        raise LopBenchError(f"--seeds {text!r} is not a seed list: {usage}.") from None
    if any(lo > hi for lo, hi in ranges):
        raise LopBenchError(f"--seeds {text!r}: a range runs from low to high; {usage}.")
    if any(lo < 0 or hi > MAX_SEED for lo, hi in ranges):
        raise LopBenchError(f"--seeds {text!r}: a seed is out of range; {usage}.")
    if sum(hi - lo + 1 for lo, hi in ranges) > MAX_SEEDS:
        raise LopBenchError(f"--seeds {text!r}: more than {MAX_SEEDS:,} seeds in one command.")
    seeds = [s for lo, hi in ranges for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        raise LopBenchError(f"--seeds {text!r}: a seed is listed twice; {usage}.")
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


# -- paths, checked before any work ---------------------------------------------------
def _names_a_file(out: Path) -> bool:
    """Whether ``--out`` names one result file (``X.json``) rather than a directory."""
    return out.suffix == ".json" and not out.is_dir()


def _check_out(out: Path, num_results: int) -> Path:
    """Check ``--out`` for ``num_results`` result files: a directory (existing or not), or a
    ``.json`` file name for a single result. Returns the directory the results go to."""
    if _names_a_file(out):
        if num_results > 1:
            raise LopBenchError(
                f"--out {out} names one file, but this command writes {num_results} results "
                f"(one per agent and seed): pass a directory, e.g. --out {out.with_suffix('')}."
            )
        if out.exists() and not out.is_file():
            raise LopBenchError(f"--out {out} exists and is not a regular file: choose another.")
        return out.parent
    if out.exists() and not out.is_dir():
        raise LopBenchError(
            f"--out {out} is an existing file, not a directory: --out takes a directory (or, "
            "for a single seed, a .json file name). Choose another path."
        )
    return out


def _check_plot(plot: str | Path | None) -> None:
    """Check that ``--plot`` names a file in a format matplotlib can write here (an empty
    figure is written to memory in it) and in a directory that exists or can be made."""
    if plot is None:
        return
    path = Path(plot)
    if path.is_dir():
        raise LopBenchError(f"--plot {plot} is a directory: give a file name, e.g. {path / 'plot.png'}.")
    import io

    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.figure import Figure

    supported = FigureCanvasBase.get_supported_filetypes()
    formats = ", ".join(sorted(supported))
    fmt = path.suffix[1:].lower()
    example = f"--plot {path.with_suffix('.png').name if fmt else path.name + '.png'}"
    if fmt not in supported:
        problem = f"unknown format {fmt!r}" if fmt else "no file extension"
        raise LopBenchError(f"--plot {plot}: {problem}; use one of {formats} (e.g. {example}).")
    try:
        Figure(figsize=(1, 1)).savefig(io.BytesIO(), format=fmt)
    except (ValueError, RuntimeError, OSError) as exc:  # pgf without LaTeX, avif without a codec
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LopBenchError(
            f"--plot {plot}: matplotlib cannot write {fmt!r} files here ({reason}); use another "
            f"of {formats} (e.g. {example})."
        ) from None
    from lop_bench.runner import check_writable

    check_writable(path.parent, option="--plot")


# -- jobs -------------------------------------------------------------------------------
@dataclass
class _Plan:
    """What a ``run`` / ``reproduce`` command will do: ``jobs`` to run, the summaries of
    the seeds already finished (``--resume``), and every result path, in order."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def _summary(agent: str, result: Any, finished: bool = False) -> dict[str, Any]:
    """What ``run`` prints of a seed's result (``finished``: found done by ``--resume``)."""
    return {"agent": agent, "seed": result.seed, "summary": result.summary,
            "steps_per_s": result.data["run_info"].get("steps_per_s", 0.0),
            "finished": finished}


def _plan(env_id: str, agents: Sequence[str], tier: str, seeds: Sequence[int],
          env_kwargs: dict, agent_kwargs: dict, out: Path, args: argparse.Namespace,
          vectorized: str = "no", num_workers: int = 1) -> _Plan:
    """Jobs for every (agent, seed), after checking everything that can fail before a run
    starts: the config, the agent and its hyperparameters, and the result file of every
    seed (another run's, or not a result: refused; this run's: skipped with ``--resume``).

    ``vectorized``: "no", "yes" (error if an agent has no vectorized version) or "auto"
    (vectorized where the agent has one). A vectorized agent's seeds are split into
    ``num_workers`` groups, one process each."""
    from lop_bench.agents import make_agent
    from lop_bench.errors import VectorizationNotSupported
    from lop_bench.identity import result_path, run_identity
    from lop_bench.registration import make
    from lop_bench.runner import check_existing_result

    env = make(env_id, tier=tier, **env_kwargs).unwrapped
    checkpointing = args.checkpoint_every is not None or args.resume
    if checkpointing and vectorized == "yes":
        raise LopBenchError("--checkpoint-every / --resume work with one process per seed; "
                            "drop --vectorized.")
    if checkpointing:
        vectorized = "no"
    base = {"env_id": env_id, "tier": tier, "env_kwargs": env_kwargs,
            "agent_kwargs": agent_kwargs, "diagnostics": not args.no_diagnostics,
            "diagnostics_every": args.diagnostics_every, "device": args.device,
            "checkpoint_every": args.checkpoint_every, "resume": args.resume}
    plan = _Plan()
    for a in agents:
        agent = make_agent(a, env, seed=seeds[0], device=args.device, **agent_kwargs)
        todo = []
        for s in seeds:
            identity = run_identity(env, a, agent, agent_kwargs, seed=s,
                                    diagnostics=not args.no_diagnostics,
                                    diagnostics_every=args.diagnostics_every)
            path = result_path(out, identity, env.custom)
            plan.paths.append(path)
            done = check_existing_result(path, identity, resume=args.resume)
            if done is not None:
                plan.finished.append(_summary(a, done, finished=True))
            else:
                todo.append((s, path))
        vec = (vectorized != "no" and bool(todo)
               and _supports_vectorized(env_id, a, tier, env_kwargs, agent_kwargs))
        if vectorized == "yes" and not vec and todo:
            raise VectorizationNotSupported(
                f"agent {a!r} has no vectorized version for {env_id}; run it without --vectorized."
            )
        if vec:
            groups = max(1, min(num_workers, len(todo)))
            for g in range(groups):
                chunk = todo[g::groups]
                plan.jobs.append({**base, "agent": a, "seeds": [s for s, _ in chunk],
                                  "out": str(out), "vectorized": True})
        else:
            plan.jobs.extend({**base, "agent": a, "seeds": [s], "out": str(path),
                              "vectorized": False} for s, path in todo)
    return plan


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


def _run_job(job: dict[str, Any], progress: Callable[[int], None]) -> list[dict[str, Any]]:
    """One job: one seed (``job["seeds"]`` of length 1) or, vectorized, several at once."""
    from lop_bench.runner import run, run_vectorized

    common = dict(
        env_kwargs=job["env_kwargs"], agent_kwargs=job["agent_kwargs"],
        diagnostics=job["diagnostics"], diagnostics_every=job["diagnostics_every"],
        progress=progress, out=job["out"], device=job["device"],
    )
    if job["vectorized"]:
        results = run_vectorized(job["env_id"], job["agent"], tier=job["tier"],
                                 seeds=job["seeds"], **common)
    else:
        results = [run(job["env_id"], job["agent"], tier=job["tier"], seed=job["seeds"][0],
                       checkpoint_every=job["checkpoint_every"], resume=job["resume"], **common)]
    return [_summary(job["agent"], r) for r in results]


# -- worker processes -------------------------------------------------------------------
def run_jobs(jobs: list[dict[str, Any]], num_workers: int, total_steps: int) -> list[dict[str, Any]]:
    """Run jobs (one seed of one agent each, or a vectorized group of seeds) in
    ``num_workers`` processes with one progress bar; returns their summaries.

    Each worker is a spawned process that runs one job at a time, sent over its own pipe.
    Workers ignore Ctrl-C and watch a *lifeline*, a pipe whose only writing end is held by
    this process: when it closes (this process stopped or died, even by ``kill -9``), a
    worker exits at once. So Ctrl-C or an error stops every worker within seconds, and
    nothing lingers; finished results and checkpoints stay (they are written atomically).
    """
    from tqdm.auto import tqdm

    if not jobs:
        return []
    desc = f"{len(jobs)} runs" + (f" on {num_workers} processes" if num_workers > 1 else "")
    with tqdm(total=total_steps, unit="seed-step", unit_scale=True, dynamic_ncols=True,
              desc=desc) as bar:
        if num_workers <= 1 or len(jobs) == 1:
            import torch

            torch.set_num_threads(1)
            return [d for job in jobs for d in _run_job(job, bar.update)]
        return _run_parallel(jobs, num_workers, bar.update)


def _run_parallel(jobs: list[dict[str, Any]], num_workers: int,
                  progress: Callable[[int], None]) -> list[dict[str, Any]]:
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    lifeline, keep_alive = ctx.Pipe(duplex=False)
    workers: dict[Any, Any] = {}  # the pipe to a worker -> its process
    pending = list(reversed(jobs))
    running: dict[Any, dict[str, Any]] = {}  # the pipe to a busy worker -> its job
    results: list[dict[str, Any]] = []
    try:
        _start_workers(ctx, num_workers, lifeline, workers)
        lifeline.close()
        while pending or running:
            for conn in workers:
                if conn not in running and pending:
                    running[conn] = pending.pop()
                    try:
                        conn.send(running[conn])
                    except OSError:
                        raise _lost(workers[conn], running[conn]) from None
            for conn in wait(list(running)):
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    raise _lost(workers[conn], running[conn]) from None
                if kind == "progress":
                    progress(payload)
                    continue
                del running[conn]
                if kind == "error":
                    exc, remote_traceback = payload
                    raise exc from (_RemoteTraceback(remote_traceback) if remote_traceback else None)
                results.extend(payload)
    finally:
        for conn in workers:
            if conn not in running:
                try:
                    conn.send(None)  # an idle worker exits cleanly
                except OSError:
                    pass
        if running:  # after an error or Ctrl-C: the lifeline stops the busy workers now
            keep_alive.close()
        _reap(list(workers.values()))
        keep_alive.close()
    return results


def _start_workers(ctx: Any, n: int, lifeline: Any, workers: dict[Any, Any]) -> None:
    """Start ``n`` worker processes into ``workers`` (their pipe -> the process). They
    inherit "ignore SIGINT" before Python starts in them: Ctrl-C in a terminal reaches
    every process of the group, and only this one acts on it."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        for i in range(n):
            conn, child_conn = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child_conn, lifeline),
                               name=f"lop-bench-worker-{i}")
            proc.start()
            child_conn.close()
            workers[conn] = proc
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def _lost(proc: Any, job: dict[str, Any]) -> LopBenchError:
    """The error for a worker that died while running ``job``."""
    proc.join(_STOP_TIMEOUT_S)
    return LopBenchError(
        f"a worker process died (exit code {proc.exitcode}) while running {_describe(job)}; "
        "the results already written are kept: run the same command with --resume to finish."
    )


def _reap(procs: list[Any]) -> None:
    """Wait for the workers to exit; kill those that have not within the timeout."""
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()


def _describe(job: dict[str, Any]) -> str:
    seeds = ",".join(map(str, job["seeds"]))
    return f"{job['agent']} on {job['env_id']} [{job['tier']}] seed {seeds}"


class _RemoteTraceback(Exception):
    """The traceback of an unexpected error in a worker, shown as the cause of the error
    re-raised in the parent (as :mod:`concurrent.futures` does)."""

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.args[0]}\"\"\""


def _worker_main(conn: Any, lifeline: Any) -> None:
    """A worker process: runs the jobs it receives until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also where SIG_IGN is not inherited
    threading.Thread(target=_exit_with, args=(lifeline,), daemon=True).start()
    import torch

    torch.set_num_threads(1)
    try:
        while (job := conn.recv()) is not None:
            try:
                reply: tuple[str, Any] = ("done", _run_job(job, lambda n: conn.send(("progress", n))))
            except Exception as exc:
                reply = ("error", _sendable(exc))
            conn.send(reply)
    except (EOFError, OSError):  # the parent is gone
        pass


def _exit_with(lifeline: Any) -> None:
    """Block until the parent's end of the lifeline closes, then end this process."""
    try:
        lifeline.recv()  # nothing is ever sent: this returns at EOF only
    except (EOFError, OSError):
        pass
    os._exit(1)


def _sendable(exc: Exception) -> tuple[Exception, str | None]:
    """``(exc, traceback)`` as they can travel to the parent: a :class:`LopBenchError`
    alone (its message says everything); anything else with its formatted traceback."""
    import pickle

    if isinstance(exc, LopBenchError):
        remote = None
    else:
        remote = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # an exception class that does not pickle: keep its text
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc, remote


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
    from lop_bench.runner import check_device, check_writable

    check_device(args.device)
    env_kwargs = _parse_assignments(args.set, "--set")
    agent_kwargs = _parse_assignments(args.hp, "--hp")
    seeds = parse_seeds(args.seeds) if args.seeds else None
    env = make(args.env, tier=args.tier, **env_kwargs).unwrapped
    seeds = seeds if seeds is not None else list(env.seeds)
    out = Path(args.out)
    directory = _check_out(out, len(seeds))
    plan = _plan(args.env, [args.agent], args.tier, seeds, env_kwargs, agent_kwargs, out, args,
                 vectorized="yes" if args.vectorized else "no", num_workers=args.jobs)
    check_writable(directory, option="--out")
    start = time.perf_counter()
    done = plan.finished + _run_plan(plan, args.jobs, env.total_steps)
    for d in sorted(done, key=lambda d: d["seed"]):
        s = d["summary"]
        how = "finished before" if d["finished"] else f"{d['steps_per_s']:,.0f} steps/s"
        print(f"seed {d['seed']}: initial {s['initial']:.4g}  final {s['final']:.4g}  "
              f"drop {s['drop']:+.4g}  ({how})")
    where = out if _names_a_file(out) else f"{out}/"
    print(f"{len(done)} result files in {where} ({time.perf_counter() - start:.0f} s). "
          f"Next: lop-bench report {out}")
    return 0


def _run_plan(plan: _Plan, jobs: int, steps_per_seed: int) -> list[dict[str, Any]]:
    """Run a plan's jobs on at most ``jobs`` processes."""
    total = steps_per_seed * sum(len(j["seeds"]) for j in plan.jobs)
    return run_jobs(plan.jobs, min(jobs, len(plan.jobs)), total)


def _report(paths: Sequence[str | Path], plot_path: str | Path | None,
            order: Sequence[str] | None = None, bin_size: int | None = None) -> int:
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
    _check_plot(args.plot)
    return _report(args.results, args.plot, bin_size=args.bin)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from lop_bench.registration import REFERENCE_AGENTS, make
    from lop_bench.runner import check_device, check_writable

    check_device(args.device)
    agents = args.agents.split(",") if args.agents else list(REFERENCE_AGENTS.get(args.env, ()))
    if not agents:
        raise LopBenchError(f"{args.env} has no reference agents yet; pass --agents a,b.")
    seeds = parse_seeds(args.seeds) if args.seeds else None
    env = make(args.env, tier=args.tier).unwrapped
    seeds = seeds if seeds is not None else list(env.seeds)
    out = Path(args.out) if args.out else Path(_DEFAULT_OUT) / f"{args.env.split('/')[-1]}-{args.tier}"
    if _names_a_file(out):
        raise LopBenchError(f"--out {out}: reproduce writes a directory of results and a plot; "
                            f"pass a directory, e.g. --out {out.with_suffix('')}.")
    directory = _check_out(out, len(agents) * len(seeds))
    _check_plot(args.plot)
    mode = "no" if args.no_vectorized else "auto"
    plan = _plan(args.env, agents, args.tier, seeds, {}, {}, out, args, vectorized=mode,
                 num_workers=1)
    check_writable(directory, option="--out")
    nvec = sum(1 for j in plan.jobs if j["vectorized"])
    how = f"{nvec} vectorized jobs" if nvec else "one process per seed"
    print(f"Reproducing {args.env} [{args.tier}]: {len(agents)} agents x {len(seeds)} seeds "
          f"({env.total_steps:,} steps each; {how}) on {min(args.jobs, len(plan.jobs))} "
          f"processes -> {out}/")
    start = time.perf_counter()
    # Longest jobs first keeps the processes busy until the end (a stable sort).
    plan.jobs.sort(key=lambda j: _SLOWEST_FIRST.index(j["agent"]) if j["agent"] in _SLOWEST_FIRST
                   else len(_SLOWEST_FIRST))
    _run_plan(plan, args.jobs, env.total_steps)
    print(f"done in {time.perf_counter() - start:.0f} s\n")
    return _report(plan.paths, args.plot or out / "plot.png", order=agents)


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
        sp.add_argument("--seeds", help="e.g. 0-4 or 0,3,7, each from 0 to 2**32-1 "
                                         "(default: the tier's seed set)")
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
                        help="skip seeds whose result of the same settings exists; continue "
                             "the others from their checkpoint where there is one")

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
    sp.add_argument("--out", default=_DEFAULT_OUT,
                    help=f"result directory (default: {_DEFAULT_OUT}), or a .json file for one "
                         "seed; files are named <stream>__<tier>__<agent>__<settings hash>"
                         "__seed<k>.json and never overwrite a run of other settings")
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
    except OSError as exc:  # a path the checks could not foresee (a disk that filled up, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"lop-bench: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lop-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
