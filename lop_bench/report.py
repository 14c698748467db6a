"""Tables, paper-style plots, summary files and the paper's qualitative findings, from
result files.

Used by ``lop-bench report``, ``reproduce`` and ``sweep``. Results are grouped by
*configuration*: the stream, tier, agent and the settings of its results' identity
(:func:`lop_bench.identity.settings_hash`), so several settings of one agent (a sweep's
grid) are reported side by side, each labelled by the hyperparameters in which they
differ, the best setting of each agent marked. Statistics over seeds are Student-t 95%
intervals (:mod:`lop_bench.metrics`); comparisons between agents are paired by seed (the
same seed gives both agents the same stream).

When the results of a stream's fresh reference agent (its ``StreamSpec.fresh_agent``: a
network re-initialized at every task, :mod:`lop_bench.fresh`) are among them, tables show
each configuration's normalized plasticity score (:mod:`lop_bench.plasticity`, 1 = as
plastic as a fresh network), paired by seed, and :func:`attach_plasticity` records it in
the result files (``lop-bench reproduce``; ``lop-bench report --record-plasticity``).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lop_bench.errors import LopBenchError
from lop_bench.registration import stream_spec
from lop_bench.results import Result
from lop_bench.streams import Finding

__all__ = [
    "Group",
    "PlasticityRecord",
    "attach_plasticity",
    "fresh_reference",
    "plasticity_by_seed",
    "group_results",
    "format_table",
    "plot",
    "summary_rows",
    "write_summary",
    "Finding",
    "rank_statistic",
    "check_findings",
]

_STATS = ("initial", "final", "drop", "mean")


@dataclass
class Group:
    """Results of one configuration (an agent with one setting on one stream and tier), one
    per seed (sorted by seed).

    ``settings``: the settings hash of its results (:func:`lop_bench.identity.settings_hash`);
    ``label``: how tables and plots name it (the agent, with the hyperparameters in which it
    differs from the agent's other settings); ``best``: the best of its agent's settings
    by the stream's ranked statistic (set only when the agent has several).
    """

    env_id: str
    tier: str
    agent: str
    results: list[Result]
    settings: str = ""
    label: str = ""
    best: bool = False

    @property
    def name(self) -> str:
        """The label, or the agent when the group has none."""
        return self.label or self.agent

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
    """Group by configuration: (env, tier or 'custom:<hash>', agent, settings hash); a seed
    present twice in one configuration is an error. Labels and the best setting of each
    agent with several are set (:class:`Group`)."""
    from lop_bench.identity import result_identity, settings_hash

    groups: dict[tuple[str, str, str, str], list[Result]] = defaultdict(list)
    for r in results:
        tier = r.tier if not r.custom else f"{r.tier} (custom {r.data['protocol_hash'][7:15]})"
        groups[(r.env_id, tier, r.agent_name, settings_hash(result_identity(r.data)))].append(r)
    out = []
    for (env_id, tier, agent, settings), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.seed)
        seeds = [r.seed for r in rs]
        if len(set(seeds)) != len(seeds):
            dup = sorted({s for s in seeds if seeds.count(s) > 1})
            raise LopBenchError(
                f"{agent} on {env_id} ({tier}): seed(s) {dup} appear twice with the same "
                "settings (copies of one result?): report each result file once."
            )
        hashes = {r.data["protocol_hash"] for r in rs}
        if len(hashes) > 1:
            raise LopBenchError(f"{agent} on {env_id} ({tier}): results of different protocols.")
        out.append(Group(env_id, tier, agent, rs, settings))
    _label(out)
    return out


def _label(groups: Sequence[Group]) -> None:
    """Label the groups of an agent with several settings on one stream and tier by the
    hyperparameters in which they differ, and mark the best of them."""
    by_agent: dict[tuple[str, str, str], list[Group]] = defaultdict(list)
    for g in groups:
        by_agent[(g.env_id, g.tier, g.agent)].append(g)
    for gs in by_agent.values():
        if len(gs) == 1:
            gs[0].label = gs[0].agent
            continue
        records = [_settings_record(g) for g in gs]
        keys = sorted({k for r in records for k in r}, key=str)
        differ = [k for k in keys if len({json.dumps(r.get(k), sort_keys=True) for r in records}) > 1]
        for g, record in zip(gs, records):
            shown = ", ".join(f"{k}={json.dumps(record.get(k))}" for k in differ)
            g.label = f"{g.agent} ({shown or 'settings ' + g.settings})"
        best = _best_of(gs)
        if best is not None:
            best.best = True


def _settings_record(g: Group) -> dict[str, Any]:
    """The settings of a group beside its hyperparameters: preset and diagnostics cadence."""
    from lop_bench.identity import result_identity

    ident = result_identity(g.results[0].data)
    hparams = ident["hparams"] if isinstance(ident["hparams"], dict) else {"hparams": ident["hparams"]}
    return {**hparams, "preset": ident["preset"], "diagnostics_every": ident["diagnostics_every"]}


def rank_statistic(env_id: str) -> str:
    """The statistic ``env_id`` is ranked by, as on the leaderboard: ``"final"``, or
    ``"last"`` for streams ranked by their last task (its ``rank_by``)."""
    return stream_spec(env_id).rank_by


def _best_of(groups: Sequence[Group]) -> Group | None:
    """The group with the best seed mean of the stream's ranked statistic (None if none has
    a finite one)."""
    sign = 1.0 if stream_spec(groups[0].env_id).higher_is_better else -1.0
    stat = rank_statistic(groups[0].env_id)
    scored = [(sign * float(np.mean(list(g.stat(stat).values()))), g) for g in groups]
    scored = [(v, g) for v, g in scored if np.isfinite(v)]
    return max(scored, key=lambda vg: vg[0])[1] if scored else None


def _sorted(gs: Sequence[Group], order: Sequence[str] | None) -> list[Group]:
    """Groups in ``order`` of agents (others after, by name), each agent's by label."""
    rank = {a: i for i, a in enumerate(order or ())}
    return sorted(gs, key=lambda g: (rank.get(g.agent, len(rank)), g.agent, g.name))


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
    agent (retrained from scratch: the stream's ``gap_to``), as the leaderboard does.
    """
    from lop_bench.metrics import seed_stats

    lines: list[str] = []
    by_stream: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for g in groups:
        by_stream[(g.env_id, g.tier)].append(g)
    for (env_id, tier), gs in by_stream.items():
        gs = _sorted(gs, order)
        m = stream_spec(env_id)
        better = "higher" if m.higher_is_better else "lower"
        lines.append(f"{env_id}  tier={tier}  metric={m.metric} ({better} is better; "
                     "mean ± 95% CI half-width over seeds)")
        fresh = fresh_reference(gs, env_id, tier)
        if m.rank_by != "last":
            header = ["agent", "seeds", *_STATS]
            rows = [header]
            for g in gs:
                rows.append([_marked(g), str(len(g.results))]
                            + [_fmt(seed_stats(list(g.stat(k).values()))) for k in _STATS])
        else:
            reference = m.gap_to
            refs = [g for g in gs if g.agent == reference]
            ref = next((g for g in refs if g.best), refs[0]) if refs else None
            header = ["agent", "seeds", "last (all classes)", f"gap to {reference}", "mean"]
            rows = [header]
            for g in gs:
                rows.append([_marked(g), str(len(g.results)),
                             _fmt(seed_stats(list(g.stat("last").values()))),
                             _paired_gap(g, ref),
                             _fmt(seed_stats(list(g.stat("mean").values())))])
        if fresh is not None:
            header.append(_PLASTICITY_COLUMN)
            for row, g in zip(rows[1:], gs):
                row.append(_plasticity_cell(g, fresh))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for j, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        if any(g.best for g in gs):
            lines.append(f"* the best setting of its agent by the seed mean of "
                         f"{rank_statistic(env_id)!r}")
        if fresh is None:
            lines.append(_no_fresh_hint(env_id, tier))
        else:
            how = ("a ratio oriented by the metric's direction" if m.plasticity_scale is None
                   else f"1 + the difference in units of {m.plasticity_scale:g} {m.metric}")
            lines.append(f"{_PLASTICITY_COLUMN}: per task, {how}, against "
                         f"{fresh.name} (the same seed), averaged over tasks")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


_PLASTICITY_COLUMN = "plasticity (1 = fresh)"


def fresh_reference(groups: Sequence[Group], env_id: str, tier: str) -> Group | None:
    """The group of the stream's fresh reference agent (``StreamSpec.fresh_agent``) on
    ``env_id`` and ``tier`` among ``groups``: its best setting when it has several (else
    the first by settings hash), or ``None`` when it has no results there."""
    agent = stream_spec(env_id).fresh_agent
    refs = [g for g in groups if (g.env_id, g.tier, g.agent) == (env_id, tier, agent)]
    if not refs:
        return None
    return next((g for g in refs if g.best), min(refs, key=lambda g: g.settings))


def plasticity_by_seed(g: Group, fresh: Group) -> dict[int, np.ndarray]:
    """Seed -> the per-task plasticity of ``g``'s result against ``fresh``'s result of the
    same seed and protocol (:func:`lop_bench.plasticity.plasticity_scores`); seeds without
    such a reference, or where the score is undefined (a fresh accuracy of 0), are left
    out."""
    from lop_bench.plasticity import score_against_fresh

    spec = stream_spec(g.env_id)
    pairs = score_against_fresh(g.results, fresh.results, higher_is_better=spec.higher_is_better,
                                scale=spec.plasticity_scale)
    return {r.seed: scores for r, _, scores, _ in pairs if scores is not None}


def _plasticity_cell(g: Group, fresh: Group) -> str:
    from lop_bench.metrics import seed_stats

    scores = plasticity_by_seed(g, fresh)
    if not scores:
        return "-"
    cell = _fmt(seed_stats([float(np.mean(p)) for p in scores.values()]))
    return cell if len(scores) == len(g.results) else f"{cell} ({len(scores)} seeds)"


def _no_fresh_hint(env_id: str, tier: str) -> str:
    agent = stream_spec(env_id).fresh_agent
    return (f"{_PLASTICITY_COLUMN}: no results of {agent}, the stream's fresh reference agent "
            f"(re-initialized at every task); add them to see it: lop-bench reproduce "
            f"{env_id} --tier {tier.split(' ')[0]} --agents <the agents>,{agent}")


@dataclass
class PlasticityRecord:
    """What :func:`attach_plasticity` did: the result files it wrote a block into, those
    whose block was already up to date, and those it could not score (with why)."""

    written: list[Path]
    current: list[Path]
    skipped: list[str]

    def describe(self) -> str:
        """One line for the command line."""
        n = len(self.written) + len(self.current)
        text = (f"plasticity recorded in {n} result files ({len(self.written)} written, "
                f"{len(self.current)} already up to date)")
        if self.skipped:
            text += f"; {len(self.skipped)} not scored: " + "; ".join(self.skipped[:3])
            text += " ..." if len(self.skipped) > 3 else ""
        return text


def _result_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.rglob("*.json")) if p.is_dir() else [p])
    return files


def attach_plasticity(paths: Sequence[str | os.PathLike[str]]) -> PlasticityRecord:
    """Record the plasticity block in the result files ``paths`` (files, or directories
    searched for ``*.json``), atomically, through :func:`lop_bench.results.save`.

    A result is scored against the result of its stream's fresh reference agent with the
    same stream, tier, protocol hash and seed **in the same directory** (that agent's best
    setting when it has several, as the tables choose): ``{"reference": {"agent",
    "settings", "file"}, "per_task": [...], "score": mean}``. A file whose block is
    already this one is not rewritten; a result without such a reference, or whose score
    is undefined, is left as it is (its old block, if any, stays). The block is not part
    of the result's identity, nor of its deterministic part.
    """
    from lop_bench.plasticity import score_against_fresh
    from lop_bench.results import load, save

    record = PlasticityRecord([], [], [])
    by_dir: dict[Path, list[tuple[Path, Result]]] = defaultdict(list)
    for f in _result_files(paths):
        by_dir[f.parent].append((f, load(f)))
    for loaded in by_dir.values():
        where = {id(r): f for f, r in loaded}
        groups = group_results([r for _, r in loaded])
        for g in groups:
            fresh = fresh_reference(groups, g.env_id, g.tier)
            if fresh is None:
                continue
            spec = stream_spec(g.env_id)
            pairs = score_against_fresh(g.results, fresh.results,
                                        higher_is_better=spec.higher_is_better,
                                        scale=spec.plasticity_scale)
            for r, f, scores, why in pairs:
                path = where[id(r)]
                if scores is None:
                    record.skipped.append(f"{path.name} ({why})")
                    continue
                block = {
                    "reference": {"agent": f.agent_name, "settings": fresh.settings,
                                  "file": where[id(f)].name},
                    "per_task": [float(x) for x in scores],
                    "score": float(np.mean(scores)),
                }
                if r.data.get("plasticity") == block:
                    record.current.append(path)
                    continue
                save({**r.data, "plasticity": block}, path)
                record.written.append(path)
    return record


def _marked(g: Group) -> str:
    return f"{g.name} *" if g.best else g.name


def plot(groups: Sequence[Group], path: str | Path, bin_size: int | None = None,
         order: Sequence[str] | None = None) -> Path:
    """Paper-style figure: per stream, each agent's seed-mean curve in bins with a 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from lop_bench.metrics import bin_curve, bin_curves, plot_bin_size

    by_stream: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for g in groups:
        by_stream[(g.env_id, g.tier)].append(g)
    # Per stream: the score curve, then the diagnostics behind it (when recorded).
    panels = [("score", None)] + [(k, label) for k, label in _DIAG_PANELS
                                  if any(_diag_curves(g, k) is not None for g in groups)]
    n, cols = len(by_stream), len(panels)
    fig, axes = plt.subplots(n, cols, figsize=(5.6 * cols, 4.0 * n), squeeze=False)
    for row, ((env_id, tier), gs) in zip(axes, by_stream.items()):
        m = stream_spec(env_id)
        gs = _sorted(gs, order)
        for col, (ax, (key, label)) in enumerate(zip(row, panels)):
            for i, g in enumerate(gs):
                if key == "score":
                    curves, tasks = g.curves, np.arange(g.curves.shape[1])
                else:
                    found = _diag_curves(g, key)
                    if found is None:
                        continue
                    tasks, curves = found
                color = f"C{i % 10}"
                size = bin_size or plot_bin_size(m.bin_size, curves.shape[1])
                mean, half = bin_curves(curves, size)
                x = bin_curve(tasks.astype(float), size)  # each bin at its mean task index
                best = " (best)" if g.best else ""
                ax.plot(x, mean, label=f"{g.name}{best} (n={len(g.results)})",
                        lw=2.6 if g.best else 1.6, color=color, ls=_STYLES[i // 10 % 4])
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


_STYLES = ("-", "--", ":", "-.")  # past 10 curves in a panel, colours repeat in a new style


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


def summary_rows(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """One row per configuration: its stream, tier, agent, settings and label, whether it
    is its agent's best, and the mean and 95% CI over seeds of the stream's ranked
    statistic; its plasticity score (the mean over seeds, 95% CI and the number of seeds
    scored; empty without results of the stream's fresh agent: :func:`fresh_reference`);
    then a column ``hp.<name>`` per hyperparameter that differs between settings of an
    agent (empty where it does not apply), and every hyperparameter as JSON."""
    from lop_bench.metrics import seed_stats

    varying: list[str] = []
    by_agent: dict[tuple[str, str, str], list[Group]] = defaultdict(list)
    for g in groups:
        by_agent[(g.env_id, g.tier, g.agent)].append(g)
    for gs in by_agent.values():
        records = [_settings_record(g) for g in gs]
        for k in sorted({k for r in records for k in r}, key=str):
            if len({json.dumps(r.get(k), sort_keys=True) for r in records}) > 1 and k not in varying:
                varying.append(k)
    rows = []
    for g in _sorted(groups, None):
        stat = rank_statistic(g.env_id)
        m = stream_spec(g.env_id)
        stats = seed_stats(list(g.stat(stat).values()))
        record = _settings_record(g)
        row: dict[str, Any] = {
            "env_id": g.env_id, "tier": g.tier, "agent": g.agent, "settings": g.settings,
            "label": g.name, "best": g.best, "statistic": stat, "metric": m.metric,
            "higher_is_better": m.higher_is_better, "seeds": len(g.results),
            "mean": stats["mean"], "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
        }
        fresh = fresh_reference(groups, g.env_id, g.tier)
        scores = plasticity_by_seed(g, fresh) if fresh is not None else {}
        p = seed_stats([float(np.mean(v)) for v in scores.values()]) if scores else {}
        row.update({"plasticity": p.get("mean"), "plasticity_ci_low": p.get("ci_low"),
                    "plasticity_ci_high": p.get("ci_high"), "plasticity_seeds": len(scores)})
        for k in varying:
            value = record.get(k)
            row[f"hp.{k}"] = "" if value is None else (
                json.dumps(value) if isinstance(value, (list, dict)) else value)
        row["hparams"] = json.dumps(g.results[0].data["agent"]["hparams"], sort_keys=True)
        rows.append(row)
    return rows


def write_summary(groups: Sequence[Group], path: str | os.PathLike[str]) -> Path:
    """Write :func:`summary_rows` as CSV (a header row, then one row per configuration;
    an interval of a single seed is left empty), atomically. Returns the path."""
    import csv
    import io

    from lop_bench.results import atomic_write_text

    rows = summary_rows(groups)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["env_id"],
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue())


def check_findings(groups: Sequence[Group]) -> tuple[str, list[tuple[Finding, str]]]:
    """Check the paper's findings (each stream's ``findings``) on these results; returns
    (text, [(finding, verdict)])."""
    from lop_bench.metrics import paired_difference

    lines, verdicts = [], []
    # One setting per agent: an agent with several (a sweep's grid) is left out, by name.
    settings: dict[tuple[str, str, str], list[Group]] = defaultdict(list)
    for g in groups:
        settings[(g.env_id, g.tier, g.agent)].append(g)
    by_key = {k: gs[0] for k, gs in settings.items() if len(gs) == 1}
    streams = sorted({(g.env_id, g.tier) for g in groups})
    for env_id, tier in streams:
        spec = stream_spec(env_id)
        if not spec.findings:
            continue
        lines.append(f"The paper's findings on {env_id} [{tier}] (paired by seed, 95% CI):")
        if tier == "smoke":
            lines.append("  (the smoke tier is a seconds-long functional check, too short to show "
                         "them: use --tier cpu)")
        elif tier in spec.functional_tiers:
            lines.append(f"  (the {tier} tier, {spec.functional_tiers[tier]}, is a functional "
                         "check, far too short to show them: only the paper tier can)")
        for f in spec.findings:
            gl = by_key.get((env_id, tier, f.left[0]))
            gr = by_key.get((env_id, tier, f.right[0]))
            if gl is None or gr is None:
                missing = f.left[0] if gl is None else f.right[0]
                several = len(settings.get((env_id, tier, missing), ()))
                why = (f"{several} settings of {missing}: the findings compare one per agent"
                       if several > 1 else f"no results for {missing}")
                lines.append(f"  [skip] {f.text} ({why})")
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
