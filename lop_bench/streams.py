"""A stream's declaration: everything the benchmark knows about a stream, in one place.

Each stream module ends with its :class:`StreamSpec`, beside its env class, as a Gymnasium
``register()`` call names an env's entry point and settings::

    SPEC = StreamSpec(
        env=SlowlyChangingRegressionEnv,             # id, tiers, metric and direction
        vector_env=SlowlyChangingRegressionVectorEnv,  # make_vec (optional)
        label="mean squared error",
        bin_size=2,
        reference_agents=("linear", "backprop", "l2", "shrink_perturb", "continual_backprop"),
        findings=(Finding(...), ...),
    )

Registration (:func:`lop_bench.registration.register`), the report, the runner and the
leaderboard read a stream's facts from its spec and nowhere else; a stream outside this
package is added by registering its spec (DESIGN.md section 3).

The env class keeps what the env needs while it runs (``ENV_ID``, ``TIERS``, ``METRIC``,
``HIGHER_IS_BETTER``, ``STREAM_REVISION``): the spec reads them from it rather than
repeating them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lop_bench.envs.base import ContinualStream, ContinualVectorStream
from lop_bench.errors import InvalidConfigError
from lop_bench.plasticity import check_scale

__all__ = ["RANK_STATISTICS", "Finding", "StreamSpec"]

RANK_STATISTICS = ("final", "last")
"""What a stream's tables are ranked by: ``"final"`` (the mean of the last 10% of tasks) or
``"last"`` (the score of the last task, for streams whose tasks grow)."""

_SUMMARY_STATISTICS = ("initial", "final", "drop", "mean", "last")
_ID = re.compile(r"lop/[A-Za-z0-9]+-v[0-9]+")  # as result files record it (their schema)


@dataclass(frozen=True)
class Finding:
    """A qualitative finding of the paper, checked paired by seed: ``left`` ``op`` ``right``.

    ``left`` and ``right`` are (agent, summary statistic: ``initial``, ``final``, ``drop``,
    ``mean`` or ``last``). ``op`` is ``"<"`` or ``">"``. ``lop-bench report`` says PASS when
    the 95% CI of the paired difference excludes 0 in the expected direction, "weak" when
    only the mean difference points that way, FAIL otherwise.
    """

    text: str
    left: tuple[str, str]
    op: str
    right: tuple[str, str]

    def __post_init__(self) -> None:
        if self.op not in ("<", ">"):
            raise InvalidConfigError(f"finding {self.text!r}: op must be '<' or '>', got {self.op!r}.")
        for agent, statistic in (self.left, self.right):
            if statistic not in _SUMMARY_STATISTICS:
                raise InvalidConfigError(
                    f"finding {self.text!r}: {agent}.{statistic} is not a summary statistic "
                    f"({', '.join(_SUMMARY_STATISTICS)})."
                )


@dataclass(frozen=True)
class StreamSpec:
    """The declaration of a stream (see the module docstring).

    Attributes:
        env: the env class; its ``ENV_ID``, ``TIERS``, ``METRIC`` and ``HIGHER_IS_BETTER``
            are the stream's id, tiers, per-task score and its direction.
        label: what the per-task score is, for plot axes and tables
            (``"mean squared error"``, ``"online accuracy"``).
        vector_env: the vector env class (``make_vec``: N seeds stepped together), if any.
        bin_size: consecutive tasks averaged into one point of a plot, as the paper plots
            the stream (widened for long streams: :func:`lop_bench.metrics.plot_bin_size`).
        rank_by: the summary statistic tables rank by, one of :data:`RANK_STATISTICS`.
        gap_to: with ``rank_by="last"`` (and only then): the agent whose paired gap the
            tables show (the network retrained from scratch); ``initial`` and ``drop`` are
            then not shown.
        reference_agents: the paper's agents on this stream, by registered name, in the
            order ``lop-bench reproduce`` runs and reports them.
        more_agents: the methods beyond the paper's with published reference results on
            this stream (``redo``, ``l2_init``, ...): ``lop-bench reproduce --agents all``
            runs them after the reference agents, and the leaderboard accepts their
            reference entries.
        findings: the paper's qualitative findings, which ``lop-bench report`` checks.
        functional_tiers: tiers too short to show the findings, each with how long it is
            (``{"cpu": "20 tasks"}``); the report says so beside their verdicts.
        dataset_fingerprint: the fingerprint of the official dataset, which a ranked result
            must record; ``None`` for a synthetic stream, or while the official value is
            unknown (then the leaderboard ranks none of the stream's results).
        fresh_agent: the registered name of the stream's fresh reference agent, a network
            of the same architecture re-initialized at every task start
            (:mod:`lop_bench.fresh`), against which the normalized plasticity score is
            computed (:mod:`lop_bench.plasticity`); ``"fresh"`` unless the stream has its
            own (incremental CIFAR-100: ``"from_scratch"``).
        plasticity_scale: ``None``: the plasticity score is a ratio (a per-task score that
            is never negative: accuracies, errors). A number > 0: a difference in units of
            this many score points, for a metric that can be negative (the Ant's return).
    """

    env: type[ContinualStream]
    label: str
    vector_env: type[ContinualVectorStream] | None = None
    bin_size: int = 1
    rank_by: str = "final"
    gap_to: str | None = None
    reference_agents: tuple[str, ...] = ()
    more_agents: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    functional_tiers: Mapping[str, str] = field(default_factory=dict)
    dataset_fingerprint: str | None = None
    fresh_agent: str = "fresh"
    plasticity_scale: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.env, type) and issubclass(self.env, ContinualStream)):
            raise InvalidConfigError(f"a StreamSpec's env is a ContinualStream class, got {self.env!r}.")
        what = f"the spec of {self.env.__name__}"
        if self.vector_env is not None and not (
                isinstance(self.vector_env, type) and issubclass(self.vector_env, ContinualVectorStream)):
            raise InvalidConfigError(f"{what}: vector_env is a ContinualVectorStream class.")
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise InvalidConfigError(
                f"{what}: the id {self.id!r} is not of the form lop/Name-vN (its ENV_ID)."
            )
        if not isinstance(self.label, str) or not self.label:
            raise InvalidConfigError(f"{what}: label must be a non-empty string.")
        if isinstance(self.bin_size, bool) or not isinstance(self.bin_size, int) or self.bin_size < 1:
            raise InvalidConfigError(f"{what}: bin_size must be an integer >= 1, got {self.bin_size!r}.")
        if self.rank_by not in RANK_STATISTICS:
            raise InvalidConfigError(
                f"{what}: rank_by must be one of {', '.join(RANK_STATISTICS)}, got {self.rank_by!r}."
            )
        if (self.gap_to is None) != (self.rank_by != "last"):
            raise InvalidConfigError(
                f"{what}: a stream ranked by its last task names the agent its tables compare "
                f"with (gap_to), and only such a stream does."
            )
        unknown = sorted(set(self.functional_tiers) - set(self.env.TIERS))
        if unknown:
            raise InvalidConfigError(f"{what}: functional_tiers names unknown tiers {unknown}.")
        if self.vector_env is not None and self.vector_env.SINGLE is not self.env:
            raise InvalidConfigError(f"{what}: vector_env {self.vector_env.__name__} is not of it.")
        if not isinstance(self.fresh_agent, str) or not self.fresh_agent:
            raise InvalidConfigError(
                f"{what}: fresh_agent must be the registered name of an agent, got "
                f"{self.fresh_agent!r}."
            )
        object.__setattr__(self, "plasticity_scale",
                           check_scale(self.plasticity_scale, f"{what}: plasticity_scale"))
        for name in ("reference_agents", "more_agents"):
            names = getattr(self, name)
            if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
                raise InvalidConfigError(f"{what}: {name} is a tuple of registered agent names.")
        both = sorted(set(self.reference_agents) & set(self.more_agents))
        if both:
            raise InvalidConfigError(f"{what}: {both} are in both reference_agents and more_agents.")
        for name in ("reference_agents", "more_agents", "findings"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "functional_tiers", dict(self.functional_tiers))

    @property
    def default_agents(self) -> tuple[str, ...]:
        """The reference agents, then the fresh agent if not among them: what
        ``lop-bench reproduce`` runs by default (the fresh agent gives the plasticity
        column, :mod:`lop_bench.plasticity`)."""
        fresh = () if self.fresh_agent in self.reference_agents else (self.fresh_agent,)
        return (*self.reference_agents, *fresh)

    @property
    def all_agents(self) -> tuple[str, ...]:
        """:attr:`default_agents`, then :attr:`more_agents`: what ``lop-bench reproduce
        --agents all`` runs, and the agents that may have a reference entry on the
        leaderboard."""
        return (*self.default_agents, *self.more_agents)

    @property
    def id(self) -> str:
        """The stream's id, ``lop/Name-vN``."""
        return self.env.ENV_ID

    @property
    def metric(self) -> str:
        """The short name of the per-task score (``"mse"``, ``"accuracy"``, ``"return"``)."""
        return self.env.METRIC

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger per-task score is better (``False`` for errors)."""
        return self.env.HIGHER_IS_BETTER

    @property
    def tiers(self) -> Mapping[str, Any]:
        """Tier name -> frozen config, in the order the stream declares them."""
        return self.env.TIERS

    @property
    def entry_point(self) -> str:
        """``"module:Class"`` of the env class (gymnasium's ``entry_point``)."""
        return f"{self.env.__module__}:{self.env.__qualname__}"

    @property
    def vector_entry_point(self) -> str | None:
        """``"module:Class"`` of the vector env class, if any."""
        v = self.vector_env
        return None if v is None else f"{v.__module__}:{v.__qualname__}"
