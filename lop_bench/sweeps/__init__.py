"""Sweeps: grids of streams x tiers x agents x hyperparameters x seeds, on this machine or a
Ray cluster (``lop-bench sweep SPEC.toml``, :func:`lop_bench.sweep`).

- :mod:`~lop_bench.sweeps.spec`: the TOML spec, checked whole, each problem at its line;
- :mod:`~lop_bench.sweeps.plan`: configurations, jobs (one seed, or a vectorized group of
  seeds) and their estimated cost; ``run`` and ``reproduce`` plan with it too;
- :mod:`~lop_bench.sweeps.pool`: worker processes that die with their parent;
- :mod:`~lop_bench.sweeps.backends`: the local pool and Ray;
- :mod:`~lop_bench.sweeps.engine`: :func:`sweep`: retries, the live view, the report.

Jobs survive the cluster: results carry their identity in their file names (as ``run``'s),
so a sweep run again skips the finished ones after checking their identity, continues the
others from their checkpoints, and retries a job whose worker died. Importing this package
is cheap: torch is loaded by the jobs, Ray only by the Ray backend.
"""

from lop_bench.sweeps.engine import JobFailure, SweepResult, sweep
from lop_bench.sweeps.spec import Grid, RunSettings, SweepSpec, load_spec

__all__ = ["sweep", "SweepResult", "JobFailure", "SweepSpec", "Grid", "RunSettings", "load_spec"]
