"""Ranking: the entries of each stream and tier in order, as the tables both pages show
(their columns, their cells as text, the note under each)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lop_bench.leaderboard.entries import Entry
from lop_bench.registration import stream_spec

__all__ = ["IQM_MIN_SEEDS", "Table", "rank_entries", "tables"]

IQM_MIN_SEEDS = 10
"""Entries with at least this many seeds also show the IQM of ``final`` (rliable)."""

DASH = "\u2014"
"""What a cell shows when it has nothing to show."""

_BOOTSTRAP_REPS = 2000
_BOOTSTRAP_SEED = 0


def rank_entries(entries: Sequence[Entry], higher_is_better: bool, by: str = "final") -> list[Entry]:
    """Entries best first by the seed mean of ``by`` (ties: agent name, then entry id)."""
    import numpy as np

    sign = -1.0 if higher_is_better else 1.0
    return sorted(entries, key=lambda e: (sign * float(np.mean(e.stat(by))), e.agent, e.id))


@dataclass(frozen=True)
class Table:
    """The table of one stream and tier: its entries in rank order, each as a row of cell
    texts keyed by column, the columns (key, title) and the note under the table; the
    stream's score (``metric``, ``label``, direction, plot ``bin_size``) from its
    declaration."""

    env_id: str
    tier: str
    metric: str
    label: str
    higher_is_better: bool
    bin_size: int
    protocol_hash: str
    num_seeds: int
    entries: list[Entry]
    rows: list[dict[str, str]]
    columns: tuple[tuple[str, str], ...]
    about: str


_COLUMNS = (
    ("rank", "#"),
    ("agent", "agent"),
    ("source", "source"),
    ("preset", "preset"),
    ("hparams", "hyperparameters"),
    ("seeds", "seeds"),
    ("final", "final"),
    ("final_iqm", "final IQM"),
    ("initial", "initial"),
    ("drop", "drop"),
    ("versions", "versions"),
    ("date", "date"),
)


def _num(x: float) -> str:
    """A number as the tables print it: 4 significant digits."""
    return f"{x:.4g}"


def _mean_ci(values: list[float]) -> str:
    """The seed mean ± the half-width of its 95% Student-t interval."""
    from lop_bench.metrics import seed_stats

    s = seed_stats(values)
    if s["ci_low"] is None:
        return _num(s["mean"])
    return f"{_num(s['mean'])} ± {(s['ci_high'] - s['ci_low']) / 2:.2g}"


def _iqm_ci(values: list[float]) -> str:
    """The IQM [95% stratified-bootstrap interval] (a dash below :data:`IQM_MIN_SEEDS`)."""
    if len(values) < IQM_MIN_SEEDS:
        return DASH
    from lop_bench.metrics import iqm_bootstrap_ci

    s = iqm_bootstrap_ci(values, reps=_BOOTSTRAP_REPS, seed=_BOOTSTRAP_SEED)
    return f"{_num(s['iqm'])} [{_num(s['ci_low'])}, {_num(s['ci_high'])}]"


def _hparams_text(hparams: Mapping[str, Any]) -> str:
    """``name=value, ...`` in name order (a dash for none)."""
    if not hparams:
        return DASH
    return ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, sort_keys=True)}"
        for k, v in sorted(hparams.items())
    )


def _versions_text(versions: Mapping[str, list[str]]) -> str:
    """``lop-bench 0.1.0, numpy 2.1.0, ...``: lop-bench first, then by package."""
    order = sorted(versions, key=lambda k: (k != "lop-bench", k))
    return ", ".join(f"{k} {'/'.join(versions[k])}" for k in order) or DASH


def _last_task_columns(reference: str) -> tuple[tuple[str, str], ...]:
    """The columns of a stream ranked by its last task, with the gap to ``reference``."""
    out = []
    for k, title in _COLUMNS:
        if k == "final":
            out += [("final", "final (all classes)"), ("gap", f"gap to {reference}")]
        elif k == "final_iqm":
            out.append(("final_iqm", "final IQM"))
        elif k not in ("initial", "drop"):
            out.append((k, title))
    return tuple(out)


def _gap(e: Entry, ref: Entry | None) -> str:
    """The paired difference of the last-task scores (entry - reference) over shared seeds."""
    if ref is None:
        return DASH
    if e is ref:
        return "0"
    from lop_bench.metrics import paired_difference

    shared = sorted(set(e.seeds) & set(ref.seeds))
    if not shared:
        return DASH
    mine = dict(zip(e.seeds, e.stat("last")))
    theirs = dict(zip(ref.seeds, ref.stat("last")))
    d = paired_difference([mine[s] for s in shared], [theirs[s] for s in shared])
    if d["ci_low"] is None:
        return f"{d['mean']:+.4g}"
    return f"{d['mean']:+.4g} ± {(d['ci_high'] - d['ci_low']) / 2:.2g}"


def _row(rank: int, e: Entry, by: str = "final", ref: Entry | None = None) -> dict[str, str]:
    """The cells of one entry's row, by column key."""
    created = e.created
    return {
        "rank": str(rank),
        "agent": e.agent,
        "source": e.source or "",
        "preset": DASH if e.preset is None else e.preset,
        "hparams": _hparams_text(e.hparams),
        "seeds": str(len(e.results)),
        "final": _mean_ci(e.stat(by)),
        "final_iqm": _iqm_ci(e.stat(by)),
        "gap": _gap(e, ref),
        "initial": _mean_ci(e.stat("initial")),
        "drop": _mean_ci(e.stat("drop")),
        "versions": _versions_text(e.versions),
        "date": DASH if created is None else created[:10],
    }


def tables(entries: Sequence[Entry]) -> list[Table]:
    """One :class:`Table` per stream and tier, by stream id, then in the stream's order of
    tiers. Each ranks by the stream's ``rank_by``; a stream ranked by its last task shows
    the paired gap to its ``gap_to`` agent instead of ``initial`` and ``drop``."""
    by_stream: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in entries:
        by_stream[(e.env_id, e.tier)].append(e)

    def order(k: tuple[str, str]) -> tuple:
        tiers = list(stream_spec(k[0]).tiers)
        return (k[0], tiers.index(k[1]) if k[1] in tiers else len(tiers), k[1])

    out = []
    for env_id, tier in sorted(by_stream, key=order):
        spec = stream_spec(env_id)
        by = spec.rank_by
        ranked = rank_entries(by_stream[(env_id, tier)], spec.higher_is_better, by)
        reference = spec.gap_to
        # The best-ranked entry of the reference agent (normally its one preset entry).
        ref = next((e for e in ranked if e.agent == reference), None) if reference else None
        out.append(Table(
            env_id=env_id, tier=tier, metric=spec.metric,
            label=spec.label,
            higher_is_better=spec.higher_is_better,
            bin_size=spec.bin_size,
            protocol_hash=ranked[0].results[0].data["protocol_hash"],
            num_seeds=spec.tiers[tier].num_seeds,
            entries=ranked,
            rows=[_row(i + 1, e, by, ref) for i, e in enumerate(ranked)],
            columns=_last_task_columns(reference) if reference else _COLUMNS,
            about=(_ABOUT_LAST if reference else _ABOUT_FINAL).format(
                what="score", direction="best first", iqm=IQM_MIN_SEEDS, reference=reference,
                reps=f"{_BOOTSTRAP_REPS:,}", seed=_BOOTSTRAP_SEED),
        ))
    return out


_CELLS = (
    "Cells show the mean over the tier's seeds ± the half-width of its 95% Student-t "
    "confidence interval; `final IQM` (entries with {iqm}+ seeds) is the interquartile mean "
    "with a 95% stratified-bootstrap interval ({reps} replicates, seed {seed}), as rliable "
    "recommends."
)


_ABOUT_FINAL = (
    "Ranked by `final`, the mean {what} of the last 10% of tasks (seed mean; {direction}). "
    + _CELLS + " `drop` is signed so that a loss of plasticity is positive. Dates are those "
    "of the entry's newest run."
)


_ABOUT_LAST = (
    "Ranked by `final (all classes)`, the test accuracy of the last task, on all classes "
    "(seed mean; {direction}). `gap to {reference}` is the paired difference to the "
    "network retrained from scratch at every task, over the seeds both ran (negative: "
    "below it), ± the half-width of its 95% interval. " + _CELLS + " `drop` is not shown: "
    "it would compare the first tasks' few-class accuracy with the last task's all-class "
    "accuracy. Dates are those of the entry's newest run."
)


LINKABLE = re.compile(r"https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]+")
"""A URL the pages link: http(s), of the characters the schema allows in ``agent.source``."""


def source_text(source: str) -> str:
    """How a source reads on the pages: without the ``https://``, commit ids cut to 12 digits."""
    s = re.sub(r"^https?://", "", source)
    return re.sub(r"(?<![0-9a-fA-F])([0-9a-fA-F]{12})[0-9a-fA-F]{2,}(?![0-9a-fA-F])", r"\1", s)
