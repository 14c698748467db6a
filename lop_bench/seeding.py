"""Per-purpose random generators spawned from one seed.

Every stream draws each kind of randomness (target network, input bits, shuffles,
probe batches, ...) from its own generator, spawned from the run's seed with
:class:`numpy.random.SeedSequence`. So a diagnostic probe, a different batch size in the
agent or a new purpose added at the end of the list never shifts another purpose's draws.
"""

from __future__ import annotations

import numpy as np

from lop_bench.errors import InvalidConfigError

__all__ = [
    "check_seed",
    "spawn_generators",
    "task_generator",
    "generator_states",
    "set_generator_states",
]


def check_seed(seed: object) -> int:
    """Return ``seed`` as an int, or raise :class:`InvalidConfigError` if it is not one >= 0."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise InvalidConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    if seed < 0:
        raise InvalidConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def spawn_generators(seed: int, purposes: tuple[str, ...]) -> dict[str, np.random.Generator]:
    """One independent ``numpy.random.Generator`` per purpose, in the order given.

    Purposes are positional (child ``i`` of ``SeedSequence(seed)``): streams only ever
    append new purposes, so existing ones keep their draws.
    """
    children = np.random.SeedSequence(check_seed(seed)).spawn(len(purposes))
    return {p: np.random.Generator(np.random.PCG64(c)) for p, c in zip(purposes, children)}


def task_generator(seed: int, purpose_index: int, task: int) -> np.random.Generator:
    """A generator for one (purpose, task) pair, independent of how many were drawn before.

    Used for probe batches: diagnostics measured on any cadence see the same probe for
    the same task, and never touch the stream's own generators.
    """
    ss = np.random.SeedSequence(check_seed(seed), spawn_key=(purpose_index, 1_000_000 + task))
    return np.random.Generator(np.random.PCG64(ss))


def generator_states(rngs: dict[str, np.random.Generator]) -> dict[str, dict]:
    """The bit-generator state of each generator (plain dicts of ints and strings)."""
    return {k: g.bit_generator.state for k, g in rngs.items()}


def set_generator_states(rngs: dict[str, np.random.Generator], states: dict[str, dict]) -> None:
    """Restore what :func:`generator_states` returned into the same purposes."""
    if set(states) != set(rngs):
        raise InvalidConfigError(
            f"generator states for {sorted(states)} do not match the purposes {sorted(rngs)}."
        )
    for k, g in rngs.items():
        g.bit_generator.state = states[k]
