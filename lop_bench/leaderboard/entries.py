"""Entries: an agent with its preset and hyperparameters on a stream and tier, and what
identifies one (its key, its short id, its folder under ``submissions/``)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lop_bench.config import canonical_json
from lop_bench.results import Result, deterministic_part

__all__ = ["REFERENCE_MARK", "Entry", "EntryKey", "entry_key", "entry_id", "entry_dir",
           "make_entry"]

REFERENCE_MARK = "REFERENCE"
"""The file that marks an entry's folder as a reference entry of the project: written by
``lop-bench submit --reference`` (:func:`~lop_bench.leaderboard.submit` with
``reference=True``) for results of a stream's reference agents or fresh agent. The board
diffs other entries' hyperparameters against the reference entry of their agent and
computes the plasticity score against the reference entry of the fresh agent."""

REFERENCE_TEXT = ("A reference entry of lop-bench: results of the project's own agent with its "
                  "preset,\nmarked by `lop-bench submit --reference`.\n")
"""What :data:`REFERENCE_MARK` holds (its content is not read back: the file marks)."""

EntryKey = tuple[str, str, str, "str | None", str]
"""(stream, tier, agent name, preset, canonical JSON of the hyperparameters)."""


@dataclass(frozen=True)
class Entry:
    """One ranked line: an agent with its preset and hyperparameters on a stream and tier.

    ``results`` holds one validated result per seed of the tier's seed set, sorted by seed;
    ``files`` their paths relative to the leaderboard directory (POSIX, in the same order;
    empty for an entry not read from a board); ``reference`` whether the project marked the
    entry as one of its reference results (:data:`REFERENCE_MARK` in its folder).
    """

    env_id: str
    tier: str
    agent: str
    preset: str | None
    hparams: dict[str, Any]
    results: tuple[Result, ...]
    files: tuple[str, ...] = ()
    reference: bool = False

    @property
    def key(self) -> EntryKey:
        """What identifies the entry (:func:`entry_key`)."""
        return entry_key(self.results[0].data)

    @property
    def id(self) -> str:
        """A short, stable id of the entry (sha256 of its key), used in folder names."""
        return entry_id(self.results[0].data)

    @property
    def seeds(self) -> list[int]:
        """The entry's seeds, in order."""
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
    """An ISO 8601 time (UTC when it names no zone), or None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def entry_key(data: Mapping[str, Any]) -> EntryKey:
    """The key of the entry a result belongs to: its stream, tier, agent name, preset and
    hyperparameters."""
    agent = data["agent"]
    return (data["env_id"], data["tier"], agent["name"], agent["preset"],
            canonical_json(agent["hparams"]))


def entry_id(data: Mapping[str, Any]) -> str:
    """12 hex digits of the sha256 of a result's entry key (folder names, ties)."""
    return hashlib.sha256(canonical_json(list(entry_key(data))).encode()).hexdigest()[:12]


def slug(text: str, limit: int = 48) -> str:
    """``text`` as a safe file name or HTML id: letters, digits, ``-_.``; at most ``limit``."""
    s = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._") or "agent"
    return s[:limit]


def entry_dir(data: Mapping[str, Any]) -> Path:
    """``<Stream-vN>/<tier>/<agent>__<entry id>``, relative to ``submissions/``."""
    stream = data["env_id"].split("/", 1)[-1]
    return Path(slug(stream), slug(data["tier"]),
                f"{slug(data['agent']['name'])}__{entry_id(data)}")


def result_fingerprint(data: Mapping[str, Any]) -> str:
    """sha256 of a result's deterministic part: equal for the same run, wherever it ran."""
    text = canonical_json(deterministic_part(dict(data)))
    return hashlib.sha256(text.encode()).hexdigest()


def group_by_entry(
    results: Iterable[tuple[str, Result]],
) -> dict[EntryKey, list[tuple[str, Result]]]:
    """``(where, result)`` pairs grouped by entry, the entries in key order."""
    groups: dict[EntryKey, list[tuple[str, Result]]] = defaultdict(list)
    for source, r in results:
        groups[entry_key(r.data)].append((source, r))
    return dict(sorted(groups.items(), key=lambda kv: sort_key(kv[0])))


def sort_key(key: EntryKey) -> tuple[str, ...]:
    """An entry key that sorts (no preset sorts first)."""
    return tuple("" if k is None else k for k in key)


def describe_key(key: EntryKey) -> str:
    """How messages name an entry."""
    env_id, tier, agent, preset, hparams = key
    return (f"entry {agent!r} (preset {preset!r}, hparams {hparams}) on {env_id} "
            f"[{tier}]")


def make_entry(key: EntryKey, results: list[Result], files: list[str] | None = None,
               reference: bool = False) -> Entry:
    """The :class:`Entry` of ``key`` holding ``results`` (sorted by seed), with the paths of
    their files (``files[i]`` of ``results[i]``, relative to the board) if known."""
    order = sorted(range(len(results)), key=lambda i: results[i].seed)
    rs = tuple(results[i] for i in order)
    paths = tuple(files[i] for i in order) if files is not None else ()
    a = rs[0].data["agent"]
    return Entry(key[0], key[1], a["name"], a["preset"], dict(a["hparams"]), rs, paths,
                 reference)
