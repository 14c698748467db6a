"""Typed, frozen configurations: tiers of a stream and hyperparameters of an agent.

A tier is a frozen dataclass. Fields that define the protocol are hashed into every
result (:func:`protocol_hash`); fields marked ``metadata={"protocol": False}`` (seed count,
probe sizes, cadence) are recorded but not hashed. Overriding any field with
:func:`replace_checked` validates names and values and makes the configuration *custom*
(unranked) unless the value equals the tier's own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, TypeVar

from lop_bench.errors import InvalidConfigError, did_you_mean

__all__ = [
    "replace_checked",
    "config_to_dict",
    "protocol_fields",
    "canonical_json",
    "protocol_hash",
    "check_positive",
    "check_range",
    "check_choice",
    "env_choice",
]

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """All fields of a config dataclass as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def protocol_fields(cfg: Any) -> dict[str, Any]:
    """The fields of a tier config that define the protocol (those hashed into results)."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("protocol", True):
            out[f.name] = getattr(cfg, f.name)
    return json.loads(json.dumps(out))


def canonical_json(obj: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, floats as Python's repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def protocol_hash(env_id: str, revision: int, cfg: Any, dataset_fingerprint: str | None) -> str:
    """sha256 over what defines a stream's protocol: id (with version), stream revision,
    protocol fields of the config, and the dataset's fingerprint (``None`` for synthetic data)."""
    payload = {
        "env_id": env_id,
        "stream_revision": revision,
        "protocol": protocol_fields(cfg),
        "dataset_fingerprint": dataset_fingerprint,
    }
    return "sha256:" + hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def replace_checked(cfg: C, what: str = "config", **overrides: Any) -> C:
    """``dataclasses.replace`` that names unknown fields (with close matches) and wrong types.

    Range checks live in each dataclass's ``__post_init__`` and raise
    :class:`~lop_bench.errors.InvalidConfigError` too.
    """
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for key, value in overrides.items():
        if key not in fields:
            raise InvalidConfigError(
                f"unknown {what} field {key!r}.{did_you_mean(key, fields)} "
                f"Known fields: {', '.join(sorted(fields))}."
            )
        current = getattr(cfg, key)
        overrides[key] = _coerce(key, value, current, what)
    try:
        return dataclasses.replace(cfg, **overrides)
    except InvalidConfigError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - defensive
        raise InvalidConfigError(f"invalid {what}: {exc}") from exc


def _coerce(key: str, value: Any, current: Any, what: str) -> Any:
    """Check ``value`` has the type of the field's current value (int accepted for float)."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise InvalidConfigError(f"{what} field {key!r} must be true or false, got {value!r}.")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise InvalidConfigError(f"{what} field {key!r} must be an integer, got {value!r}.")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidConfigError(f"{what} field {key!r} must be a number, got {value!r}.")
        value = float(value)
        if not math.isfinite(value):
            raise InvalidConfigError(f"{what} field {key!r} must be finite, got {value!r}.")
        return value
    if isinstance(current, str) and not isinstance(value, str):
        raise InvalidConfigError(f"{what} field {key!r} must be a string, got {value!r}.")
    if isinstance(current, tuple):
        return _coerce_sequence(key, value, current, what)
    return value


def _coerce_sequence(key: str, value: Any, current: tuple, what: str) -> tuple:
    """A list override of a tuple field, item by item against the default's items (the
    first one's type when the lengths differ, as for layer widths)."""
    example = json.dumps(list(current))
    if not isinstance(value, (list, tuple)):
        raise InvalidConfigError(
            f"{what} field {key!r} must be a list like its default {example}, got {value!r}."
        )
    if not current:
        return tuple(value)
    like = current if len(value) == len(current) else [current[0]] * len(value)
    try:
        return tuple(_coerce(f"{key}[{i}]", v, c, what) for i, (v, c) in enumerate(zip(value, like)))
    except InvalidConfigError as exc:
        raise InvalidConfigError(
            f"{exc} {key!r} must be a list like its default {example}, e.g. {key}={example}."
        ) from None


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise :class:`InvalidConfigError` unless ``value`` > 0 (or >= 0)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidConfigError(f"{name} must be {bound}, got {value!r}.")


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Raise :class:`InvalidConfigError` unless ``low <= value <= high``."""
    if not (low <= value <= high):
        raise InvalidConfigError(f"{name} must be in [{low}, {high}], got {value!r}.")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise :class:`InvalidConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise InvalidConfigError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}."
            + did_you_mean(str(value), [str(c) for c in choices])
        )


def env_choice(var: str, choices: tuple[str, ...], default: str) -> str:
    """The environment variable ``var`` (``default`` when unset or empty), or
    :class:`InvalidConfigError` naming it and its values when it is none of ``choices``."""
    import os

    value = os.environ.get(var) or default
    if value not in choices:
        raise InvalidConfigError(
            f"${var} must be one of {', '.join(choices)} (unset: {default}), got {value!r}."
            + did_you_mean(value, list(choices))
        )
    return value
