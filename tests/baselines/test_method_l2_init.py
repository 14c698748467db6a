"""L2 Init's mechanism (baselines.core.regularizers.L2Init) against hand-computed cases: the
gradient term is strength * (theta - theta0), added to the loss gradient (coupled); with
theta0 = 0 it is SGD's weight decay bit for bit; a leading seed dimension; resume."""

from __future__ import annotations

import pytest
import torch

from baselines.core.regularizers import L2Init
from lop_bench.errors import InvalidConfigError


def test_gradient_is_strength_times_distance_to_init():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, -4.0]))
    reg = L2Init([p], strength=0.5)
    with torch.no_grad():
        p.copy_(torch.tensor([3.0, -1.0, -4.0]))
    p.grad = torch.zeros(3)
    reg.add_to_grad()
    assert p.grad.tolist() == [1.0, -1.5, 0.0]  # 0.5 * ([3, -1, -4] - [1, 2, -4])
    # Added to the loss gradient, not replacing it.
    p.grad = torch.tensor([10.0, 20.0, 30.0])
    reg.add_to_grad()
    assert p.grad.tolist() == [11.0, 18.5, 30.0]
    assert [t.tolist() for t in reg.gradient()] == [[1.0, -1.5, 0.0]]
    # A parameter without a gradient is left without one.
    q = torch.nn.Parameter(torch.ones(2))
    L2Init([q], 1.0).add_to_grad()
    assert q.grad is None


def test_penalty_gradient_matches():
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3, generator=g))
    reg = L2Init([p], strength=0.3)
    with torch.no_grad():
        p.add_(torch.randn(4, 3, generator=g))
    reg.penalty().backward()
    autograd = p.grad.clone()
    p.grad.zero_()
    reg.add_to_grad()
    assert torch.allclose(p.grad, autograd, atol=1e-7)
    assert torch.allclose(reg.penalty(), 0.15 * (p - reg.initial[0]).pow(2).sum())


def test_zero_init_is_sgd_weight_decay_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(5, 3, generator=g)
    x = torch.randn(8, 3, generator=g)
    a = torch.nn.Parameter(w0.clone())
    b = torch.nn.Parameter(w0.clone())
    reg = L2Init([a], strength=1e-2)
    reg.initial[0].zero_()  # theta0 = 0: plain L2
    opt_a = torch.optim.SGD([a], lr=0.1)
    opt_b = torch.optim.SGD([b], lr=0.1, weight_decay=1e-2)
    for _ in range(5):
        for p, opt, decay in ((a, opt_a, True), (b, opt_b, False)):
            opt.zero_grad()
            (x @ p.T).square().mean().backward()
            if decay:
                reg.add_to_grad()
            opt.step()
    assert torch.equal(a, b)


def test_pulls_back_to_init_geometrically():
    """Without a loss gradient, SGD with L2 Init moves theta - theta0 by (1 - lr * strength)."""
    p = torch.nn.Parameter(torch.tensor([0.0, 1.0]))
    reg = L2Init([p], strength=0.5)
    with torch.no_grad():
        p.copy_(torch.tensor([4.0, -3.0]))
    opt = torch.optim.SGD([p], lr=0.5)
    for _ in range(2):
        p.grad = torch.zeros(2)
        reg.add_to_grad()
        opt.step()
    # distance [4, -4] * 0.75 ** 2 = [2.25, -2.25]
    assert p.detach().tolist() == [2.25, 1.0 - 2.25]


def test_seed_dimension_each_seed_to_its_own_init():
    g = torch.Generator().manual_seed(2)
    W = torch.randint(-8, 8, (3, 4, 2), generator=g).float()  # (seeds, out, in); exact sums
    reg = L2Init([W], strength=2.0)
    moved = W + torch.arange(3.0).view(3, 1, 1)
    W.copy_(moved)
    [term] = reg.gradient()
    assert torch.equal(term, 2.0 * torch.arange(3.0).view(3, 1, 1).expand(3, 4, 2))
    singles = [L2Init([W0.clone()], 2.0) for W0 in reg.initial[0]]
    for s, single in enumerate(singles):
        single.params[0].copy_(moved[s])
        assert torch.equal(single.gradient()[0], term[s])


def test_state_dict_round_trip_and_errors():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    reg = L2Init([p], strength=1.0)
    state = reg.state_dict()
    with torch.no_grad():
        p.copy_(torch.tensor([5.0, 5.0]))
    other = L2Init([p], strength=1.0)  # built now: theta0 would be [5, 5]
    other.load_state_dict(state)
    assert other.initial[0].tolist() == [1.0, 2.0]
    state["initial"][0][0] = 9.0  # the saved state is a copy
    assert reg.initial[0].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="shapes"):
        other.load_state_dict({"initial": [torch.zeros(3)]})
    with pytest.raises(InvalidConfigError, match="strength"):
        L2Init([p], strength=-1.0)
    with pytest.raises(ValueError, match="at least one"):
        L2Init([], strength=1.0)


# -- the agents ---------------------------------------------------------------------------
import copy  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
from gymnasium.envs.registration import EnvSpec  # noqa: E402
from gymnasium.spaces import Box, MultiDiscrete  # noqa: E402

import lop_bench  # noqa: E402
from baselines import l2_init as l2_init_table  # noqa: E402
from baselines.agents.ppo import PPOAgent, PPOConfig, PPOL2InitConfig  # noqa: E402
from baselines.agents.supervised import BackpropConfig, L2InitConfig, SupervisedAgent  # noqa: E402
from baselines.agents.vectorized import VectorMLPAgent  # noqa: E402
from baselines.presets import (  # noqa: E402
    ANT,
    CONTINUAL_IMAGENET,
    INCREMENTAL_CIFAR,
    PERMUTED_MNIST,
    REGRESSION,
)

REG_SPACES = (Box(-np.inf, np.inf, (1, 20), np.float32), Box(-np.inf, np.inf, (1, 1), np.float32))
SPACES = {
    REGRESSION: REG_SPACES,
    PERMUTED_MNIST: (Box(0, 1, (1, 784), np.float32), MultiDiscrete([10])),
    CONTINUAL_IMAGENET: (Box(0, 255, (100, 3, 32, 32), np.float32), MultiDiscrete([2] * 100)),
    INCREMENTAL_CIFAR: (Box(0, 1, (90, 3, 32, 32), np.float32), MultiDiscrete([100] * 90)),
    ANT: (Box(-np.inf, np.inf, (27,), np.float64), Box(-1, 1, (8,), np.float32)),
}


def _env(env_id, tier="smoke", **kwargs):
    obs, act = SPACES[env_id]
    return types.SimpleNamespace(
        spec=EnvSpec(env_id, entry_point="x:y", kwargs={"tier": tier, **kwargs}),
        observation_space=obs, action_space=act)


def _data(steps, seeds=None, seed=0):
    g = np.random.default_rng(seed)
    shape = (steps, 1, 20) if seeds is None else (steps, seeds, 1, 20)
    return g.random(shape, dtype=np.float32), g.standard_normal(shape[:-1] + (1,)).astype(np.float32)


def _step(agent, x, y):
    agent.act(x, {"phase": "train"})
    agent.learn(x, None, 0.0, x, False, False, {"target": y})


def test_supervised_step_adds_strength_times_distance():
    """From theta0 + delta, one SGD step of L2 Init is backprop's step minus lr * s * delta."""
    lr, strength = 0.1, 0.5
    a = SupervisedAgent(L2InitConfig(lr=lr, l2_init_strength=strength), *REG_SPACES, seed=0)
    b = SupervisedAgent(BackpropConfig(lr=lr), *REG_SPACES, seed=0)
    g = torch.Generator().manual_seed(1)
    deltas = [torch.randn(p.shape, generator=g) for p in a.net.parameters()]
    with torch.no_grad():
        for agent in (a, b):
            for p, d in zip(agent.net.parameters(), deltas):
                p.add_(d)
    x, y = _data(1)
    _step(a, x[0], y[0])
    _step(b, x[0], y[0])
    for p, q, d in zip(a.net.parameters(), b.net.parameters(), deltas):
        assert torch.allclose(p, q - lr * strength * d, atol=1e-6)


def test_zero_anchor_is_l2_and_zero_strength_is_backprop_bit_for_bit():
    x, y = _data(20)
    runs = {}
    for name, cfg in (("l2i0", L2InitConfig(l2_init_strength=1e-2)),
                      ("l2", BackpropConfig(weight_decay=1e-2)),
                      ("off", L2InitConfig(l2_init_strength=0.0)),
                      ("bp", BackpropConfig())):
        agent = SupervisedAgent(cfg, *REG_SPACES, seed=2)
        if name == "l2i0":
            for t in agent.l2_init.initial:
                t.zero_()
        for t in range(20):
            _step(agent, x[t], y[t])
        runs[name] = list(agent.net.parameters())
    for a, b in (("l2i0", "l2"), ("off", "bp")):
        assert all(torch.equal(p, q) for p, q in zip(runs[a], runs[b]))
    assert not all(torch.equal(p, q) for p, q in zip(runs["l2"], runs["bp"]))


@pytest.mark.parametrize("hidden", [(5,), (64,)])  # (64,): the first layer takes the fused step
def test_vectorized_l2_init_is_the_single_agent_per_seed(hidden):
    cfg = L2InitConfig(hidden=hidden, l2_init_strength=0.05)
    vec = VectorMLPAgent(cfg, *REG_SPACES, seeds=(3, 4))
    singles = [SupervisedAgent(cfg, *REG_SPACES, seed=s) for s in (3, 4)]
    assert vec._fused[0] == (hidden == (64,))
    x, y = _data(30, seeds=2)
    for t in range(30):
        vec.act(x[t], {"phase": "train"})
        vec.learn(x[t], None, 0.0, x[t], False, False, {"target": y[t]})
        for s, agent in enumerate(singles):
            _step(agent, x[t, s], y[t, s])
    for s, agent in enumerate(singles):
        for layer, W, b, W0 in zip(agent.net.layers, vec.W, vec.b, vec.l2_init.initial[0::2]):
            assert torch.allclose(layer.weight, W[s], atol=1e-5)
            assert torch.allclose(layer.bias, b[s], atol=1e-5)
            assert not torch.equal(W[s], W0[s])  # it learned
    # Resume: theta0 and the fused pull come back with the state.
    other = VectorMLPAgent(cfg, *REG_SPACES, seeds=(3, 4))
    with torch.no_grad():
        for t in other.l2_init.initial:
            t.add_(1.0)
    other.load_state_dict(copy.deepcopy(vec.state_dict()))
    assert all(torch.equal(p, q) for p, q in zip(other.l2_init.initial, vec.l2_init.initial))
    assert all(torch.equal(p, q) for p, q in zip(other._pull, vec._pull))


def test_resume_keeps_theta0():
    cfg = L2InitConfig(l2_init_strength=0.1)
    x, y = _data(8)
    a = SupervisedAgent(cfg, *REG_SPACES, seed=0)
    for t in range(4):
        _step(a, x[t], y[t])
    b = SupervisedAgent(cfg, *REG_SPACES, seed=7)  # another theta0 until the state is loaded
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for t in range(4, 8):
        _step(a, x[t], y[t])
        _step(b, x[t], y[t])
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))


def test_ppo_l2_init_toward_theta0_and_zero_strength_is_ppo():
    small = dict(hidden=(8, 8), batch_size=32, num_minibatches=2, num_epochs=2)

    def run(cfg):
        agent = PPOAgent(cfg, *SPACES[ANT], seed=0)
        g = np.random.default_rng(0)
        for _ in range(64):
            obs = g.standard_normal(27)
            act = agent.act(obs, {})
            agent.learn(obs, act, float(g.standard_normal()), g.standard_normal(27), False, False, {})
        return agent

    ppo = run(PPOConfig(**small))
    off = run(PPOL2InitConfig(l2_init_strength=0.0, **small))
    on = run(PPOL2InitConfig(l2_init_strength=1.0, **small))
    assert all(torch.equal(p, q) for p, q in zip(ppo.parameters(), off.parameters()))
    fresh = PPOAgent(PPOL2InitConfig(**small), *SPACES[ANT], seed=0)
    assert len(on.l2_init.initial) == len(on.parameters())  # log-std included
    assert all(torch.equal(p0, p.detach()) for p0, p in zip(on.l2_init.initial, fresh.parameters()))
    dist = [sum(float((p.detach() - p0).square().sum()) for p, p0 in zip(a.parameters(), on.l2_init.initial))
            for a in (ppo, on)]
    assert dist[1] < dist[0]  # pulled toward theta0
    assert "l2_init" in on.state_dict() and "l2_init" not in ppo.state_dict()


@pytest.mark.parametrize("env_id", [REGRESSION, PERMUTED_MNIST, CONTINUAL_IMAGENET,
                                    INCREMENTAL_CIFAR, ANT])
def test_l2_init_on_every_stream(env_id):
    agent = lop_bench.make_agent("l2_init", _env(env_id), seed=0)
    assert agent.l2_init is not None and agent.cfg.weight_decay == 0.0
    assert agent.l2_init.strength == agent.cfg.l2_init_strength > 0


def test_l2_init_presets_and_names():
    ant = l2_init_table.ALGORITHM.presets[(ANT, "*")].config
    assert (ant.l2_init_strength, ant.weight_decay, ant.betas) == (1e-3, 0.0, (0.99, 0.99))
    a = lop_bench.make_agent("ppo_l2_init", _env(ANT), seed=0)
    assert a.cfg == ant and a.preset == f"ppo_l2_init/{ANT}/*"
    vec = lop_bench.make_agent("l2_init", _env(REGRESSION, vectorization_mode="vector_entry_point",
                                               num_envs=2), seed=(0, 1))
    assert type(vec) is VectorMLPAgent and vec.l2_init is not None
    with pytest.raises(InvalidConfigError, match="l2_init_strength"):
        lop_bench.make_agent("l2_init", _env(REGRESSION), seed=0, l2_init_strength=-1.0)


def test_incremental_resnet_l2_init_with_zero_anchor_is_weight_decay_bit_for_bit():
    """The ResNet-18 learner of class-incremental CIFAR-100 (on the fake stream of its own
    tests): theta0 = 0 gives SGD's coupled weight decay exactly; the state carries theta0."""
    from baselines.agents.incremental import IncrementalAgent
    from tests.test_incremental_agents import FakeIncrementalStream, drive

    runs = {}
    for name, hp in (("l2_init", dict(l2_init_strength=5e-3)), ("backprop", dict(weight_decay=5e-3))):
        env = FakeIncrementalStream(blocks=1, epochs=2)
        factory = l2_init_table.make_agent if name == "l2_init" else lop_bench.agents.resolve_factory("backprop")[1]
        agent = factory(env.spec, env.observation_space, env.action_space, 0, "cpu", width=1 / 16, **hp)
        assert type(agent) is IncrementalAgent
        if name == "l2_init":
            assert agent.cfg.weight_decay == 0.0 and len(agent.l2_init.initial) == len(agent._params)
            for t in agent.l2_init.initial:
                t.zero_()
        drive(agent, env)
        runs[name] = agent
    a, b = runs["l2_init"], runs["backprop"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    state = a.state_dict()
    assert all(torch.equal(t, torch.zeros_like(t)) for t in state["l2_init"]["initial"])
    assert "l2_init" not in b.state_dict()
