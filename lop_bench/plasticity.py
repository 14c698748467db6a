"""The normalized plasticity score: an agent's per-task scores relative to a fresh network's.

For each task ``k`` the agent's score ``m_k`` is compared with ``f_k``, the score of the
stream's *fresh* reference agent on the same task with the same seed: a network of the same
architecture re-initialized at the start of every task, so that it learns each task alone
(:mod:`lop_bench.fresh`; on incremental CIFAR-100 the ``from_scratch`` agent). The per-task
plasticity is oriented so that **1.0 means "as plastic as a fresh network"** and a larger
value means more plastic, whatever the direction of the stream's metric:

* **ratio** (the default: streams whose per-task score is never negative, accuracies and
  mean squared errors)::

      higher is better (accuracy):  p_k = m_k / f_k
      lower is better (error):      p_k = f_k / m_k

  so 0.8 reads "80% of a fresh network's accuracy" or "an error 1.25 times a fresh
  network's". A ratio is unitless, so it means the same on every tier of a stream; it is
  undefined when its denominator is 0 (a fresh accuracy of exactly 0, an error of exactly
  0) or when a score is negative, and those raise.

* **scaled difference** (streams whose score can be negative, declared with
  ``StreamSpec.plasticity_scale = s``: the Ant's mean episode return, negative for every
  agent on the cpu tier, where a ratio of two negative returns would reward the worse one)::

      p_k = 1 + d * (m_k - f_k) / s,    d = +1 if higher is better, -1 otherwise

  so 0.8 reads "0.2 scale units worse than a fresh network". The scale is a declared
  constant of the stream, never estimated from the results, so every agent on a stream is
  measured with the same ruler; for the Ant it is 1,000 return, the healthy reward of one
  full-length episode.

The summary, :func:`plasticity_score`, is the mean of ``p_k`` over tasks. Both inputs must
have one finite score per task, in task order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from lop_bench.errors import InvalidConfigError

__all__ = ["check_scale", "plasticity_score", "plasticity_scores", "score_against_fresh"]


def check_scale(scale: float | None, what: str = "plasticity_scale") -> float | None:
    """Return ``scale`` as a float (or ``None``); a scale is a finite number > 0."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not math.isfinite(scale) or scale <= 0:
        raise InvalidConfigError(
            f"{what} must be None (a ratio, for metrics that are never negative) or a finite "
            f"number > 0 (the unit of a scaled difference), got {scale!r}."
        )
    return float(scale)


def _scores(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidConfigError(f"{what}: per-task scores must be numbers ({exc}).") from exc
    if a.ndim != 1 or a.size == 0:
        raise InvalidConfigError(
            f"{what}: expected a non-empty list of per-task scores, got shape {a.shape}."
        )
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise InvalidConfigError(
            f"{what}: the score of task {int(bad[0])} is {a[bad[0]]!r}; per-task scores must be "
            f"finite."
        )
    return a


def plasticity_scores(per_task: Sequence[float] | np.ndarray,
                      fresh_per_task: Sequence[float] | np.ndarray, *,
                      higher_is_better: bool, scale: float | None = None) -> np.ndarray:
    """The per-task plasticity (float64, one per task): 1.0 = as plastic as fresh, higher = more.

    Args:
        per_task: the agent's per-task scores, in task order.
        fresh_per_task: the fresh reference agent's, same stream, tier and seed.
        higher_is_better: the stream's metric direction (``StreamSpec.higher_is_better``).
        scale: ``None`` for the ratio; a number > 0 for the scaled difference
            (``StreamSpec.plasticity_scale``). See the module docstring.

    Raises:
        InvalidConfigError: lengths differ, a score is not finite, or (ratio) a score is
            negative or the ratio's denominator is 0.
    """
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise InvalidConfigError(
            f"higher_is_better must be True or False, got {higher_is_better!r}."
        )
    scale = check_scale(scale, "scale")
    m = _scores(per_task, "the agent")
    f = _scores(fresh_per_task, "the fresh reference agent")
    if m.size != f.size:
        raise InvalidConfigError(
            f"the agent has {m.size} per-task scores and the fresh reference agent {f.size}: "
            f"compare results of the same stream and tier."
        )
    if scale is not None:
        d = 1.0 if higher_is_better else -1.0
        return 1.0 + d * (m - f) / scale
    for a, who in ((m, "the agent"), (f, "the fresh reference agent")):
        neg = np.flatnonzero(a < 0)
        if neg.size:
            raise InvalidConfigError(
                f"{who}'s score on task {int(neg[0])} is negative ({a[neg[0]]!r}): a ratio is "
                f"meaningless for a signed metric; declare the stream's plasticity_scale "
                f"(a scaled difference) and pass it as scale=."
            )
    num, den, who = (m, f, "the fresh reference agent's") if higher_is_better \
        else (f, m, "the agent's")
    zero = np.flatnonzero(den == 0)
    if zero.size:
        raise InvalidConfigError(
            f"{who} score on task {int(zero[0])} is 0, the denominator of the plasticity ratio: "
            f"the score is undefined there (a metric that can be 0 needs a plasticity_scale)."
        )
    return num / den


def plasticity_score(per_task: Sequence[float] | np.ndarray,
                     fresh_per_task: Sequence[float] | np.ndarray, *,
                     higher_is_better: bool, scale: float | None = None) -> float:
    """The summary plasticity: the mean over tasks of :func:`plasticity_scores`."""
    return float(np.mean(plasticity_scores(per_task, fresh_per_task,
                                           higher_is_better=higher_is_better, scale=scale)))


def score_against_fresh(results: Iterable[Any], fresh_results: Iterable[Any], *,
                        higher_is_better: bool, scale: float | None = None,
                        ) -> Iterator[tuple[Any, Any, np.ndarray | None, str | None]]:
    """Pair each result with the fresh reference's result of the same seed and protocol
    and score it: ``(result, fresh result or None, per-task plasticity or None, why not
    scored or None)`` for each of ``results`` (objects with ``seed``, ``per_task`` and
    ``data["protocol_hash"]``, as :class:`lop_bench.results.Result`). The report, the
    recorded ``plasticity`` blocks and the leaderboard all pair results this way."""
    refs = {r.seed: r for r in fresh_results}
    for r in results:
        f = refs.get(r.seed)
        if f is None or f.data["protocol_hash"] != r.data["protocol_hash"]:
            yield r, None, None, f"no result of the fresh reference agent with seed {r.seed}"
            continue
        try:
            yield r, f, plasticity_scores(r.per_task, f.per_task,
                                          higher_is_better=higher_is_better, scale=scale), None
        except InvalidConfigError as exc:
            yield r, f, None, str(exc)
