"""Tables, paper-style plots and the paper's qualitative findings, from result files.

Used by ``lop-bench report`` and ``lop-bench reproduce``. Statistics over seeds are
Student-t 95% intervals (:mod:`lop_bench.metrics`); comparisons between agents are paired
by seed (the same seed gives both agents the same stream).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lop_bench.errors import LopBenchError
from lop_bench.results import Result

__all__ = ["Group", "group_results", "format_table", "plot", "Finding", "FINDINGS", "check_findings"]

_STATS = ("initial", "final", "drop", "mean")


@dataclass
class Group:
    """Results of one agent on one stream and tier, one per seed (sorted by seed)."""

    env_id: str
    tier: str
    agent: str
    results: list[Result]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.results]

    def stat(self, key: str) -> dict[int, float]:
        """Seed -> summary statistic ``key`` (``"last"``: the score of the last task)."""
        if key == "last":
            return {r.seed: float(r.per_task[-1]) for r in self.results}
        return {r.seed: r.summary[key] for r in self.results}

    @property
    def curves(self) -> np.ndarray:
        lengths = {len(r.per_task) for r in self.results}
        if len(lengths) != 1:
            raise LopBenchError(
                f"{self.agent} on {self.env_id} ({self.tier}): seeds have curves of different "
                f"lengths {sorted(lengths)}; results of different settings cannot be averaged."
            )
        return np.array([r.per_task for r in self.results], dtype=float)


def group_results(results: Sequence[Result]) -> list[Group]:
    """Group by (env, tier or 'custom:<hash>', agent); a seed present twice is an error."""
    groups: dict[tuple[str, str, str], list[Result]] = defaultdict(list)
    for r in results:
        tier = r.tier if not r.custom else f"{r.tier} (custom {r.data['protocol_hash'][7:15]})"
        groups[(r.env_id, tier, r.agent_name)].append(r)
    out = []
    for (env_id, tier, agent), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.seed)
        seeds = [r.seed for r in rs]
        if len(set(seeds)) != len(seeds):
            dup = sorted({s for s in seeds if seeds.count(s) > 1})
            raise LopBenchError(f"{agent} on {env_id} ({tier}): seed(s) {dup} appear twice.")
        hashes = {r.data["protocol_hash"] for r in rs}
        if len(hashes) > 1:
            raise LopBenchError(f"{agent} on {env_id} ({tier}): results of different protocols.")
        out.append(Group(env_id, tier, agent, rs))
    return out


def _fmt(stats: dict[str, Any]) -> str:
    mean = stats["mean"]
    if stats["ci_low"] is None:
        return f"{mean:.4g}"
    half = (stats["ci_high"] - stats["ci_low"]) / 2
    return f"{mean:.4g} ± {half:.2g}"


def _paired_gap(g: Group, ref: Group | None) -> str:
    """The paired difference of the last-task scores, ``g - ref``, over shared seeds."""
    from lop_bench.metrics import paired_difference

    if ref is None:
        return "-"
    if g is ref:
        return "0"
    mine, theirs = g.stat("last"), ref.stat("last")
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return "-"
    d = paired_difference([mine[s] for s in seeds], [theirs[s] for s in seeds])
    if d["ci_low"] is None:
        return f"{d['mean']:+.4g}"
    return f"{d['mean']:+.4g} ± {(d['ci_high'] - d['ci_low']) / 2:.2g}"


def format_table(groups: Sequence[Group], order: Sequence[str] | None = None) -> str:
    """A plain-text table per (env, tier): agent, seeds, initial / final / drop / mean.

    Streams ranked by their last task (class-incremental CIFAR-100, whose tasks grow) show
    instead the last task's score (on all classes) and its paired gap to the reference
    agent (retrained from scratch), as the leaderboard does.
    """
    from lop_bench.leaderboard import LAST_TASK_STREAMS
    from lop_bench.metrics import seed_stats, stream_metric

    lines: list[str] = []
    by_stream: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for g in groups:
        by_stream[(g.env_id, g.tier)].append(g)
    for (env_id, tier), gs in by_stream.items():
        if order:
            rank = {a: i for i, a in enumerate(order)}
            gs = sorted(gs, key=lambda g: (rank.get(g.agent, len(rank)), g.agent))
        m = stream_metric(env_id)
        better = "higher" if m.higher_is_better else "lower"
        lines.append(f"{env_id}  tier={tier}  metric={m.metric} ({better} is better; "
                     "mean ± 95% CI half-width over seeds)")
        reference = LAST_TASK_STREAMS.get(env_id)
        if reference is None:
            header = ["agent", "seeds", *_STATS]
            rows = [header]
            for g in gs:
                rows.append([g.agent, str(len(g.results))]
                            + [_fmt(seed_stats(list(g.stat(k).values()))) for k in _STATS])
        else:
            ref = next((g for g in gs if g.agent == reference), None)
            header = ["agent", "seeds", "last (all classes)", f"gap to {reference}", "mean"]
            rows = [header]
            for g in gs:
                rows.append([g.agent, str(len(g.results)),
                             _fmt(seed_stats(list(g.stat("last").values()))),
                             _paired_gap(g, ref),
                             _fmt(seed_stats(list(g.stat("mean").values())))])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for j, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot(groups: Sequence[Group], path: str | Path, bin_size: int | None = None,
         order: Sequence[str] | None = None) -> Path:
    """Paper-style figure: per stream, each agent's seed-mean curve in bins with a 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from lop_bench.metrics import bin_curve, bin_curves, plot_bin_size, stream_metric

    by_stream: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for g in groups:
        by_stream[(g.env_id, g.tier)].append(g)
    # Per stream: the score curve, then the diagnostics behind it (when recorded).
    panels = [("score", None)] + [(k, label) for k, label in _DIAG_PANELS
                                  if any(_diag_curves(g, k) is not None for g in groups)]
    n, cols = len(by_stream), len(panels)
    fig, axes = plt.subplots(n, cols, figsize=(5.6 * cols, 4.0 * n), squeeze=False)
    for row, ((env_id, tier), gs) in zip(axes, by_stream.items()):
        m = stream_metric(env_id)
        if order:
            rank = {a: i for i, a in enumerate(order)}
            gs = sorted(gs, key=lambda g: (rank.get(g.agent, len(rank)), g.agent))
        for col, (ax, (key, label)) in enumerate(zip(row, panels)):
            for i, g in enumerate(gs):
                if key == "score":
                    curves, tasks = g.curves, np.arange(g.curves.shape[1])
                else:
                    found = _diag_curves(g, key)
                    if found is None:
                        continue
                    tasks, curves = found
                color = f"C{i}"
                size = bin_size or plot_bin_size(m.bin_size, curves.shape[1])
                mean, half = bin_curves(curves, size)
                x = bin_curve(tasks.astype(float), size)  # each bin at its mean task index
                ax.plot(x, mean, label=f"{g.agent} (n={len(g.results)})", lw=1.6, color=color)
                if curves.shape[0] > 1:
                    ax.fill_between(x, mean - half, mean + half, alpha=0.2, lw=0, color=color)
            ax.set_title(f"{env_id} [{tier}]" if col == 0 else label, fontsize=10)
            ax.set_xlabel("task")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # tasks are whole numbers
            ax.set_ylabel(m.label if col == 0 else label)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, metadata=_NO_TIMESTAMPS.get(path.suffix.lower()))
    plt.close(fig)
    return path


# Metadata that would make the same plot differ from run to run (or name the writer), per
# format that takes metadata; the other formats (jpg, gif, tiff, ...) refuse any.
_NO_TIMESTAMPS: dict[str, dict[str, None]] = {
    ".png": {"Software": None},
    ".pdf": {"Software": None, "CreationDate": None},
    ".svg": {"Date": None},
    ".svgz": {"Date": None},
}


_DIAG_PANELS = (
    ("dormant_fraction", "dormant units (fraction, at task start)"),
    ("effective_rank", "effective rank of the last hidden layer"),
)


def _diag_curves(g: Group, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(tasks, seeds x tasks values) of a diagnostic measured at the same task starts in
    every seed, or None when a seed lacks it."""
    rows, tasks = [], None
    for r in g.results:
        d = r.diagnostics
        if not d or key not in d["measures"]:
            return None
        values = d["measures"][key]
        if not values or any(v is None for v in values):
            return None
        if tasks is None:
            tasks = d["tasks"]
        elif d["tasks"] != tasks:
            return None
        rows.append(values)
    if not rows:
        return None
    return np.asarray(tasks), np.array(rows, dtype=float)


@dataclass(frozen=True)
class Finding:
    """A qualitative finding of the paper, checked paired by seed: ``left`` ``op`` ``right``.

    ``left`` and ``right`` are (agent, summary statistic). ``op`` is ``"<"`` or ``">"``.
    PASS when the 95% CI of the paired difference excludes 0 in the expected direction;
    "weak" when only the mean difference points that way; FAIL otherwise.
    """

    text: str
    left: tuple[str, str]
    op: str
    right: tuple[str, str]


FINDINGS: dict[str, list[Finding]] = {
    "lop/SlowlyChangingRegression-v0": [
        Finding("backprop learns: its initial error is below the linear learner's",
                ("backprop", "initial"), "<", ("linear", "initial")),
        Finding("backprop loses plasticity: its final error is above its initial error",
                ("backprop", "final"), ">", ("backprop", "initial")),
        Finding("continual backprop keeps plasticity: its final error is below backprop's",
                ("continual_backprop", "final"), "<", ("backprop", "final")),
    ],
    "lop/PermutedMNIST-v0": [
        Finding("backprop learns: its initial accuracy is above the linear learner's",
                ("backprop", "initial"), ">", ("linear", "initial")),
        Finding("backprop loses plasticity: its final accuracy is below its initial accuracy",
                ("backprop", "final"), "<", ("backprop", "initial")),
        Finding("continual backprop keeps plasticity: its final accuracy is above backprop's",
                ("continual_backprop", "final"), ">", ("backprop", "final")),
    ],
    "lop/ContinualImageNet-v0": [
        Finding("backprop loses plasticity: its final accuracy is below its initial accuracy",
                ("backprop", "final"), "<", ("backprop", "initial")),
        Finding("continual backprop keeps plasticity: its final accuracy is above backprop's",
                ("continual_backprop", "final"), ">", ("backprop", "final")),
    ],
    "lop/IncrementalCIFAR100-v0": [
        Finding("backprop loses plasticity: on all classes it ends below a network retrained "
                "from scratch", ("backprop", "last"), "<", ("from_scratch", "last")),
        Finding("continual backprop keeps plasticity: on all classes it ends above backprop",
                ("continual_backprop", "last"), ">", ("backprop", "last")),
    ],
}

SHORT_TIERS: dict[str, str] = {
    "lop/ContinualImageNet-v0": "20 tasks",
    "lop/IncrementalCIFAR100-v0": "4 blocks of 4 epochs",
}
"""Streams whose ``cpu`` tier only checks that everything works: far too short for the
paper's findings, which take thousands of tasks or epochs."""


def check_findings(groups: Sequence[Group]) -> tuple[str, list[tuple[Finding, str]]]:
    """Check the paper's findings on these results; returns (text, [(finding, verdict)])."""
    from lop_bench.metrics import paired_difference

    lines, verdicts = [], []
    by_key = {(g.env_id, g.tier, g.agent): g for g in groups}
    streams = sorted({(g.env_id, g.tier) for g in groups})
    for env_id, tier in streams:
        findings = FINDINGS.get(env_id, [])
        if not findings:
            continue
        lines.append(f"The paper's findings on {env_id} [{tier}] (paired by seed, 95% CI):")
        if tier == "smoke":
            lines.append("  (the smoke tier is a seconds-long functional check, too short to show "
                         "them: use --tier cpu)")
        elif tier == "cpu" and env_id in SHORT_TIERS:
            lines.append(f"  (the cpu tier, {SHORT_TIERS[env_id]}, is a functional check, far "
                         "too short to show them: only the paper tier can)")
        for f in findings:
            gl = by_key.get((env_id, tier, f.left[0]))
            gr = by_key.get((env_id, tier, f.right[0]))
            if gl is None or gr is None:
                missing = f.left[0] if gl is None else f.right[0]
                lines.append(f"  [skip] {f.text} (no results for {missing})")
                verdicts.append((f, "skip"))
                continue
            a, b = gl.stat(f.left[1]), gr.stat(f.right[1])
            seeds = sorted(set(a) & set(b))
            if len(seeds) < 2:
                lines.append(f"  [skip] {f.text} (fewer than 2 common seeds)")
                verdicts.append((f, "skip"))
                continue
            d = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
            sign = 1 if f.op == ">" else -1
            lo, hi = d["ci_low"], d["ci_high"]
            good = sum(1 for s in seeds if sign * (a[s] - b[s]) > 0)
            if (sign > 0 and lo > 0) or (sign < 0 and hi < 0):
                verdict = "PASS"
            elif sign * d["mean"] > 0:
                verdict = "weak"
            else:
                verdict = "FAIL"
            verdicts.append((f, verdict))
            lines.append(
                f"  [{verdict}] {f.text}: {f.left[0]}.{f.left[1]} - {f.right[0]}.{f.right[1]} = "
                f"{d['mean']:+.4g} (95% CI [{lo:+.4g}, {hi:+.4g}]), in {good} of {len(seeds)} seeds"
            )
        lines.append("")
    return "\n".join(lines), verdicts
