"""The fresh reference agent: any agent, re-initialized at the start of every task.

``fresh(factory)`` is an agent factory whose agent builds a new agent with ``factory`` (the
same env spec, spaces, seed, device and hyperparameters) at every task start, so that each
task is learned by a freshly initialized network of the same architecture with the same
seed: the reference of the normalized plasticity score (:mod:`lop_bench.plasticity`; 1.0
means "as plastic as this agent"). A stream names its fresh reference agent in its
:class:`~lop_bench.streams.StreamSpec` (``fresh_agent``, ``"fresh"`` by default: backprop's
network, PPO on the Ant; incremental CIFAR-100 has its own, ``from_scratch``)::

    from lop_bench.agents import resolve_factory
    from lop_bench.fresh import fresh
    name, factory = resolve_factory("my_pkg.agents:make")   # your agent's factory
    lop_bench.run("lop/SlowlyChangingRegression-v0", fresh(factory, name=name), tier="smoke")

On the command line ``--agent fresh:<agent>`` wraps any agent by name (``fresh:backprop``,
``fresh:my_pkg.agents:make``; :func:`resolve_fresh`, called by
:func:`lop_bench.agents.resolve_factory`).

**When it re-initializes.** A task starts at the first ``act`` or ``learn`` whose
``info["task"]`` differs from the task the current agent learns (task 0 included: the
agent built with the factory is kept for the first task it sees). ``learn`` first hands the
transition to the current agent (the transition is of the observation acted on, the old
task's: DESIGN.md section 4), then re-initializes; ``act`` re-initializes before it
predicts. So:

- supervised streams announce the next task in the ``learn`` call of a task's last step:
  the old network learns its last batch, the new one predicts the next task's first;
- the image streams keep ``info["task"]`` through a task's train, val and test phases: a
  phase change never re-initializes, and a re-initialization happens in the announcing
  ``learn`` call, before the runner's phase-check snapshot, never inside a val/test
  phase (:mod:`lop_bench.phase_check`);
- on the Ant a new friction starts at the ``reset()`` after a task's last episode: the
  ``act`` on its first observation re-initializes (PPO's rollout buffer goes with it).

The wrapper forwards ``act``, ``learn`` and every public attribute of the current agent
(``features``, ``parameters``, ``buffers``, ``probe``, ``preset``, ``hparams``,
``vectorized``...), looked up at each access, so an attribute the inner agent lacks is
missing here too (the runner then skips what needs it). ``state_dict()`` holds the inner
agent's state and the task it learns; ``load_state_dict`` restores both (resume).
Vectorized agents work alike: their ``info["task"]`` is an array, whose tasks advance
together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from lop_bench.errors import CheckpointError, UnknownAgentError

__all__ = ["FRESH_PREFIX", "FreshAgent", "FreshFactory", "fresh", "fresh_target",
           "resolve_fresh"]

FRESH_PREFIX = "fresh:"
"""``--agent fresh:<agent>``: the fresh version of ``<agent>``."""


def fresh_target(agent: Any) -> str | None:
    """The inner agent named by ``"fresh:<agent>"``, or ``None`` for any other agent."""
    if not isinstance(agent, str) or not agent.startswith(FRESH_PREFIX):
        return None
    inner = agent[len(FRESH_PREFIX):]
    if not inner:
        raise UnknownAgentError(
            f"{agent!r} names no agent: write fresh:<agent>, e.g. fresh:backprop."
        )
    if inner.startswith(FRESH_PREFIX):
        raise UnknownAgentError(f"{agent!r}: an agent is made fresh once (fresh:<agent>).")
    return inner


def resolve_fresh(agent: Any, resolve: Callable[[str], tuple[str, Callable[..., Any]]]
                  ) -> tuple[str, FreshFactory] | None:
    """``("fresh:<name>", fresh(factory))`` for ``agent = "fresh:<agent>"``, the inner agent
    found with ``resolve`` (:func:`lop_bench.agents.resolve_factory`); ``None`` for any
    other agent. The hook at the top of ``resolve_factory`` (passed in, since
    ``lop_bench.agents`` imports this module)::

        found = resolve_fresh(agent, resolve_factory)
        if found is not None:
            return found
    """
    inner = fresh_target(agent)
    if inner is None:
        return None
    name, factory = resolve(inner)
    return FRESH_PREFIX + name, fresh(factory, name=name)


def _task_of(info: Mapping[str, Any]) -> int:
    try:
        task = info["task"]
    except (KeyError, TypeError):
        raise UnknownAgentError(
            "the fresh agent re-initializes when info['task'] changes, and this stream's info "
            "has no 'task' key: it runs only on lop-bench streams (DESIGN.md section 4)."
        ) from None
    return int(np.asarray(task).reshape(-1)[0])  # a vector env's tasks advance together


class FreshAgent:
    """The agent of :func:`fresh`: the inner factory's agent, rebuilt at every task start."""

    def __init__(self, factory: Callable[..., Any], name: str, args: tuple[Any, ...],
                 hparams: Mapping[str, Any]) -> None:
        self._factory, self._name = factory, name
        self._args, self._hparams = args, dict(hparams)
        self._task: int | None = None  # the task the current agent learns (None: not yet)
        self._agent = self._build()
        self.rebuilds = 0
        """How many times the agent was re-initialized (the first task's is the one built
        with the wrapper: not counted)."""

    def _build(self) -> Any:
        agent = self._factory(*self._args, **self._hparams)
        missing = [m for m in ("act", "learn") if not callable(getattr(agent, m, None))]
        if missing:
            raise UnknownAgentError(
                f"fresh({self._name}): its factory returned a {type(agent).__name__}, which "
                f"lacks {' and '.join(missing)}(): the fresh wrapper needs an agent "
                "(lop_bench.agents.Agent)."
            )
        return agent

    def _start(self, info: Mapping[str, Any]) -> None:
        """Re-initialize when ``info`` announces another task than the current agent's."""
        task = _task_of(info)
        if task == self._task:
            return
        if self._task is not None:
            self._agent = None  # free the old network before building the new one
            self._agent = self._build()
            self.rebuilds += 1
        self._task = task

    @property
    def inner(self) -> Any:
        """The agent learning the current task."""
        return self._agent

    @property
    def task(self) -> int | None:
        """The task the current agent learns (``None`` before the first ``act``)."""
        return self._task

    def act(self, obs: Any, info: dict) -> Any:
        """Predict with the current task's agent (built afresh if ``info`` starts a task)."""
        self._start(info)
        return self._agent.act(obs, info)

    def learn(self, obs: Any, action: Any, reward: Any, next_obs: Any, terminated: Any,
              truncated: Any, info: dict) -> None:
        """The current agent learns the transition; then a new agent if ``info`` starts a task."""
        if self._task is None:  # learn before any act: the transition is of info's task
            self._start(info)
        self._agent.learn(obs, action, reward, next_obs, terminated, truncated, info)
        self._start(info)

    def __getattr__(self, name: str) -> Any:
        # Only reached for what the class does not define: the inner agent's attributes,
        # looked up on the current agent at each access.
        if name.startswith("_"):
            raise AttributeError(name)
        agent = self.__dict__.get("_agent")
        if name in ("state_dict", "load_state_dict"):
            if not callable(getattr(agent, name, None)):
                raise AttributeError(
                    f"fresh({self.__dict__.get('_name')}): the inner agent has no {name}()"
                )
            return getattr(self, f"_{name}")
        return getattr(agent, name)

    def _state_dict(self) -> dict[str, Any]:
        return {"task": -1 if self._task is None else int(self._task),
                "rebuilds": int(self.rebuilds), "agent": self._agent.state_dict()}

    def _load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or set(state) != {"task", "rebuilds", "agent"}:
            raise CheckpointError(
                f"fresh({self._name}): not a fresh agent's state (keys task, rebuilds, agent), "
                f"got {sorted(state) if isinstance(state, Mapping) else type(state).__name__}."
            )
        task = int(state["task"])
        # The state is of the agent that learned `task`: load it into a freshly built one
        # (this one, unless it has already learned something).
        if self._task is not None:
            self._agent = None
            self._agent = self._build()
        self._agent.load_state_dict(state["agent"])
        self._task = None if task < 0 else task
        self.rebuilds = int(state["rebuilds"])


class FreshFactory:
    """The factory :func:`fresh` returns: ``FreshFactory(factory, name)(env_spec,
    observation_space, action_space, seed, device, **hparams) -> FreshAgent``. It pickles
    when the inner factory does (a module-level function)."""

    def __init__(self, factory: Callable[..., Any], name: str) -> None:
        self.inner_factory, self.inner_name = factory, name
        self.agent_name = FRESH_PREFIX + name
        # resolve_factory names a callable "module:agent_name" unless its name has a dot or
        # it has no module: its name is agent_name, "fresh:<agent>", which resolves again.
        self.__module__ = None  # type: ignore[assignment]

    def __call__(self, env_spec: Any, observation_space: Any, action_space: Any, seed: Any,
                 device: Any = "cpu", **hparams: Any) -> FreshAgent:
        return FreshAgent(self.inner_factory, self.inner_name,
                          (env_spec, observation_space, action_space, seed, device), hparams)

    def preset_keys(self) -> list[tuple[str, str]]:
        """The inner factory's ``(stream id, tier)`` presets (``lop-bench list``); ``[]``
        when it does not say."""
        keys = getattr(self.inner_factory, "preset_keys", None)
        return list(keys()) if callable(keys) else []

    def __repr__(self) -> str:
        return f"fresh({self.inner_name})"


def fresh(factory: Callable[..., Any], name: str | None = None) -> FreshFactory:
    """The fresh version of an agent factory (see the module docstring).

    Args:
        factory: ``factory(env_spec, observation_space, action_space, seed, device,
            **hparams) -> Agent``, e.g. a registered agent's (``resolve_factory("backprop")``).
        name: the inner agent's name, for messages and the factory's ``agent_name``
            (``"fresh:<name>"``); default: the factory's ``agent_name``, else its
            ``"module:function"``.

    Returns:
        A factory with the same signature (:class:`FreshFactory`); its ``agent_name``,
        which results record when it is passed as a callable, is ``"fresh:<name>"``.
    """
    if not callable(factory):
        raise UnknownAgentError(f"fresh() wraps an agent factory (a callable), got {factory!r}.")
    inner = name or getattr(factory, "agent_name", None)
    if not inner:  # "module:function", which resolve_factory (and fresh:<agent>) can find
        module = getattr(factory, "__module__", None)
        qualname = getattr(factory, "__qualname__", None)
        inner = f"{module}:{qualname}" if module and qualname else repr(factory)
    return FreshFactory(factory, inner)
