"""The agent protocol, agent factories and their lookup by name.

An algorithm under test is any object with ``act`` and ``learn`` (:class:`Agent`). It is
built by a *factory*::

    factory(env_spec, observation_space, action_space, seed, device, **hparams) -> Agent

Factories are found by name in the entry-point group ``lop_bench.agents`` (declared in a
package's ``pyproject.toml``), or given as ``"package.module:function"``, or passed as the
callable itself. ``lop_bench`` never imports the reference agents in ``baselines/``
directly: they register themselves through the same entry-point group as a user's own.

Two optional attributes of a factory: ``agent_name`` (the name a result records when the
callable itself is passed) and ``preset_keys()`` (the ``(stream id, tier)`` pairs it has a
preset for, ``"*"`` for every tier: ``lop-bench list`` shows them as a table).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from lop_bench.errors import InvalidConfigError, UnknownAgentError, did_you_mean
from lop_bench.fresh import resolve_fresh

__all__ = [
    "Agent",
    "AgentFactory",
    "ENTRY_POINT_GROUP",
    "list_agents",
    "agent_presets",
    "resolve_factory",
    "make_agent",
    "select_preset",
    "tier_of",
    "is_vector_spec",
    "vector_seeds",
]

ENTRY_POINT_GROUP = "lop_bench.agents"
DEFAULT_TIER = "cpu"


@runtime_checkable
class Agent(Protocol):
    """What the runner needs of an agent. Optional methods:

    - ``features(x) -> list[torch.Tensor]``: hidden activations per layer (diagnostics);
      an agent with several networks returns a list of
      :class:`lop_bench.diagnostics.Network` instead, the headline network first;
    - ``parameters() -> Iterable[torch.Tensor]``: weights (diagnostics);
    - ``buffers() -> Iterable[torch.Tensor]``: non-parameter tensors (batch-norm statistics);
    - ``state_dict()`` / ``load_state_dict(state)``: resume (tensors, numpy arrays and plain
      values only);
    - attributes ``preset`` (str) and ``hparams`` (dict), recorded in results (and part of
      the result's identity, :mod:`lop_bench.identity`).

    The runner checks that an agent's state does not change inside a ``val`` or ``test``
    phase: all of ``state_dict()`` when the agent has one (network, optimizer, generators,
    counters), else ``parameters()`` and ``buffers()``.
    """

    def act(self, obs: Any, info: dict) -> Any:
        """Return the prediction (supervised) or control (RL) for ``obs``."""
        ...

    def learn(
        self,
        obs: Any,
        action: Any,
        reward: float,
        next_obs: Any,
        terminated: bool,
        truncated: bool,
        info: dict,
    ) -> None:
        """Learn from the transition; ``info`` holds ``target`` on supervised train steps."""
        ...


AgentFactory = Callable[..., Agent]


def list_agents() -> list[str]:
    """Names of the agents registered in the ``lop_bench.agents`` entry-point group."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


def agent_presets(agent: str | AgentFactory) -> list[tuple[str, str]] | None:
    """The ``(stream id, tier)`` pairs an agent's factory has presets for (its optional
    ``preset_keys()``), or ``None`` when the factory does not say."""
    _, factory = resolve_factory(agent)
    keys = getattr(factory, "preset_keys", None)
    if not callable(keys):
        return None
    return sorted((str(stream), str(tier)) for stream, tier in keys())


def resolve_factory(agent: str | AgentFactory) -> tuple[str, AgentFactory]:
    """Turn an agent name, ``"module:function"``, ``"fresh:<agent>"`` (that agent
    re-initialized at every task start, :mod:`lop_bench.fresh`) or a callable into
    ``(name, factory)``."""
    found = resolve_fresh(agent, resolve_factory)
    if found is not None:
        return found
    if callable(agent):
        name = getattr(agent, "agent_name", None) or getattr(agent, "__qualname__", repr(agent))
        module = getattr(agent, "__module__", None)
        return (name if module is None or "." in name else f"{module}:{name}"), agent
    if not isinstance(agent, str) or not agent:
        raise UnknownAgentError(f"an agent is a name, 'module:function' or a callable, got {agent!r}.")
    if ":" in agent:
        module_name, _, attr = agent.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownAgentError(
                f"cannot import module {module_name!r} for agent {agent!r}: {exc}. "
                "Check the module is importable (installed, or on PYTHONPATH)."
            ) from exc
        try:
            factory = getattr(module, attr)
        except AttributeError:
            raise UnknownAgentError(
                f"module {module_name!r} has no attribute {attr!r} (agent {agent!r})."
                + did_you_mean(attr, [a for a in dir(module) if not a.startswith("_")])
            ) from None
        if not callable(factory):
            raise UnknownAgentError(f"{agent!r} is not callable; it must be an agent factory.")
        return agent, factory
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if agent not in eps:
        known = ", ".join(sorted(eps)) or "(none: is lop-bench installed with pip install -e .?)"
        raise UnknownAgentError(
            f"unknown agent {agent!r}.{did_you_mean(agent, eps)} Registered agents: {known}. "
            "Pass your own as 'package.module:function' or register it in the "
            f"{ENTRY_POINT_GROUP!r} entry-point group."
        )
    return agent, eps[agent].load()


def tier_of(env_spec: Any) -> str:
    """The tier name recorded in an env spec (``spec.kwargs["tier"]``)."""
    kwargs = getattr(env_spec, "kwargs", None) or {}
    return kwargs.get("tier", DEFAULT_TIER)


def select_preset(
    presets: Mapping[tuple[str, str], Any], env_spec: Any, agent_name: str
) -> tuple[str, Any]:
    """Pick the preset for ``(env id, tier)`` from ``presets``; ``"*"`` matches any tier.

    Returns ``(preset_name, config)``. Raises :class:`InvalidConfigError` naming the
    streams the agent has presets for when none matches.
    """
    env_id = getattr(env_spec, "id", None)
    tier = tier_of(env_spec)
    for key in ((env_id, tier), (env_id, "*")):
        if key in presets:
            return f"{agent_name}/{key[0]}/{key[1]}", presets[key]
    raise _no_preset(agent_name, env_id, tier, presets)


def _no_preset(agent_name: str, env_id: Any, tier: Any,
               keys: Iterable[tuple[str, str]]) -> InvalidConfigError:
    known = sorted({k[0] for k in keys})
    return InvalidConfigError(
        f"agent {agent_name!r} has no preset for {env_id!r} (tier {tier!r}). "
        f"It has presets for: {', '.join(known)}."
    )


def check_preset(agent_name: str, factory: AgentFactory, env_id: str, tier: str) -> None:
    """Refuse, before any stream is built (and its dataset looked for), an agent whose
    factory says (``preset_keys()``) that it has no preset for ``(env_id, tier)``: the
    error :func:`select_preset` would raise once the stream exists. A factory that lists
    no preset at all (a plain function wrapped by ``fresh``) says nothing."""
    keys = getattr(factory, "preset_keys", None)
    keys = {(str(stream), str(t)) for stream, t in keys()} if callable(keys) else set()
    if keys and (env_id, tier) not in keys and (env_id, "*") not in keys:
        raise _no_preset(agent_name, env_id, tier, keys)


def make_agent(
    agent: str | AgentFactory,
    env: Any,
    seed: int = 0,
    device: str = "cpu",
    **hparams: Any,
) -> Agent:
    """Build an agent for ``env`` with its preset for (agent, env, tier); ``hparams`` override it.

    >>> env = lop_bench.make("lop/SlowlyChangingRegression-v0", tier="smoke")
    >>> agent = lop_bench.make_agent("continual_backprop", env, seed=0, replacement_rate=1e-3)
    """
    name, factory = resolve_factory(agent)
    spec = getattr(env, "spec", None)
    if spec is None:
        spec = getattr(getattr(env, "unwrapped", env), "spec", None)
    if spec is None:
        raise InvalidConfigError(
            "the env has no spec: create it with lop_bench.make(...) or gymnasium.make(...)."
        )
    obs_space = getattr(env, "single_observation_space", None) or env.observation_space
    act_space = getattr(env, "single_action_space", None) or env.action_space
    agent_obj = factory(spec, obs_space, act_space, seed, device, **hparams)
    if not (hasattr(agent_obj, "act") and hasattr(agent_obj, "learn")):
        raise UnknownAgentError(
            f"factory for {name!r} returned {type(agent_obj).__name__}, which lacks act/learn."
        )
    return agent_obj


def is_vector_spec(env_spec: Any) -> bool:
    """Whether a factory is building for a vector env (``make_vec``: N seeds at once)."""
    kwargs = getattr(env_spec, "kwargs", None) or {}
    return "vectorization_mode" in kwargs


def vector_seeds(env_spec: Any, seed: int | Sequence[int]) -> tuple[int, ...]:
    """The seeds of a vector env's sub-envs, as a factory receives them: a sequence (one per
    sub-env) or an int ``s`` meaning ``s, s+1, ...`` (gymnasium's rule)."""
    from lop_bench.seeding import check_seed

    kwargs = getattr(env_spec, "kwargs", None) or {}
    num_envs = int(kwargs.get("num_envs", 1))
    if isinstance(seed, Sequence) and not isinstance(seed, str):
        seeds = tuple(check_seed(s) for s in seed)
        if len(seeds) != num_envs:
            raise InvalidConfigError(f"{len(seeds)} seeds for a vector env of {num_envs} sub-envs.")
        return seeds
    base = check_seed(seed)
    return tuple(range(base, base + num_envs))
