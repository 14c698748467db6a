"""Registers every lop-bench stream with gymnasium and makes envs by id.

Streams are registered under the ``lop`` namespace. Modules are imported lazily (the
``entry_point`` strings), so ``import lop_bench`` stays cheap and never imports mujoco,
datasets or ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium

from lop_bench.errors import (
    InvalidConfigError,
    UnknownEnvError,
    VectorizationNotSupported,
    did_you_mean,
)

__all__ = ["STREAMS", "VECTOR_STREAMS", "register_envs", "make", "make_vec", "list_envs", "env_class"]

DEFAULT_TIER = "cpu"

# id -> entry point. Only streams that exist are listed; see README for the roadmap.
STREAMS: dict[str, str] = {
    "lop/SlowlyChangingRegression-v0": "lop_bench.envs.regression:SlowlyChangingRegressionEnv",
    "lop/PermutedMNIST-v0": "lop_bench.envs.permuted_mnist:PermutedMNISTEnv",
    "lop/ChangingFrictionAnt-v0": "lop_bench.envs.ant:ChangingFrictionAntEnv",
    "lop/ContinualImageNet-v0": "lop_bench.envs.continual_imagenet:ContinualImageNetEnv",
    "lop/IncrementalCIFAR100-v0": "lop_bench.envs.incremental_cifar:IncrementalCIFAR100Env",
}

# id -> vector entry point: N seeds generated together (``make_vec``).
VECTOR_STREAMS: dict[str, str] = {
    "lop/SlowlyChangingRegression-v0": "lop_bench.envs.regression:SlowlyChangingRegressionVectorEnv",
    "lop/PermutedMNIST-v0": "lop_bench.envs.permuted_mnist:PermutedMNISTVectorEnv",
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
    "lop/PermutedMNIST-v0": ("linear", "backprop", "l2", "shrink_perturb", "continual_backprop"),
    # The paper's Ant rows that fit the cpu tier's time: standard PPO, L2, continual backprop
    # (ppo_proper_adam and ppo_shrink_perturb are registered too: --agents to add them).
    "lop/ChangingFrictionAnt-v0": ("ppo", "ppo_l2", "ppo_cbp"),
    "lop/ContinualImageNet-v0": ("backprop", "l2", "shrink_perturb", "continual_backprop"),
    "lop/IncrementalCIFAR100-v0": (
        "backprop", "shrink_perturb", "continual_backprop", "head_reset", "from_scratch",
    ),
}


def register_envs() -> None:
    """Register every stream with gymnasium (idempotent)."""
    for env_id, entry_point in STREAMS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point=entry_point,
                vector_entry_point=VECTOR_STREAMS.get(env_id),
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
    _check_id(env_id)
    if env_id not in VECTOR_STREAMS:
        raise VectorizationNotSupported(
            f"{env_id} has no vectorized version yet; streams with one: "
            f"{', '.join(sorted(VECTOR_STREAMS))}. Run its seeds as separate processes instead."
        )
    if num_envs is None:
        if seeds is None:
            raise InvalidConfigError("make_vec needs num_envs or seeds.")
        num_envs = len(seeds)
    register_envs()
    extra = {} if seeds is None else {"seeds": tuple(seeds)}
    return gymnasium.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", tier=tier,
        **extra, **kwargs,
    )
