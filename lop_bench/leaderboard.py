"""The leaderboard: checked submissions and generated ``README.md`` / ``index.html``.

``lop-bench submit RESULTS...`` (:func:`submit`) checks every result file before anything is
written and copies them all, or none, under ``<dir>/submissions/``. A file is refused with
its reason when it is not a regular file under the size cap or does not follow the result
schema (:func:`lop_bench.results.load`), its summary and per-task curve disagree, its stream
or tier is unknown, its tier is ``smoke`` (never ranked), its protocol hash or dataset
fingerprint is not the tier's, its curve is not the tier's length, its ``steps`` is not what
a run of the tier takes, its diagnostics are missing or not the runner's schedule, or it
ran custom (overridden) settings. Files are grouped into *entries* (stream, tier, agent
name, preset and hyperparameters); an entry must hold the tier's whole seed set
``0 .. num_seeds - 1``, each seed once, and must not be on the leaderboard already.

Copies are refused: no per-seed curve may equal, value for value, a curve already on the
board or elsewhere in the submission, whatever its agent name or preset (two seeds of one
entry with the same curve are copies of one run too). The refusal names the entry that
holds the curve. Curves of fewer than four distinct values, what a network that stopped
learning scores (chance on every task), are not compared: independent runs share them. An entry already on the board with the very same results (the same files
submitted again) is not an error: it is left as it is, and nothing is written for it.

Submissions are serialized by an exclusive lock on ``submissions/.lock`` (``flock``): a
second ``submit`` waits for the first, then checks against what it wrote; after
:data:`LOCK_TIMEOUT_S` it gives up with an error that says so.

An entry may name where its code is, ``agent.source``: a URL with a commit or a package
with its version (``lop-bench submit --source URL`` records it in every file submitted);
the pages link it (http(s) URLs only) and mark entries without one "no source".

``lop-bench leaderboard build`` (:func:`build`) regenerates ``<dir>/README.md`` (one table per
stream and tier, ranked by ``final``) and ``<dir>/index.html`` (the same tables and, per
stream and tier, every entry's seed-mean curve in bins with a 95% band, as inline SVG: a
static page with no scripts and no external resources). Every submitted string is escaped:
HTML on both pages, and Markdown syntax (emphasis, strikethrough, math, links, autolinks,
table pipes) in ``README.md``. Two builds of the same submissions give byte-identical
files: no timestamps (the date shown is the newest ``run_info.created`` of an entry),
sorted iteration, a seeded bootstrap and fixed float formatting.

Layout of a leaderboard directory (default ``leaderboard/``, relative to the working
directory)::

    submissions/<Stream-vN>/<tier>/<agent>__<entry id>/seed<k>.json
    submissions/.lock
    README.md
    index.html

Streams that read a dataset declare the fingerprint of their data as a class constant
``DATASET_FINGERPRINT`` (a string, or a mapping tier -> string); a stream without it is
synthetic and its results must record ``dataset_fingerprint: null``.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import os
import re
import shutil
import struct
import tempfile
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lop_bench.config import canonical_json, config_to_dict, protocol_hash
from lop_bench.errors import (
    InvalidResultError,
    LopBenchError,
    SubmissionRejected,
    UnknownEnvError,
    did_you_mean,
)
from lop_bench.results import (
    Result,
    atomic_write_text,
    check_source,
    deterministic_part,
    load,
    read_json,
    validate,
)

__all__ = [
    "DEFAULT_DIR",
    "IQM_MIN_SEEDS",
    "UNRANKED_TIERS",
    "LOCK_TIMEOUT_S",
    "SubmissionRejected",
    "Entry",
    "check_result",
    "check_submission",
    "submit",
    "submit_reference",
    "load_board",
    "rank_entries",
    "build",
    "add_cli",
    "cmd_submit",
    "cmd_leaderboard_build",
]

DEFAULT_DIR = Path("leaderboard")
"""The leaderboard directory the command line uses unless given ``--dir``."""

IQM_MIN_SEEDS = 10
"""Entries with at least this many seeds also show the IQM of ``final`` (rliable)."""

UNRANKED_TIERS = frozenset({"smoke"})
"""Tiers never ranked: ``smoke`` runs for seconds, to test the plumbing (DESIGN.md section 8)."""

LOCK_TIMEOUT_S = 120.0
"""How long ``submit`` waits for another ``submit`` on the same leaderboard to finish."""

_SUBMISSIONS = "submissions"
_BOOTSTRAP_REPS = 2000
_BOOTSTRAP_SEED = 0
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_LINESTYLES = ("-", "--", ":", "-.")
_DASH = "\u2014"


# ---------------------------------------------------------------------------------------
# entries


@dataclass(frozen=True)
class Entry:
    """One ranked line: an agent with its preset and hyperparameters on a stream and tier.

    ``results`` holds one validated result per seed of the tier's seed set, sorted by seed.
    """

    env_id: str
    tier: str
    agent: str
    preset: str | None
    hparams: dict[str, Any]
    results: tuple[Result, ...]

    @property
    def key(self) -> tuple[str, str, str, str | None, str]:
        return _entry_key(self.results[0].data)

    @property
    def id(self) -> str:
        """A short, stable id of the entry (sha256 of its key), used in folder names."""
        return _entry_id(self.results[0].data)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.results]

    def stat(self, name: str) -> list[float]:
        """The summary statistic ``name`` of every seed, in seed order (``"last"``: the
        score of the stream's last task)."""
        if name == "last":
            return [float(r.per_task[-1]) for r in self.results]
        return [float(r.summary[name]) for r in self.results]

    @property
    def source(self) -> str | None:
        """Where the agent's code is (``agent.source``, the same in every seed), if given."""
        return self.results[0].data["agent"].get("source")

    @property
    def versions(self) -> dict[str, list[str]]:
        """Package -> the versions recorded by its runs (sorted, usually one)."""
        out: dict[str, set[str]] = defaultdict(set)
        for r in self.results:
            for pkg, ver in (r.data["run_info"].get("versions") or {}).items():
                out[str(pkg)].add(str(ver))
        return {k: sorted(v) for k, v in sorted(out.items())}

    @property
    def created(self) -> str | None:
        """The newest ``run_info.created`` of the entry's runs (ISO 8601), if recorded."""
        newest: tuple[datetime, str] | None = None
        for r in self.results:
            text = r.data["run_info"].get("created")
            when = _parse_time(text)
            if when is not None and (newest is None or (when, text) > newest):
                newest = (when, text)
        return None if newest is None else newest[1]


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _entry_key(data: Mapping[str, Any]) -> tuple[str, str, str, str | None, str]:
    agent = data["agent"]
    return (data["env_id"], data["tier"], agent["name"], agent["preset"],
            canonical_json(agent["hparams"]))


def _entry_id(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(list(_entry_key(data))).encode()).hexdigest()[:12]


def _slug(text: str, limit: int = 48) -> str:
    s = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._") or "agent"
    return s[:limit]


def _entry_dir(data: Mapping[str, Any]) -> Path:
    """``<Stream-vN>/<tier>/<agent>__<entry id>``, relative to ``submissions/``."""
    stream = data["env_id"].split("/", 1)[-1]
    return Path(_slug(stream), _slug(data["tier"]),
                f"{_slug(data['agent']['name'])}__{_entry_id(data)}")


def _fingerprint_of(data: Mapping[str, Any]) -> str:
    text = canonical_json(deterministic_part(dict(data)))
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# checks


_MISSING = object()


def _expected_dataset_fingerprint(cls: type, tier: str) -> str | None:
    fp = getattr(cls, "DATASET_FINGERPRINT", None)
    if isinstance(fp, Mapping):
        return fp.get(tier)
    return fp


def _problems(data: Mapping[str, Any]) -> list[str]:
    """What keeps a schema-valid, self-consistent result off the leaderboard ([] if nothing)."""
    from lop_bench.registration import env_class

    env_id, tier = data["env_id"], data["tier"]
    try:
        cls = env_class(env_id)
    except UnknownEnvError as exc:
        return [str(exc)]
    ranked = [t for t in cls.TIERS if t not in UNRANKED_TIERS]
    if tier not in cls.TIERS:
        return [f"unknown tier {tier!r} for {env_id}.{did_you_mean(tier, cls.TIERS)} "
                f"Ranked tiers: {', '.join(ranked)}."]
    if tier in UNRANKED_TIERS:
        return [f"the {tier!r} tier is never ranked: it runs for seconds, to test the plumbing. "
                f"Run a ranked tier ({', '.join(ranked)}), e.g. --tier {ranked[0]}."]
    cfg = cls.TIERS[tier]
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
    if data["metric"] != cls.METRIC or data["higher_is_better"] != cls.HIGHER_IS_BETTER:
        out.append(
            f"metric {data['metric']!r} (higher_is_better={data['higher_is_better']}) is not "
            f"{env_id}'s {cls.METRIC!r} (higher_is_better={cls.HIGHER_IS_BETTER})."
        )
    expected_fp = _expected_dataset_fingerprint(cls, tier)
    if data["dataset_fingerprint"] != expected_fp:
        out.append(
            f"dataset_fingerprint is {data['dataset_fingerprint']!r} but the {tier!r} tier of "
            f"{env_id} uses {expected_fp!r}: a different or modified dataset."
        )
    expected_hash = protocol_hash(cls.ENV_ID, cls.STREAM_REVISION, cfg, data["dataset_fingerprint"])
    if data["protocol_hash"] != expected_hash:
        out.append(
            f"protocol_hash {data['protocol_hash']} is not the {tier!r} tier's hash "
            f"{expected_hash}: the run used another protocol, or the file was edited."
        )
    num_tasks = getattr(cfg, "num_tasks", None)
    if num_tasks is not None and len(data["per_task"]) != num_tasks:
        out.append(
            f"the per-task curve has {len(data['per_task'])} tasks but the {tier!r} tier has "
            f"{num_tasks}: an unfinished, truncated or edited run."
        )
    low, high = _steps_bounds(cfg)
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


def _steps_bounds(cfg: Any) -> tuple[int, int]:
    """The fewest and the most env steps a run of the tier ``cfg`` takes (what the runner
    writes into ``steps``).

    A tier config's ``num_steps`` is the length of its stream. An episodic stream (a config
    with ``max_episode_steps``: the Ant) changes task at the first episode end once a task's
    nominal steps have passed, so each task may run up to ``max_episode_steps - 1`` more.
    """
    low = int(cfg.num_steps)
    episode = getattr(cfg, "max_episode_steps", None)
    return low, low + (int(cfg.num_tasks) * (int(episode) - 1) if episode else 0)


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
    problems = _problems(data)
    if problems:
        raise SubmissionRejected("; ".join(problems), [("result", p) for p in problems])


def _expand(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    files: list[Path] = []
    reasons: list[tuple[str, str]] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.json") if not _hidden(f.relative_to(p)))
            if not found:
                reasons.append((str(p), "the directory holds no result files (*.json)."))
            files.extend(found)
        elif not p.exists():
            reasons.append((str(p), "no such file."))
        else:
            files.append(p)
    return files, reasons


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _strip_source(message: str, source: str) -> str:
    prefix = f"{source}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _board_files(board: Path) -> list[Path]:
    root = board / _SUBMISSIONS
    if not root.is_dir():
        return []
    return sorted(f for f in root.rglob("*.json") if not _hidden(f.relative_to(root)))


def _group(results: Iterable[tuple[str, Result]]) -> dict[tuple, list[tuple[str, Result]]]:
    groups: dict[tuple, list[tuple[str, Result]]] = defaultdict(list)
    for source, r in results:
        groups[_entry_key(r.data)].append((source, r))
    return dict(sorted(groups.items(), key=lambda kv: _sort_key(kv[0])))


def _sort_key(key: tuple) -> tuple:
    return tuple("" if k is None else k for k in key)


def _describe(key: tuple) -> str:
    env_id, tier, agent, preset, hparams = key
    return (f"entry {agent!r} (preset {preset!r}, hparams {hparams}) on {env_id} "
            f"[{tier}]")


def _seed_problems(key: tuple, seeds: list[int], num_seeds: int) -> list[str]:
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


@dataclass(frozen=True)
class _Checked:
    """What passed :func:`_check`: the entries to write, and the folders of those already on
    the board with the same results."""

    groups: dict[tuple, list[tuple[str, Result]]]
    unchanged: list[Path]


def _add_loose(seeds: dict[tuple, list[int]], path: Path) -> None:
    """Count the seed of a file that failed its checks, when it still names its entry, so
    that its entry is not also reported as missing that seed."""
    try:
        data = read_json(path)
        key, seed = _entry_key(data), data["seed"]
    except (InvalidResultError, KeyError, TypeError, AttributeError):
        return
    if all(k is None or isinstance(k, str) for k in key) and isinstance(seed, int):
        seeds[key].append(seed)


def _seed_set_problems(seeds: Mapping[tuple, list[int]]) -> list[tuple[str, str]]:
    """Entries that lack a seed of their tier's seed set or hold one twice."""
    from lop_bench.registration import env_class

    out = []
    for key in sorted(seeds, key=_sort_key):
        try:
            num_seeds = env_class(key[0]).TIERS[key[1]].num_seeds
        except (LopBenchError, KeyError):
            continue  # reported per file
        out.extend((_describe(key), p) for p in _seed_problems(key, seeds[key], num_seeds))
    return out


@dataclass(frozen=True)
class _Held:
    """A per-task curve seen before: the entry that holds it, where, and the fingerprint of
    the whole result."""

    key: tuple
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


def _copies(members: Iterable[tuple[str, Result]],
            known: dict[bytes, _Held]) -> list[tuple[str, str]]:
    """Files whose per-task curve equals one in ``known`` or one earlier in ``members``, with
    the reason naming where that curve is; ``known`` gains the curves of the others. Curves
    of fewer than :data:`_COPY_MIN_DISTINCT` distinct values are left out."""
    out = []
    for where, r in members:
        if len({float(v) + 0.0 for v in r.per_task}) < _COPY_MIN_DISTINCT:
            continue
        key, fingerprint = _entry_key(r.data), _fingerprint_of(r.data)
        digest = _curve_digest(r.per_task)
        held = known.get(digest)
        if held is None:
            agent = r.data["agent"]
            known[digest] = _Held(key, f"{where} (agent {agent['name']!r}, preset "
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


def _source_problems(groups: Mapping[tuple, list[tuple[str, Result]]]) -> list[tuple[str, str]]:
    """Entries whose seeds name different ``agent.source`` values."""
    out = []
    for key, members in groups.items():
        sources = sorted({repr(r.data["agent"].get("source")) for _, r in members})
        if len(sources) > 1:
            out.append((_describe(key), f"its seeds name different agent.source values "
                                        f"({', '.join(sources)}): give one with --source."))
    return out


def _rejected(message: str, reasons: list[tuple[str, str]]) -> SubmissionRejected:
    lines = "\n".join(f"  {w}: {why}" for w, why in reasons)
    return SubmissionRejected(f"{message}:\n{lines}", reasons)


@dataclass(frozen=True)
class _BoardIndex:
    """What a submission is checked against: each entry on the board (its folder, and the
    fingerprint of each seed's result) and every curve there."""

    seeds: dict[tuple, dict[int, str]]
    folders: dict[tuple, str]
    curves: dict[bytes, _Held]


def _index_board(board: Path) -> _BoardIndex:
    index = _BoardIndex(defaultdict(dict), {}, {})
    valid: list[tuple[str, Result]] = []
    for f in _board_files(board):
        try:
            r = load(f)
        except InvalidResultError:
            continue  # build reports broken files on the board
        key = _entry_key(r.data)
        index.seeds[key][r.seed] = _fingerprint_of(r.data)
        index.folders.setdefault(key, str(f.parent))
        valid.append((str(f), r))
    _copies(valid, index.curves)  # the board's own copies are build's to report
    return index


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


def _check(paths: Iterable[str | os.PathLike], board: Path,
           source: str | None = None) -> _Checked:
    """Every check of :func:`submit`; raises :class:`SubmissionRejected` listing them all."""
    if source is not None:
        try:
            check_source(source)
        except InvalidResultError as exc:
            raise SubmissionRejected(f"--source: {exc}", [("--source", str(exc))]) from None
    files, reasons = _expand(paths)
    loaded: list[tuple[str, Result]] = []
    seeds: dict[tuple, list[int]] = defaultdict(list)
    for f in files:
        try:
            r = load(f)
        except InvalidResultError as exc:
            reasons.append((str(f), _strip_source(str(exc), str(f))))
            _add_loose(seeds, f)
            continue
        reasons.extend(_apply_source(str(f), r, source))
        loaded.append((str(f), r))
        seeds[_entry_key(r.data)].append(r.seed)
        reasons.extend((str(f), p) for p in _problems(r.data))

    on_board = _index_board(board)
    groups = _group(loaded)
    unchanged: list[tuple] = []
    fresh: list[tuple[str, Result]] = []
    for key, members in groups.items():
        if key not in on_board.seeds:
            fresh.extend(members)
        elif (len(members) == len(on_board.seeds[key])
              and {r.seed: _fingerprint_of(r.data) for _, r in members} == on_board.seeds[key]):
            unchanged.append(key)  # the same results again: nothing to do
        else:
            folder = on_board.folders[key]
            reasons.append((_describe(key), f"already on the leaderboard ({folder}) with other "
                                            "results: an entry is submitted once, with all its "
                                            f"seeds (to replace it, remove {folder} first)."))
    reasons.extend(_copies(fresh, on_board.curves))
    reasons.extend(_source_problems(groups))
    reasons.extend(_seed_set_problems(seeds))
    if not files and not reasons:
        reasons.append(("(no files)", "nothing to submit."))
    if reasons:
        bad = len({w for w, _ in reasons})
        raise _rejected(f"submission refused ({bad} file(s) or entries with problems, "
                        f"{len(files)} file(s) given); nothing was copied", reasons)
    return _Checked({k: v for k, v in groups.items() if k not in unchanged},
                    [Path(on_board.folders[k]) for k in unchanged])


def check_submission(
    paths: Iterable[str | os.PathLike],
    board_dir: str | os.PathLike = DEFAULT_DIR,
    *,
    source: str | None = None,
) -> list[Entry]:
    """Check result files as :func:`submit` does, copy nothing; return the entries they form
    (without those already on the leaderboard with the very same results).

    Raises:
        SubmissionRejected: every refused file or entry with its reason (``.reasons``).
    """
    checked = _check(paths, Path(board_dir), source)
    return [_make_entry(key, [r for _, r in members]) for key, members in checked.groups.items()]


def _make_entry(key: tuple, results: list[Result]) -> Entry:
    rs = tuple(sorted(results, key=lambda r: r.seed))
    a = rs[0].data["agent"]
    return Entry(key[0], key[1], a["name"], a["preset"], dict(a["hparams"]), rs)


def submit(
    paths: Iterable[str | os.PathLike],
    board_dir: str | os.PathLike = DEFAULT_DIR,
    *,
    dry_run: bool = False,
    source: str | None = None,
) -> list[Path]:
    """Check result files and copy them all under ``<board_dir>/submissions/``, or none.

    An entry already on the leaderboard with the very same results (the same files
    submitted again) is left as it is: not an error, and nothing is written for it. Two
    submits on one leaderboard run one after the other (a lock on ``submissions/.lock``).

    Args:
        paths: result files, or directories searched for ``*.json``.
        board_dir: the leaderboard directory (default ``leaderboard/``).
        dry_run: check only; write nothing and return ``[]``.
        source: where the agent's code is, recorded as ``agent.source`` in every file
            written: a URL with a commit or a package with its version (a file that names
            another source is refused).

    Returns:
        The paths written, ``submissions/<Stream-vN>/<tier>/<agent>__<id>/seed<k>.json``.

    Raises:
        SubmissionRejected: a file or entry failed a check; ``.reasons`` lists every
            ``(file or entry, reason)``. Nothing was written.
        LopBenchError: another submit held the lock for :data:`LOCK_TIMEOUT_S`, or the
            leaderboard directory cannot be written. Nothing was written.
    """
    return _submit(paths, Path(board_dir), dry_run=dry_run, source=source)[0]


def _submit(paths: Iterable[str | os.PathLike], board: Path, *, dry_run: bool,
            source: str | None) -> tuple[list[Path], list[Path]]:
    """:func:`submit`, returning the paths written and the folders of the entries that were
    already on the leaderboard unchanged."""
    if dry_run:
        _check(paths, board, source)
        return [], []
    root = board / _SUBMISSIONS
    with _submit_lock(root):
        checked = _check(paths, board, source)
        return _write(checked, root), checked.unchanged


try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - no flock (Windows)
    _fcntl = None

_LOCK = ".lock"


@contextmanager
def _submit_lock(root: Path) -> Iterator[None]:
    """Hold the exclusive lock of the submissions folder ``root`` (``flock`` on
    ``root/.lock``, released when the process ends, however it ends), waiting up to
    :data:`LOCK_TIMEOUT_S` for another submit to finish."""
    if _fcntl is None:  # pragma: no cover - the final renames still refuse a clash
        yield
        return
    path = root / _LOCK
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise LopBenchError(
            f"cannot take the lock of the leaderboard's submissions ({path}): {exc.strerror}; "
            "is the leaderboard directory writable? Nothing was copied."
        ) from None
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LopBenchError(
                        f"another `lop-bench submit` to {root.parent} still holds its lock "
                        f"({path}) after {LOCK_TIMEOUT_S:g} s; try again once it has "
                        "finished. Nothing was copied."
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _write(checked: _Checked, root: Path) -> list[Path]:
    """Write the checked entries under ``root``, each folder at once (staged, then renamed
    into place); on any failure remove what was moved and raise."""
    moved: list[Path] = []
    written: list[Path] = []
    if not checked.groups:
        return written
    try:
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".incoming-"))
        try:
            for _, members in checked.groups.items():
                rel = _entry_dir(members[0][1].data)
                for _, r in members:
                    atomic_write_text(staging / rel / f"seed{r.seed}.json", r.to_json())
            for _, members in checked.groups.items():
                rel = _entry_dir(members[0][1].data)
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging / rel, target)
                moved.append(target)
                written.extend(target / f"seed{r.seed}.json"
                               for r in sorted((r for _, r in members), key=lambda r: r.seed))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException as exc:
        for target in moved:
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, OSError):
            raise LopBenchError(
                f"could not write the submission under {root}: {exc}. Nothing was copied."
            ) from exc
        raise
    return written


def submit_reference(
    results_dir: str | os.PathLike,
    board_dir: str | os.PathLike = DEFAULT_DIR,
    *,
    tier: str = "cpu",
    build_pages: bool = True,
) -> list[Path]:
    """Submit the reference agents' results of ``tier`` found under ``results_dir``.

    Picks the result files of every stream's reference agents
    (``lop_bench.registration.REFERENCE_AGENTS``) on ``tier``, leaves out entries already on
    the leaderboard (so it can be run again as more streams get results), submits the rest
    with every check of :func:`submit`, and rebuilds the pages unless ``build_pages=False``.

    Returns:
        The paths written (``[]`` when every entry was already on the leaderboard).

    Raises:
        LopBenchError: no reference result of ``tier`` under ``results_dir``.
        SubmissionRejected: a reference result failed a check; nothing was written.
    """
    from lop_bench.registration import REFERENCE_AGENTS

    board = Path(board_dir)
    files, reasons = _expand([results_dir])
    if reasons:
        raise LopBenchError(f"{results_dir}: {reasons[0][1]}")
    on_board = set()
    for bf in _board_files(board):
        try:
            on_board.add(_entry_key(read_json(bf)))
        except (InvalidResultError, KeyError, TypeError, AttributeError):
            continue
    picked, matched = [], 0
    for f in files:
        try:
            data = read_json(f)
            env_id, name = data["env_id"], data["agent"]["name"]
            if data["tier"] != tier or name not in REFERENCE_AGENTS.get(env_id, ()):
                continue
            matched += 1
            if _entry_key(data) in on_board:
                continue
        except (InvalidResultError, KeyError, TypeError, AttributeError):
            pass  # submit reports why
        picked.append(f)
    if not matched and not picked:
        raise LopBenchError(
            f"{results_dir}: no result of a reference agent on tier {tier!r}; run "
            f"`lop-bench reproduce ENV --tier {tier}` first."
        )
    written = submit(picked, board) if picked else []
    if build_pages:
        build(board)
    return written


# ---------------------------------------------------------------------------------------
# the board


def load_board(board_dir: str | os.PathLike = DEFAULT_DIR) -> list[Entry]:
    """Load and re-check every submission on the leaderboard; return its entries.

    Every check of :func:`submit` is made again, over the whole board: a file that is not a
    regular file under the size cap, an edited file, a curve that copies another one, an
    entry without its whole seed set, a stream that changed since.

    Raises:
        SubmissionRejected: a file under ``submissions/`` fails a check; the message names
            it and why.
    """
    board = Path(board_dir)
    reasons: list[tuple[str, str]] = []
    loaded: list[tuple[str, Result]] = []
    seeds: dict[tuple, list[int]] = defaultdict(list)
    for f in _board_files(board):
        try:
            r = load(f)
        except InvalidResultError as exc:
            reasons.append((str(f), _strip_source(str(exc), str(f))))
            _add_loose(seeds, f)
            continue
        reasons.extend((str(f), p) for p in _problems(r.data))
        loaded.append((str(f), r))
        seeds[_entry_key(r.data)].append(r.seed)
    groups = _group(loaded)
    reasons.extend(_copies(loaded, {}))
    reasons.extend(_source_problems(groups))
    reasons.extend(_seed_set_problems(seeds))
    if reasons:
        raise _rejected(f"the leaderboard in {board} holds submissions that fail the checks; "
                        "fix or remove them", reasons)
    return [_make_entry(key, [r for _, r in members]) for key, members in groups.items()]


LAST_TASK_STREAMS: dict[str, str] = {"lop/IncrementalCIFAR100-v0": "from_scratch"}
"""Streams ranked by the score of their last task, with the agent whose gap is shown.

Incremental CIFAR-100 ranks by the test accuracy on all 100 classes (its last task) and
shows each entry's paired gap to the network retrained from scratch at every block; its
``drop`` would compare 5-class with 100-class accuracy and is not shown (DESIGN.md section 6).
"""


def rank_stat(env_id: str) -> str:
    """The statistic a stream's table is ranked by: ``"final"`` or ``"last"``."""
    return "last" if env_id in LAST_TASK_STREAMS else "final"


def rank_entries(entries: Sequence[Entry], higher_is_better: bool, by: str = "final") -> list[Entry]:
    """Entries best first by the seed mean of ``by`` (ties: agent name, then entry id)."""
    import numpy as np

    sign = -1.0 if higher_is_better else 1.0
    return sorted(entries, key=lambda e: (sign * float(np.mean(e.stat(by))), e.agent, e.id))


@dataclass(frozen=True)
class _Table:
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
    return f"{x:.4g}"


def _mean_ci(values: list[float]) -> str:
    from lop_bench.metrics import seed_stats

    s = seed_stats(values)
    if s["ci_low"] is None:
        return _num(s["mean"])
    return f"{_num(s['mean'])} ± {(s['ci_high'] - s['ci_low']) / 2:.2g}"


def _iqm_ci(values: list[float]) -> str:
    if len(values) < IQM_MIN_SEEDS:
        return _DASH
    from lop_bench.metrics import iqm_bootstrap_ci

    s = iqm_bootstrap_ci(values, reps=_BOOTSTRAP_REPS, seed=_BOOTSTRAP_SEED)
    return f"{_num(s['iqm'])} [{_num(s['ci_low'])}, {_num(s['ci_high'])}]"


def _hparams_text(hparams: Mapping[str, Any]) -> str:
    if not hparams:
        return _DASH
    return ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, sort_keys=True)}"
        for k, v in sorted(hparams.items())
    )


def _versions_text(versions: Mapping[str, list[str]]) -> str:
    order = sorted(versions, key=lambda k: (k != "lop-bench", k))
    return ", ".join(f"{k} {'/'.join(versions[k])}" for k in order) or _DASH


def _last_task_columns(reference: str) -> tuple[tuple[str, str], ...]:
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
        return _DASH
    if e is ref:
        return "0"
    from lop_bench.metrics import paired_difference

    shared = sorted(set(e.seeds) & set(ref.seeds))
    if not shared:
        return _DASH
    mine = dict(zip(e.seeds, e.stat("last")))
    theirs = dict(zip(ref.seeds, ref.stat("last")))
    d = paired_difference([mine[s] for s in shared], [theirs[s] for s in shared])
    if d["ci_low"] is None:
        return f"{d['mean']:+.4g}"
    return f"{d['mean']:+.4g} ± {(d['ci_high'] - d['ci_low']) / 2:.2g}"


def _row(rank: int, e: Entry, by: str = "final", ref: Entry | None = None) -> dict[str, str]:
    created = e.created
    return {
        "rank": str(rank),
        "agent": e.agent,
        "source": e.source or "",
        "preset": _DASH if e.preset is None else e.preset,
        "hparams": _hparams_text(e.hparams),
        "seeds": str(len(e.results)),
        "final": _mean_ci(e.stat(by)),
        "final_iqm": _iqm_ci(e.stat(by)),
        "gap": _gap(e, ref),
        "initial": _mean_ci(e.stat("initial")),
        "drop": _mean_ci(e.stat("drop")),
        "versions": _versions_text(e.versions),
        "date": _DASH if created is None else created[:10],
    }


def _tables(entries: Sequence[Entry]) -> list[_Table]:
    from lop_bench.metrics import STREAMS as METRICS
    from lop_bench.registration import env_class

    by_stream: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in entries:
        by_stream[(e.env_id, e.tier)].append(e)

    def order(k: tuple[str, str]) -> tuple:
        tiers = list(env_class(k[0]).TIERS)
        return (k[0], tiers.index(k[1]) if k[1] in tiers else len(tiers), k[1])

    out = []
    for env_id, tier in sorted(by_stream, key=order):
        cls = env_class(env_id)
        m = METRICS.get(env_id)
        by = rank_stat(env_id)
        ranked = rank_entries(by_stream[(env_id, tier)], cls.HIGHER_IS_BETTER, by)
        reference = LAST_TASK_STREAMS.get(env_id)
        # The best-ranked entry of the reference agent (normally its one preset entry).
        ref = next((e for e in ranked if e.agent == reference), None) if reference else None
        out.append(_Table(
            env_id=env_id, tier=tier, metric=cls.METRIC,
            label=m.label if m else cls.METRIC,
            higher_is_better=cls.HIGHER_IS_BETTER,
            bin_size=m.bin_size if m else 1,
            protocol_hash=ranked[0].results[0].data["protocol_hash"],
            num_seeds=cls.TIERS[tier].num_seeds,
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


# ---------------------------------------------------------------------------------------
# README.md


_MD_ESCAPES = str.maketrans({**{c: "\\" + c for c in "\\`*_~[]()|:@#!"}, "$": "&#36;"})


def _md(text: str) -> str:
    """Escape a string for a Markdown table cell, so that it renders as the text it is.

    HTML-escaped (``& < >``); every character that starts Markdown syntax backslash-escaped:
    emphasis (``* _``), strikethrough (``~``), code, links (``[ ] ( ) !``), table pipes,
    headings, and ``:`` / ``@`` / ``www.``, which start GitHub's autolinks (``http://x``,
    ``a@b.org``); ``$`` as ``&#36;``, which GitHub's math does not read as a delimiter (it
    does read ``\\$``). Whitespace runs become one space.
    """
    s = html.escape(str(text), quote=False).translate(_MD_ESCAPES)
    s = re.sub(r"(?i)(www)\.", r"\1\\.", s)
    return " ".join(s.split())


_LINKABLE = re.compile(r"https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]+")
"""A URL the pages link: http(s), of the characters the schema allows in ``agent.source``."""


def _source_text(source: str) -> str:
    """How a source reads on the pages: without the ``https://``, commit ids cut to 12 digits."""
    s = re.sub(r"^https?://", "", source)
    return re.sub(r"(?<![0-9a-fA-F])([0-9a-fA-F]{12})[0-9a-fA-F]{2,}(?![0-9a-fA-F])", r"\1", s)


def _md_cell(key: str, value: str) -> str:
    """One README table cell; an http(s) ``source`` is a link, an empty one "no source"."""
    if key != "source":
        return _md(value)
    if not value:
        return "*no source*"
    if _LINKABLE.fullmatch(value):
        return f"[{_md(_source_text(value))}](<{value.replace('&', '&amp;')}>)"
    return _md(value)


def _readme(tables: list[_Table]) -> str:
    lines = [
        "# lop-bench leaderboard",
        "",
        "Generated by `lop-bench leaderboard build` from the result files under "
        "`submissions/`; do not edit by hand. Add yours with `lop-bench submit RESULTS... "
        "--source URL` (every seed of a ranked tier, no custom settings; the URL names the "
        "commit of your code), then rebuild. `index.html` shows the same tables with the "
        "curves.",
        "",
    ]
    if not tables:
        lines += ["No submissions yet.", ""]
    for t in tables:
        direction = "higher is better" if t.higher_is_better else "lower is better"
        lines += [
            f"## {_md(t.env_id)} — tier {_md(t.tier)}",
            "",
            f"Metric: {_md(t.metric)} ({_md(t.label)}, {direction}); {t.num_seeds} seeds per "
            f"entry; protocol {_md(t.protocol_hash[:19])}…",
            "",
            "| " + " | ".join(title for _, title in t.columns) + " |",
            "|" + "|".join("---:" if k in ("rank", "seeds") else "---" for k, _ in t.columns) + "|",
        ]
        for row in t.rows:
            lines.append("| " + " | ".join(_md_cell(k, row[k]) for k, _ in t.columns) + " |")
        lines += ["", t.about, ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# index.html


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _mpl_text(text: str, limit: int = 40) -> str:
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def _svg(t: _Table, index: int) -> str:
    """The table's curves as inline SVG (matplotlib, deterministic: fixed salt, no date)."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    from lop_bench.metrics import bin_curve, bin_curves, plot_bin_size

    with matplotlib.rc_context({"svg.hashsalt": f"lop-bench-leaderboard-{index}",
                                "svg.fonttype": "none", "font.size": 9}):
        fig = Figure(figsize=(8.4, 3.8))
        ax = fig.add_subplot()
        size = 1
        for i, e in enumerate(t.entries):
            curves = np.array([r.per_task for r in e.results], dtype=float)
            size = plot_bin_size(t.bin_size, curves.shape[1])
            mean, half = bin_curves(curves, size)
            x = bin_curve(np.arange(curves.shape[1], dtype=float), size)  # bin at its mean task
            color = _COLORS[i % len(_COLORS)]
            ls = _LINESTYLES[(i // len(_COLORS)) % len(_LINESTYLES)]
            ax.plot(x, mean, color=color, ls=ls, lw=1.6, label=_mpl_text(f"#{i + 1} {e.agent}"))
            if curves.shape[0] > 1:
                ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.18, lw=0)
        ax.set_xlabel(f"task (bins of {size})" if size > 1 else "task")
        ax.set_ylabel(_mpl_text(t.label))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg"):].strip()


_CSS = """\
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1400px;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ddd}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0;width:100%}
th,td{border:1px solid #ddd;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f4f4f4;white-space:nowrap}td.num{text-align:right;white-space:nowrap}
td.agent{min-width:6rem;max-width:14rem;overflow-wrap:anywhere;font-weight:600}
td.small{font-size:.78rem;color:#333;overflow-wrap:anywhere}
td.preset{min-width:6rem;max-width:11rem}td.hp{min-width:9rem;max-width:18rem}td.ver{min-width:7rem}
td.date{white-space:nowrap}td.src{min-width:8rem;max-width:16rem}.nosrc{color:#888;font-style:italic}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;border-radius:2px}
.meta{color:#555;font-size:.9rem}figure{margin:1rem 0}figcaption{color:#555;font-size:.85rem}
figure svg{max-width:100%;height:auto}code{background:#f4f4f4;padding:0 .2em}
"""

_CELL_CLASS = {"agent": "agent", "source": "small src", "preset": "small preset", "hparams": "small hp",
               "versions": "small ver", "date": "date"}
_NUMERIC = {"rank", "seeds", "final", "final_iqm", "initial", "drop", "gap"}


def _html_source(source: str) -> str:
    """The ``source`` cell: a link for an http(s) URL, text otherwise, "no source" if none."""
    if not source:
        return '<span class="nosrc">no source</span>'
    if _LINKABLE.fullmatch(source):
        return (f'<a href="{_h(source)}" rel="nofollow noopener noreferrer">'
                f"{_h(_source_text(source))}</a>")
    return _h(source)


def _anchor(t: _Table) -> str:
    return _slug(f"{t.env_id.split('/')[-1]}-{t.tier}", 80)


def _index(tables: list[_Table]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">",
        "<title>lop-bench leaderboard</title>",
        f"<style>\n{_CSS}</style>",
        "</head>",
        "<body>",
        "<h1>lop-bench leaderboard</h1>",
        '<p class="meta">Generated by <code>lop-bench leaderboard build</code> from the '
        "checked result files under <code>submissions/</code>. Add yours with "
        "<code>lop-bench submit RESULTS... --source URL</code> (every seed of a ranked tier, "
        "no custom settings; the URL names the commit of your code).</p>",
    ]
    if not tables:
        out.append("<p>No submissions yet.</p>")
    else:
        out.append("<nav><ul>")
        for t in tables:
            out.append(f'<li><a href="#{_h(_anchor(t))}">{_h(t.env_id)} — tier '
                       f"{_h(t.tier)}</a> ({len(t.entries)} entries)</li>")
        out.append("</ul></nav>")
    for i, t in enumerate(tables):
        direction = "higher is better" if t.higher_is_better else "lower is better"
        out += [
            f'<section id="{_h(_anchor(t))}">',
            f"<h2>{_h(t.env_id)} — tier {_h(t.tier)}</h2>",
            f'<p class="meta">Metric: {_h(t.metric)} ({_h(t.label)}, {direction}); '
            f"{t.num_seeds} seeds per entry; protocol <code>{_h(t.protocol_hash)}</code></p>",
            '<div class="scroll"><table class="board">',
            "<thead><tr>" + "".join(f"<th>{_h(title)}</th>" for _, title in t.columns)
            + "</tr></thead>",
            "<tbody>",
        ]
        for j, row in enumerate(t.rows):
            cells = []
            for k, _ in t.columns:
                cls = "num" if k in _NUMERIC else _CELL_CLASS.get(k, "")
                attr = f' class="{cls}"' if cls else ""
                text = _html_source(row[k]) if k == "source" else _h(row[k])
                if k == "rank":
                    color = _COLORS[j % len(_COLORS)]
                    text = f'<span class="swatch" style="background:{color}"></span>{text}'
                cells.append(f"<td{attr}>{text}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out += [
            "</tbody>",
            "</table></div>",
            '<figure class="curves">',
            _svg(t, i),
            f"<figcaption>Per-task {_h(t.label)} of every entry: the mean over seeds in bins "
            "of consecutive tasks, with its 95% confidence band (Student's t over seeds). "
            "Numbers in the legend are ranks.</figcaption>",
            "</figure>",
            '<p class="meta">' + _h(t.about).replace("`", "") + "</p>",
            "</section>",
        ]
    out += [
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(out)


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True


def build(board_dir: str | os.PathLike = DEFAULT_DIR) -> tuple[Path, Path]:
    """Regenerate ``<board_dir>/README.md`` and ``<board_dir>/index.html``.

    The submissions are re-checked (:func:`load_board`). The output depends only on them:
    building twice gives byte-identical files (an unchanged file is not rewritten).

    Returns:
        The paths of ``README.md`` and ``index.html``.

    Raises:
        SubmissionRejected: a submission on the board fails the checks.
    """
    board = Path(board_dir)
    tables = _tables(load_board(board))
    readme, index = board / "README.md", board / "index.html"
    _write_if_changed(readme, _readme(tables))
    _write_if_changed(index, _index(tables))
    return readme, index


# ---------------------------------------------------------------------------------------
# command line


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def cmd_submit(args: argparse.Namespace) -> int:
    """``lop-bench submit``: check result files and copy them to the leaderboard."""
    if args.dry_run:
        entries = check_submission(args.results, args.dir, source=args.source)
        n = sum(len(e.results) for e in entries)
        print(f"{n} result file(s) in {len(entries)} new entr{'y' if len(entries) == 1 else 'ies'} "
              "pass every check (dry run: nothing copied).")
        return 0
    written, unchanged = _submit(args.results, Path(args.dir), dry_run=False, source=args.source)
    entries = sorted({p.parent for p in written})
    print(f"accepted {len(written)} result file(s) in {len(entries)} "
          f"entr{'y' if len(entries) == 1 else 'ies'}:")
    for d in entries:
        print(f"  {d}/")
    for d in unchanged:
        print(f"already on the leaderboard with the same results, left as it is: {d}/")
    if written:
        print(f"Next: lop-bench leaderboard build --dir {args.dir}")
    return 0


def cmd_leaderboard_build(args: argparse.Namespace) -> int:
    """``lop-bench leaderboard build``: regenerate README.md and index.html."""
    readme, index = build(args.dir)
    print(f"built {readme} and {index} (a file whose content is unchanged is not rewritten)")
    return 0


def add_cli(subparsers: Any) -> None:
    """Add ``submit`` and ``leaderboard build`` to the ``lop-bench`` subcommands."""
    sp = subparsers.add_parser(
        "submit", help="check result files and add them to the leaderboard",
        formatter_class=_formatter,
        description="Check result files (schema, summary vs curve, tier hash, steps, "
                    "diagnostics, full seed set, no custom settings, no smoke tier, no copied "
                    "curves) and copy them all, or none, under DIR/submissions/. Files "
                    "already there with the same results are left as they are.",
        epilog=textwrap.dedent("""\
            examples:
              lop-bench run lop/SlowlyChangingRegression-v0 --agent my_pkg.agents:make_agent --tier cpu --out mine
              lop-bench submit mine/ --dry-run
              lop-bench submit mine/ --source https://github.com/me/my-agent/tree/<commit sha>
              lop-bench submit mine/*.json --source my-agent==1.2.0
              lop-bench leaderboard build
        """))
    sp.add_argument("results", nargs="+", metavar="RESULTS",
                    help="result files, or directories searched for *.json")
    sp.add_argument("--dir", default=str(DEFAULT_DIR),
                    help=f"leaderboard directory (default: {DEFAULT_DIR})")
    sp.add_argument("--dry-run", action="store_true", help="check only; copy nothing")
    sp.add_argument("--source", metavar="WHERE",
                    help="where the agent's code is, recorded as agent.source in every file "
                         "copied: a URL with a commit (https://github.com/me/my-agent/tree/"
                         "<sha>) or a package with its version (my-agent==1.2.0); the pages "
                         "link it")
    sp.set_defaults(func=cmd_submit)

    lp = subparsers.add_parser(
        "leaderboard", help="regenerate the leaderboard pages", formatter_class=_formatter,
        epilog="examples:\n  lop-bench leaderboard build\n"
               "  lop-bench leaderboard build --dir leaderboard")
    lsub = lp.add_subparsers(dest="leaderboard_command", metavar="ACTION")
    bp = lsub.add_parser(
        "build", help="regenerate DIR/README.md and DIR/index.html from DIR/submissions/",
        formatter_class=_formatter,
        epilog="examples:\n  lop-bench leaderboard build\n"
               "  lop-bench leaderboard build --dir /tmp/board")
    bp.add_argument("--dir", default=str(DEFAULT_DIR),
                    help=f"leaderboard directory (default: {DEFAULT_DIR})")
    bp.set_defaults(func=cmd_leaderboard_build)

    def _help(args: argparse.Namespace) -> int:
        lp.print_help()
        return 2

    lp.set_defaults(func=_help)
