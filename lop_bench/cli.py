"""The ``lop-bench`` command: list, run, report, reproduce, sweep, submit, leaderboard build.

Every subcommand's ``--help`` shows an example. ``run``, ``reproduce`` and ``sweep`` check
their paths, device, seeds (and a sweep its whole spec) before any work starts, and never
overwrite the result of another run (:mod:`lop_bench.identity`). Parallel seeds run in
worker processes that exit within seconds when the ``lop-bench`` process dies
(:class:`lop_bench.sweeps.pool.WorkerPool`); ``reproduce`` and ``sweep`` run on those or on
a Ray cluster (:mod:`lop_bench.sweeps`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lop_bench.errors import LopBenchError
from lop_bench.sweeps.engine import default_workers
from lop_bench.sweeps.spec import MAX_SEEDS, parse_seed_list

if TYPE_CHECKING:
    from lop_bench.sweeps.plan import Plan

__all__ = ["main", "parse_seeds", "run_jobs", "MAX_SEEDS"]

_DEFAULT_OUT = "results"


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0..4]; ``"0,3,7"``; ``"2"``; combinations like ``"0-2,9"``.

    Seeds are distinct integers from 0 to ``MAX_SEED`` (2**32 - 1), at most ``MAX_SEEDS``
    of them."""
    return parse_seed_list(text, "--seeds", "one command")


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
def _plan(env_id: str, agent: str, tier: str, seeds: Sequence[int], env_kwargs: dict,
          agent_kwargs: dict, out: Path, args: argparse.Namespace, vectorized: str = "no",
          num_workers: int = 1) -> Plan:
    """The jobs of ``run`` (:func:`lop_bench.sweeps.plan.plan_jobs`), after checking
    everything that can fail before a run starts: the config, the agent and its
    hyperparameters, and the result file of every seed (another run's, or not a result:
    refused; this run's: skipped with ``--resume``).

    ``vectorized``: "no" or "yes" (an error if the agent has no vectorized version); a
    vectorized agent's seeds are split into ``num_workers`` groups, one process each."""
    from lop_bench.registration import make
    from lop_bench.sweeps.plan import configure, plan_jobs

    env = make(env_id, tier=tier, **env_kwargs).unwrapped
    config = configure(env, agent, env_kwargs, agent_kwargs, seeds,
                       diagnostics=not args.no_diagnostics,
                       diagnostics_every=args.diagnostics_every)
    return plan_jobs([config], out, resume=args.resume, vectorized=vectorized,
                     num_workers=num_workers, device=args.device,
                     checkpoint_every=args.checkpoint_every)


def run_jobs(jobs: list[dict[str, Any]], num_workers: int, total_steps: int) -> list[dict[str, Any]]:
    """Run jobs (one seed of one agent each, or a vectorized group of seeds) in
    ``num_workers`` worker processes (:class:`~lop_bench.sweeps.pool.WorkerPool`) with one
    progress bar; returns their summaries. The first error stops every job: finished
    results and checkpoints stay, and ``--resume`` continues."""
    from tqdm.auto import tqdm

    from lop_bench.sweeps.pool import run_job

    if not jobs:
        return []
    desc = f"{len(jobs)} runs" + (f" on {num_workers} processes" if num_workers > 1 else "")
    with tqdm(total=total_steps, unit="seed-step", unit_scale=True, dynamic_ncols=True,
              desc=desc) as bar:
        if num_workers <= 1 or len(jobs) == 1:
            import torch

            torch.set_num_threads(1)
            return [d for job in jobs for d in run_job(job, bar.update)]
        return _run_parallel(jobs, num_workers, bar.update)


def _run_parallel(jobs: list[dict[str, Any]], num_workers: int,
                  progress: Callable[[int], None]) -> list[dict[str, Any]]:
    from lop_bench.sweeps.pool import RemoteTraceback, WorkerPool, describe

    pending = list(reversed(jobs))
    running = 0
    results: list[dict[str, Any]] = []
    with WorkerPool(num_workers) as pool:
        while pending or running:
            while pending and pool.idle():
                job = pending.pop()
                pool.submit(job, job)
                running += 1
            for kind, job, payload in pool.wait():
                if kind == "progress":
                    progress(payload)
                    continue
                running -= 1
                if kind == "done":
                    results.extend(payload)
                elif kind == "error":
                    exc, remote_traceback = payload
                    raise exc from (RemoteTraceback(remote_traceback) if remote_traceback else None)
                else:
                    raise LopBenchError(
                        f"{payload} while running {describe(job)}; the results already written "
                        "are kept: run the same command with --resume to finish."
                    )
    return results


# -- subcommands ----------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from lop_bench.agents import agent_presets, list_agents
    from lop_bench.registration import list_envs, stream_spec

    print("Streams (lop_bench.make(ID, tier=...)):")
    env_ids = list_envs()
    for env_id in env_ids:
        spec = stream_spec(env_id)
        tiers = ", ".join(f"{t} ({c.num_seeds} seeds)" for t, c in spec.tiers.items())
        print(f"  {env_id}\n    tiers: {tiers}")
        print(f"    reference agents: {', '.join(spec.reference_agents)}")
        if spec.vector_env is not None:
            print("    vectorized: yes (lop_bench.make_vec; lop-bench run ... --vectorized)")
    print("Agents (entry-point group lop_bench.agents) and the tiers they have a preset for "
          "(all: every tier; -: none; ?: a factory that does not say):")
    print(_preset_table(list_agents(), env_ids, agent_presets))
    return 0


def _preset_table(agents: Sequence[str], env_ids: Sequence[str],
                  presets_of: Callable[[str], list[tuple[str, str]] | None]) -> str:
    """Agents x streams: the tiers of each agent's presets on each stream."""
    def cell(keys: list[tuple[str, str]] | None, env_id: str) -> str:
        if keys is None:
            return "?"
        tiers = [tier for stream, tier in keys if stream == env_id]
        if "*" in tiers:
            return "all"
        return ",".join(tiers) or "-"

    rows = [["agent", *(e.split("/")[-1] for e in env_ids)]]
    for name in agents:
        try:
            keys = presets_of(name)
        except (LopBenchError, ImportError, AttributeError):  # an entry point that fails to
            keys = None  # load (a stale install, a missing extra): listed, its presets "?"
        rows.append([name, *(cell(keys, e) for e in env_ids)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in rows)


def cmd_run(args: argparse.Namespace) -> int:
    from lop_bench.registration import make
    from lop_bench.runner import check_device, check_fits, check_writable

    check_device(args.device)
    env_kwargs = _parse_assignments(args.set, "--set")
    agent_kwargs = _parse_assignments(args.hp, "--hp")
    seeds = parse_seeds(args.seeds) if args.seeds else None
    check_fits(args.agent, args.env, args.tier)  # before the stream looks for its data
    env = make(args.env, tier=args.tier, **env_kwargs).unwrapped
    seeds = seeds if seeds is not None else list(env.seeds)
    out = Path(args.out)
    directory = _check_out(out, len(seeds))
    plan = _plan(args.env, args.agent, args.tier, seeds, env_kwargs, agent_kwargs, out, args,
                 vectorized="yes" if args.vectorized else "no", num_workers=args.jobs)
    check_writable(directory, option="--out")
    start = time.perf_counter()
    done = plan.finished + run_jobs(plan.jobs, min(args.jobs, len(plan.jobs)), plan.seed_steps)
    for d in sorted(done, key=lambda d: d["seed"]):
        s = d["summary"]
        how = "finished before" if d["finished"] else f"{d['steps_per_s']:,.0f} steps/s"
        print(f"seed {d['seed']}: initial {s['initial']:.4g}  final {s['final']:.4g}  "
              f"drop {s['drop']:+.4g}  ({how})")
    where = out if _names_a_file(out) else f"{out}/"
    print(f"{len(done)} result files in {where} ({time.perf_counter() - start:.0f} s). "
          f"Next: lop-bench report {out}")
    return 0


def _report(paths: Sequence[str | Path], plot_path: str | Path | None,
            order: Sequence[str] | None = None, bin_size: int | None = None,
            record_plasticity: bool = False) -> int:
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
    if record_plasticity:
        _record_plasticity(paths)
    return 0


def _record_plasticity(paths: Sequence[str | Path]) -> None:
    """Record the plasticity block in the results (lop_bench.report.attach_plasticity)."""
    from lop_bench.report import attach_plasticity

    record = attach_plasticity(paths)
    if record.written or record.current or record.skipped:
        print(record.describe())


def cmd_report(args: argparse.Namespace) -> int:
    _check_plot(args.plot)
    return _report(args.results, args.plot, bin_size=args.bin,
                   record_plasticity=args.record_plasticity)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from lop_bench.registration import make, stream_spec
    from lop_bench.runner import check_device, check_fits
    from lop_bench.sweeps import Grid, RunSettings, SweepSpec, sweep

    spec = stream_spec(args.env)
    if args.agents == "all":
        agents = list(spec.all_agents)
    else:
        agents = args.agents.split(",") if args.agents else list(spec.default_agents)
    if not agents:
        raise LopBenchError(f"{args.env} has no reference agents yet; pass --agents a,b.")
    seeds = parse_seeds(args.seeds) if args.seeds else None
    for agent in agents:  # before the stream looks for its data
        check_fits(agent, args.env, args.tier)
    env = make(args.env, tier=args.tier).unwrapped
    seeds = seeds if seeds is not None else list(env.seeds)
    out = Path(args.out) if args.out else Path(_DEFAULT_OUT) / f"{args.env.split('/')[-1]}-{args.tier}"
    if _names_a_file(out):
        raise LopBenchError(f"--out {out}: reproduce writes a directory of results and a plot; "
                            f"pass a directory, e.g. --out {out.with_suffix('')}.")
    _check_out(out, len(agents) * len(seeds))
    _check_plot(args.plot)
    # The sweep of the reference agents with their presets, on the tier's seeds.
    spec = SweepSpec(
        grids=(Grid(streams=(args.env,), agents={a: {} for a in agents}, tiers=(args.tier,),
                    seeds=tuple(seeds)),),
        run=RunSettings(out=str(out), device=args.device, vectorized=not args.no_vectorized,
                        diagnostics=not args.no_diagnostics,
                        diagnostics_every=args.diagnostics_every),
        source=f"reproduce {args.env}",
    )
    if args.backend == "local":
        check_device(args.device)
    print(f"Reproducing {args.env} [{args.tier}]: {len(agents)} agents x {len(seeds)} seeds "
          f"({env.total_steps:,} steps each) -> {out}/")
    result = sweep(spec, backend=args.backend, address=args.address, jobs=args.jobs,
                   retries=args.retries, checkpoint_every=args.checkpoint_every,
                   progress=sys.stderr, plot=args.plot, order=agents)
    code = _print_sweep(result)
    if any(out.glob("*.json")):
        _record_plasticity([out])  # against the stream's fresh agent, when it ran too
    return code


def cmd_sweep(args: argparse.Namespace) -> int:
    from lop_bench.sweeps import sweep

    _check_plot(args.plot)
    result = sweep(args.spec, backend=args.backend, address=args.address, jobs=args.jobs,
                   out=args.out, device=args.device, retries=args.retries,
                   checkpoint_every=args.checkpoint_every, dry_run=args.dry_run,
                   progress=not args.quiet, plot=args.plot)
    if args.dry_run:
        print(result.describe_plan())
        print(f"Dry run: nothing ran. Run it: lop-bench sweep {args.spec} "
              f"--backend {args.backend}")
        return 0
    return _print_sweep(result)


def _print_sweep(result: Any) -> int:
    """Print what a sweep (or ``reproduce``) did and its report; 1 if a job failed."""
    plan = result.plan
    if not plan.jobs:
        print(f"Nothing to run: all {len(plan.paths)} results are in {result.out}/ "
              "(their identity checked).")
    else:
        retried = f", {len(result.retried)} retried" if result.retried else ""
        print(f"{len(plan.jobs) - len(result.failures)} of {len(plan.jobs)} jobs finished "
              f"({result.started} attempts{retried}) in {result.timings['run']:.0f} s; "
              f"{len(plan.finished)} results were already there.")
    if result.table:
        print()
        print(result.table)
    if result.findings:
        print(result.findings)
    if result.summary is not None:
        print(f"summary: {result.summary}")
    if result.plot is not None:
        print(f"plot: {result.plot}")
    if result.failures:
        print(f"\n{len(result.failures)} jobs failed:", file=sys.stderr)
        for failure in result.failures:
            print(f"  {failure}", file=sys.stderr)
        print("The other results are written. Fix what the errors name, then run the same "
              "command again: finished results are kept, the rest resume.", file=sys.stderr)
        return 1
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """``lop-bench submit``: check result files and copy them to the leaderboard."""
    from lop_bench.leaderboard.submission import check_submission, submit_files

    if args.dry_run:
        entries = check_submission(args.results, args.dir, source=args.source,
                                   reference=args.reference)
        n = sum(len(e.results) for e in entries)
        print(f"{n} result file(s) in {len(entries)} new entr{'y' if len(entries) == 1 else 'ies'} "
              "pass every check (dry run: nothing copied).")
        return 0
    done = submit_files(args.results, args.dir, source=args.source, reference=args.reference)
    written = done.written
    written = [p for p in written if p.suffix == ".json"]  # not the reference marks
    entries = sorted({p.parent for p in written})
    print(f"accepted {len(written)} result file(s) in {len(entries)} "
          f"entr{'y' if len(entries) == 1 else 'ies'}{':' if entries else ''}")
    for d in entries:
        print(f"  {d}/")
    for d in done.unchanged:
        print(f"already on the leaderboard with the same results, left as it is: {d}/")
    for m in done.marked:
        print(f"marked as a reference entry: {m.parent}/")
    if args.reference and written:
        print("the new entries are marked as reference entries")
    if written or done.marked:
        print(f"Next: lop-bench leaderboard build --dir {args.dir}")
    return 0


def cmd_leaderboard_build(args: argparse.Namespace) -> int:
    """``lop-bench leaderboard build``: regenerate README.md and index.html."""
    from lop_bench.leaderboard import build

    readme, index = build(args.dir)
    print(f"built {readme} and {index} (a file whose content is unchanged is not rewritten)")
    return 0


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
              lop-bench sweep sweep.toml --dry-run
              lop-bench submit results/SlowlyChangingRegression-v0-cpu/*.json
              lop-bench leaderboard build
        """),
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sp = sub.add_parser("list", help="list streams, tiers and agents", formatter_class=_formatter,
                        epilog="example:\n  lop-bench list")
    sp.set_defaults(func=cmd_list)

    def common(sp: argparse.ArgumentParser, resume_help: str = (
            "skip seeds whose result of the same settings exists; continue the others from "
            "their checkpoint where there is one")) -> None:
        sp.add_argument("--tier", default="cpu", help="smoke | cpu | paper (default: cpu)")
        sp.add_argument("--seeds", help="e.g. 0-4 or 0,3,7, each from 0 to 2**32-1 "
                                         "(default: the tier's seed set)")
        sp.add_argument("--jobs", type=int, default=default_workers(),
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
        sp.add_argument("--resume", action="store_true", help=resume_help)

    def cluster(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: worker processes here (default); ray: a Ray cluster")
        sp.add_argument("--address", metavar="ADDR",
                        help="the Ray cluster: auto (this machine's, after ray start), "
                             "ray://HOST:10001 or HOST:6379 (default: a local Ray started "
                             "for the sweep)")
        sp.add_argument("--retries", type=int, metavar="N",
                        help="runs of a job again after its worker died or it raised an "
                             "unexpected error, from its last checkpoint (default: 2)")

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
    sp.add_argument("--record-plasticity", action="store_true",
                    help="write each result's plasticity score (against the result of the "
                         "stream's fresh agent with the same seed, in the same directory) "
                         "into its file, as reproduce does")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser(
        "reproduce", help="every reference agent with its preset: results, table, plot",
        formatter_class=_formatter,
        epilog=textwrap.dedent("""\
            reproduce is the sweep of the reference agents with their presets on the tier's
            seeds: it skips the results already there, resumes from checkpoints (about 50
            per run unless --checkpoint-every) and retries jobs whose worker died.

            examples:
              lop-bench reproduce lop/SlowlyChangingRegression-v0 --tier cpu
              lop-bench reproduce lop/SlowlyChangingRegression-v0 --tier smoke --out /tmp/smoke
              lop-bench reproduce lop/ContinualImageNet-v0 --tier paper --device cuda --backend ray --address auto
        """))
    sp.add_argument("env", metavar="ENV", help="stream id (lop-bench list)")
    common(sp, resume_help="(always on: reproduce skips finished results and resumes the "
                           "others from their checkpoints; kept for scripts)")
    cluster(sp)
    sp.add_argument("--out", help="result directory (default: results/<stream>-<tier>)")
    sp.add_argument("--agents", help="comma-separated agents (default: the reference agents and the "
                    "fresh agent; 'all': also the methods beyond the paper's, see lop-bench list)")
    sp.add_argument("--plot", metavar="FILE", help="plot path (default: <out>/plot.png)")
    sp.add_argument("--no-vectorized", action="store_true",
                    help="one process per seed even where an agent has a vectorized version")
    sp.set_defaults(func=cmd_reproduce)

    sp = sub.add_parser(
        "sweep", help="a grid of streams x tiers x agents x hyperparameters x seeds, "
                      "here or on a Ray cluster", formatter_class=_formatter,
        epilog=textwrap.dedent("""\
            A spec (TOML) names the grid; lists expand to their product:

              # sweep.toml
              streams = ["lop/SlowlyChangingRegression-v0"]
              tiers = ["cpu"]
              seeds = "0-4"                     # default: each tier's seed set

              [agents.backprop]                 # the preset, with these grids
              lr = [0.01, 0.003]

              [agents.continual_backprop]
              replacement_rate = [1e-4, 1e-3]

              [run]                             # optional
              out = "results/my-sweep"          # default: results/<spec name>
              checkpoint_every = 5              # tasks; default: about 50 per run
              retries = 2

            The whole spec is checked before any job starts; each problem is named with its
            line. Finished results (same identity) are skipped, unfinished jobs resume from
            their checkpoints, failed jobs are retried. At the end: a table per stream with
            the best setting of each agent marked (*), <out>/summary.csv (one row per
            configuration: mean and 95% CI of the ranked statistic) and <out>/plot.png.

            examples:
              lop-bench sweep sweep.toml --dry-run               # the jobs and their cost
              lop-bench sweep sweep.toml --jobs 2
              lop-bench sweep sweep.toml --backend ray           # a local Ray, started for it
              lop-bench sweep sweep.toml --backend ray --address auto --device cuda
        """))
    sp.add_argument("spec", metavar="SPEC.toml", help="the sweep spec (see above)")
    cluster(sp)
    sp.add_argument("--jobs", type=int, help="local worker processes (default: one per core; "
                                             "1 on a GPU), or the CPUs of a local Ray")
    sp.add_argument("--out", help="result directory (overrides the spec's [run] out)")
    sp.add_argument("--device", help="torch device of every job (overrides the spec's; "
                                     "cuda: each Ray job asks for a GPU)")
    sp.add_argument("--checkpoint-every", type=int, metavar="K",
                    help="a checkpoint every K tasks; 0: none (overrides the spec's)")
    sp.add_argument("--dry-run", action="store_true",
                    help="check the spec and print the jobs and their estimated cost; run nothing")
    sp.add_argument("--plot", metavar="FILE", help="plot path (default: <out>/plot.png)")
    sp.add_argument("--quiet", action="store_true", help="no live progress on stderr")
    sp.set_defaults(func=cmd_sweep)

    from lop_bench.data.cli import add_cli as add_data_cli

    _add_leaderboard_commands(sub)
    add_data_cli(sub)
    return p


def _add_leaderboard_commands(subparsers: Any) -> None:
    """``submit`` and ``leaderboard build`` (:mod:`lop_bench.leaderboard`)."""
    from lop_bench.leaderboard import DEFAULT_DIR

    sp = subparsers.add_parser(
        "submit", help="check result files and add them to the leaderboard",
        formatter_class=_formatter,
        description="Check result files (schema, summary vs curve, tier hash, steps, "
                    "diagnostics, full seed set, no custom settings, no smoke tier, no copied "
                    "curves) and copy them all, or none, under DIR/submissions/. Files "
                    "already there with the same results are left as they are.",
        epilog=textwrap.dedent("""\
            examples:
              lop-bench run lop/SlowlyChangingRegression-v0 --agent my_pkg.agents:make_agent --tier cpu --out mine
              lop-bench submit mine/ --dry-run
              lop-bench submit mine/ --source https://github.com/me/my-agent/tree/<commit sha>
              lop-bench submit mine/*.json --source my-agent==1.2.0
              lop-bench submit results/SlowlyChangingRegression-v0-cpu --reference
              lop-bench leaderboard build
        """))
    sp.add_argument("results", nargs="+", metavar="RESULTS",
                    help="result files, or directories searched for *.json")
    sp.add_argument("--dir", default=str(DEFAULT_DIR),
                    help=f"leaderboard directory (default: {DEFAULT_DIR})")
    sp.add_argument("--dry-run", action="store_true", help="check only; copy nothing")
    sp.add_argument("--source", metavar="WHERE",
                    help="where the agent's code is, recorded as agent.source in every file "
                         "copied: a URL with a commit (https://github.com/me/my-agent/tree/"
                         "<sha>) or a package with its version (my-agent==1.2.0); the pages "
                         "link it")
    sp.add_argument("--reference", action="store_true",
                    help="the project's own results: mark the entries as the reference entries "
                         "of their agents (a stream's reference agents and fresh agent only), "
                         "against which the board diffs hyperparameters and computes the "
                         "plasticity score; entries already there with the same results get "
                         "the mark")
    sp.set_defaults(func=cmd_submit)

    lp = subparsers.add_parser(
        "leaderboard", help="regenerate the leaderboard pages", formatter_class=_formatter,
        epilog="examples:\n  lop-bench leaderboard build\n"
               "  lop-bench leaderboard build --dir leaderboard")
    lsub = lp.add_subparsers(dest="leaderboard_command", metavar="ACTION")
    bp = lsub.add_parser(
        "build", help="regenerate DIR/README.md and DIR/index.html from DIR/submissions/",
        formatter_class=_formatter,
        epilog="examples:\n  lop-bench leaderboard build\n"
               "  lop-bench leaderboard build --dir /tmp/board")
    bp.add_argument("--dir", default=str(DEFAULT_DIR),
                    help=f"leaderboard directory (default: {DEFAULT_DIR})")
    bp.set_defaults(func=cmd_leaderboard_build)

    def _help(args: argparse.Namespace) -> int:
        lp.print_help()
        return 2

    lp.set_defaults(func=_help)


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
    if getattr(args, "jobs", None) is not None and args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if getattr(args, "retries", None) is not None and args.retries < 0:
        parser.error("--retries must be >= 0")
    if getattr(args, "checkpoint_every", None) is not None and args.checkpoint_every < 0:
        parser.error("--checkpoint-every must be >= 0")
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
