"""A result's identity: which run a result file (or a checkpoint) holds.

Two runs are the same run when they agree on every field of :data:`IDENTITY_FIELDS`:

- ``env_id``, ``tier``: the stream and its tier;
- ``config``: the tier's config after overrides (``--set``), as the result records it; a
  tier and its config say which fields were overridden;
- ``agent``, ``preset``, ``hparams``: the agent's name, its preset and the final
  hyperparameters (the preset's values with ``--hp`` applied), as the result records them;
- ``seed``;
- ``diagnostics_every``: the diagnostics cadence in tasks, ``None`` when diagnostics are off.

Devices, data paths, worker counts and checkpoint cadence are not part of it: a run may be
resumed on another device, from another copy of the data, with other ``--jobs``.

A result's file name carries :func:`settings_hash`, a short hash of everything but the seed
(which the name spells out), so runs with other settings never write to the same file::

    SlowlyChangingRegression-v0__cpu__backprop__1f0c2a9b__seed0.json

and a file found under that name is compared field by field (:func:`check_identity`) before
it is skipped (``--resume``) or replaced, so a hash collision or an edited file is refused,
never mistaken for this run. This module is a leaf: it reads records, never files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lop_bench.config import canonical_json
from lop_bench.errors import IdentityMismatchError

__all__ = [
    "IDENTITY_FIELDS",
    "HASH_LENGTH",
    "agent_record",
    "run_identity",
    "result_identity",
    "settings_hash",
    "result_filename",
    "result_path",
    "identity_differences",
    "check_identity",
]

IDENTITY_FIELDS: tuple[str, ...] = (
    "env_id", "tier", "config", "agent", "preset", "hparams", "seed", "diagnostics_every",
)
"""The fields of a run's identity, in the order differences are reported."""

HASH_LENGTH = 8
"""Hex digits of :func:`settings_hash` in file names (32 bits: a collision is refused by
:func:`check_identity`, never taken for the same run)."""

_MISSING = "(missing)"


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from a result file (JSON types; other objects as strings)."""
    return json.loads(json.dumps(obj, default=str))


def agent_record(agent: Any, agent_kwargs: Mapping[str, Any] | None) -> tuple[str | None, Any]:
    """``(preset, hparams)`` of a built agent as a result records them: its ``preset`` and
    ``hparams`` attributes, else no preset and the overrides it was built with."""
    hparams = getattr(agent, "hparams", None) or dict(agent_kwargs or {})
    return getattr(agent, "preset", None), _jsonable(hparams)


def run_identity(env: Any, agent_name: str, agent: Any, agent_kwargs: Mapping[str, Any] | None,
                 *, seed: int, diagnostics: bool, diagnostics_every: int) -> dict[str, Any]:
    """The identity of the run of ``agent`` (built, named ``agent_name``) on ``env`` (a stream
    or a vector env: anything with ``describe()``) for ``seed``."""
    stream = env.describe()
    preset, hparams = agent_record(agent, agent_kwargs)
    return {
        "env_id": stream["env_id"],
        "tier": stream["tier"],
        "config": stream["config"],
        "agent": agent_name,
        "preset": preset,
        "hparams": hparams,
        "seed": int(seed),
        "diagnostics_every": int(diagnostics_every) if diagnostics else None,
    }


def result_identity(data: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of the run a result document holds.

    The diagnostics setting is ``run_info["diagnostics_every"]`` (written by the runner); a
    file without it (written by lop-bench 0.1) is read from its diagnostics table.
    """
    agent = data.get("agent") or {}
    run_info = data.get("run_info") or {}
    if "diagnostics_every" in run_info:
        every = run_info["diagnostics_every"]
    else:
        diagnostics = data.get("diagnostics")
        every = diagnostics.get("every") if isinstance(diagnostics, Mapping) else None
    return {
        "env_id": data.get("env_id"),
        "tier": data.get("tier"),
        "config": data.get("config"),
        "agent": agent.get("name"),
        "preset": agent.get("preset"),
        "hparams": agent.get("hparams"),
        "seed": data.get("seed"),
        "diagnostics_every": every,
    }


def settings_hash(identity: Mapping[str, Any]) -> str:
    """A short hash (:data:`HASH_LENGTH` hex digits) of the identity without its seed: the
    same for every seed of one setting, different for any other setting."""
    settings = [identity.get(k) for k in IDENTITY_FIELDS if k != "seed"]
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:HASH_LENGTH]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._") or "agent"


def result_filename(identity: Mapping[str, Any], custom: bool = False) -> str:
    """``<Stream-vN>__<tier, or custom>__<agent>__<settings hash>__seed<k>.json``."""
    stream = _slug(str(identity["env_id"]).split("/", 1)[-1])
    tag = "custom" if custom else _slug(str(identity["tier"]))
    return (f"{stream}__{tag}__{_slug(str(identity['agent']))[:48]}__"
            f"{settings_hash(identity)}__seed{identity['seed']}.json")


def result_path(out: str | os.PathLike[str], identity: Mapping[str, Any],
                custom: bool = False) -> Path:
    """Where the result of the run ``identity`` goes: ``out`` itself when it names a
    ``.json`` file (and is not a directory), else :func:`result_filename` inside ``out``."""
    out = Path(out)
    if out.suffix == ".json" and not out.is_dir():
        return out
    return out / result_filename(identity, custom)


def _show(value: Any) -> str:
    return value if value is _MISSING else json.dumps(value, sort_keys=True, default=str)


def identity_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"field: A there, B here"`` for each field on which two identities differ; within
    ``config`` and ``hparams``, one line per differing key (``"hparams.lr: ..."``)."""
    diffs = []
    for field in IDENTITY_FIELDS:
        a, b = saved.get(field, _MISSING), current.get(field, _MISSING)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                x, y = a.get(key, _MISSING), b.get(key, _MISSING)
                if x != y:
                    diffs.append(f"{field}.{key}: {_show(x)} there, {_show(y)} here")
        else:
            diffs.append(f"{field}: {_show(a)} there, {_show(b)} here")
    return diffs


def check_identity(path: str | os.PathLike[str], saved: Mapping[str, Any],
                   current: Mapping[str, Any], *, what: str = "result") -> None:
    """Raise :class:`~lop_bench.errors.IdentityMismatchError` unless the ``what`` (a
    ``"result"`` or a ``"checkpoint"``) at ``path``, of identity ``saved``, is of this run."""
    diffs = identity_differences(saved, current)
    if not diffs:
        return
    if what == "checkpoint":
        fix = ("Resume with the same stream, tier, overrides, agent, preset, hyperparameters, "
               f"seed and diagnostics settings, or delete {path} to start this run over.")
    else:
        fix = (f"Write this run elsewhere (another --out / out=), or delete {path} if it is "
               "not needed.")
    raise IdentityMismatchError(
        f"{path} is the {what} of another run ({'; '.join(diffs)}). {fix}"
    )
