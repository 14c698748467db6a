"""The registry of streams: registers each with gymnasium, finds its declaration, makes envs.

A stream declares itself once, with the :class:`~lop_bench.streams.StreamSpec` at the end
of its module. :func:`register` adds the spec to :data:`registry` and registers its id
(namespace ``lop``) with gymnasium, so ``lop_bench.make`` and ``gymnasium.make`` both make
it. The built-in streams (:data:`BUILTIN_STREAMS`) are registered when ``lop_bench`` is
imported. Their modules import nothing heavy at import time (torch, mujoco and the
dataset libraries are imported when an env is made), so ``import lop_bench`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import gymnasium

from lop_bench.errors import (
    InvalidConfigError,
    UnknownEnvError,
    VectorizationNotSupported,
    did_you_mean,
)
from lop_bench.streams import StreamSpec

__all__ = [
    "BUILTIN_STREAMS",
    "DEFAULT_TIER",
    "registry",
    "register",
    "register_envs",
    "stream_spec",
    "list_envs",
    "env_class",
    "make",
    "make_vec",
]

DEFAULT_TIER = "cpu"

BUILTIN_STREAMS: tuple[str, ...] = (
    "lop_bench.envs.regression",
    "lop_bench.envs.permuted_mnist",
    "lop_bench.envs.ant",
    "lop_bench.envs.continual_imagenet",
    "lop_bench.envs.incremental_cifar",
)
"""The modules of the built-in streams; each ends with its declaration, ``SPEC``."""

registry: dict[str, StreamSpec] = {}
"""Stream id -> its declaration, for every registered stream (as ``gymnasium.registry``)."""

_ENV_PREFIX = "lop_bench:"


def register(spec: StreamSpec) -> StreamSpec:
    """Register a stream: its declaration under its id, and the id with gymnasium.

    A stream outside lop-bench is added this way, from its own module::

        SPEC = lop_bench.register(StreamSpec(env=MyStreamEnv, label="accuracy", ...))

    Registering the same spec again does nothing; another spec under a registered id is
    an :class:`~lop_bench.errors.InvalidConfigError` (a new version of a stream gets a
    new id, ``-v1``). Returns ``spec``.
    """
    if not isinstance(spec, StreamSpec):
        raise InvalidConfigError(f"register() takes a StreamSpec, got {type(spec).__name__}.")
    known = registry.get(spec.id)
    if known is not None and known is not spec and known != spec:
        raise InvalidConfigError(
            f"{spec.id} is already registered, as {known.entry_point}: a changed stream gets a "
            f"new version in its id (STYLE.md rule 1), not the id of another."
        )
    registry[spec.id] = spec
    _register_with_gymnasium(spec)
    return spec


def _register_with_gymnasium(spec: StreamSpec) -> None:
    if spec.id not in gymnasium.registry:
        gymnasium.register(
            id=spec.id,
            entry_point=spec.entry_point,
            vector_entry_point=spec.vector_entry_point,
            kwargs={"tier": DEFAULT_TIER},
            max_episode_steps=None,
        )


def register_envs() -> None:
    """Register every built-in stream (idempotent)."""
    for module in BUILTIN_STREAMS:
        register(importlib.import_module(module).SPEC)


def stream_spec(env_id: str) -> StreamSpec:
    """The declaration of the stream ``env_id``.

    A ``"lop_bench:"`` module prefix (as ``gymnasium.make`` accepts) is ignored.

    Raises:
        UnknownEnvError: ``env_id`` is not a registered stream (the message lists close
            matches).
    """
    key = str(env_id)
    key = key[len(_ENV_PREFIX):] if key.startswith(_ENV_PREFIX) else key
    try:
        return registry[key]
    except KeyError:
        raise UnknownEnvError(
            f"unknown env id {env_id!r}.{did_you_mean(key, registry)} "
            f"lop-bench streams: {', '.join(sorted(registry))} (lop-bench list)."
        ) from None


def list_envs() -> list[str]:
    """Ids of every registered lop-bench stream."""
    return sorted(registry)


def env_class(env_id: str) -> type:
    """The env class of a stream id."""
    return stream_spec(env_id).env


def make(env_id: str, tier: str = DEFAULT_TIER, **kwargs: Any) -> gymnasium.Env:
    """Make a stream: ``make("lop/SlowlyChangingRegression-v0", tier="cpu")``.

    Any tier field may be overridden (``num_tasks=50``), which makes the stream *custom*:
    its results are recorded as such and the leaderboard does not rank them. Equivalent
    to ``gymnasium.make(env_id, tier=tier, **kwargs)``, with a clear error for an unknown
    id (listing close matches).
    """
    spec = stream_spec(env_id)
    _register_with_gymnasium(spec)
    return gymnasium.make(spec.id, tier=tier, **kwargs)


def make_vec(
    env_id: str,
    num_envs: int | None = None,
    tier: str = DEFAULT_TIER,
    seeds: Sequence[int] | None = None,
    **kwargs: Any,
) -> gymnasium.vector.VectorEnv:
    """N seeds of one stream as a gymnasium ``VectorEnv``, generated with batched operations.

    Sub-env ``i`` equals ``make(env_id, tier=tier).reset(seed=seeds[i])``. ``seeds``
    defaults to ``0 .. num_envs - 1``; ``num_envs`` defaults to ``len(seeds)``. Same as
    ``gymnasium.make_vec(env_id, num_envs, vectorization_mode="vector_entry_point", ...)``.

    >>> envs = lop_bench.make_vec("lop/SlowlyChangingRegression-v0", num_envs=100, tier="cpu")
    """
    spec = stream_spec(env_id)
    if spec.vector_env is None:
        vectorized = sorted(s.id for s in registry.values() if s.vector_env is not None)
        raise VectorizationNotSupported(
            f"{spec.id} has no vectorized version yet; streams with one: "
            f"{', '.join(vectorized)}. Run its seeds as separate processes instead."
        )
    if num_envs is None:
        if seeds is None:
            raise InvalidConfigError("make_vec needs num_envs or seeds.")
        num_envs = len(seeds)
    _register_with_gymnasium(spec)
    extra = {} if seeds is None else {"seeds": tuple(seeds)}
    return gymnasium.make_vec(
        spec.id, num_envs=num_envs, vectorization_mode="vector_entry_point", tier=tier,
        **extra, **kwargs,
    )
