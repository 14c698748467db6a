"""``lop_bench.sweep``: check a spec, plan its jobs, run them on a backend with retries and
a live view, then report every configuration.

The order never changes: the whole spec is checked (:func:`~lop_bench.sweeps.spec.load_spec`,
:func:`~lop_bench.sweeps.plan.expand`), then every result file already there is checked
(:func:`~lop_bench.sweeps.plan.plan_jobs`: a finished result of the same identity is kept
and not run again; another run's is refused), and only then does a job start. Every job
runs with ``resume``: it continues from its checkpoint when there is one. A job whose
worker died (killed, preempted, out of memory) or that raised an unexpected error is run
again, up to ``retries`` times, from its last checkpoint; errors lop-bench raises on bad
input or a diverged agent (:class:`~lop_bench.errors.LopBenchError`) say what to fix and
are not retried. A job that keeps failing is reported with its error while the rest go on.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from lop_bench.errors import LopBenchError
from lop_bench.sweeps.plan import Plan, expand, format_plan, plan_jobs
from lop_bench.sweeps.pool import Event, describe
from lop_bench.sweeps.spec import RunSettings, SweepSpec, read_spec

__all__ = ["sweep", "SweepResult", "JobFailure", "Progress", "DEFAULT_OUT", "default_workers"]

DEFAULT_OUT = "results"
_TICK_S = 0.5


@dataclass(frozen=True)
class JobFailure:
    """A job that failed for good: what it ran, how many attempts, and the last error
    (``traceback``: the worker's, for an unexpected exception)."""

    job: Mapping[str, Any]
    attempts: int
    error: str
    traceback: str | None = None

    def __str__(self) -> str:
        return f"{describe(dict(self.job))}: {self.error} (after {self.attempts} attempt" \
               f"{'s' if self.attempts != 1 else ''})"


@dataclass
class SweepResult:
    """What :func:`sweep` did.

    ``plan``: the configurations, the jobs and the results found finished; ``started``:
    job attempts started (0 when everything was finished); ``retried``: attempts run again;
    ``failures``: jobs that failed for good; ``results``: the result files there at the
    end; ``table`` / ``findings``: the report's text; ``summary`` / ``plot``: the files
    written (None for a dry run or when no result is there); ``wall_s``: the whole sweep's
    seconds, ``timings``: those of its phases (``plan``: checks and planning; ``run``: the
    jobs, workers' start included; ``report``).
    """

    out: Path
    plan: Plan
    dry_run: bool = False
    started: int = 0
    retried: list[tuple[Mapping[str, Any], str]] = field(default_factory=list)
    failures: list[JobFailure] = field(default_factory=list)
    results: list[Path] = field(default_factory=list)
    table: str = ""
    findings: str = ""
    summary: Path | None = None
    plot: Path | None = None
    workers: int = 1
    wall_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every job finished."""
        return not self.failures

    def describe_plan(self) -> str:
        """The jobs and their estimated cost (what ``--dry-run`` prints)."""
        return format_plan(self.plan, self.workers, self.out)


def sweep(
    spec: str | os.PathLike[str] | Mapping[str, Any] | SweepSpec,
    *,
    backend: str = "local",
    address: str | None = None,
    jobs: int | None = None,
    out: str | os.PathLike[str] | None = None,
    device: str | None = None,
    retries: int | None = None,
    checkpoint_every: int | str | None = None,
    dry_run: bool = False,
    progress: bool | IO[str] = True,
    plot: str | os.PathLike[str] | None = None,
    order: Sequence[str] | None = None,
) -> SweepResult:
    """Run a sweep: every configuration of ``spec`` for its seeds, on a backend.

    Args:
        spec: a TOML spec file (see :mod:`lop_bench.sweeps.spec`), a dict of the same
            layout, or a :class:`~lop_bench.sweeps.spec.SweepSpec`.
        backend: ``"local"`` (worker processes here, one per core) or ``"ray"``.
        address: the Ray cluster (``"auto"``, ``"ray://host:10001"``); None starts a local
            Ray (or uses the one this process has initialized).
        jobs: local worker processes (default: one per core; 1 on a GPU), or the CPUs of a
            local Ray started on the spot.
        out, device, retries, checkpoint_every: override the spec's ``[run]`` settings
            (``checkpoint_every``: tasks, ``"auto"``, or 0 for none).
        dry_run: check and plan only: nothing runs (:meth:`SweepResult.describe_plan`).
        progress: a live view of jobs done / running / failed / left and an ETA on stderr
            (True), on the given stream, or none (False).
        plot: where the report's plot goes (default: ``<out>/plot.png``).
        order: agents in the order the report lists them.

    Returns:
        a :class:`SweepResult`. Every result file, a ``summary.csv`` (one row per
        configuration: mean and 95% CI over seeds of the stream's ranked statistic) and
        the plot are in ``out``.

    Raises:
        SweepSpecError: the spec has problems (each named with its line); nothing ran.
        LopBenchError: a result file in ``out`` is another run's or not a result, the
            device does not exist here, Ray is missing or unreachable; nothing ran.

    Example::

        result = lop_bench.sweep("sweep.toml", jobs=2)
        print(result.table)
    """
    from lop_bench.sweeps.backends import BACKENDS

    start = time.perf_counter()
    if backend not in BACKENDS:
        raise LopBenchError(f"unknown backend {backend!r}: use {' or '.join(BACKENDS)}.")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise LopBenchError(f"jobs must be an integer >= 1, got {jobs!r}.")
    spec, problems = (spec, spec.problems()) if isinstance(spec, SweepSpec) else read_spec(spec)
    settings = _settings(spec.run, out=out, device=device, retries=retries,
                         checkpoint_every=checkpoint_every)
    spec = replace(spec, run=settings)
    if backend == "local" and not dry_run:  # Ray's nodes check their own devices
        from lop_bench.runner import check_device

        try:
            check_device(settings.device)
        except LopBenchError as exc:
            if device is not None:  # the caller's, not the spec's
                raise
            problems.add(("run", "device"), str(exc))
    configs = expand(spec, problems)
    out_dir = Path(settings.out) if settings.out else Path(DEFAULT_OUT) / spec.name
    if out_dir.suffix == ".json":
        raise LopBenchError(f"out {out_dir}: a sweep writes a directory of results; "
                            f"give a directory, e.g. {out_dir.with_suffix('')}.")
    workers = jobs or default_workers(settings.device)
    plan = plan_jobs(configs, out_dir, resume=True,
                     vectorized="auto" if settings.vectorized else "no", num_workers=workers,
                     device=settings.device, checkpoint_every=settings.checkpoint_every)
    result = SweepResult(out=out_dir, plan=plan, dry_run=dry_run, workers=workers)
    result.timings["plan"] = time.perf_counter() - start
    if dry_run:
        return result
    if plan.jobs:
        from lop_bench.runner import check_writable
        from lop_bench.sweeps.backends import make_backend

        check_writable(out_dir, option="out")
        runner = make_backend(backend, workers=min(workers, len(plan.jobs)), address=address,
                              cpus=settings.cpus_per_job, gpus=settings.gpus)
        result.workers = runner.workers
        stream = sys.stderr if progress is True else (progress or None)
        view = Progress(plan, runner.workers, stream)
        _execute(plan, runner, settings.retries, view, result)
    result.timings["run"] = time.perf_counter() - start - result.timings["plan"]
    _report(result, plot, order)
    result.wall_s = time.perf_counter() - start
    result.timings["report"] = result.wall_s - result.timings["plan"] - result.timings["run"]
    return result


def _settings(run: RunSettings, **overrides: Any) -> RunSettings:
    """The spec's run settings with the caller's (the command line's) on top."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("checkpoint_every") == 0:
        changes["checkpoint_every"] = None
    if "out" in changes:
        changes["out"] = str(changes["out"])
    if "retries" in changes and (isinstance(changes["retries"], bool)
                                 or not isinstance(changes["retries"], int)
                                 or changes["retries"] < 0):
        raise LopBenchError(f"retries must be an integer >= 0, got {changes['retries']!r}.")
    return replace(run, **changes)


def default_workers(device: str = "cpu") -> int:
    """Local worker processes by default: one per core this process may use; one on a GPU."""
    if str(device).split(":")[0] != "cpu":
        return 1  # one job per GPU on this machine: spread over GPUs with --backend ray
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


# -- running, with retries ------------------------------------------------------------
def _execute(plan: Plan, backend: Any, retries: int, view: Progress, result: SweepResult) -> None:
    """Run every job of ``plan`` on ``backend``; failed attempts are retried (from their
    checkpoint) while attempts are left; the rest go on whatever fails."""
    jobs = {job["id"]: job for job in plan.jobs}
    # Longest jobs first keeps the workers busy until the end (a stable sort).
    pending = deque(sorted(jobs, key=lambda k: -jobs[k]["cost_s"]))
    attempts = dict.fromkeys(jobs, 0)
    running: set[int] = set()
    try:
        while pending or running:
            while pending and backend.free_slots() > 0:
                key = pending.popleft()
                backend.submit(key, jobs[key])
                attempts[key] += 1
                result.started += 1
                running.add(key)
                view.start(key)
            for event in backend.wait(_TICK_S):
                if event.kind == "progress":
                    view.advance(event.key, event.payload)
                    continue
                running.discard(event.key)
                if event.kind == "done":
                    view.finish(event.key)
                    continue
                error, remote, retry = _failure(event)
                job = jobs[event.key]
                if retry and attempts[event.key] <= retries:
                    result.retried.append((job, error))
                    view.retry(event.key, f"{describe(job)}: {error}; running it again "
                                          f"(retry {attempts[event.key]} of {retries})")
                    pending.appendleft(event.key)
                else:
                    failure = JobFailure(job, attempts[event.key], error, remote)
                    result.failures.append(failure)
                    view.fail(event.key, str(failure))
            view.refresh()
    except BaseException:
        backend.close(abort=True)
        view.close()
        raise
    backend.close(abort=False)
    view.close()


def _failure(event: Event) -> tuple[str, str | None, bool]:
    """``(error, remote traceback, retry?)`` of a failed attempt."""
    if event.kind == "lost":
        return event.payload, None, True
    exc, remote = event.payload
    text = str(exc) if isinstance(exc, LopBenchError) else f"{type(exc).__name__}: {exc}"
    return text, remote, not isinstance(exc, LopBenchError)


# -- the live view ----------------------------------------------------------------------
class Progress:
    """Jobs done / running / failed / left, seed-steps and an ETA, on ``stream``.

    On a terminal the status line is redrawn in place (at most 4 times a second); in a log
    (a batch job's output) a line is written every 30 seconds. Retries and failures are
    written as they happen. The ETA divides the seed-steps left by the rate of those done
    since the start (the local backend counts steps as they happen; Ray counts a job's
    steps when it ends).
    """

    def __init__(self, plan: Plan, workers: int, stream: IO[str] | None) -> None:
        self.stream = stream
        self.live = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.steps = {job["id"]: job["steps"] * len(job["seeds"]) for job in plan.jobs}
        self.total = sum(self.steps.values())
        self.done_steps: dict[int, int] = dict.fromkeys(self.steps, 0)
        self.left = len(plan.jobs)
        self.running = 0
        self.done = 0
        self.failed = 0
        self.start_time = time.monotonic()
        self._shown = 0.0
        self._last = ""
        self._every = 0.25 if self.live else 30.0
        self._write(f"{len(plan.jobs)} jobs ({self.total:,} seed-steps) on {workers} "
                    f"worker{'s' if workers != 1 else ''}; {len(plan.finished)} results "
                    "already finished.\n")

    def start(self, key: int) -> None:
        self.left -= 1
        self.running += 1

    def advance(self, key: int, steps: int) -> None:
        self.done_steps[key] = min(self.steps[key], self.done_steps[key] + steps)

    def finish(self, key: int) -> None:
        self.running -= 1
        self.done += 1
        self.done_steps[key] = self.steps[key]
        self.refresh(force=True)

    def retry(self, key: int, message: str) -> None:
        self.running -= 1
        self.left += 1
        self._event(f"retry: {message}")

    def fail(self, key: int, message: str) -> None:
        self.running -= 1
        self.failed += 1
        self.total -= self.steps[key] - self.done_steps[key]
        self.done_steps[key] = self.steps[key]
        self._event(f"FAILED: {message}")

    def status(self) -> str:
        """``jobs: 3 done, 2 running, 0 failed, 5 left | 41% of 3.0M seed-steps | 1m20s, ETA 2m``."""
        done = sum(self.done_steps.values())
        elapsed = time.monotonic() - self.start_time
        share = done / self.total if self.total else 1.0
        eta = "?" if done == 0 else _clock(elapsed * (self.total - done) / done)
        return (f"jobs: {self.done} done, {self.running} running, {self.failed} failed, "
                f"{self.left} left | {share:.0%} of {_count(self.total)} seed-steps | "
                f"{_clock(elapsed)} elapsed, ETA {eta}")

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (not force and now - self._shown < self._every):
            return
        self._shown = now
        status = self.status()
        if self.live:
            self._write(f"\r{status}\x1b[K")
        elif status != self._last:  # a log gets a line when something changed
            self._write(status + "\n")
        self._last = status

    def close(self) -> None:
        self.refresh(force=True)
        if self.live:
            self._write("\n")

    def _event(self, text: str) -> None:
        self._write(f"\r{text}\x1b[K\n" if self.live else text + "\n")
        self.refresh(force=True)

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


# -- the report -------------------------------------------------------------------------
def _report(result: SweepResult, plot_path: str | os.PathLike[str] | None,
            order: Sequence[str] | None) -> None:
    """Table, findings, plot and summary file of every configuration with results."""
    from lop_bench.report import check_findings, format_table, group_results, plot, write_summary
    from lop_bench.results import load

    result.results = [p for p in result.plan.paths if p.is_file()]
    if not result.results:
        return
    groups = group_results([load(p) for p in result.results])
    result.table = format_table(groups, order=order)
    result.findings, _ = check_findings(groups)
    result.summary = write_summary(groups, result.out / "summary.csv")
    result.plot = plot(groups, plot_path or result.out / "plot.png", order=order)
