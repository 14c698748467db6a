"""Ranking: the entries of each stream and tier in order, as the tables both pages show
(their columns, their cells as text, the note under each)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lop_bench.leaderboard.entries import Entry
from lop_bench.registration import stream_spec

__all__ = ["IQM_MIN_SEEDS", "Table", "rank_entries", "tables", "probability_of_improvement",
           "improvement_ci", "rank_groups", "hparams_diff"]

IQM_MIN_SEEDS = 10
"""Entries with at least this many seeds also show the IQM of ``final`` (rliable)."""

DASH = "\u2014"
"""What a cell shows when it has nothing to show."""

_BOOTSTRAP_REPS = 2000
_BOOTSTRAP_SEED = 0


# -- the statistics (pure functions) -------------------------------------------------------
def _values(x: Sequence[float], what: str) -> Any:
    import numpy as np

    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: expected a non-empty list of finite scores, one per seed, "
                         f"got {list(np.ravel(a))!r}.")
    return a


def probability_of_improvement(x: Sequence[float], y: Sequence[float],
                               higher_is_better: bool = True) -> float:
    """P(X > Y) on one task, rliable's probability of improvement of ``x`` over ``y``.

    The Mann-Whitney U statistic over every pair of seeds, normalized:
    ``(#{x_i better than y_j} + 0.5 #{x_i = y_j}) / (n m)``, where "better" is ``>`` when
    higher is better and ``<`` otherwise. 1: every run of ``x`` beats every run of ``y``;
    0.5: neither is better.

    Raises:
        ValueError: an empty list or a value that is not finite.
    """
    import numpy as np

    a, b = _values(x, "x"), _values(y, "y")
    if not higher_is_better:
        a, b = -a, -b
    diff = a[:, None] - b[None, :]
    return float((np.count_nonzero(diff > 0) + 0.5 * np.count_nonzero(diff == 0)) / diff.size)


def improvement_ci(x: Sequence[float], y: Sequence[float], higher_is_better: bool = True,
                   reps: int = _BOOTSTRAP_REPS, seed: int = _BOOTSTRAP_SEED,
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """:func:`probability_of_improvement` with its percentile interval from a stratified
    bootstrap (rliable's): every replicate resamples the seeds of ``x`` and, independently,
    those of ``y`` with replacement; a ``numpy.random.Generator`` seeded with ``seed`` draws
    them, so the result is the same bit for bit for the same inputs.

    Returns:
        ``(p, low, high)``.

    Raises:
        ValueError: an empty list, a value that is not finite, ``reps`` < 1 or a confidence
            outside (0, 1).
    """
    import numpy as np

    a, b = _values(x, "x"), _values(y, "y")
    if isinstance(reps, bool) or int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be an integer >= 1, got {reps!r}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    if not higher_is_better:
        a, b = -a, -b
    p = probability_of_improvement(a, b)
    rng = np.random.default_rng(seed)
    xa = a[rng.integers(0, a.size, size=(int(reps), a.size))]
    yb = b[rng.integers(0, b.size, size=(int(reps), b.size))]
    diff = xa[:, :, None] - yb[:, None, :]
    ps = ((diff > 0).sum(axis=(1, 2)) + 0.5 * (diff == 0).sum(axis=(1, 2))) / (a.size * b.size)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ps, [tail, 100 - tail])
    return p, float(low), float(high)


def rank_groups(intervals: Sequence[tuple[float, float]]) -> list[int]:
    """The rank group of each entry, given in rank order by its interval ``(low, high)``.

    The first entry opens group 1 and leads it; each following entry joins the group of
    the entry above it when its interval overlaps the interval of that group's leader
    (closed intervals: touching counts), and otherwise opens, and leads, the next group.
    Every entry of a group is thus indistinguishable from the group's best entry. (Chaining
    on the entry above alone would put a long table of overlapping neighbours into one
    group however far its ends are apart.)
    """
    groups: list[int] = []
    leader = (0.0, 0.0)
    for i, (low, high) in enumerate(intervals):
        if low > high:
            raise ValueError(f"interval {i} is ({low}, {high}): low above high.")
        if i == 0:
            groups.append(1)
            leader = (low, high)
            continue
        lead_low, lead_high = leader
        if low <= lead_high and lead_low <= high:
            groups.append(groups[-1])
        else:
            groups.append(groups[-1] + 1)
            leader = (low, high)
    return groups


def _interval(values: list[float]) -> tuple[float, float]:
    """The 95% Student-t interval of the seed mean (one seed: the point itself)."""
    from lop_bench.metrics import seed_stats

    s = seed_stats(values)
    if s["ci_low"] is None:
        return s["mean"], s["mean"]
    return s["ci_low"], s["ci_high"]


def _value_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def hparams_diff(hparams: Mapping[str, Any], preset: Mapping[str, Any] | None) -> str:
    """How ``hparams`` differ from the ``preset`` ones, in name order: ``lr=0.1 (preset
    0.01)`` for a changed value, ``+name=value`` for one the preset lacks, ``-name (preset
    value)`` for one it has and ``hparams`` lack; ``same as preset`` when none differ and
    ``custom agent`` when there is no preset to compare with (``preset`` is None)."""
    if preset is None:
        return "custom agent"
    parts = []
    for k in sorted(set(hparams) | set(preset)):
        if k not in preset:
            parts.append(f"+{k}={_value_text(hparams[k])}")
        elif k not in hparams:
            parts.append(f"-{k} (preset {_value_text(preset[k])})")
        elif json.dumps(hparams[k], sort_keys=True) != json.dumps(preset[k], sort_keys=True):
            parts.append(f"{k}={_value_text(hparams[k])} (preset {_value_text(preset[k])})")
    return ", ".join(parts) or "same as preset"


def rank_entries(entries: Sequence[Entry], higher_is_better: bool, by: str = "final") -> list[Entry]:
    """Entries best first by the seed mean of ``by`` (ties: agent name, then entry id)."""
    import numpy as np

    sign = -1.0 if higher_is_better else 1.0
    return sorted(entries, key=lambda e: (sign * float(np.mean(e.stat(by))), e.agent, e.id))


@dataclass(frozen=True)
class Table:
    """The table of one stream and tier: its entries in order, each as a row of cell texts
    keyed by column (``rows``) and the numbers its numeric cells sort by (``sort_keys``),
    the columns (key, title) and the note under the table; the stream's score (``metric``,
    ``label``, direction, plot ``bin_size``) from its declaration.

    A ranked table lists its entries in rank order (``groups``: each one's rank group); a
    functional check (``functional``: how long the tier is, from the stream's
    ``functional_tiers``) is not ranked: its entries are in name order, without ranks.
    Besides the columns, a row holds ``hparams_full`` (every hyperparameter, with the
    preset's name) and ``legend`` (the entry's name in the plot's legend)."""

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
    sort_keys: list[dict[str, float]] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    functional: str | None = None

    @property
    def ranked(self) -> bool:
        """Whether the table ranks its entries (not a functional check)."""
        return self.functional is None


_COLUMNS = (
    ("rank", "#"),
    ("agent", "agent"),
    ("hparams", "hyperparameters"),
    ("source", "source"),
    ("seeds", "seeds"),
    ("final", "final"),
    ("poi", "P(> next)"),
    ("final_iqm", "final IQM"),
    ("plasticity", "plasticity (1 = fresh)"),
    ("initial", "initial"),
    ("drop", "drop"),
    ("versions", "versions"),
    ("date", "date"),
    ("files", "result files (by seed)"),
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


def _iqm(values: list[float]) -> dict[str, Any] | None:
    """The IQM with its 95% stratified-bootstrap interval (None below :data:`IQM_MIN_SEEDS`)."""
    if len(values) < IQM_MIN_SEEDS:
        return None
    from lop_bench.metrics import iqm_bootstrap_ci

    return iqm_bootstrap_ci(values, reps=_BOOTSTRAP_REPS, seed=_BOOTSTRAP_SEED)


def _hparams_text(hparams: Mapping[str, Any]) -> str:
    """``name=value, ...`` in name order (a dash for none)."""
    if not hparams:
        return DASH
    return ", ".join(f"{k}={_value_text(v)}" for k, v in sorted(hparams.items()))


def _versions_text(versions: Mapping[str, list[str]]) -> str:
    """``lop-bench 0.1.0, numpy 2.1.0, ...``: lop-bench first, then by package."""
    order = sorted(versions, key=lambda k: (k != "lop-bench", k))
    return ", ".join(f"{k} {'/'.join(versions[k])}" for k in order) or DASH


def _columns(reference: str | None, ranked: bool) -> tuple[tuple[str, str], ...]:
    """The columns of a table: a stream ranked by its last task shows the gap to its
    ``reference`` agent instead of ``initial`` and ``drop``; a functional check has no rank
    and no probability of improvement."""
    out = []
    for k, title in _COLUMNS:
        if not ranked and k in ("rank", "poi"):
            continue
        if reference and k == "final":
            out += [("final", "final (all classes)"), ("gap", f"gap to {reference}")]
        elif reference and k in ("initial", "drop"):
            continue
        else:
            out.append((k, title))
    return tuple(out)


def _gap(e: Entry, ref: Entry | None) -> tuple[str, float | None]:
    """The paired difference of the last-task scores (entry - reference) over shared seeds."""
    if ref is None:
        return DASH, None
    if e is ref:
        return "0", 0.0
    from lop_bench.metrics import paired_difference

    shared = sorted(set(e.seeds) & set(ref.seeds))
    if not shared:
        return DASH, None
    mine = dict(zip(e.seeds, e.stat("last")))
    theirs = dict(zip(ref.seeds, ref.stat("last")))
    d = paired_difference([mine[s] for s in shared], [theirs[s] for s in shared])
    if d["ci_low"] is None:
        return f"{d['mean']:+.4g}", d["mean"]
    return f"{d['mean']:+.4g} ± {(d['ci_high'] - d['ci_low']) / 2:.2g}", d["mean"]


def _plasticity(e: Entry, fresh: Entry | None, higher_is_better: bool,
                scale: float | None) -> tuple[str, float | None]:
    """The mean over seeds of the entry's plasticity score against the board's fresh
    reference entry on the same seed (:func:`lop_bench.plasticity.score_against_fresh`), with
    its 95% interval; a dash without a fresh reference or a seed in common. Seeds where the
    score is undefined (a ratio over a zero score) are left out, and the cell says how many
    seeds it holds then."""
    if fresh is None:
        return DASH, None
    import numpy as np

    from lop_bench.plasticity import score_against_fresh

    pairs = score_against_fresh(e.results, fresh.results, higher_is_better=higher_is_better,
                                scale=scale)
    scores = [float(np.mean(p)) for _, _, p, _ in pairs if p is not None]
    if not scores:
        return DASH, None
    text = _mean_ci(scores)
    if len(scores) < len(e.results):
        text += f" ({len(scores)} of {len(e.results)} seeds)"
    return text, float(sum(scores) / len(scores))


def _poi(e: Entry, below: Entry | None, by: str, higher_is_better: bool) -> tuple[str, float | None]:
    """P(entry > the next one) with its stratified-bootstrap interval (a dash for the last)."""
    if below is None:
        return DASH, None
    p, low, high = improvement_ci(e.stat(by), below.stat(by), higher_is_better)
    return f"{p:.2f} [{low:.2f}, {high:.2f}]", p


def _preset_entry(e: Entry, references: Mapping[str, Entry]) -> Entry | None:
    """The reference entry whose hyperparameters are ``e``'s preset: the one of its agent
    on its stream and tier."""
    return references.get(e.agent)


def _row(rank: str, e: Entry, *, by: str, below: Entry | None, ref: Entry | None,
         fresh: Entry | None, preset: Entry | None, higher_is_better: bool,
         scale: float | None) -> tuple[dict[str, str], dict[str, float]]:
    """The cells of one entry's row by column key, and the numbers its numeric cells sort by."""
    import numpy as np

    created = e.created
    ranked_stat = e.stat(by)
    gap, gap_key = _gap(e, ref)
    poi, poi_key = _poi(e, below, by, higher_is_better)
    plast, plast_key = _plasticity(e, fresh, higher_is_better, scale)
    iqm = _iqm(ranked_stat)
    if e.reference:
        summary = "preset"
    else:
        summary = hparams_diff(e.hparams, None if preset is None else preset.hparams)
    full = _hparams_text(e.hparams)
    if e.preset is not None:
        full = f"preset {e.preset}: {full}"
    row = {
        "rank": rank,
        "agent": e.agent,
        "source": e.source or "",
        "hparams": summary,
        "hparams_full": full,
        "seeds": str(len(e.results)),
        "final": _mean_ci(ranked_stat),
        "final_iqm": DASH if iqm is None else
        f"{_num(iqm['iqm'])} [{_num(iqm['ci_low'])}, {_num(iqm['ci_high'])}]",
        "gap": gap,
        "poi": poi,
        "plasticity": plast,
        "initial": _mean_ci(e.stat("initial")),
        "drop": _mean_ci(e.stat("drop")),
        "versions": _versions_text(e.versions),
        "date": DASH if created is None else created[:10],
        "files": "\n".join(e.files),
        "legend": f"{rank} {e.agent}" if summary in ("preset", "same as preset", "custom agent")
        else f"{rank} {e.agent}: {summary}",
    }
    keys = {
        "seeds": float(len(e.results)),
        "final": float(np.mean(ranked_stat)),
        "initial": float(np.mean(e.stat("initial"))),
        "drop": float(np.mean(e.stat("drop"))),
    }
    for k, v in (("gap", gap_key), ("poi", poi_key), ("plasticity", plast_key),
                 ("final_iqm", None if iqm is None else iqm["iqm"])):
        if v is not None:
            keys[k] = float(v)
    return row, keys


def _references(entries: Sequence[Entry]) -> dict[str, Entry]:
    """Agent name -> its reference entry, among the entries of one stream and tier."""
    return {e.agent: e for e in sorted(entries, key=lambda e: e.id) if e.reference}


def tables(entries: Sequence[Entry]) -> list[Table]:
    """One :class:`Table` per stream and tier, by stream id, then in the stream's order of
    tiers. A ranked tier ranks by the stream's ``rank_by``, in rank groups; a functional
    check (the stream's ``functional_tiers``) lists its entries by name, unranked. A stream
    ranked by its last task shows the paired gap to its ``gap_to`` agent instead of
    ``initial`` and ``drop``."""
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
        functional = spec.functional_tiers.get(tier)
        members = by_stream[(env_id, tier)]
        if functional is None:
            listed = rank_entries(members, spec.higher_is_better, by)
            groups = rank_groups([_interval(e.stat(by)) for e in listed])
        else:
            listed = sorted(members, key=lambda e: (e.agent, e.id))
            groups = []
        reference = spec.gap_to
        references = _references(listed)
        # The gap's reference: the reference entry of the gap agent, else its best-ranked one.
        ref = (references.get(reference)
               or next((e for e in listed if e.agent == reference), None)) if reference else None
        fresh = references.get(spec.fresh_agent)
        rows, keys = [], []
        for i, e in enumerate(listed):
            below = listed[i + 1] if functional is None and i + 1 < len(listed) else None
            row, key = _row(str(groups[i]) if groups else DASH, e, by=by, below=below, ref=ref,
                            fresh=fresh, preset=_preset_entry(e, references),
                            higher_is_better=spec.higher_is_better,
                            scale=spec.plasticity_scale)
            key["rank"] = float(i)
            rows.append(row)
            keys.append(key)
        fmt = dict(direction="best first", iqm=IQM_MIN_SEEDS, reference=reference,
                   reps=f"{_BOOTSTRAP_REPS:,}", seed=_BOOTSTRAP_SEED, fresh=spec.fresh_agent,
                   length=functional)
        if functional is not None:
            about = (_ABOUT_FUNCTIONAL + (_GAP if reference else "")).format(**fmt) + _ENDS[by]
        else:
            about = (_ABOUT_LAST if reference else _ABOUT_FINAL).format(**fmt)
        out.append(Table(
            env_id=env_id, tier=tier, metric=spec.metric,
            label=spec.label,
            higher_is_better=spec.higher_is_better,
            bin_size=spec.bin_size,
            protocol_hash=listed[0].results[0].data["protocol_hash"],
            num_seeds=spec.tiers[tier].num_seeds,
            entries=listed,
            rows=rows,
            columns=_columns(reference, functional is None),
            about=about,
            sort_keys=keys,
            groups=groups,
            functional=functional,
        ))
    return out


_CELLS = (
    "Cells show the mean over the tier's seeds ± the half-width of its 95% Student-t "
    "confidence interval. "
)

_CELLS_RANKED = (
    "`#` is the rank group: entries in rank order, each joining the group of the entry above "
    "it when its 95% Student-t interval of the ranking statistic overlaps that of the "
    "group's first entry (it is not distinguishable from the group's best), else opening "
    "the next group. `P(> next)` is the probability that a "
    "run of the entry beats a run of the entry below it (rliable's probability of "
    "improvement: the Mann-Whitney U statistic over pairs of seeds, ties counting half) "
    "with its 95% stratified-bootstrap interval ({reps} replicates, seed {seed}). "
)

_CELLS_REST = (
    "`final IQM` (entries with {iqm}+ seeds) is the interquartile mean with its 95% "
    "stratified-bootstrap interval, as rliable recommends. `plasticity (1 = fresh)` is the "
    "normalized plasticity score against the reference entry of the fresh agent `{fresh}` "
    "(a network of the same architecture re-initialized at every task) on the same seed: 1 "
    "is as plastic as a fresh network, higher is more plastic (a dash: no fresh reference "
    "entry on this tier). `hyperparameters` shows how an entry's differ from those of its "
    "agent's reference entry (`preset`: it is that entry; `custom agent`: its agent has "
    "none), the full set one click away; `result files` links each seed's result file."
)

_ENDS = {
    "final": " `drop` is signed so that a loss of plasticity is positive. Dates are those of "
             "the entry's newest run.",
    "last": " `drop` is not shown: it would compare the first tasks' few-class accuracy with "
            "the last task's all-class accuracy. Dates are those of the entry's newest run.",
}

_ABOUT_FINAL = (
    "Ranked by `final`, the mean score of the last 10% of tasks (seed mean; {direction}). "
    + _CELLS + _CELLS_RANKED + _CELLS_REST + _ENDS["final"]
)

_GAP = (
    "`gap to {reference}` is the paired difference to the network retrained from scratch at "
    "every task, over the seeds both ran (negative: below it), ± the half-width of its 95% "
    "interval. "
)

_ABOUT_LAST = (
    "Ranked by `final (all classes)`, the test accuracy of the last task, on all classes "
    "(seed mean; {direction}). " + _GAP + _CELLS + _CELLS_RANKED + _CELLS_REST
    + _ENDS["last"]
)

_ABOUT_FUNCTIONAL = (
    "A functional check, not ranked: the tier ({length}) is too short to show a loss of "
    "plasticity; it checks that an agent runs and learns, and its entries are listed by "
    "name, without ranks. " + _CELLS + _CELLS_REST
)


LINKABLE = re.compile(r"https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]+")
"""A URL the pages link: http(s), of the characters the schema allows in ``agent.source``."""


def source_text(source: str) -> str:
    """How a source reads on the pages: without the ``https://``, commit ids cut to 12 digits."""
    s = re.sub(r"^https?://", "", source)
    return re.sub(r"(?<![0-9a-fA-F])([0-9a-fA-F]{12})[0-9a-fA-F]{2,}(?![0-9a-fA-F])", r"\1", s)
