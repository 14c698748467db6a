"""UPGD (baselines.core.upgd) against hand computations: the scaled utility, one step of
three weights with fixed noise (plain and adaptive), the trace's bias correction over two
steps, the generator's draws, the per-seed batched update, resume, and bad settings; the
``upgd`` agent: its presets, one agent step by hand, resume and seeding; the many-seeds
learner with UPGD, CReLU or layer normalization against each seed's single agent."""

from __future__ import annotations

import copy
import math
import types

import numpy as np
import pytest
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.spaces import Box, MultiDiscrete

import lop_bench
from baselines.agents.vectorized import VectorMLPAgent
from baselines.core.upgd import (
    UPGD,
    BatchedUPGD,
    draw_noise,
    draw_noise_batched,
    global_utility_max,
    scaled_utilities,
    upgd_update_,
)
from baselines.presets import ANT, CONTINUAL_IMAGENET, INCREMENTAL_CIFAR, PERMUTED_MNIST, REGRESSION
from lop_bench.errors import InvalidConfigError


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_scaled_utility_by_hand():
    # Traces (2, -1) and (0.5,), bias correction 0.5: eta = 2 (the max of the raw traces),
    # s = sigmoid((U / 0.5) / 2) = sigmoid(U).
    traces = [torch.tensor([2.0, -1.0]), torch.tensor([0.5])]
    s = scaled_utilities(traces, [0.5, 0.5])
    assert s[0].tolist() == pytest.approx([_sig(2.0), _sig(-1.0)], rel=1e-6)
    assert s[1].tolist() == pytest.approx([_sig(0.5)], rel=1e-6)
    assert global_utility_max(traces).item() == 2.0
    # Per seed with a leading seed axis: seed 1's max is 4.
    batched = [torch.tensor([[2.0, -1.0], [4.0, 1.0]]), torch.tensor([[0.5], [-3.0]])]
    assert global_utility_max(batched, batched=True).tolist() == [2.0, 4.0]
    sb = scaled_utilities(batched, [1.0, 1.0], batched=True)
    assert sb[0][1].tolist() == pytest.approx([_sig(1.0), _sig(0.25)], rel=1e-6)
    assert sb[1][1].tolist() == pytest.approx([_sig(-0.75)], rel=1e-6)


def _three_weights():
    w = torch.tensor([0.5, -1.0])
    b = torch.tensor([2.0])
    g = [torch.tensor([0.4, 0.2]), torch.tensor([-0.25])]
    return [w, b], g


def test_one_step_by_hand():
    # u = -g w = (-0.2, 0.2, 0.5); beta_u 0.9, first step: trace = 0.1 u, eta = 0.05,
    # bias correction 0.1, so s = sigmoid(u / 0.05) = sigmoid(-4, 4, 10).
    params, grads = _three_weights()
    traces = [torch.zeros(2), torch.zeros(1)]
    xi = [torch.tensor([1.0, -2.0]), torch.tensor([0.5])]
    upgd_update_(params, grads, traces, [1, 1], xi, lr=0.1, weight_decay=0.01,
                 beta_utility=0.9, sigma=0.5)
    assert traces[0].tolist() == pytest.approx([-0.02, 0.02], rel=1e-6)
    assert traces[1].tolist() == pytest.approx([0.05], rel=1e-6)
    w0 = [0.5, -1.0, 2.0]
    g0 = [0.4, 0.2, -0.25]
    n0 = [1.0, -2.0, 0.5]
    s = [_sig(-4.0), _sig(4.0), _sig(10.0)]
    expected = [(1 - 0.1 * 0.01) * w - 0.1 * (g + 0.5 * n) * (1 - si)
                for w, g, n, si in zip(w0, g0, n0, s)]
    got = params[0].tolist() + params[1].tolist()
    assert got == pytest.approx(expected, rel=1e-6)
    # The most useful weight (s = sigmoid(10)) barely moves beyond its decay.
    assert abs(got[2] - 0.999 * 2.0) < 1e-5


def test_adaptive_step_by_hand():
    # First adaptive step: m_hat = g, v_hat = g^2, so the gradient term is
    # g (1 - s) / (|g| + eps) = sign(g) (1 - s); the noise stays unscaled.
    params, grads = _three_weights()
    traces = [torch.zeros(2), torch.zeros(1)]
    m = [torch.zeros(2), torch.zeros(1)]
    v = [torch.zeros(2), torch.zeros(1)]
    xi = [torch.tensor([1.0, -2.0]), torch.tensor([0.5])]
    upgd_update_(params, grads, traces, [1, 1], xi, lr=0.1, weight_decay=0.0, beta_utility=0.9,
                 sigma=0.5, moments=(m, v), betas=(0.9, 0.999), eps=1e-8)
    s = [_sig(-4.0), _sig(4.0), _sig(10.0)]
    w0, g0, n0 = [0.5, -1.0, 2.0], [0.4, 0.2, -0.25], [1.0, -2.0, 0.5]
    expected = [w - 0.1 * (math.copysign(1.0, g) * (1 - si) + 0.5 * n * (1 - si))
                for w, g, n, si in zip(w0, g0, n0, s)]
    assert params[0].tolist() + params[1].tolist() == pytest.approx(expected, rel=1e-5)
    assert m[0].tolist() == pytest.approx([0.04, 0.02], rel=1e-6)
    assert v[1].tolist() == pytest.approx([0.001 * 0.0625], rel=1e-6)


def test_trace_and_bias_correction_over_two_steps():
    # Without noise and decay: step 2's trace is 0.9 * 0.1 u1 + 0.1 u2 and its bias
    # correction 1 - 0.81 = 0.19.
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0]))
    opt = UPGD([w], lr=0.1, weight_decay=0.0, beta_utility=0.9, sigma=0.0,
               generator=torch.Generator().manual_seed(0))
    w.grad = torch.tensor([-1.0, 0.5, 1.0])
    opt.step()
    u1 = [1.0, -1.0, 1.0]
    s1 = [_sig(1.0 / 0.1), _sig(-1.0 / 0.1), _sig(1.0 / 0.1)]  # (0.1 u / 0.1) / (0.1 * 1)
    w1 = [w0 - 0.1 * g * (1 - s) for w0, g, s in zip([1.0, 2.0, -1.0], [-1.0, 0.5, 1.0], s1)]
    assert w.tolist() == pytest.approx(w1, rel=1e-6)
    w.grad = torch.tensor([0.5, -0.5, 2.0])
    opt.step()
    u2 = [-0.5 * w1[0], 0.5 * w1[1], -2.0 * w1[2]]
    trace = [0.9 * 0.1 * a + 0.1 * b for a, b in zip(u1, u2)]
    assert opt.state[w]["utility"].tolist() == pytest.approx(trace, rel=1e-6)
    assert opt.state[w]["step"] == 2
    eta = max(trace)
    s2 = [_sig(t / 0.19 / eta) for t in trace]
    w2 = [a - 0.1 * g * (1 - s) for a, g, s in zip(w1, [0.5, -0.5, 2.0], s2)]
    assert w.tolist() == pytest.approx(w2, rel=1e-5)


def test_optimizer_draws_one_randn_per_step_from_its_generator():
    params, grads = _three_weights()
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    opt = UPGD(ps, lr=0.1, weight_decay=0.01, beta_utility=0.9, sigma=0.5,
               generator=torch.Generator().manual_seed(7))
    opt.step()
    xi = torch.randn(3, generator=torch.Generator().manual_seed(7))
    ref = [p.clone() for p in params]
    upgd_update_(ref, grads, [torch.zeros(2), torch.zeros(1)], [1, 1], [xi[:2], xi[2:]],
                 lr=0.1, weight_decay=0.01, beta_utility=0.9, sigma=0.5)
    for p, r in zip(ps, ref):
        assert torch.equal(p.detach(), r)
    # The generator moved by exactly that draw.
    g = torch.Generator().manual_seed(7)
    torch.randn(3, generator=g)
    assert torch.equal(opt.generator.get_state(), g.get_state())


def test_sigma_zero_draws_nothing_and_gradless_params_are_skipped():
    a = torch.nn.Parameter(torch.tensor([1.0]))
    b = torch.nn.Parameter(torch.tensor([3.0]))
    gen = torch.Generator().manual_seed(3)
    before = gen.get_state()
    opt = UPGD([a, b], lr=0.1, sigma=0.0, generator=gen)
    a.grad = torch.tensor([-1.0])
    opt.step()
    assert torch.equal(gen.get_state(), before)
    assert b.item() == 3.0 and b not in opt.state  # no grad: not decayed, not traced


def test_non_positive_global_max_gives_no_nan():
    # Every gradient zero: the public code's 0/0 would fill the weights with NaN. Here no
    # weight is protected: utility 0 gives s = 1/2, and the weights are only decayed + noise.
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = UPGD([w], lr=0.1, weight_decay=0.5, beta_utility=0.0, sigma=0.0,
               generator=torch.Generator().manual_seed(0))
    w.grad = torch.zeros(2)
    opt.step()
    assert w.tolist() == pytest.approx([0.95, -0.95], rel=1e-7)
    # All utilities negative: s = sigmoid(-large) = 0, the full gradient step.
    w2 = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt2 = UPGD([w2], lr=0.1, weight_decay=0.0, beta_utility=0.0, sigma=0.0,
                generator=torch.Generator().manual_seed(0))
    w2.grad = torch.tensor([1.0, 1.0])  # u = -g w = (-1, -2) < 0
    opt2.step()
    assert w2.tolist() == pytest.approx([0.9, 1.9], rel=1e-7)
    assert torch.isfinite(w2).all()


def test_batched_update_equals_each_seeds_single_run():
    torch.manual_seed(0)  # test data only; UPGD's noise comes from the generators
    n, shapes = 3, [(4, 3), (4,), (1, 4)]
    params0 = [torch.randn(n, *s) for s in shapes]
    seeds = [11, 12, 13]
    batched = [p.clone() for p in params0]
    traces = [torch.zeros_like(p) for p in batched]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    singles = [[torch.nn.Parameter(p[i].clone()) for p in params0] for i in range(n)]
    opts = [UPGD(ps, lr=0.05, weight_decay=0.01, beta_utility=0.99, sigma=0.1,
                 generator=torch.Generator().manual_seed(s)) for ps, s in zip(singles, seeds)]
    for t in range(1, 4):
        grads = [torch.randn(n, *s) for s in shapes]
        noise = draw_noise_batched(shapes, gens)
        upgd_update_(batched, grads, traces, [t] * 3, noise, lr=0.05, weight_decay=0.01,
                     beta_utility=0.99, sigma=0.1, batched=True)
        for i in range(n):
            for p, g in zip(singles[i], grads):
                p.grad = g[i].clone()
            opts[i].step()
    for i in range(n):
        for p, b in zip(singles[i], batched):
            assert torch.allclose(p.detach(), b[i], rtol=0, atol=1e-7)


def test_draw_noise_batched_rows_are_the_single_draws():
    shapes = [(2, 3), (5,)]
    rows = draw_noise_batched(shapes, [torch.Generator().manual_seed(s) for s in (1, 2)])
    for i, s in enumerate((1, 2)):
        single = draw_noise(shapes, torch.Generator().manual_seed(s))
        for r, one in zip(rows, single):
            assert torch.equal(r[i], one)
    with pytest.raises(ValueError, match="out must have shape"):
        draw_noise_batched(shapes, [torch.Generator()], out=torch.empty(2, 11))


def _run(net, opt, steps, x, y):
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()


def test_resume_from_state_dict_is_bit_identical():
    x = torch.linspace(-1, 1, 12).reshape(4, 3)
    y = torch.tensor([[1.0], [0.0], [-1.0], [0.5]])

    def make():
        g = torch.Generator().manual_seed(5)
        net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
        with torch.no_grad():
            for p in net.parameters():
                p.uniform_(-0.5, 0.5, generator=g)
        return net, UPGD(net.parameters(), lr=0.05, sigma=0.01, adaptive=True, generator=g)

    net, opt = make()
    _run(net, opt, 10, x, y)
    full = [p.detach().clone() for p in net.parameters()]

    net_a, opt_a = make()
    _run(net_a, opt_a, 4, x, y)
    saved = (
        {k: v.clone() for k, v in net_a.state_dict().items()},
        opt_a.state_dict(),
        opt_a.generator.get_state(),
    )
    import copy

    saved = copy.deepcopy(saved)
    net_b, opt_b = make()
    net_b.load_state_dict(saved[0])
    opt_b.load_state_dict(saved[1])
    opt_b.generator.set_state(saved[2])
    _run(net_b, opt_b, 6, x, y)
    for p, q in zip(net_b.parameters(), full):
        assert torch.equal(p.detach(), q)
    assert opt_b.state[next(iter(net_b.parameters()))]["step"] == 10


def test_bad_settings_name_the_field():
    p = [torch.nn.Parameter(torch.zeros(1))]
    g = torch.Generator()
    with pytest.raises(InvalidConfigError, match="beta_utility"):
        UPGD(p, beta_utility=1.0, generator=g)
    with pytest.raises(InvalidConfigError, match="lr"):
        UPGD(p, lr=0.0, generator=g)
    with pytest.raises(InvalidConfigError, match="sigma"):
        UPGD(p, sigma=-1.0, generator=g)
    with pytest.raises(InvalidConfigError, match="torch.Generator"):
        UPGD(p, generator=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs noises"):
        upgd_update_(p, [torch.ones(1)], [torch.zeros(1)], [1], None, lr=0.1,
                     weight_decay=0.0, beta_utility=0.0, sigma=0.1)


# -- the upgd agent (baselines/upgd.py) -----------------------------------------------------
_SPACES = {
    REGRESSION: (Box(-np.inf, np.inf, (1, 20), np.float32), Box(-np.inf, np.inf, (1, 1), np.float32)),
    PERMUTED_MNIST: (Box(0, 1, (1, 784), np.float32), MultiDiscrete([10])),
    CONTINUAL_IMAGENET: (Box(0, 255, (100, 3, 32, 32), np.float32), MultiDiscrete([2] * 100)),
    INCREMENTAL_CIFAR: (Box(0, 1, (90, 3, 32, 32), np.float32), MultiDiscrete([100] * 90)),
    ANT: (Box(-np.inf, np.inf, (27,), np.float64), Box(-1, 1, (8,), np.float32)),
}


def _env(env_id, tier="smoke", **kwargs):
    """What make_agent reads of an env: its spec and spaces."""
    obs, act = _SPACES[env_id]
    return types.SimpleNamespace(
        spec=EnvSpec(env_id, entry_point="x:y", kwargs={"tier": tier, **kwargs}),
        observation_space=obs, action_space=act)


@pytest.mark.parametrize("env_id", [REGRESSION, PERMUTED_MNIST, CONTINUAL_IMAGENET, ANT])
def test_upgd_presets_and_a_clear_error_elsewhere(env_id):
    agent = lop_bench.make_agent("upgd", _env(env_id), seed=0)
    assert isinstance(agent.optimizer, UPGD)
    assert agent.optimizer.generator is agent.generator
    assert agent.optimizer.defaults["adaptive"] == (env_id == ANT)
    assert {"beta_utility", "sigma"} <= set(agent.hparams)
    # Class-incremental CIFAR-100: the ResNet-18 learner with UPGD for SGD
    # (tests/baselines/test_method_cifar_rows.py).
    inc = lop_bench.make_agent("upgd", _env(INCREMENTAL_CIFAR), seed=0)
    assert isinstance(inc.optimizer, UPGD) and inc.optimizer.generator is inc.generators["noise"]
    with pytest.raises(InvalidConfigError, match="momentum"):
        lop_bench.make_agent("upgd", _env(REGRESSION), seed=0, momentum=0.9)
    with pytest.raises(InvalidConfigError, match="beta_utility"):
        lop_bench.make_agent("upgd", _env(REGRESSION), seed=0, beta_utility=1.5)


def test_upgd_agent_step_is_the_update_by_hand():
    # One learn() of the regression agent equals upgd_update_ on the same gradient, with
    # the noise drawn from a copy of the agent's generator.
    agent = lop_bench.make_agent("upgd", _env(REGRESSION), seed=4)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1, 20)).astype(np.float32)
    target = np.array([[0.7]], np.float32)
    before = [p.detach().clone() for p in agent.net.parameters()]
    gen = torch.Generator().manual_seed(0)
    gen.set_state(agent.generator.get_state())
    ref = [p.clone().requires_grad_(True) for p in before]
    x = torch.as_tensor(obs)
    h = torch.relu(x @ ref[0].T + ref[1])
    loss = torch.nn.functional.mse_loss(h @ ref[2].T + ref[3], torch.as_tensor(target))
    grads = torch.autograd.grad(loss, ref)
    noise = draw_noise([p.shape for p in before], gen)
    cfg = agent.cfg
    expected = [p.clone() for p in before]
    upgd_update_(expected, grads, [torch.zeros_like(p) for p in before], [1] * 4, noise,
                 lr=cfg.lr, weight_decay=cfg.weight_decay, beta_utility=cfg.beta_utility,
                 sigma=cfg.sigma)
    agent.act(obs, {"phase": "train"})
    agent.learn(obs, None, 0.0, obs, False, False, {"target": target, "phase": "train"})
    for p, e in zip(agent.net.parameters(), expected):
        assert torch.allclose(p.detach(), e, rtol=0, atol=1e-7)
    assert not torch.equal(agent.net.layers[0].weight, before[0])


def _steps(agent, n, seed):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        obs = rng.normal(size=(1, 20)).astype(np.float32)
        agent.act(obs, {"phase": "train"})
        agent.learn(obs, None, 0.0, obs, False, False,
                    {"target": rng.normal(size=(1, 1)).astype(np.float32), "phase": "train"})


def test_upgd_agent_resumes_bit_for_bit_and_repeats_with_a_seed():
    a = lop_bench.make_agent("upgd", _env(REGRESSION), seed=1)
    _steps(a, 30, 0)
    _steps(a, 30, 1)
    b = lop_bench.make_agent("upgd", _env(REGRESSION), seed=1)
    _steps(b, 30, 0)
    state = copy.deepcopy(b.state_dict())
    c = lop_bench.make_agent("upgd", _env(REGRESSION), seed=1)
    c.load_state_dict(state)
    _steps(c, 30, 1)
    for p, q in zip(a.net.parameters(), c.net.parameters()):
        assert torch.equal(p, q)
    d = lop_bench.make_agent("upgd", _env(REGRESSION), seed=2)
    _steps(d, 30, 0)
    assert not torch.equal(d.net.layers[0].weight, b.net.layers[0].weight)


def test_batched_upgd_state_round_trip_and_seed_count_check():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    params = [torch.ones(2, 3), torch.zeros(2, 1)]
    opt = BatchedUPGD(params, gens, lr=0.1, weight_decay=0.0, beta_utility=0.9, sigma=0.1)
    opt.step(params, [torch.full((2, 3), 0.5), torch.ones(2, 1)])
    state = opt.state_dict()
    assert state["step"] == 1  # trace = (1 - 0.9) * (-0.5 * 1)
    assert torch.allclose(state["traces"][0], torch.full((2, 3), -0.05))
    other = BatchedUPGD(params, gens, lr=0.1, weight_decay=0.0, beta_utility=0.9, sigma=0.1)
    other.load_state_dict(state)
    assert other.step_count == 1 and torch.equal(other.traces[0], opt.traces[0])
    with pytest.raises(ValueError, match="leading dimension of 3"):
        BatchedUPGD(params, gens + [torch.Generator()], lr=0.1, weight_decay=0.0,
                    beta_utility=0.9, sigma=0.1)


@pytest.mark.parametrize("name", ["upgd", "crelu", "layernorm"])
@pytest.mark.parametrize("env_id", [REGRESSION, PERMUTED_MNIST])
def test_many_seeds_agent_follows_each_seeds_single_agent(name, env_id):
    # The vectorized learner (make_vec's) with UPGD, CReLU or layer normalization: seed i's
    # weights (and norms) after 40 steps are the single agent's of seed i, up to float
    # rounding; resume is exact.
    obs_space, act_space = _SPACES[env_id]
    seeds = (3, 8)
    vec_env = _env(env_id, vectorization_mode="sync", num_envs=2)
    vec = lop_bench.make_agent(name, vec_env, seed=list(seeds))
    assert isinstance(vec, VectorMLPAgent) and vec.num_envs == 2
    singles = [lop_bench.make_agent(name, _env(env_id), seed=s) for s in seeds]
    rng = np.random.default_rng(0)
    classify = env_id == PERMUTED_MNIST

    def batch():
        obs = rng.random((2, *obs_space.shape)).astype(np.float32)
        target = (rng.integers(0, 10, (2, 1)) if classify
                  else rng.normal(size=(2, 1, 1)).astype(np.float32))
        return obs, target

    def step(obs, target):
        vec.act(obs, {"phase": "train"})
        vec.learn(obs, None, 0.0, obs, False, False, {"target": target, "phase": "train"})
        for i, agent in enumerate(singles):
            agent.act(obs[i], {"phase": "train"})
            agent.learn(obs[i], None, 0.0, obs[i], False, False,
                        {"target": target[i], "phase": "train"})

    for _ in range(40):
        step(*batch())
    for i, agent in enumerate(singles):
        for p, v in zip(agent.net.parameters(), vec.parameters()):
            assert torch.allclose(p.detach(), v[i], rtol=1e-4, atol=1e-5)
    state = copy.deepcopy(vec.state_dict())
    data = [batch() for _ in range(5)]
    for obs, target in data:
        step(obs, target)
    after = [p.clone() for p in vec.parameters()]
    other = lop_bench.make_agent(name, vec_env, seed=list(seeds))
    other.load_state_dict(state)
    for obs, target in data:
        other.act(obs, {"phase": "train"})
        other.learn(obs, None, 0.0, obs, False, False, {"target": target, "phase": "train"})
    for p, q in zip(other.parameters(), after):
        assert torch.equal(p, q)


@pytest.mark.parametrize("sigma", [0.0, 0.1])
def test_batched_upgd_is_upgd_update_bit_for_bit(sigma):
    # BatchedUPGD's flattened step equals upgd_update_(batched=True) exactly, noise included.
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4, 2), (3, 4), (3, 1, 4), (3, 1)]
    params = [torch.randn(s, generator=g) for s in shapes]
    ref = [p.clone() for p in params]
    traces = [torch.zeros_like(p) for p in params]
    seeds = (5, 6, 7)
    opt = BatchedUPGD(params, [torch.Generator().manual_seed(s) for s in seeds], lr=0.05,
                      weight_decay=0.01, beta_utility=0.9, sigma=sigma)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    for t in range(1, 4):
        grads = [torch.randn(s, generator=g) for s in shapes]
        opt.step(params, grads)
        noise = draw_noise_batched([s[1:] for s in shapes], gens) if sigma else None
        upgd_update_(ref, grads, traces, [t] * 4, noise, lr=0.05, weight_decay=0.01,
                     beta_utility=0.9, sigma=sigma, batched=True)
    for p, r, u, v in zip(params, ref, opt.traces, traces):
        assert torch.equal(p, r) and torch.equal(u, v)
