"""Result files: one JSON per (env, tier, agent, seed), a published schema, atomic writes.

The schema is ``lop_bench/schemas/result.schema.json`` (:func:`schema`). :func:`load`
validates a file against it and checks that it is self-consistent (the summary recomputed
from the per-task curve, the curve's length); :func:`save` writes atomically (temporary
file + rename), so a failed write never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from lop_bench.errors import InvalidResultError

__all__ = [
    "SCHEMA_VERSION",
    "NONDETERMINISTIC_FIELDS",
    "Result",
    "schema",
    "validate",
    "load",
    "load_many",
    "save",
    "atomic_write_text",
    "deterministic_part",
    "result_filename",
]

SCHEMA_VERSION = 1
SUMMARY_RTOL = 1e-9


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


def _validator():
    import jsonschema

    cls = jsonschema.validators.validator_for(schema())
    return cls(schema())


def validate(data: Any, source: str = "result") -> None:
    """Raise :class:`InvalidResultError` unless ``data`` follows the schema and is consistent."""
    if not isinstance(data, dict):
        raise InvalidResultError(f"{source}: a result is a JSON object, got {type(data).__name__}.")
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InvalidResultError(
            f"{source}: does not follow the result schema at {where}: {e.message}"
            + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else "")
        )
    curve = data["per_task"]
    if not all(math.isfinite(v) for v in curve):
        raise InvalidResultError(f"{source}: per_task holds a non-finite value.")
    if data["summary"]["num_tasks"] != len(curve):
        raise InvalidResultError(
            f"{source}: summary.num_tasks is {data['summary']['num_tasks']} but the per-task "
            f"curve has {len(curve)} entries (truncated or edited file)."
        )
    from lop_bench.metrics import summarize

    expected = summarize(curve, data["higher_is_better"])
    for key in ("initial", "final", "drop", "mean"):
        got, want = data["summary"][key], expected[key]
        if not math.isclose(got, want, rel_tol=SUMMARY_RTOL, abs_tol=1e-12):
            raise InvalidResultError(
                f"{source}: summary.{key} is {got!r} but the per-task curve gives {want!r} "
                "(the summary and the curve disagree: edited or corrupt file)."
            )


def load(path: str | os.PathLike) -> Result:
    """Read and validate a result file; :class:`InvalidResultError` names what is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InvalidResultError(f"{path}: no such result file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidResultError(f"{path}: cannot read the result file: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidResultError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "the file is corrupt or truncated."
        ) from None
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


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
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
