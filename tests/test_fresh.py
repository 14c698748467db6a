"""The fresh reference agent (lop_bench.fresh): any agent re-initialized at every task start."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

import lop_bench
from lop_bench.agents import resolve_factory
from lop_bench.errors import CheckpointError, UnknownAgentError
from lop_bench.fresh import FRESH_PREFIX, FreshAgent, fresh, fresh_target, resolve_fresh
from lop_bench.registration import make
from tests.helpers import FAKE_PHASES, make_mean_agent

REG = "lop/SlowlyChangingRegression-v0"
CIN = "lop/ContinualImageNet-v0"


def _backprop():
    return resolve_factory("backprop")[1]


def _params(agent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.parameters()]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_weights_at_every_task_start_are_the_inner_agents_initial_weights():
    env = make(REG, tier="smoke")
    initial = _params(lop_bench.make_agent("backprop", env, seed=3))
    agent = lop_bench.make_agent(fresh(_backprop()), env, seed=3)
    assert isinstance(agent, FreshAgent) and agent.task is None
    env = env.unwrapped
    obs, info = env.reset(seed=3)
    starts, ends, task = [], [], None
    while True:
        if info["task"] != task:
            task = info["task"]
            starts.append(_params(agent))  # before the task's first prediction
        action = agent.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        if info["task_end"]:
            ends.append(_params(agent))  # before the learn call that announces the next task
        agent.learn(None, action, reward, obs, terminated, truncated, info)
        if info["stream_done"]:
            break
    n = env.num_tasks
    assert len(starts) == len(ends) == n == 10 and agent.rebuilds == n - 1
    assert all(_same(s, initial) for s in starts)
    assert not any(_same(e, initial) for e in ends)  # each task was learned


def _task_alone(seed: int, k: int) -> float:
    """Task ``k``'s score of backprop built afresh at task k's start, from a stream whose
    earlier tasks were stepped through without it: the inner agent on that task alone."""
    env = make(REG, tier="smoke").unwrapped
    obs, info = env.reset(seed=seed)
    zeros = np.zeros(env.action_space.shape, np.float32)
    while info["task"] < k:  # a supervised stream does not depend on the predictions
        obs, _, _, _, info = env.step(zeros)
    agent = lop_bench.make_agent("backprop", make(REG, tier="smoke"), seed=seed)
    while True:
        action = agent.act(obs, info)
        next_obs, reward, terminated, truncated, info = env.step(action)
        agent.learn(obs, action, reward, next_obs, terminated, truncated, info)
        if info["task_end"]:
            return float(info["task_metrics"]["mse"])
        obs = next_obs


def test_per_task_scores_equal_the_inner_agent_on_each_task_alone_bit_for_bit():
    result = lop_bench.run(REG, fresh(_backprop()), tier="smoke", seed=1, progress=False,
                           diagnostics=False)
    assert result.data["agent"]["name"] == "fresh:backprop"  # the factory's agent_name
    assert result.data["agent"]["preset"] == f"backprop/{REG}/*"
    for k in (0, 1, 5, 9):
        assert result.per_task[k] == _task_alone(1, k), k
    # and task 0 equals a run of backprop on a stream of that one task (a tier override)
    one = lop_bench.run(REG, "backprop", tier="smoke", seed=1, progress=False,
                        diagnostics=False, env_kwargs={"num_tasks": 1})
    assert one.per_task == [result.per_task[0]]
    # not backprop itself: after task 0 the scores differ
    plain = lop_bench.run(REG, "backprop", tier="smoke", seed=1, progress=False,
                          diagnostics=False)
    assert plain.per_task[0] == result.per_task[0] and plain.per_task[1:] != result.per_task[1:]


def test_same_seed_same_result_and_diagnostics_measure_the_fresh_network():
    a = lop_bench.run(REG, fresh(_backprop()), tier="smoke", seed=0, progress=False)
    b = lop_bench.run(REG, fresh(_backprop()), tier="smoke", seed=0, progress=False)
    assert a.per_task == b.per_task
    d = a.data["diagnostics"]
    assert d["tasks"] == list(range(10))
    # every task starts from the same weights: the same weight magnitude at every start
    w = d["measures"]["weight_magnitude"]
    assert w == [w[0]] * 10


def test_phase_changes_never_reinitialize_and_pass_the_phase_check():
    """Image streams keep info['task'] through train and test phases: the runner's phase
    check passes and the agent is rebuilt once per new task."""
    seen = []

    def spy(*args, **kwargs):
        agent = _backprop()(*args, **kwargs)
        seen.append(agent)
        return agent

    r = lop_bench.run(CIN, fresh(spy, name="backprop"), tier="smoke", seed=0, progress=False)
    assert len(r.per_task) == 3 and len(seen) == 3  # built once, rebuilt at tasks 1 and 2
    assert r.data["agent"]["name"] == "fresh:backprop"


@pytest.fixture
def fake_phases(monkeypatch):
    from lop_bench import registration

    monkeypatch.setitem(registration.registry, FAKE_PHASES.id, FAKE_PHASES)
    yield FAKE_PHASES.id
    gymnasium.registry.pop(FAKE_PHASES.id, None)


def test_a_stream_with_test_phases_and_a_mean_agent(fake_phases):
    r = lop_bench.run(fake_phases, fresh(make_mean_agent), tier="smoke", seed=0,
                      progress=False, agent_kwargs={"lr": 0.5})
    # each task: 5 train steps from 0 towards 1 with lr 0.5 (mean 1 - 0.5**5), then 2 test
    # steps scored against 1: the same on every task, since each starts from 0
    expected = (0.5 ** 5) ** 2
    assert r.per_task == pytest.approx([expected] * 3, rel=1e-6)
    assert r.per_task[0] == r.per_task[1] == r.per_task[2]
    assert r.data["agent"]["hparams"] == {"lr": 0.5}
    plain = lop_bench.run(fake_phases, make_mean_agent, tier="smoke", seed=0, progress=False,
                          agent_kwargs={"lr": 0.5})
    assert plain.per_task[0] == r.per_task[0] and plain.per_task[1] < r.per_task[1]


class _Spy:
    """Records what it is given; a counter as its state."""

    built = 0

    def __init__(self):
        _Spy.built += 1
        self.id = _Spy.built
        self.calls = []
        self.count = 0
        self.preset, self.hparams = "spy/x/y", {"a": 1}

    def act(self, obs, info):
        self.calls.append(("act", info["task"]))
        return 0

    def learn(self, obs, action, reward, next_obs, terminated, truncated, info):
        self.calls.append(("learn", info["task"]))
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def _spy_factory(env_spec, observation_space, action_space, seed, device, **hp):
    return _Spy()


def test_when_it_reinitializes():
    agent = fresh(_spy_factory)(None, None, None, 0, "cpu")
    first = agent.inner
    # supervised: the task-ending learn announces task 1; the old agent learns it first
    agent.act(0, {"task": 0, "phase": "train"})
    agent.learn(0, 0, 0, 0, False, False, {"task": 0, "phase": "test"})  # a phase change
    assert agent.inner is first and agent.rebuilds == 0
    agent.learn(0, 0, 0, 0, False, False, {"task": 1, "phase": "train", "task_end": True})
    assert first.calls == [("act", 0), ("learn", 0), ("learn", 1)]
    second = agent.inner
    assert second is not first and second.calls == [] and agent.task == 1
    # the Ant: the task-ending learn still says task 1; the reset's observation says 2
    agent.learn(0, 0, 0, 0, True, False, {"task": 1, "task_end": True})
    assert agent.inner is second
    agent.act(0, {"task": 2})
    assert agent.inner is not second and agent.inner.calls == [("act", 2)]
    assert agent.rebuilds == 2
    # a vector env: info["task"] is an array, one per seed
    agent.act(0, {"task": np.array([3, 3])})
    assert agent.task == 3 and agent.rebuilds == 3
    # attributes are the current agent's
    assert agent.preset == "spy/x/y" and agent.hparams == {"a": 1}
    assert agent.id == agent.inner.id
    with pytest.raises(AttributeError):
        agent.features  # noqa: B018  (the spy has none: neither has the wrapper)
    assert getattr(agent, "parameters", None) is None


def test_state_dict_round_trip_resumes_the_task():
    make_fresh = fresh(_spy_factory)
    a = make_fresh(None, None, None, 0, "cpu")
    a.act(0, {"task": 0})
    a.learn(0, 0, 0, 0, False, False, {"task": 1})
    a.learn(0, 0, 0, 0, False, False, {"task": 1})
    state = a.state_dict()
    assert state == {"task": 1, "rebuilds": 1, "agent": {"count": 1}}
    b = make_fresh(None, None, None, 0, "cpu")
    b.load_state_dict(state)
    assert (b.task, b.rebuilds, b.inner.count) == (1, 1, 1)
    b.act(0, {"task": 1})  # the same task: no rebuild
    assert b.rebuilds == 1 and b.inner.count == 1
    with pytest.raises(CheckpointError, match="fresh agent's state"):
        b.load_state_dict({"count": 3})


def test_checkpoint_resume_equals_the_uninterrupted_run(tmp_path):
    full = lop_bench.run(REG, fresh(_backprop()), tier="smoke", seed=2, progress=False,
                         diagnostics=False)
    import lop_bench.runner as runner

    calls = {"n": 0}
    original = runner._save_checkpoint

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    runner._save_checkpoint = save_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            lop_bench.run(REG, fresh(_backprop()), tier="smoke", seed=2, progress=False,
                          diagnostics=False, out=tmp_path, checkpoint_every=3)
    finally:
        runner._save_checkpoint = original
    resumed = lop_bench.run(REG, fresh(_backprop()), tier="smoke", seed=2, progress=False,
                            diagnostics=False, out=tmp_path, resume=True)
    assert resumed.data["run_info"]["resumed_at_step"] == 6 * 200
    assert resumed.per_task == full.per_task


def test_bad_inner_agents_and_names_are_refused():
    with pytest.raises(UnknownAgentError, match="lacks act"):
        fresh(lambda *a, **k: object(), name="broken")(None, None, None, 0, "cpu")
    with pytest.raises(UnknownAgentError, match="callable"):
        fresh("backprop")  # type: ignore[arg-type]
    agent = fresh(make_mean_agent)(None, None, type("S", (), {"shape": (1, 1)})(), 0, "cpu")
    assert not hasattr(agent, "state_dict")  # the mean agent has none: resume is refused
    with pytest.raises(UnknownAgentError, match="no 'task' key"):
        agent.act(0, {})
    assert fresh_target("fresh:backprop") == "backprop"
    assert fresh_target("fresh:pkg.mod:make") == "pkg.mod:make"
    assert fresh_target("backprop") is None and fresh_target(make_mean_agent) is None
    with pytest.raises(UnknownAgentError, match="fresh:<agent>"):
        fresh_target("fresh:")
    with pytest.raises(UnknownAgentError, match="once"):
        fresh_target("fresh:fresh:backprop")


def test_factory_names():
    assert fresh(_backprop(), name="backprop").agent_name == FRESH_PREFIX + "backprop"
    # a plain function: its "module:function", which fresh:<agent> resolves again
    named = fresh(make_mean_agent).agent_name
    assert named == "fresh:tests.helpers:make_mean_agent"
    assert resolve_factory(fresh(make_mean_agent))[0] == named
    assert resolve_factory(fresh_target(named))[1] is make_mean_agent


def test_a_vectorized_inner_agent_is_rebuilt_for_all_seeds_at_once():
    """reproduce runs seeds vectorized where the inner agent can: info['task'] is then an
    array; the scores match the single-seed runs within float tolerance (batched sums)."""
    factory = fresh(_backprop(), name="backprop")
    group = lop_bench.run_vectorized(REG, factory, tier="smoke", seeds=[0, 1], progress=False,
                                     diagnostics=False)
    for seed, r in zip((0, 1), group):
        assert r.data["agent"]["vectorized"] is True and r.agent_name == "fresh:backprop"
        one = lop_bench.run(REG, factory, tier="smoke", seed=seed, progress=False,
                            diagnostics=False)
        np.testing.assert_allclose(r.per_task, one.per_task, rtol=1e-5)


def test_fresh_colon_agent_resolves_to_the_wrapped_registered_agent():
    assert resolve_fresh("backprop", resolve_factory) is None
    name, factory = resolve_fresh("fresh:backprop", resolve_factory)
    assert name == "fresh:backprop" and factory.inner_factory is _backprop()
    assert resolve_factory(factory)[0] == "fresh:backprop"  # a callable keeps the name
    name, factory = resolve_fresh("fresh:tests.helpers:make_mean_agent", resolve_factory)
    assert name == "fresh:tests.helpers:make_mean_agent"
    assert factory.inner_factory is make_mean_agent
    with pytest.raises(UnknownAgentError, match="unknown agent 'backprob'"):
        resolve_fresh("fresh:backprob", resolve_factory)
