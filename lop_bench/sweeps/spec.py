"""Sweep specs: the TOML file of ``lop-bench sweep``, read, checked and located line by line.

A spec names streams, tiers, seeds, agents with hyperparameter grids, optional stream
overrides, and how the jobs run::

    streams = ["lop/SlowlyChangingRegression-v0"]
    tiers = ["cpu"]                  # default: ["cpu"]
    seeds = "0-4"                    # or [0, 1, 2]; default: each tier's seed set

    [agents.backprop]                # the agent's preset for the stream and tier ...
    lr = [0.01, 0.003]               # ... with every value of every list (their product)

    [agents.continual_backprop]
    replacement_rate = [1e-4, 1e-3]

    [set]                            # optional stream overrides (results are custom)
    num_tasks = [50]

    [run]                            # optional: how the jobs run
    out = "results/my-sweep"         # default: results/<spec file name>
    checkpoint_every = 5             # tasks; default: about 50 checkpoints per run
    retries = 2

Every hyperparameter and override is a list of the values to try; a lone value is a list
of one. A hyperparameter whose value is itself a list (``hidden``, ``betas``) is written
as a list of lists: ``hidden = [[100, 100], [200]]``. Several grids go in ``[[grid]]``
tables, each with its own ``streams`` / ``tiers`` / ``seeds`` / ``agents`` / ``set``; keys
at the top level apply to every grid that does not set them.

**Locating errors.** :mod:`tomllib` gives the line of a syntax error but no position of
the values it returns, so :class:`KeyLines` scans the text once for table headers
(``[a.b]``, ``[[grid]]``) and ``key = value`` lines, skipping the inside of strings and
multi-line arrays, and maps every key path to the line where its key is written. A
problem with a value is reported at its key's line (an item of a multi-line list: the
line of the list's key; a key inside an inline table: the line of the table's key).
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lop_bench.errors import LopBenchError, SweepSpecError, did_you_mean

__all__ = [
    "MAX_SEED",
    "MAX_SEEDS",
    "Grid",
    "RunSettings",
    "SweepSpec",
    "KeyLines",
    "Problems",
    "load_spec",
    "read_spec",
    "parse_seed_list",
]

MAX_SEED = 2**32 - 1
"""The largest seed (:data:`lop_bench.runner.MAX_SEED`)."""
MAX_SEEDS = 10_000
"""The most seeds of one command or grid (the paper tiers need at most 100)."""
AUTO = "auto"
"""``checkpoint_every`` left to the sweep: about 50 checkpoints per run, where the stream
and the agent support them."""

_GRID_KEYS = ("streams", "tiers", "seeds", "agents", "set")
_RUN_KEYS = ("out", "device", "checkpoint_every", "retries", "vectorized", "diagnostics",
             "diagnostics_every", "cpus_per_job", "gpus_per_job")
_TOP_KEYS = (*_GRID_KEYS, "grid", "run")
DEFAULT_RETRIES = 2
"""Retries of a job whose worker died or that raised an unexpected error."""


# -- seeds ------------------------------------------------------------------------------
def parse_seed_list(text: str, what: str = "--seeds", scope: str = "one command") -> list[int]:
    """``"0-4"`` -> [0..4]; ``"0,3,7"``; ``"2"``; combinations like ``"0-2,9"``.

    Seeds are distinct integers from 0 to :data:`MAX_SEED` (2**32 - 1), at most
    :data:`MAX_SEEDS` of them. ``what`` names the option or key in the errors, ``scope``
    what the limit is per."""
    usage = f"use '0-4', '0,3,7' or '2' (distinct seeds from 0 to {MAX_SEED})"
    ranges = []
    try:
        for part in str(text).split(","):
            lo, sep, hi = part.strip().partition("-")
            ranges.append((int(lo), int(hi) if sep else int(lo)))
    except ValueError:
        raise LopBenchError(f"{what} {text!r} is not a seed list: {usage}.") from None
    if any(lo > hi for lo, hi in ranges):
        raise LopBenchError(f"{what} {text!r}: a range runs from low to high; {usage}.")
    if any(lo < 0 or hi > MAX_SEED for lo, hi in ranges):
        raise LopBenchError(f"{what} {text!r}: a seed is out of range; {usage}.")
    if sum(hi - lo + 1 for lo, hi in ranges) > MAX_SEEDS:
        raise LopBenchError(f"{what} {text!r}: more than {MAX_SEEDS:,} seeds in {scope}.")
    seeds = [s for lo, hi in ranges for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        raise LopBenchError(f"{what} {text!r}: a seed is listed twice; {usage}.")
    return seeds


def _seeds_value(value: Any) -> list[int]:
    """A spec's ``seeds``: a seed-list string, one integer, or a list of integers."""
    if isinstance(value, str):
        return parse_seed_list(value, "seeds", "one grid")
    items = value if isinstance(value, list) else [value]
    bad = [s for s in items if isinstance(s, bool) or not isinstance(s, int)
           or not 0 <= s <= MAX_SEED]
    if bad or not items:
        raise LopBenchError(
            f"seeds = {value!r}: give a seed list like \"0-4\" or [0, 3, 7], of integers "
            f"from 0 to {MAX_SEED}."
        )
    if len(set(items)) != len(items):
        raise LopBenchError(f"seeds = {value!r}: a seed is listed twice.")
    if len(items) > MAX_SEEDS:
        raise LopBenchError(f"seeds: more than {MAX_SEEDS:,} seeds in one grid.")
    return list(items)


# -- where each key is written ----------------------------------------------------------
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BASIC_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


class KeyLines:
    """The line (1-based) of every table header and key of a TOML text, by key path.

    A path is a tuple of keys, with the index of an array of tables after its name:
    ``("grid", 1, "agents", "backprop", "lr")`` is ``lr`` in ``[grid.agents.backprop]``
    under the second ``[[grid]]``. :meth:`line` gives the line of the longest known prefix
    of a path (a value's key, else its table).
    """

    def __init__(self, text: str = "") -> None:
        self._lines: dict[tuple[Any, ...], int] = {}
        self._scan(text.splitlines())

    def line(self, path: Sequence[Any]) -> int | None:
        """The line where ``path`` (or the nearest table or key above it) is written."""
        path = tuple(path)
        for n in range(len(path), 0, -1):
            if path[:n] in self._lines:
                return self._lines[path[:n]]
        return None

    # The scan: headers and `key =` lines; strings and multi-line values are skipped.
    def _scan(self, lines: list[str]) -> None:
        table: tuple[Any, ...] = ()
        arrays: dict[tuple[str, ...], int] = {}  # [[name]] -> index of its current table
        i = 0
        while i < len(lines):
            text = lines[i].strip()
            lineno = i + 1
            if not text or text.startswith("#"):
                i += 1
                continue
            if text.startswith("["):
                is_array = text.startswith("[[")
                keys, _ = _parse_key(text, 2 if is_array else 1)
                if is_array:
                    raw = tuple(keys)
                    arrays[raw] = arrays.get(raw, -1) + 1
                    table = (*self._resolve(keys[:-1], arrays), keys[-1], arrays[raw])
                else:
                    table = self._resolve(keys, arrays)
                self._lines.setdefault(table, lineno)
                i += 1
                continue
            keys, end = _parse_key(text, 0)
            if keys and end < len(text) and text[end] == "=":
                self._lines.setdefault((*table, *keys), lineno)
                i = _skip_value(lines, i, lines[i].index("=") + 1)
            else:
                i += 1

    @staticmethod
    def _resolve(keys: Sequence[str], arrays: Mapping[tuple[str, ...], int]) -> tuple[Any, ...]:
        """``keys`` of a table header with the current index after each array of tables."""
        out: list[Any] = []
        for n, key in enumerate(keys, 1):
            out.append(key)
            if tuple(keys[:n]) in arrays:
                out.append(arrays[tuple(keys[:n])])
        return tuple(out)


def _tomllib() -> Any:
    """The standard library's TOML reader (``tomli``, its original, on Python 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def _parse_key(text: str, i: int) -> tuple[list[str], int]:
    """The dotted key starting at ``text[i]`` (bare or quoted parts) and the index after it
    and the spaces that follow; ``([], i)`` when there is none."""
    tomllib = _tomllib()
    keys: list[str] = []
    while True:
        while i < len(text) and text[i] in " \t":
            i += 1
        if i >= len(text):
            return keys, i
        if text[i] == '"':
            m = _BASIC_STRING.match(text, i)
            if not m:
                return keys, i
            keys.append(tomllib.loads(f"k = {m.group()}")["k"])
            i = m.end()
        elif text[i] == "'":
            end = text.find("'", i + 1)
            if end < 0:
                return keys, i
            keys.append(text[i + 1:end])
            i = end + 1
        else:
            m = _BARE_KEY.match(text, i)
            if not m:
                return keys, i
            keys.append(m.group())
            i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        return keys, i


def _skip_value(lines: list[str], i: int, col: int) -> int:
    """The index of the first line after the value that starts at ``lines[i][col:]``: past
    the closing bracket of a multi-line array or inline table, or the end of a multi-line
    string."""
    depth = 0
    quote: str | None = None  # the open string's delimiter
    while i < len(lines):
        s, j = lines[i], col
        while j < len(s):
            if quote is None:
                if s.startswith(('"""', "'''"), j):
                    quote, j = s[j:j + 3], j + 3
                    continue
                c = s[j]
                if c in "\"'":
                    quote = c
                elif c in "[{":
                    depth += 1
                elif c in "]}":
                    depth -= 1
                elif c == "#":
                    break
                j += 1
            elif s.startswith(quote, j):
                j += len(quote)
                quote = None
            else:
                j += 2 if s[j] == "\\" and quote[0] == '"' else 1
        if quote in ('"', "'"):  # a one-line string cannot span lines
            quote = None
        i, col = i + 1, 0
        if depth <= 0 and quote is None:
            return i
    return i


# -- problems, collected --------------------------------------------------------------
class Problems:
    """The problems found in a spec, each at the line of the key at fault; :meth:`raise_if_any`
    raises one :class:`~lop_bench.errors.SweepSpecError` naming them all."""

    def __init__(self, source: str, lines: KeyLines) -> None:
        self.source, self.lines = source, lines
        self._found: list[tuple[int | None, str]] = []

    def add(self, path: Sequence[Any], message: str) -> None:
        """Record ``message`` about the key at ``path`` (once, however often it is found)."""
        line = self.lines.line(path)
        where = _show_path(path)
        text = f"{where}: {message}" if where and not message.startswith(where) else message
        if (line, text) not in self._found:
            self._found.append((line, text))

    def __len__(self) -> int:
        return len(self._found)

    def raise_if_any(self) -> None:
        if not self._found:
            return
        found = sorted(self._found, key=lambda p: (p[0] is None, p[0] or 0))
        shown = [f"{self.source}:{line}: {text}" if line else f"{self.source}: {text}"
                 for line, text in found]
        if len(shown) == 1:
            raise SweepSpecError(shown[0], found)
        raise SweepSpecError(
            f"{self.source} has {len(shown)} problems; nothing was run:\n  " + "\n  ".join(shown),
            found,
        )


def _show_path(path: Sequence[Any]) -> str:
    """``grid[1].agents.backprop.lr`` for the path ``("grid", 1, "agents", "backprop", "lr")``."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            part = p if _BARE_KEY.fullmatch(p) else f'"{p}"'
            out += f".{part}" if out else part
    return out


# -- the spec ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """One grid of a spec: every stream x tier x override setting x agent x hyperparameter
    setting, for every seed.

    ``agents`` maps an agent (a registered name or ``module:function``) to its
    hyperparameter grid (name -> values to try); ``overrides`` is the stream-config grid
    (``[set]``); ``seeds`` is None for each tier's seed set. ``where`` is the key path of
    the grid in its spec (``()`` or ``("grid", i)``), for errors.
    """

    streams: tuple[str, ...]
    agents: Mapping[str, Mapping[str, tuple[Any, ...]]]
    tiers: tuple[str, ...] = ("cpu",)
    seeds: tuple[int, ...] | None = None
    overrides: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    where: tuple[Any, ...] = ()
    paths: Mapping[str, tuple[Any, ...]] = field(default_factory=dict, compare=False)

    def path(self, key: str, *rest: Any) -> tuple[Any, ...]:
        """The key path of ``key`` (``"streams"``, ``"agents"``, ...) of this grid in its
        spec, then ``rest``: the grid's own key, or the top-level one it inherits."""
        return (*self.paths.get(key, (*self.where, key)), *rest)

    def override_settings(self) -> Iterator[dict[str, Any]]:
        """Every stream-override setting of the grid (one empty one without ``[set]``)."""
        yield from _product(self.overrides)

    def agent_settings(self, agent: str) -> Iterator[dict[str, Any]]:
        """Every hyperparameter setting of ``agent`` (its grid's product)."""
        yield from _product(self.agents[agent])


def _product(grid: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values))


@dataclass(frozen=True)
class RunSettings:
    """How a sweep's jobs run (``[run]``). Only ``diagnostics`` and ``diagnostics_every``
    enter the results' identity; the rest may change between runs of a sweep.

    Attributes:
        out: the result directory (None: ``results/<spec file name>``).
        device: torch device of every job (``cuda``: each Ray job asks for a GPU).
        checkpoint_every: a checkpoint every k tasks; :data:`AUTO`: about 50 per run where
            the stream and the agent support them; None: none.
        retries: how often a job is run again after its worker died or it raised an
            unexpected error (errors lop-bench raises on bad input are not retried).
        vectorized: run the seeds of a setting together where the agent has a
            vectorized version (many-seeds jobs).
        diagnostics, diagnostics_every: as ``lop-bench run``'s.
        cpus_per_job, gpus_per_job: the resources each Ray job asks for (GPUs default to
            1 when ``device`` is not the CPU).
    """

    out: str | None = None
    device: str = "cpu"
    checkpoint_every: int | str | None = AUTO
    retries: int = DEFAULT_RETRIES
    vectorized: bool = True
    diagnostics: bool = True
    diagnostics_every: int = 1
    cpus_per_job: float = 1.0
    gpus_per_job: float | None = None

    @property
    def gpus(self) -> float:
        """GPUs per job: ``gpus_per_job``, else 1 on an accelerator and 0 on the CPU."""
        if self.gpus_per_job is not None:
            return self.gpus_per_job
        return 0.0 if str(self.device).split(":")[0] == "cpu" else 1.0


@dataclass(frozen=True)
class SweepSpec:
    """A whole sweep: its grids and run settings, with where its keys are written.

    Build one from a file or a dict with :func:`load_spec`, or directly (``reproduce``
    does: one grid of the reference agents with their presets).
    """

    grids: tuple[Grid, ...]
    run: RunSettings = RunSettings()
    source: str = "<spec>"
    lines: KeyLines = field(default_factory=KeyLines, compare=False, repr=False)
    name: str = "sweep"

    def problems(self) -> Problems:
        """An empty collector of this spec's problems (it knows the spec's lines)."""
        return Problems(self.source, self.lines)


def load_spec(spec: str | os.PathLike[str] | Mapping[str, Any]) -> SweepSpec:
    """Read a spec from a TOML file (or a dict of the same layout) and check its form:
    known keys, types, non-empty grids, seeds, the ``[run]`` settings.

    Raises :class:`~lop_bench.errors.SweepSpecError` naming every problem with the file
    and line. Whether the streams, tiers, agents and values exist is checked when the
    sweep is planned (:func:`lop_bench.sweeps.plan.expand`), still before any job starts.
    """
    read, problems = read_spec(spec)
    problems.raise_if_any()
    return read


def read_spec(spec: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[SweepSpec, Problems]:
    """:func:`load_spec` that returns the problems of form found instead of raising them,
    with what could be read (a grid with a bad key keeps its other keys), so that
    :func:`lop_bench.sweeps.plan.expand` can add the problems it finds to them and all are
    reported at once. A file that cannot be read, or is not TOML, raises at once."""
    tomllib = _tomllib()

    if isinstance(spec, Mapping):
        data, source, lines, name = dict(spec), "<spec>", KeyLines(), "sweep"
    else:
        path = Path(spec)
        if path.is_dir() or not path.exists():
            what = "a directory" if path.is_dir() else "not found"
            raise SweepSpecError(f"{path}: {what}; give a sweep spec file, e.g. sweep.toml "
                                 "(lop-bench sweep --help shows one).")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SweepSpecError(f"{path}: cannot read it ({exc}).") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
            line = f":{found.group(1)}" if found else ""
            raise SweepSpecError(
                f"{path}{line}: not valid TOML ({exc}). A spec looks like the example in "
                "lop-bench sweep --help.", [(int(found.group(1)) if found else None, str(exc))]
            ) from None
        source, lines, name = str(path), KeyLines(text), path.stem
    problems = Problems(source, lines)
    grids, run = _read(data, problems)
    return SweepSpec(tuple(grids), run, source, lines, name), problems


def _read(data: dict[str, Any], problems: Problems) -> tuple[list[Grid], RunSettings]:
    """The grids and run settings of a spec's data; problems go to ``problems``."""
    _unknown_keys(data, _TOP_KEYS, (), problems, "top-level key")
    run = _read_run(data.get("run", {}), problems)
    shared = {k: data[k] for k in _GRID_KEYS if k in data}
    if "grid" in data:
        tables = data["grid"]
        if not isinstance(tables, list) or not tables or \
                not all(isinstance(t, dict) for t in tables):
            problems.add(("grid",), "write each grid as a [[grid]] table.")
            return [], run
        grids = []
        for i, table in enumerate(tables):
            _unknown_keys(table, _GRID_KEYS, ("grid", i), problems, "grid key")
            # A key of the grid's own, else the top level's, located where it is written.
            merged = {k: (table[k], ("grid", i, k)) if k in table else (shared[k], (k,))
                      for k in _GRID_KEYS if k in table or k in shared}
            grids.append(_read_grid(merged, ("grid", i), problems))
        return [g for g in grids if g is not None], run
    grid = _read_grid({k: (v, (k,)) for k, v in shared.items()}, (), problems)
    return ([grid] if grid is not None else []), run


def _unknown_keys(table: Mapping[str, Any], known: Iterable[str], where: tuple[Any, ...],
                  problems: Problems, what: str) -> None:
    known = tuple(known)
    for key in table:
        if key not in known:
            problems.add((*where, key), f"unknown {what} {key!r}.{did_you_mean(key, known)} "
                                        f"Known: {', '.join(known)}.")


def _names(value: Any, path: tuple[Any, ...], what: str, problems: Problems) -> tuple[str, ...]:
    """A list of names (a lone string is a list of one); duplicates and empties refused."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        problems.add(path, f"give a list of {what}, e.g. {path[-1]} = [\"...\"]; got {value!r}.")
        return ()
    if not items:
        problems.add(path, f"an empty list: name at least one of the {what}.")
        return ()
    if len(set(items)) != len(items):
        dup = sorted({v for v in items if items.count(v) > 1})
        problems.add(path, f"{', '.join(map(repr, dup))} listed twice.")
    return tuple(dict.fromkeys(items))


def _values(value: Any, path: tuple[Any, ...], problems: Problems) -> tuple[Any, ...]:
    """The values of one grid key: a list, or a lone value as a list of one."""
    if isinstance(value, dict):
        problems.add(path, "a table is not a value: give a value or a list of values to try.")
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        problems.add(path, "an empty grid: list at least one value to try (a lone value "
                           "keeps it fixed).")
        return ()
    for i, v in enumerate(items):
        if v in items[:i]:
            problems.add(path, f"the value {v!r} is listed twice (each setting runs once).")
    return tuple(items)


def _read_grid(keys: Mapping[str, tuple[Any, tuple[Any, ...]]], where: tuple[Any, ...],
               problems: Problems) -> Grid | None:
    """A grid from its keys (value, key path), its bad keys left out (their problems
    recorded); None without streams or agents."""
    if "streams" not in keys:
        problems.add(where or ("streams",), "no streams: add streams = [\"lop/...\"] "
                                            "(lop-bench list names them).")
    if "agents" not in keys:
        problems.add(where or ("agents",), "no agents: add an [agents.NAME] table per agent "
                                           "(an empty one runs the agent's preset).")
    streams = _names(*keys["streams"], "streams", problems) if "streams" in keys else ()
    tiers = _names(*keys["tiers"], "tiers", problems) if "tiers" in keys else ("cpu",)
    seeds = None
    if "seeds" in keys:
        value, path = keys["seeds"]
        try:
            seeds = tuple(_seeds_value(value))
        except LopBenchError as exc:
            problems.add(path, str(exc))
    overrides: dict[str, tuple[Any, ...]] = {}
    if "set" in keys:
        table, path = keys["set"]
        if not isinstance(table, dict):
            problems.add(path, "[set] is a table of stream config fields, e.g. num_tasks = [50].")
        else:
            overrides = {k: _values(v, (*path, k), problems) for k, v in table.items()}
    agents: dict[str, dict[str, tuple[Any, ...]]] = {}
    if "agents" in keys:
        table, path = keys["agents"]
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            problems.add(path, "give each agent as a table: [agents.backprop] with its "
                               "hyperparameter grids (empty: the preset).")
        elif not table:
            problems.add(path, "no agents: add an [agents.NAME] table per agent.")
        else:
            agents = {name: {k: _values(v, (*path, name, k), problems) for k, v in hps.items()}
                      for name, hps in table.items()}
    if not streams or not agents:
        return None
    paths = {k: path for k, (_, path) in keys.items()}
    return Grid(streams, agents, tiers, seeds, overrides, where, paths)


def _read_run(table: Any, problems: Problems) -> RunSettings:
    """The ``[run]`` settings, each checked; defaults where absent or wrong."""
    if not isinstance(table, dict):
        problems.add(("run",), "[run] is a table: out, device, checkpoint_every, retries, ...")
        return RunSettings()
    _unknown_keys(table, _RUN_KEYS, ("run",), problems, "[run] key")
    values: dict[str, Any] = {}

    def check(key: str, ok: bool, expected: str) -> None:
        if key in table:
            if ok:
                values[key] = table[key]
            else:
                problems.add(("run", key), f"must be {expected}, got {table[key]!r}.")

    v = table.get
    check("out", isinstance(v("out"), str) and bool(v("out")), "a directory path")
    check("device", isinstance(v("device"), str) and bool(v("device")), "a torch device name")
    every = v("checkpoint_every")
    check("checkpoint_every", every is False or every == AUTO or _is_int(every, 1),
          f"a number of tasks >= 1, {AUTO!r}, or false (no checkpoints)")
    if values.get("checkpoint_every") is False:
        values["checkpoint_every"] = None
    check("retries", _is_int(v("retries"), 0), "an integer >= 0")
    check("vectorized", isinstance(v("vectorized"), bool), "true or false")
    check("diagnostics", isinstance(v("diagnostics"), bool), "true or false")
    check("diagnostics_every", _is_int(v("diagnostics_every"), 1), "an integer >= 1")
    check("cpus_per_job", _is_number(v("cpus_per_job"), positive=True), "a number > 0")
    check("gpus_per_job", _is_number(v("gpus_per_job"), positive=False), "a number >= 0")
    return RunSettings(**values)


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any, *, positive: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > 0 if positive else value >= 0
