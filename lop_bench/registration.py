"""Registers every lop-bench stream with gymnasium and makes envs by id.

Streams are registered under the ``lop`` namespace. Modules are imported lazily (the
``entry_point`` strings), so ``import lop_bench`` stays cheap and never imports mujoco,
datasets or ray.
"""

from __future__ import annotations

from typing import Any

import gymnasium

from lop_bench.errors import UnknownEnvError, did_you_mean

__all__ = ["STREAMS", "register_envs", "make", "list_envs", "env_class"]

DEFAULT_TIER = "cpu"

# id -> entry point. Only streams that exist are listed; see README for the roadmap.
STREAMS: dict[str, str] = {
    "lop/SlowlyChangingRegression-v0": "lop_bench.envs.regression:SlowlyChangingRegressionEnv",
}

# The paper's reference agents for each stream (names in the ``lop_bench.agents``
# entry-point group), in the order ``reproduce`` runs and reports them.
REFERENCE_AGENTS: dict[str, tuple[str, ...]] = {
    "lop/SlowlyChangingRegression-v0": (
        "linear",
        "backprop",
        "l2",
        "shrink_perturb",
        "continual_backprop",
    ),
}


def register_envs() -> None:
    """Register every stream with gymnasium (idempotent)."""
    for env_id, entry_point in STREAMS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point=entry_point,
                kwargs={"tier": DEFAULT_TIER},
                max_episode_steps=None,
            )


def list_envs() -> list[str]:
    """Ids of every registered lop-bench stream."""
    return sorted(STREAMS)


def _check_id(env_id: str) -> None:
    if env_id not in STREAMS:
        raise UnknownEnvError(
            f"unknown env id {env_id!r}.{did_you_mean(env_id, STREAMS)} "
            f"lop-bench streams: {', '.join(sorted(STREAMS))} (lop-bench list)."
        )


def env_class(env_id: str) -> type:
    """The env class of a stream id (imports its module)."""
    _check_id(env_id)
    module_name, _, attr = STREAMS[env_id].partition(":")
    import importlib

    return getattr(importlib.import_module(module_name), attr)


def make(env_id: str, tier: str = DEFAULT_TIER, **kwargs: Any) -> gymnasium.Env:
    """Make a stream: ``make("lop/SlowlyChangingRegression-v0", tier="cpu")``.

    Any tier field may be overridden (``num_tasks=50``), which makes the stream *custom*:
    its results are recorded as such and the leaderboard does not rank them. Equivalent
    to ``gymnasium.make(env_id, tier=tier, **kwargs)``, with a clear error for an unknown
    id (listing close matches).
    """
    _check_id(env_id)
    register_envs()
    return gymnasium.make(env_id, tier=tier, **kwargs)
