"""The checks a result passes to be ranked: alone (:func:`check_result`: the stream's tier,
protocol, length, steps and diagnostics), and with the others of its entry and of the
board (the whole seed set, one source, no copied curves).

Every check reads what it compares with from the stream's declaration
(:class:`~lop_bench.streams.StreamSpec`): its tiers, metric, direction and dataset
fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lop_bench.config import config_to_dict, protocol_hash
from lop_bench.errors import (
    InvalidResultError,
    LopBenchError,
    SubmissionRejected,
    UnknownEnvError,
    did_you_mean,
)
from lop_bench.leaderboard.entries import (
    EntryKey,
    describe_key,
    entry_key,
    result_fingerprint,
    sort_key,
)
from lop_bench.registration import stream_spec
from lop_bench.results import Result, load, read_json, validate

__all__ = ["UNRANKED_TIERS", "check_result", "problems", "load_files"]

UNRANKED_TIERS = frozenset({"smoke"})
"""Tiers never ranked: ``smoke`` runs for seconds, to test the plumbing (DESIGN.md section 8)."""


_MISSING = object()


def problems(data: Mapping[str, Any]) -> list[str]:
    """What keeps a schema-valid, self-consistent result off the leaderboard ([] if nothing)."""
    env_id, tier = data["env_id"], data["tier"]
    try:
        spec = stream_spec(env_id)
    except UnknownEnvError as exc:
        return [str(exc)]
    cls = spec.env
    ranked = [t for t in spec.tiers if t not in UNRANKED_TIERS]
    if tier not in spec.tiers:
        return [f"unknown tier {tier!r} for {env_id}.{did_you_mean(tier, spec.tiers)} "
                f"Ranked tiers: {', '.join(ranked)}."]
    if tier in UNRANKED_TIERS:
        return [f"the {tier!r} tier is never ranked: it runs for seconds, to test the plumbing. "
                f"Run a ranked tier ({', '.join(ranked)}), e.g. --tier {ranked[0]}."]
    cfg = spec.tiers[tier]
    out: list[str] = []
    want = config_to_dict(cfg)
    got = data["config"]
    changed = sorted(
        k for k in set(want) | set(got) if want.get(k, _MISSING) != got.get(k, _MISSING)
    )
    if data["custom"] or changed:
        detail = ", ".join(
            f"{k}={_json_or_missing(got, k)} (tier {tier!r}: {_json_or_missing(want, k)})"
            for k in changed
        ) or "the file is marked custom"
        out.append(
            f"custom (overridden) settings are not ranked: {detail}. Run the tier as defined, "
            f"without --set / env_kwargs."
        )
    if data["stream_revision"] != cls.STREAM_REVISION:
        out.append(
            f"stream_revision is {data['stream_revision']} but {env_id} is at revision "
            f"{cls.STREAM_REVISION}: the stream changed since this run; run it again."
        )
    if data["metric"] != spec.metric or data["higher_is_better"] != spec.higher_is_better:
        out.append(
            f"metric {data['metric']!r} (higher_is_better={data['higher_is_better']}) is not "
            f"{env_id}'s {spec.metric!r} (higher_is_better={spec.higher_is_better})."
        )
    expected_fp = spec.dataset_fingerprint
    if data["dataset_fingerprint"] != expected_fp:
        out.append(
            f"dataset_fingerprint is {data['dataset_fingerprint']!r} but the {tier!r} tier of "
            f"{env_id} uses {expected_fp!r}: a different or modified dataset."
        )
    expected_hash = protocol_hash(spec.id, cls.STREAM_REVISION, cfg, data["dataset_fingerprint"])
    if data["protocol_hash"] != expected_hash:
        out.append(
            f"protocol_hash {data['protocol_hash']} is not the {tier!r} tier's hash "
            f"{expected_hash}: the run used another protocol, or the file was edited."
        )
    if len(data["per_task"]) != cfg.num_tasks:
        out.append(
            f"the per-task curve has {len(data['per_task'])} tasks but the {tier!r} tier has "
            f"{cfg.num_tasks}: an unfinished, truncated or edited run."
        )
    low, high = cls.step_bounds(cfg)
    if not low <= data["steps"] <= high:
        takes = f"{low:,}" if low == high else f"between {low:,} and {high:,}"
        out.append(
            f"steps is {data['steps']:,} but a run of the {tier!r} tier takes {takes} env "
            "steps: an unfinished, truncated or invented run."
        )
    problem = _diagnostics_problem(data["diagnostics"], len(data["per_task"]))
    if problem:
        out.append(problem)
    num_seeds = cfg.num_seeds
    if data["seed"] >= num_seeds:
        out.append(
            f"seed {data['seed']} is outside the {tier!r} tier's seed set 0..{num_seeds - 1}."
        )
    return out


_DIAGNOSTICS_FIX = (
    "the leaderboard keeps every run's diagnostics (dormant units, ranks, weight magnitude) "
    "beside its scores: run with diagnostics on (the default, not --no-diagnostics) and an "
    "agent with features(x) (DESIGN.md section 5)"
)


def _diagnostics_problem(diagnostics: Mapping[str, Any] | None, num_tasks: int) -> str | None:
    """Why a result's diagnostics are not what the runner records, or None.

    The runner measures at the start of every ``every``-th task: tasks ``0, every, ...``,
    the first one missing when the agent has seen no input yet (an RL agent's probe is its
    own recent states), with one value (or null, for a diverged network) per measured task.
    """
    if diagnostics is None:
        return f"no diagnostics: {_DIAGNOSTICS_FIX}."
    every, tasks, measures = (diagnostics["every"], diagnostics["tasks"],
                              diagnostics["measures"])
    schedule = list(range(0, num_tasks, every))
    if tasks not in (schedule, schedule[1:]):
        return (
            f"diagnostics.tasks is not the runner's schedule for every={every} over "
            f"{num_tasks} tasks (0, {every}, {2 * every}, ...; task 0 may be missing): an "
            "edited, truncated or invented run."
        )
    if not measures:
        return f"diagnostics.measures is empty: {_DIAGNOSTICS_FIX}."
    uneven = sorted(k for k, values in measures.items() if len(values) != len(tasks))
    if uneven:
        return (f"diagnostics.measures {uneven} do not hold one value per measured task "
                f"({len(tasks)}): an edited or truncated run.")
    return None


def _json_or_missing(d: Mapping[str, Any], k: str) -> str:
    """``d[k]`` as JSON, or ``(missing)``."""
    return "(missing)" if k not in d else json.dumps(d[k])


def check_result(result: Result | Mapping[str, Any]) -> None:
    """Raise :class:`SubmissionRejected` unless one result may be ranked on its own.

    Checks what a single file can show: the schema and summary (again), a known stream and
    a ranked tier (not ``smoke``), no custom settings, the stream revision, metric, dataset
    fingerprint and protocol hash of the tier, the curve's length, the ``steps`` a run of
    the tier takes, the runner's diagnostics and a seed of the tier's seed set. The seed set
    of an entry and copies are checked by :func:`check_submission`.
    """
    data = result.data if isinstance(result, Result) else dict(result)
    try:
        validate(data)
    except SubmissionRejected:
        raise
    except InvalidResultError as exc:
        raise SubmissionRejected(str(exc), [("result", str(exc))]) from None
    found = problems(data)
    if found:
        raise SubmissionRejected("; ".join(found), [("result", p) for p in found])


def strip_source(message: str, source: str) -> str:
    """``message`` without the ``"<source>: "`` it starts with (reasons name the file apart)."""
    prefix = f"{source}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _seed_problems(key: EntryKey, seeds: list[int], num_seeds: int) -> list[str]:
    """What is wrong with the seeds of one entry: some of ``0 .. num_seeds - 1`` missing, or
    twice."""
    counts = Counter(seeds)
    twice = sorted(s for s, c in counts.items() if c > 1)
    missing = sorted(set(range(num_seeds)) - set(counts))
    out = []
    if missing:
        out.append(
            f"seed(s) {missing} missing: the tier's seed set is 0..{num_seeds - 1} and every "
            f"seed is needed to rank an entry (lop-bench run ... --tier {key[1]} runs them all)."
        )
    if twice:
        out.append(f"seed(s) {twice} appear more than once.")
    return out


def add_loose(seeds: dict[EntryKey, list[int]], path: Path) -> None:
    """Count the seed of a file that failed its checks, when it still names its entry, so
    that its entry is not also reported as missing that seed."""
    try:
        data = read_json(path)
        key, seed = entry_key(data), data["seed"]
    except (InvalidResultError, KeyError, TypeError, AttributeError):
        return
    if all(k is None or isinstance(k, str) for k in key) and isinstance(seed, int):
        seeds[key].append(seed)


def _apply_source(where: str, r: Result, source: str | None) -> list[tuple[str, str]]:
    """Record ``--source`` in a loaded result; a result that names another is refused."""
    if source is None:
        return []
    given = r.data["agent"].get("source")
    r.data["agent"]["source"] = source
    if given in (None, source):
        return []
    return [(where, f"agent.source is {given!r}, not the --source {source!r}: an entry has "
                    "one source.")]


def load_files(
    files: Iterable[Path], *, source: str | None = None,
) -> tuple[list[tuple[str, Result]], dict[EntryKey, list[int]], list[tuple[str, str]]]:
    """Load and check result files one by one (:func:`problems`; with ``source``, recorded
    as ``agent.source``: a file that names another is refused).

    Returns the ``(where, result)`` pairs that loaded, the seeds of each entry (files that
    failed to load included, when they still name their entry) and ``(where, reason)`` for
    every problem, in file order.
    """
    loaded: list[tuple[str, Result]] = []
    seeds: dict[EntryKey, list[int]] = defaultdict(list)
    reasons: list[tuple[str, str]] = []
    for f in files:
        try:
            r = load(f)
        except InvalidResultError as exc:
            reasons.append((str(f), strip_source(str(exc), str(f))))
            add_loose(seeds, f)
            continue
        reasons.extend(_apply_source(str(f), r, source))
        loaded.append((str(f), r))
        seeds[entry_key(r.data)].append(r.seed)
        reasons.extend((str(f), p) for p in problems(r.data))
    return loaded, seeds, reasons


def seed_set_problems(seeds: Mapping[EntryKey, list[int]]) -> list[tuple[str, str]]:
    """Entries that lack a seed of their tier's seed set or hold one twice."""
    out = []
    for key in sorted(seeds, key=sort_key):
        try:
            num_seeds = stream_spec(key[0]).tiers[key[1]].num_seeds
        except (LopBenchError, KeyError):
            continue  # reported per file
        out.extend((describe_key(key), p) for p in _seed_problems(key, seeds[key], num_seeds))
    return out


@dataclass(frozen=True)
class HeldCurve:
    """A per-task curve seen before: the entry that holds it, where, and the fingerprint of
    the whole result."""

    key: EntryKey
    where: str
    fingerprint: str


def _curve_digest(curve: Sequence[float]) -> bytes:
    """A digest of a per-task curve's float64 values: equal digests mean equal curves, value
    for value (bit for bit, but -0.0 counts as 0.0, so that a flipped sign hides nothing)."""
    values = [float(v) + 0.0 for v in curve]
    return hashlib.sha256(struct.pack(f"<{len(values)}d", *values)).digest()


_COPY_MIN_DISTINCT = 4
"""Curves with fewer distinct values are not compared for copies. A network that stops
learning (a diverged one predicts one class) scores chance on every task from then on, so
independent runs share such curves: two seeds of an agent that diverges after its first
task agree bit for bit whenever their first scores do (a 2-class task tested on 200 images
has only some twenty likely scores). A copied curve that ranks anywhere worth copying is
far from that."""


def copies(members: Iterable[tuple[str, Result]],
            known: dict[bytes, HeldCurve]) -> list[tuple[str, str]]:
    """Files whose per-task curve equals one in ``known`` or one earlier in ``members``, with
    the reason naming where that curve is; ``known`` gains the curves of the others. Curves
    of fewer than :data:`_COPY_MIN_DISTINCT` distinct values are left out."""
    out = []
    for where, r in members:
        if len({float(v) + 0.0 for v in r.per_task}) < _COPY_MIN_DISTINCT:
            continue
        key, fingerprint = entry_key(r.data), result_fingerprint(r.data)
        digest = _curve_digest(r.per_task)
        held = known.get(digest)
        if held is None:
            agent = r.data["agent"]
            known[digest] = HeldCurve(key, f"{where} (agent {agent['name']!r}, preset "
                                       f"{agent['preset']!r}, seed {r.seed})", fingerprint)
        elif held.fingerprint == fingerprint:
            out.append((where, f"a duplicate of {held.where}."))
        elif held.key == key:
            out.append((where, f"the per-task curve of seed {r.seed} equals, bit for bit, the "
                               f"one of {held.where} in the same entry: seed files copied "
                               "from one run."))
        else:
            out.append((where, f"the per-task curve equals, bit for bit, the one of "
                               f"{held.where}: a copied curve is refused, whatever the "
                               "agent's name or preset."))
    return out


def source_problems(
    groups: Mapping[EntryKey, list[tuple[str, Result]]],
) -> list[tuple[str, str]]:
    """Entries whose seeds name different ``agent.source`` values."""
    out = []
    for key, members in groups.items():
        sources = sorted({repr(r.data["agent"].get("source")) for _, r in members})
        if len(sources) > 1:
            out.append((describe_key(key), f"its seeds name different agent.source values "
                                        f"({', '.join(sources)}): give one with --source."))
    return out


def rejected(message: str, reasons: list[tuple[str, str]]) -> SubmissionRejected:
    """The error that lists every ``(file or entry, reason)`` under ``message``."""
    lines = "\n".join(f"  {w}: {why}" for w, why in reasons)
    return SubmissionRejected(f"{message}:\n{lines}", reasons)
