"""The algorithm tables: an algorithm is a name and, for each (stream, tier), the agent class
and its typed config, built by one factory.

- :class:`Preset`: an agent class, its config (a frozen dataclass) and, where the stream
  runs many seeds in one process (``make_vec``), the class of the many-seeds agent;
- :class:`Algorithm`: a name, its presets keyed by ``(stream id, tier)`` (``"*"``: every
  tier without a row of its own) and its aliases (other names for its rows of some
  streams, e.g. ``ppo`` for ``backprop`` on the Ant); :meth:`Algorithm.build` picks the
  preset for a stream, applies ``--hp`` overrides (checked) and builds the agent;
- :class:`Factory`: an algorithm under one of its names, an agent factory of the
  ``lop_bench.agents`` entry-point group (``make_agent`` of each algorithm file).

A result records the name it was run under, canonical or alias, and its preset as
``"<name>/<stream id>/<tier key>"``: ``lop-bench run ... --agent ppo_cbp`` and ``--agent
continual_backprop`` on the Ant run the same agent, and are grouped as two agents.

Agent classes (:class:`AgentClass`) build themselves for a stream with
``for_stream(cfg, env_spec, observation_space, action_space, seed, device, preset)``; the
tables name the streams, never the agents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from baselines.agents.supervised import LinearAgent, LinearConfig, SupervisedAgent
from baselines.agents.vectorized import VectorMLPAgent
from lop_bench.agents import is_vector_spec, select_preset
from lop_bench.config import replace_checked
from lop_bench.errors import InvalidConfigError, VectorizationNotSupported

__all__ = [
    "REGRESSION",
    "PERMUTED_MNIST",
    "CONTINUAL_IMAGENET",
    "INCREMENTAL_CIFAR",
    "ANT",
    "AgentClass",
    "Preset",
    "mlp",
    "linear",
    "Algorithm",
    "Factory",
]

REGRESSION = "lop/SlowlyChangingRegression-v0"
PERMUTED_MNIST = "lop/PermutedMNIST-v0"
CONTINUAL_IMAGENET = "lop/ContinualImageNet-v0"
INCREMENTAL_CIFAR = "lop/IncrementalCIFAR100-v0"
ANT = "lop/ChangingFrictionAnt-v0"


class AgentClass(Protocol):
    """What a preset's agent class provides: a constructor for a stream."""

    @classmethod
    def for_stream(cls, cfg: Any, env_spec: Any, observation_space: Any, action_space: Any,
                   seed: Any, device: str | torch.device, preset: str | None) -> Any:
        """The agent for the stream of ``env_spec`` with config ``cfg``."""
        ...


@dataclass(frozen=True)
class Preset:
    """An agent class, its config and (optionally) the many-seeds agent class for
    ``make_vec`` (built from the same config; ``None``: the seeds run one by one)."""

    agent: type[AgentClass]
    config: Any
    vectorized: type[AgentClass] | None = None

    def build(self, name: str, preset: str, env_spec: Any, observation_space: Any,
              action_space: Any, seed: Any, device: str | torch.device,
              hparams: Mapping[str, Any]) -> Any:
        """The agent with ``hparams`` applied to the config (checked)."""
        cfg = replace_checked(self.config, what=f"{name} hyperparameter", **hparams)
        if is_vector_spec(env_spec):  # make_vec: one many-seeds agent for all seeds
            if self.vectorized is None:
                raise VectorizationNotSupported(
                    f"{name} on {getattr(env_spec, 'id', env_spec)} ({self.agent.__name__}) has "
                    "no vectorized agent; run the seeds one by one (as separate processes: "
                    "lop-bench run ... --seeds 0-4 --jobs N)."
                )
            return self.vectorized.for_stream(cfg, env_spec, observation_space, action_space,
                                              seed, device, preset)
        return self.agent.for_stream(cfg, env_spec, observation_space, action_space, seed,
                                     device, preset)


def mlp(cfg: Any) -> Preset:
    """An MLP learner of the supervised streams: :class:`SupervisedAgent`, many seeds by
    :class:`VectorMLPAgent`."""
    return Preset(SupervisedAgent, cfg, VectorMLPAgent)


def linear(cfg: LinearConfig) -> Preset:
    """The linear learner: :class:`LinearAgent`, many seeds by :class:`VectorMLPAgent`."""
    return Preset(LinearAgent, cfg, VectorMLPAgent)


@dataclass(frozen=True)
class Algorithm:
    """An algorithm's presets per ``(stream id, tier)`` and the names it answers to."""

    name: str
    presets: Mapping[tuple[str, str], Preset]
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Alias -> the stream ids whose rows it names (``{"ppo": (ANT,)}``)."""
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for key, preset in self.presets.items():
            if not isinstance(preset, Preset):
                raise TypeError(f"{self.name}: the preset for {key} must be a Preset, got "
                                f"{type(preset).__name__}.")
        streams = {stream for stream, _ in self.presets}
        for alias, covered in self.aliases.items():
            if not covered or not set(covered) <= streams:
                raise ValueError(f"{self.name}: alias {alias!r} must name streams of the table, "
                                 f"got {covered!r}.")

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name, then the aliases."""
        return (self.name, *self.aliases)

    def _check_name(self, name: str) -> str:
        if name not in self.names:
            raise InvalidConfigError(f"{name!r} is not a name of {self.name!r} "
                                     f"(its names: {', '.join(self.names)}).")
        return name

    def preset(self, env_spec: Any, name: str | None = None) -> tuple[str, Preset]:
        """``(preset name, preset)`` for ``env_spec``'s stream and tier (``"*"``: any tier);
        :class:`~lop_bench.errors.InvalidConfigError` naming the streams it has presets
        for when none matches."""
        name = self._check_name(name or self.name)
        return select_preset(self.table(name), env_spec, name)

    def table(self, name: str | None = None) -> dict[tuple[str, str], Preset]:
        """The rows that ``name`` (default: the canonical name) names."""
        name = self._check_name(name or self.name)
        if name == self.name:
            return dict(self.presets)
        covered = self.aliases[name]
        return {key: p for key, p in self.presets.items() if key[0] in covered}

    def config(self, env_spec: Any) -> Any:
        """The preset config for ``env_spec``'s stream and tier."""
        return self.preset(env_spec)[1].config

    def build(self, env_spec: Any, observation_space: Any, action_space: Any, seed: Any,
              device: str | torch.device = "cpu", hparams: Mapping[str, Any] | None = None,
              name: str | None = None) -> Any:
        """The agent of this algorithm for the stream, recorded under ``name`` (default:
        the canonical name)."""
        name = self._check_name(name or self.name)
        preset_name, preset = self.preset(env_spec, name)
        return preset.build(name, preset_name, env_spec, observation_space, action_space,
                            seed, device, hparams or {})

    def factory(self, name: str | None = None) -> Factory:
        """The agent factory of this algorithm under ``name`` (default: canonical)."""
        return Factory(self, self._check_name(name or self.name))

    def preset_keys(self, name: str | None = None) -> list[tuple[str, str]]:
        """The ``(stream id, tier)`` keys of the rows ``name`` names, sorted."""
        return sorted(self.table(name))


class Factory:
    """An algorithm under one of its names: ``factory(env_spec, observation_space,
    action_space, seed, device, **hparams) -> agent`` (the ``lop_bench.agents`` protocol).
    ``agent_name`` is the name results record; ``preset_keys()`` lists the ``(stream id,
    tier)`` rows of its table (``lop-bench list``)."""

    def __init__(self, algorithm: Algorithm, name: str) -> None:
        self.algorithm = algorithm
        self.agent_name = name
        self.__doc__ = algorithm.doc or f"The {name} agent with its preset for the stream."

    def __call__(self, env_spec: Any, observation_space: Any, action_space: Any,
                 seed: Any, device: str | torch.device = "cpu", **hparams: Any) -> Any:
        return self.algorithm.build(env_spec, observation_space, action_space, seed, device,
                                    hparams, name=self.agent_name)

    def preset_keys(self) -> list[tuple[str, str]]:
        """The ``(stream id, tier)`` keys of the rows this name names."""
        return self.algorithm.preset_keys(self.agent_name)

    def __repr__(self) -> str:
        return f"<agent factory {self.agent_name!r} of baselines algorithm {self.algorithm.name!r}>"
