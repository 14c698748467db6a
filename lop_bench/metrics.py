"""Metrics on per-task curves: summaries, statistics over seeds, binning and the IQM.

Everything here is a pure function of its arguments (numpy in, Python floats or numpy
arrays out). A *curve* is one value per task: the stream's per-task score (its
declaration, :class:`~lop_bench.streams.StreamSpec`, names the score and the direction in
which it improves).

- :func:`summarize`: ``initial`` / ``final`` (mean of the first / last 10% of tasks, at least
  one task), ``drop`` (signed so that a loss of plasticity is positive whatever the
  direction of the metric) and ``mean`` (area under the curve / number of tasks).
- :func:`seed_stats` / :func:`paired_difference`: mean, standard error and a Student's t
  confidence interval over seeds; paired comparisons seed by seed.
- :func:`bin_curve` / :func:`bin_curves`: binned curves and confidence bands for plots.
- :func:`iqm` / :func:`iqm_bootstrap_ci`: interquartile mean with a stratified bootstrap
  confidence interval (as rliable computes them, reimplemented in numpy).

``scipy`` is imported only inside the functions that need it, so importing this module is
cheap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "edge_count",
    "summarize",
    "seed_stats",
    "paired_difference",
    "plot_bin_size",
    "bin_curve",
    "bin_curves",
    "iqm",
    "iqm_bootstrap_ci",
]


# ---------------------------------------------------------------------------------------
# validation helpers


def _vector(values: ArrayLike, what: str) -> np.ndarray:
    """``values`` as a finite, non-empty 1-D float64 array, or a ValueError."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a sequence of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got an array of shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{what} is empty: at least one value is needed.")
    _check_finite(arr, what)
    return arr


def _check_finite(arr: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr.ravel()))
        raise ValueError(
            f"{what} contains {bad.size} non-finite value(s) (NaN or inf), first at flat "
            f"index {int(bad[0])}: remove or fix them before computing metrics."
        )


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}.")
    return c


def _check_bin_size(bin_size: int) -> int:
    if isinstance(bin_size, bool) or int(bin_size) != bin_size or bin_size < 1:
        raise ValueError(f"bin_size must be a positive integer, got {bin_size!r}.")
    return int(bin_size)


def _t_quantile(confidence: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2.0, dof))


# ---------------------------------------------------------------------------------------
# per-run summaries


def edge_count(num_tasks: int) -> int:
    """Number of tasks averaged for ``initial`` and ``final``: 10% of them, at least one.

    ``k = max(1, num_tasks // 10)``: 1 for up to 19 tasks, 2 for 20..29, 80 for 800.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be at least 1, got {num_tasks!r}.")
    return max(1, int(num_tasks) // 10)


def summarize(curve: ArrayLike, higher_is_better: bool) -> dict[str, Any]:
    """Summarize one run's per-task curve.

    Args:
        curve: one finite score per task, in task order.
        higher_is_better: direction of the score (the stream's ``higher_is_better``).

    Returns:
        ``{"initial", "final", "drop", "mean", "num_tasks"}``: ``initial`` / ``final`` are the
        means of the first / last ``k = max(1, n // 10)`` tasks; ``drop`` is signed so that a
        loss of plasticity is positive (``initial - final`` when higher is better,
        ``final - initial`` when lower is better); ``mean`` is the mean over all tasks (the
        area under the curve divided by the number of tasks). Floats, and an int
        ``num_tasks``.

    Raises:
        ValueError: the curve is empty, not one-dimensional, or holds NaN or inf.
    """
    arr = _vector(curve, "curve")
    n = arr.size
    k = edge_count(n)
    initial = float(np.mean(arr[:k]))
    final = float(np.mean(arr[-k:]))
    drop = initial - final if higher_is_better else final - initial
    return {
        "initial": initial,
        "final": final,
        "drop": float(drop),
        "mean": float(np.mean(arr)),
        "num_tasks": int(n),
    }


# ---------------------------------------------------------------------------------------
# statistics over seeds


def seed_stats(values: ArrayLike, confidence: float = 0.95) -> dict[str, Any]:
    """Mean over seeds with its standard error and a Student's t confidence interval.

    Args:
        values: one finite value per seed.
        confidence: coverage of the interval (0.95: ``t_{0.975, n-1}``).

    Returns:
        ``{"n", "mean", "std", "sem", "ci_low", "ci_high"}`` with ``std`` the sample standard
        deviation (ddof=1), ``sem = std / sqrt(n)`` and ``ci = mean -/+ t * sem``. With a
        single value, ``std``, ``sem`` and the interval are ``None`` (JSON-friendly: no NaN).

    Raises:
        ValueError: no values, NaN or inf among them, or a confidence outside (0, 1).
    """
    c = _check_confidence(confidence)
    arr = _vector(values, "values")
    n = arr.size
    mean = float(np.mean(arr))
    out: dict[str, Any] = {
        "n": int(n),
        "mean": mean,
        "std": None,
        "sem": None,
        "ci_low": None,
        "ci_high": None,
    }
    if n < 2:
        return out
    std = float(np.std(arr, ddof=1))
    sem = std / math.sqrt(n)
    half = _t_quantile(c, n - 1) * sem
    out.update(std=std, sem=sem, ci_low=mean - half, ci_high=mean + half)
    return out


def paired_difference(
    a: ArrayLike,
    b: ArrayLike,
    confidence: float = 0.95,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """Compare two agents seed by seed (both run on the same seeds, hence the same streams).

    Args:
        a, b: one value per seed each, in the same seed order.
        confidence: coverage of the interval of the mean difference.
        higher_is_better: direction of the score; decides what counts as a win of ``a``.

    Returns:
        :func:`seed_stats` of ``a - b`` (``n``, ``mean``, ``std``, ``sem``, ``ci_low``,
        ``ci_high``) plus ``wins`` (seeds where ``a`` is better than ``b``: ``a > b`` by
        default, ``a < b`` when ``higher_is_better=False``), ``losses`` (the reverse) and
        ``ties``.

    Raises:
        ValueError: the two have different lengths, are empty, or hold NaN or inf.
    """
    x = _vector(a, "a")
    y = _vector(b, "b")
    if x.shape != y.shape:
        raise ValueError(
            f"a and b must hold one value per seed for the same seeds: got {x.size} and "
            f"{y.size} values."
        )
    out = seed_stats(x - y, confidence)
    better = x > y if higher_is_better else x < y
    worse = x < y if higher_is_better else x > y
    out["wins"] = int(np.count_nonzero(better))
    out["losses"] = int(np.count_nonzero(worse))
    out["ties"] = int(x.size - out["wins"] - out["losses"])
    return out


# ---------------------------------------------------------------------------------------
# binning for plots


def plot_bin_size(stream_bin_size: int, num_tasks: int, max_bins: int = 30) -> int:
    """Tasks per bin in plots: the stream's own bin (the paper's), widened so that a
    curve has at most about ``max_bins`` bins (long streams stay readable)."""
    return max(1, int(stream_bin_size), int(num_tasks) // max_bins)


def bin_curve(curve: ArrayLike, bin_size: int) -> np.ndarray:
    """Means of consecutive bins of ``bin_size`` tasks (float64, ``ceil(n / bin_size)`` long).

    A last, partial bin is averaged over the tasks it holds.

    Raises:
        ValueError: an empty or non-1-D curve, NaN or inf, or ``bin_size`` < 1.
    """
    size = _check_bin_size(bin_size)
    arr = _vector(curve, "curve")
    return _bin_rows(arr[None, :], size)[0]


def _bin_rows(arr: np.ndarray, size: int) -> np.ndarray:
    n = arr.shape[1]
    full = n // size
    parts = []
    if full:
        parts.append(arr[:, : full * size].reshape(arr.shape[0], full, size).mean(axis=2))
    if n % size:
        parts.append(arr[:, full * size :].mean(axis=1, keepdims=True))
    return np.concatenate(parts, axis=1)


def bin_curves(
    curves: ArrayLike, bin_size: int, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Bin a (seeds x tasks) array and return the band to plot: ``(mean, half_width)``.

    Each seed's curve is binned as :func:`bin_curve` does; ``mean`` is the mean over seeds
    of each bin and ``half_width`` the half-width of the Student's t confidence interval of
    that mean (``t_{(1+confidence)/2, n-1} * std(ddof=1) / sqrt(n)``), so the band is
    ``mean -/+ half_width``. With a single seed the half-width is undefined: an array of NaN
    (matplotlib draws no band).

    Raises:
        ValueError: ``curves`` is not a non-empty 2-D array, holds NaN or inf, or
            ``bin_size`` < 1.
    """
    size = _check_bin_size(bin_size)
    c = _check_confidence(confidence)
    arr = np.asarray(curves, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"curves must be a 2-D array (seeds x tasks), got shape {arr.shape}; for a single "
            f"curve use bin_curve."
        )
    if arr.size == 0:
        raise ValueError(f"curves is empty (shape {arr.shape}).")
    _check_finite(arr, "curves")
    binned = _bin_rows(arr, size)
    n = binned.shape[0]
    mean = binned.mean(axis=0)
    if n < 2:
        return mean, np.full_like(mean, np.nan)
    half = _t_quantile(c, n - 1) * binned.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, half


# ---------------------------------------------------------------------------------------
# interquartile mean


def iqm(values: ArrayLike) -> float:
    """Interquartile mean: the mean of the middle 50% of all values (flattened).

    As rliable computes it: ``scipy.stats.trim_mean(values, 0.25, axis=None)``, which cuts
    ``floor(0.25 * n)`` values from each end.

    Raises:
        ValueError: no values, or NaN or inf among them.
    """
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("values is empty: the IQM needs at least one value.")
    _check_finite(arr, "values")
    return float(stats.trim_mean(arr, 0.25, axis=None))


# Upper bound on the number of resampled values held at once by the bootstrap.
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


def iqm_bootstrap_ci(
    scores: ArrayLike,
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """IQM with a stratified bootstrap percentile confidence interval (rliable's method).

    Args:
        scores: ``(runs,)`` or ``(runs x tasks)``. With columns, each column is a stratum
            (a task or an environment): every bootstrap replicate resamples the runs with
            replacement independently within each column, then takes the IQM of all
            resampled values. A 1-D array is a plain bootstrap over runs.
        reps: number of bootstrap replicates.
        seed: seed of the ``numpy.random.Generator`` that draws the replicates; the result
            is reproducible bit for bit for a given seed and input.
        confidence: coverage of the percentile interval.

    Returns:
        ``{"iqm", "ci_low", "ci_high", "reps", "confidence"}``; ``iqm`` is the point estimate
        on ``scores`` and the interval holds the ``(1 -/+ confidence) / 2`` percentiles of the
        replicates' IQMs.

    Raises:
        ValueError: empty scores, NaN or inf, more than two dimensions, ``reps`` < 1 or a
            confidence outside (0, 1).
    """
    from scipy import stats

    c = _check_confidence(confidence)
    if isinstance(reps, bool) or int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}.")
    reps = int(reps)
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"scores must be (runs,) or (runs x tasks), got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"scores is empty (shape {arr.shape}).")
    _check_finite(arr, "scores")

    runs, tasks = arr.shape
    point = float(stats.trim_mean(arr, 0.25, axis=None))
    rng = np.random.default_rng(seed)
    cols = np.arange(tasks)[None, None, :]
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // arr.size)
    boot = np.empty(reps, dtype=np.float64)
    for start in range(0, reps, chunk):
        m = min(chunk, reps - start)
        idx = rng.integers(0, runs, size=(m, runs, tasks))
        sample = arr[idx, cols].reshape(m, runs * tasks)
        boot[start : start + m] = stats.trim_mean(sample, 0.25, axis=1)
    alpha = (1.0 - c) / 2.0
    low, high = np.percentile(boot, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return {
        "iqm": point,
        "ci_low": float(low),
        "ci_high": float(high),
        "reps": reps,
        "confidence": c,
    }
