"""Result files: one JSON per (env, tier, agent, seed), a published schema, atomic writes.

The schema is ``lop_bench/schemas/result.schema.json`` (:func:`schema`). :func:`load`
reads only regular files of at most :data:`MAX_RESULT_BYTES` (never a symlink, FIFO or
device), parses them strictly (no ``NaN`` / ``Infinity`` tokens, no number that overflows a
64-bit float) and :func:`validate` checks them against the schema and for self-consistency
(the summary recomputed from the per-task curve, the curve's length, scores within
:data:`MAX_SCORE`). :func:`save` writes atomically (temporary file + rename), so a failed
write never leaves a half-written file behind, with the usual permissions (``0666`` less
the umask).

Numbers are finite everywhere. A diverged measurement is not a number: the runner records a
task's diagnostics as ``null`` when the network's activations or weights are not finite,
and per-task scores are always finite (the streams refuse a non-finite prediction).

A result may carry a ``plasticity`` block, attached after the run
(:func:`lop_bench.report.attach_plasticity`): the normalized plasticity score against the
stream's fresh reference agent. It is not part of the result's identity and, like
``run_info``, not of its deterministic part (:data:`NONDETERMINISTIC_FIELDS`).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import stat
import sys
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from lop_bench.errors import InvalidResultError

__all__ = [
    "SCHEMA_VERSION",
    "NONDETERMINISTIC_FIELDS",
    "MAX_RESULT_BYTES",
    "MAX_SCORE",
    "Result",
    "schema",
    "validate",
    "read_json",
    "check_source",
    "load",
    "load_many",
    "save",
    "atomic_write_text",
    "deterministic_part",
    "result_filename",
]

SCHEMA_VERSION = 1
SUMMARY_RTOL = 1e-9

MAX_RESULT_BYTES = 8 * 1024 * 1024
"""The size cap of a result file: 8 MiB (8,388,608 bytes).

The largest legitimate result is a paper-tier Continual ImageNet run: 5,000 tasks with
diagnostics at every task (8 measures) is about 1.0 MB as :func:`save` writes it, 1.9 MB
with a second network's measures (as the Ant reports ``value_*``). The cap leaves four
times that; a file of the cap validates in a few seconds, and nothing larger is read."""

MAX_SCORE = 1e150
"""The largest magnitude of a per-task score or summary.

No score of a run that has not diverged comes near it (accuracies, squared errors of
bounded targets, returns), and sums and squares of millions of scores of this size stay
finite, so every statistic over tasks and seeds (means, Student-t intervals, bootstraps,
paired gaps, binned curves) is finite too: a curve of ``1e308`` is refused here, not by an
overflow in ``report`` or on the leaderboard."""

_TEXT_FORMAT = "lop-bench-text"  # the schema's format of text shown on the pages


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The published JSON schema of result files."""
    text = resources.files("lop_bench").joinpath("schemas/result.schema.json").read_text()
    return json.loads(text)


NONDETERMINISTIC_FIELDS: tuple[str, ...] = tuple(schema()["x-nondeterministic"])


class Result:
    """A run's result: a validated JSON document with convenient accessors."""

    def __init__(self, data: dict[str, Any], *, check: bool = True) -> None:
        if check:
            validate(data)
        self.data = data

    # accessors for the fields users reach for most
    env_id = property(lambda self: self.data["env_id"])
    tier = property(lambda self: self.data["tier"])
    seed = property(lambda self: self.data["seed"])
    per_task = property(lambda self: self.data["per_task"])
    summary = property(lambda self: self.data["summary"])
    custom = property(lambda self: self.data["custom"])
    agent_name = property(lambda self: self.data["agent"]["name"])
    diagnostics = property(lambda self: self.data["diagnostics"])
    plasticity = property(lambda self: self.data.get("plasticity"))
    """The attached plasticity block (``None`` when there is none): ``reference`` (the fresh
    result's agent, settings hash and file name), ``per_task`` and ``score``."""

    def to_json(self) -> str:
        """The result as JSON text (sorted keys, indented, no NaN)."""
        return json.dumps(self.data, indent=1, sort_keys=True, allow_nan=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path`` (a file, or a directory to put the default name in)."""
        return save(self, path)

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"Result({self.env_id} tier={self.tier} agent={self.agent_name} seed={self.seed} "
            f"initial={s['initial']:.4g} final={s['final']:.4g} drop={s['drop']:.4g})"
        )


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())
    checker.checks(_TEXT_FORMAT, raises=ValueError)(_check_text)
    cls = jsonschema.validators.validator_for(schema())
    return cls(schema(), format_checker=checker)


def _check_text(text: object) -> bool:
    """The schema's ``lop-bench-text`` format: a string without Unicode control or format
    characters (categories Cc, Cf; a ValueError names the first). Other types pass."""
    if isinstance(text, str):
        for i, ch in enumerate(text):
            category = unicodedata.category(ch)
            if category in ("Cc", "Cf"):
                kind = "control" if category == "Cc" else "format"
                raise ValueError(
                    f"holds the {kind} character U+{ord(ch):04X} "
                    f"({unicodedata.name(ch, repr(ch))}) at position {i}: text shown on the "
                    "leaderboard may not hold control or format characters (Unicode Cc, Cf)"
                )
    return True


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _schema_problem(error: Any) -> str:
    """What a schema error says, with the schema's hint (``x-hint``) where it has one."""
    hint = error.schema.get("x-hint") if isinstance(error.schema, dict) else None
    if error.validator == "format" and error.cause is not None:
        return f"{_clip(repr(error.instance))} {error.cause}"
    if hint:
        return f"{_clip(repr(error.instance))} is not in the expected form: {hint}"
    return _clip(error.message, 300)


def _non_finite(data: Any) -> tuple[str, Any] | None:
    """The path and value of a number that is not a finite 64-bit float (NaN, inf, or an int
    beyond the float range), anywhere in ``data``; None when there is none."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        path, x = stack.pop()
        if isinstance(x, dict):
            stack.extend(((*path, k), v) for k, v in x.items())
        elif isinstance(x, (list, tuple)):
            stack.extend(((*path, i), v) for i, v in enumerate(x))
        elif (isinstance(x, float) and not math.isfinite(x)) or (
            isinstance(x, int) and not isinstance(x, bool) and abs(x) > sys.float_info.max
        ):
            return "/".join(str(p) for p in path) or "(top level)", x
    return None


def validate(data: Any, source: str = "result") -> None:
    """Raise :class:`InvalidResultError` unless ``data`` follows the schema and is consistent.

    Beyond the schema: every number is finite (no NaN or inf, in Python data either), every
    per-task score lies within :data:`MAX_SCORE`, ``summary.num_tasks`` is the curve's
    length and the summary is the one the curve gives.
    """
    if not isinstance(data, dict):
        raise InvalidResultError(f"{source}: a result is a JSON object, got {type(data).__name__}.")
    bad = _non_finite(data)
    if bad is not None:
        where, value = bad
        raise InvalidResultError(
            f"{source}: {where} is {_clip(repr(value))}: every number in a result must be a "
            "finite 64-bit float (a diverged diagnostic is recorded as null)."
        )
    try:
        errors = sorted(_validator().iter_errors(data),
                        key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        raise InvalidResultError(f"{source}: nested too deeply to be a result.") from None
    if errors:
        raise InvalidResultError(
            f"{source}: does not follow the result schema at "
            f"{'/'.join(str(p) for p in errors[0].absolute_path) or '(top level)'}: "
            f"{_schema_problem(errors[0])}"
            + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else "")
        )
    curve = data["per_task"]
    worst = max(curve, key=abs)
    if abs(worst) > MAX_SCORE:
        raise InvalidResultError(
            f"{source}: per_task holds {worst!r}, beyond the largest score a result may hold "
            f"(magnitude {MAX_SCORE:g}): a diverged or forged run; statistics over it would "
            "overflow."
        )
    if data["summary"]["num_tasks"] != len(curve):
        raise InvalidResultError(
            f"{source}: summary.num_tasks is {data['summary']['num_tasks']} but the per-task "
            f"curve has {len(curve)} entries (truncated or edited file)."
        )
    from lop_bench.metrics import summarize

    block = data.get("plasticity")
    if block is not None:
        scores = block["per_task"]
        if len(scores) != len(curve):
            raise InvalidResultError(
                f"{source}: plasticity.per_task has {len(scores)} entries but the per-task "
                f"curve has {len(curve)} (a block of another result: run lop-bench report "
                "--record-plasticity again)."
            )
        mean = math.fsum(scores) / len(scores)
        if not math.isclose(block["score"], mean, rel_tol=SUMMARY_RTOL, abs_tol=1e-12):
            raise InvalidResultError(
                f"{source}: plasticity.score is {block['score']!r} but the mean of "
                f"plasticity.per_task is {mean!r} (edited or corrupt file)."
            )
    expected = summarize(curve, data["higher_is_better"])
    for key in ("initial", "final", "drop", "mean"):
        got, want = data["summary"][key], expected[key]
        if not math.isclose(got, want, rel_tol=SUMMARY_RTOL, abs_tol=1e-12):
            raise InvalidResultError(
                f"{source}: summary.{key} is {got!r} but the per-task curve gives {want!r} "
                "(the summary and the curve disagree: edited or corrupt file)."
            )


# ---------------------------------------------------------------------------------------
# reading: regular files under the size cap, strict JSON


class _NonFiniteNumber(ValueError):
    """A JSON number that is not a finite 64-bit float (raised while parsing)."""


def _no_constant(name: str) -> Any:
    raise _NonFiniteNumber(f"{name}, which is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFiniteNumber(f"the number {_clip(text)}, which overflows a 64-bit float")
    return value


def _float_sized_int(text: str) -> int:
    value = int(text)
    if abs(value) > sys.float_info.max:
        raise _NonFiniteNumber(f"the integer {_clip(text)}, which overflows a 64-bit float")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # other readers might take the first one, json the last
            raise ValueError(f"the key {_clip(repr(key))} appears twice in one object")
        out[key] = value
    return out


def _parse(text: str, source: str) -> Any:
    """Strict JSON: no NaN / Infinity, no overflowing number, no repeated key."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float,
                          parse_int=_float_sized_int, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InvalidResultError(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "the file is corrupt or truncated."
        ) from None
    except _NonFiniteNumber as exc:
        raise InvalidResultError(
            f"{source}: holds {exc}; every number in a result must be a finite 64-bit float "
            "(a diverged diagnostic is recorded as null)."
        ) from None
    except ValueError as exc:  # a repeated key, an integer of too many digits
        raise InvalidResultError(f"{source}: not a valid result file: {exc}.") from None
    except RecursionError:
        raise InvalidResultError(f"{source}: nested too deeply to be a result file.") from None


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _not_regular(path: Path, mode: int) -> InvalidResultError:
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return InvalidResultError(
            f"{path}: is a symbolic link (to {target}); result files must be regular files: "
            "pass the file itself, or copy it here."
        )
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return InvalidResultError(f"{path}: is {kind}; result files must be regular files.")


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. Checked with ``lstat`` before
    it is opened, and opened without following a symlink or blocking on a FIFO."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise InvalidResultError(f"{path}: no such result file.") from None
    except OSError as exc:
        raise InvalidResultError(f"{path}: cannot read the result file: {exc.strerror}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    too_big = InvalidResultError(
        f"{path}: is over the {limit:,}-byte cap of a result file (the largest real result, "
        "a 5,000-task run with diagnostics, is about 1 MB); it is not read."
    )
    if st.st_size > limit:
        raise too_big
    flags = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:  # e.g. replaced by a symlink since the lstat (ELOOP)
        raise InvalidResultError(f"{path}: cannot read the result file: {exc.strerror}.") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        try:
            raw = f.read(limit + 1)
        except OSError as exc:
            raise InvalidResultError(
                f"{path}: cannot read the result file: {exc.strerror}.") from None
    if len(raw) > limit:  # it grew since the lstat
        raise too_big
    return raw


def read_json(path: str | os.PathLike) -> Any:
    """A result file's JSON, not validated: what :func:`load` parses, with its file rules.

    Only a regular file is read (a symlink, FIFO, device or directory is refused before it
    is opened), of at most :data:`MAX_RESULT_BYTES`, as UTF-8, with ``NaN``, ``Infinity``,
    numbers that overflow a 64-bit float and repeated keys refused.

    Raises:
        InvalidResultError: the file breaks one of these rules, or cannot be read.
    """
    path = Path(path)
    raw = _read_regular(path, MAX_RESULT_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidResultError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    return _parse(text, str(path))


def check_source(source: object) -> None:
    """Raise :class:`InvalidResultError` unless ``source`` is a valid ``agent.source``: a URL
    with a commit, or a package with its version (the schema's ``$defs/source``)."""
    s = schema()
    errors = list(_validator().evolve(schema={"$defs": s["$defs"], "$ref": "#/$defs/source",
                                              "type": "string"}).iter_errors(source))
    if errors:
        raise InvalidResultError(f"agent.source {_schema_problem(errors[0])}")


def load(path: str | os.PathLike) -> Result:
    """Read and validate a result file; :class:`InvalidResultError` names what is wrong.

    The file rules are :func:`read_json`'s, the checks :func:`validate`'s.
    """
    data = read_json(path)
    validate(data, source=str(path))
    return Result(data, check=False)


def load_many(paths: Iterable[str | os.PathLike]) -> list[Result]:
    """Load result files; directories are searched for ``*.json`` (sorted)."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files = sorted(p.rglob("*.json"))
            if not files:
                raise InvalidResultError(f"{p}: the directory holds no result files (*.json).")
            out.extend(load(f) for f in files)
        else:
            out.append(load(p))
    return out


# ---------------------------------------------------------------------------------------
# writing


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside ``path``, created with mode ``0666`` so that the
    umask gives it the usual permissions (``tempfile.mkstemp`` would make it ``0600``)."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    for _ in range(100):
        tmp = path.with_name(f".{path.name[:100]}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary file name for {path.name}.")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same directory +
    rename, so that readers see the old file or the new one, never a part.

    The file gets the permissions of any new file, ``0666`` less the umask.
    """
    path = Path(path)
    raw = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def result_filename(data: dict[str, Any]) -> str:
    """Default file name: ``<Stream-vN>__<tier>__<agent>__seed<k>.json``."""
    stream = data["env_id"].split("/", 1)[-1]
    agent = "".join(c if c.isalnum() or c in "-_." else "_" for c in data["agent"]["name"])
    tag = "custom" if data["custom"] else data["tier"]
    return f"{stream}__{tag}__{agent}__seed{data['seed']}.json"


def save(result: Result | dict[str, Any], path: str | os.PathLike) -> Path:
    """Validate and write a result atomically. ``path`` may be a directory."""
    data = result.data if isinstance(result, Result) else result
    validate(data)
    path = Path(path)
    if path.is_dir() or str(path).endswith(os.sep) or path.suffix != ".json":
        path = path / result_filename(data)
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def deterministic_part(data: dict[str, Any]) -> dict[str, Any]:
    """The result without the fields the schema declares non-deterministic."""
    return {k: v for k, v in data.items() if k not in NONDETERMINISTIC_FIELDS}
