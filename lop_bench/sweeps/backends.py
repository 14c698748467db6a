"""Where a sweep's jobs run: :class:`LocalBackend` (worker processes on this machine) and
:class:`RayBackend` (a Ray cluster: an existing one, or a local one started on the spot).

Both run the same jobs with :func:`~lop_bench.sweeps.pool.run_job`, so their result files
are the same apart from ``run_info``. A backend offers free slots, takes jobs and reports
:class:`~lop_bench.sweeps.pool.Event` s; retries and progress are the sweep's own
(:mod:`lop_bench.sweeps.engine`). Ray is imported only by :class:`RayBackend`.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from lop_bench.errors import DependencyNotInstalled, LopBenchError
from lop_bench.sweeps.pool import Event, WorkerPool, run_job

__all__ = ["Backend", "LocalBackend", "RayBackend", "BACKENDS", "make_backend"]

BACKENDS = ("local", "ray")


class Backend(Protocol):
    """What the sweep needs of a backend."""

    name: str
    workers: int

    def free_slots(self) -> int:
        """How many more jobs may start now."""
        ...

    def submit(self, key: int, job: dict[str, Any]) -> None:
        """Start ``job``; its events carry ``key``."""
        ...

    def wait(self, timeout: float) -> list[Event]:
        """Events of the running jobs, waiting up to ``timeout`` seconds for one."""
        ...

    def close(self, abort: bool) -> None:
        """Release the workers; ``abort``: stop the running jobs too."""
        ...


class LocalBackend:
    """``workers`` worker processes on this machine (:class:`~lop_bench.sweeps.pool.WorkerPool`),
    one job each at a time; a worker that dies is replaced."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = WorkerPool(workers).__enter__()

    def free_slots(self) -> int:
        return self._pool.idle()

    def submit(self, key: int, job: dict[str, Any]) -> None:
        self._pool.submit(key, job)

    def wait(self, timeout: float) -> list[Event]:
        return self._pool.wait(timeout)

    def close(self, abort: bool) -> None:
        self._pool.close(abort=abort)


def _ray_job(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A job as a Ray task (one torch thread, as the local workers)."""
    import torch

    torch.set_num_threads(1)
    return run_job(job, None)


class RayBackend:
    """Jobs as Ray tasks, each asking for ``cpus`` CPUs and ``gpus`` GPUs.

    ``address``: ``"auto"`` (the cluster this machine belongs to, as ``ray start`` left
    it), ``"ray://host:10001"`` (Ray Client) or ``"host:6379"``; None starts a local Ray
    with ``workers`` CPUs (or all of them), which :meth:`close` shuts down. In a process
    where Ray is already initialized, that Ray is used and left running. Jobs in flight
    are capped at what the cluster can run at once (re-read as it grows or shrinks), so
    "running" means running. Ray's own retries are off: the sweep retries.
    """

    name = "ray"
    _REFRESH_S = 5.0

    def __init__(self, address: str | None = None, workers: int | None = None,
                 cpus: float = 1.0, gpus: float = 0.0) -> None:
        try:
            import ray
        except ImportError:
            raise DependencyNotInstalled(
                "the ray backend needs Ray: pip install 'lop-bench[ray]' (or pip install ray), "
                "or run the sweep with --backend local."
            ) from None
        import logging

        self._ray = ray
        self._owned = not ray.is_initialized()
        if self._owned:
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if address is None and workers is not None:
                kwargs["num_cpus"] = workers
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address!r}" if address else "a local Ray"
                raise LopBenchError(
                    f"cannot start or reach {where} ({exc}). Start one with ray start --head "
                    "(then --address auto), check the address, or use --backend local."
                ) from None
        self._task = ray.remote(max_retries=0)(_ray_job).options(num_cpus=cpus, num_gpus=gpus)
        self._need = {"CPU": cpus, "GPU": gpus}
        self._running: dict[Any, int] = {}  # object ref -> job key
        self._capacity = 0
        self._checked = 0.0
        self.workers = self._slots(strict=True)

    def _slots(self, strict: bool = False) -> int:
        """How many jobs the cluster can run at once. ``strict``: a cluster where none fits
        is an error (at the start); later (nodes lost, an autoscaler scaling down) it
        means no new job until one fits again."""
        total = self._ray.cluster_resources()
        fits = [int(total.get(r, 0) // n) for r, n in self._need.items() if n > 0]
        if strict and any(f == 0 for f in fits):
            missing = [r for r, n in self._need.items() if n > 0 and total.get(r, 0) < n]
            need = ", ".join(f"{n:g} {r}" for r, n in self._need.items() if n > 0)
            raise LopBenchError(
                f"the Ray cluster has no {' or '.join(missing)} for a job that needs {need}: "
                "add nodes with them, or lower cpus_per_job / gpus_per_job in the spec's [run]."
            )
        self._checked = time.monotonic()
        self._capacity = min(fits) if fits else 1
        return max(1, self._capacity)

    def free_slots(self) -> int:
        if time.monotonic() - self._checked > self._REFRESH_S:
            self.workers = self._slots()
        return self._capacity - len(self._running)

    def submit(self, key: int, job: dict[str, Any]) -> None:
        self._running[self._task.remote(job)] = key

    def wait(self, timeout: float) -> list[Event]:
        ray = self._ray
        if not self._running:
            time.sleep(min(timeout, 0.1))
            return []
        refs = list(self._running)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:  # and any other that is done by now
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return [self._event(ref) for ref in ready]

    def _event(self, ref: Any) -> Event:
        from ray.exceptions import RayError, RayTaskError

        key = self._running.pop(ref)
        try:
            return Event("done", key, self._ray.get(ref))
        except RayTaskError as exc:  # the job raised: its own exception, with its traceback
            cause = exc.cause if isinstance(exc.cause, Exception) else None
            if cause is None:
                return Event("error", key, (RuntimeError(str(exc)), None))
            remote = None if isinstance(cause, LopBenchError) else str(exc)
            return Event("error", key, (cause, remote))
        except RayError as exc:  # the worker or its node died, the task was lost
            return Event("lost", key, f"Ray lost it ({type(exc).__name__}: "
                                      f"{str(exc).strip().splitlines()[0] if str(exc) else ''})")

    def close(self, abort: bool) -> None:
        if abort:
            for ref in self._running:
                self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._owned:
            self._ray.shutdown()


def make_backend(name: str, *, workers: int, address: str | None, cpus: float,
                 gpus: float) -> LocalBackend | RayBackend:
    """The backend ``name`` (:data:`BACKENDS`)."""
    if name == "local":
        if address is not None:
            raise LopBenchError("--address names a Ray cluster: add --backend ray, or drop it.")
        return LocalBackend(workers)
    if name == "ray":
        return RayBackend(address, workers, cpus, gpus)
    raise LopBenchError(f"unknown backend {name!r}: use local or ray.")
