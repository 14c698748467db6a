"""Running jobs: :func:`run_job` (one job, in any process) and :class:`WorkerPool`, the
worker processes of ``run``, ``reproduce`` and ``sweep --backend local``.

A worker is a spawned process that runs one job at a time, sent over its own pipe, and
reports progress (steps), its result summaries or its error over that pipe. Workers ignore
Ctrl-C and watch a *lifeline*, a pipe whose only writing end is held by the parent: when it
closes (the parent stopped or died, even by ``kill -9``), a worker exits at once. So Ctrl-C
or an error stops every worker within seconds and nothing lingers; finished results and
checkpoints stay (they are written atomically). A worker that dies (killed, out of memory)
is reported as *lost* and replaced by a fresh one, so a sweep can run the job again.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

from lop_bench.errors import LopBenchError

__all__ = ["run_job", "Event", "WorkerPool", "RemoteTraceback"]

# How long a stopped pool waits for its workers before killing them (seconds).
STOP_TIMEOUT_S = 5.0


def run_job(job: dict[str, Any], progress: Callable[[int], None] | None) -> list[dict[str, Any]]:
    """Run one job (:func:`lop_bench.sweeps.plan.plan_jobs`): one seed (``job["seeds"]`` of
    length 1) or, vectorized, several at once; returns each seed's summary. ``progress``
    is given the number of seed-steps done since its last call."""
    from lop_bench.runner import run, run_vectorized
    from lop_bench.sweeps.plan import summary_of

    common = dict(
        env_kwargs=job["env_kwargs"], agent_kwargs=job["agent_kwargs"],
        diagnostics=job["diagnostics"], diagnostics_every=job["diagnostics_every"],
        progress=progress if progress is not None else False, out=job["out"],
        device=job["device"], checkpoint_every=job["checkpoint_every"], resume=job["resume"],
    )
    if job["vectorized"]:
        results = run_vectorized(job["env_id"], job["agent"], tier=job["tier"],
                                 seeds=job["seeds"], **common)
    else:
        results = [run(job["env_id"], job["agent"], tier=job["tier"], seed=job["seeds"][0],
                       **common)]
    return [summary_of(job["agent"], r) for r in results]


def describe(job: dict[str, Any]) -> str:
    """``agent on stream [tier] seed 0,1`` (with the job's settings, if any)."""
    seeds = ",".join(map(str, job["seeds"]))
    return f"{job.get('label', job['agent'])} on {job['env_id']} [{job['tier']}] seed {seeds}"


class Event(NamedTuple):
    """What a running job reports: ``kind`` is ``"progress"`` (``payload``: steps done
    since the last report), ``"done"`` (the summaries), ``"error"`` (``(exception,
    remote traceback or None)``) or ``"lost"`` (a message: the worker died)."""

    kind: str
    key: Any
    payload: Any


class RemoteTraceback(Exception):
    """The traceback of an unexpected error in a worker, shown as the cause of the error
    re-raised in the parent (as :mod:`concurrent.futures` does)."""

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.args[0]}\"\"\""


class WorkerPool:
    """``num_workers`` worker processes (see the module docstring). Use it as a context
    manager: leaving it normally lets idle workers exit; leaving it on an exception (an
    error, Ctrl-C) stops the busy ones too, through the lifeline.

    >>> with WorkerPool(2) as pool:
    ...     pool.submit("a", job)
    ...     events = pool.wait()
    """

    def __init__(self, num_workers: int) -> None:
        import multiprocessing as mp

        self._ctx = mp.get_context("spawn")
        self._num_workers = num_workers
        self._lifeline, self._keep_alive = self._ctx.Pipe(duplex=False)
        self._workers: dict[Any, Any] = {}  # the pipe to a worker -> its process
        self._busy: dict[Any, Any] = {}  # the pipe to a busy worker -> its job's key
        self._count = 0

    def __enter__(self) -> WorkerPool:
        self._start(self._num_workers)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(abort=exc_type is not None)

    def idle(self) -> int:
        """How many workers are free for a job."""
        return len(self._workers) - len(self._busy)

    def submit(self, key: Any, job: dict[str, Any]) -> None:
        """Send ``job`` to an idle worker; its events carry ``key``."""
        conn = next(c for c in self._workers if c not in self._busy)
        self._busy[conn] = key
        try:
            conn.send(job)
        except OSError:  # it died while idle: its death is reported by wait()
            pass

    def wait(self, timeout: float | None = None) -> list[Event]:
        """The events of the busy workers (waits up to ``timeout`` seconds for one)."""
        from multiprocessing.connection import wait

        events = []
        for conn in wait(list(self._busy), timeout):
            key = self._busy[conn]
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                events.append(Event("lost", key, self._replace(conn)))
                continue
            if kind != "progress":
                del self._busy[conn]
            events.append(Event(kind, key, payload))
        return events

    def close(self, abort: bool = False) -> None:
        """Stop the workers: idle ones are told to exit; with ``abort``, busy ones are
        stopped through the lifeline. Workers still alive after a few seconds are killed."""
        for conn in self._workers:
            if conn not in self._busy:
                try:
                    conn.send(None)  # an idle worker exits cleanly
                except OSError:
                    pass
        if abort or self._busy:
            self._keep_alive.close()
        _reap(list(self._workers.values()))
        self._keep_alive.close()
        self._lifeline.close()
        self._workers.clear()
        self._busy.clear()

    def _start(self, n: int) -> None:
        """Start ``n`` workers and wait until each is ready (has imported torch). They
        inherit "ignore SIGINT" before Python starts in them: Ctrl-C in a terminal reaches
        every process of the group, and only this one acts on it. A worker that exits
        before it is ready cannot run any job: that stops the pool, with the reason."""
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        started = {}
        try:
            for _ in range(n):
                conn, child_conn = self._ctx.Pipe()
                proc = self._ctx.Process(target=_worker_main, args=(child_conn, self._lifeline),
                                         name=f"lop-bench-worker-{self._count}")
                self._count += 1
                proc.start()
                child_conn.close()
                started[conn] = proc
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        for conn, proc in started.items():
            try:
                conn.recv()  # ("ready", None)
            except (EOFError, OSError):
                proc.join(STOP_TIMEOUT_S)
                self._workers.update(started)
                self.close(abort=True)
                raise LopBenchError(
                    f"a worker process exited (code {proc.exitcode}) before it could run a job; "
                    "its error is above. Workers are spawned: they import the main module "
                    "again, so call lop_bench from a script file or the command line (not "
                    "python - or an interactive session), and keep agents in importable modules."
                ) from None
        self._workers.update(started)

    def _replace(self, conn: Any) -> str:
        """Reap the dead worker behind ``conn``, start a fresh one; returns how it died."""
        proc = self._workers.pop(conn)
        del self._busy[conn]
        conn.close()
        proc.join(STOP_TIMEOUT_S)
        code = proc.exitcode
        how = (f"killed by signal {-code} ({signal.Signals(-code).name})"
               if code is not None and code < 0 and -code in signal.valid_signals()
               else f"exit code {code}")
        self._start(1)
        return f"the worker process died ({how})"


def _reap(procs: list[Any]) -> None:
    """Wait for the workers to exit; kill those that have not within the timeout."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()


def _worker_main(conn: Any, lifeline: Any) -> None:
    """A worker process: runs the jobs it receives until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also where SIG_IGN is not inherited
    threading.Thread(target=_exit_with, args=(lifeline,), daemon=True).start()
    import torch

    torch.set_num_threads(1)
    try:
        conn.send(("ready", None))
        while (job := conn.recv()) is not None:
            try:
                reply: tuple[str, Any] = ("done", run_job(job, lambda n: conn.send(("progress", n))))
            except Exception as exc:
                reply = ("error", sendable(exc))
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


def sendable(exc: Exception) -> tuple[Exception, str | None]:
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
