"""Behaviour shared by every reference agent: presets, overrides, determinism, protocol."""

import copy
import importlib.metadata

import numpy as np
import pytest
import torch
from gymnasium.spaces import Box, Discrete, MultiDiscrete

from baselines import backprop, continual_backprop, l2, linear, shrink_perturb
from baselines.core.optim import EntrywiseAdam
from lop_bench.agents import resolve_factory
from lop_bench.config import config_to_dict
from lop_bench.errors import InvalidConfigError

from . import REG, TRAIN, data, make, params, reg_spaces, same, spec, train

AGENTS = {
    "linear": linear,
    "backprop": backprop,
    "l2": l2,
    "shrink_perturb": shrink_perturb,
    "continual_backprop": continual_backprop,
}
NAMES = sorted(AGENTS)

# One out-of-range value per agent-specific field.
OUT_OF_RANGE = {
    "linear": [("lr", 0.0), ("momentum", 1.0), ("optimizer", "rmsprop")],
    "backprop": [("lr", -0.01), ("hidden", (5, 0)), ("activation", "gelu2"), ("betas", (0.9, 1.0))],
    "l2": [("weight_decay", -1e-3)],
    "shrink_perturb": [("noise_std", -1e-4)],
    "continual_backprop": [
        ("replacement_rate", 1.5),
        ("replacement_rate", -1e-4),
        ("decay_rate", 1.0),
        ("maturity_threshold", -1),
        ("utility", "random"),
    ],
}


@pytest.mark.parametrize("name", NAMES)
def test_preset_for_the_regression_stream(name):
    agent = make(AGENTS[name])
    assert agent.preset == f"{name}/{REG}/*"
    assert agent.hparams == config_to_dict(AGENTS[name].ALGORITHM.presets[(REG, "*")].config)
    assert agent.hparams["lr"] == 0.01
    x = np.zeros((1, 20), np.float32)
    pred = agent.act(x, TRAIN)
    assert pred.shape == (1, 1) and pred.dtype == np.float32


def test_paper_values_in_the_regression_presets():
    bp = make(backprop).hparams
    assert (bp["hidden"], bp["activation"], bp["optimizer"], bp["momentum"]) == (
        [5],
        "relu",
        "sgd",
        0.0,
    )
    assert bp["weight_decay"] == 0.0
    assert make(l2).hparams["weight_decay"] > 0
    sp = make(shrink_perturb).hparams
    assert sp["weight_decay"] > 0 and sp["noise_std"] > 0
    cbp = make(continual_backprop).hparams
    assert cbp["replacement_rate"] == 1e-4 and cbp["decay_rate"] == 0.99
    assert cbp["maturity_threshold"] == 100 and cbp["utility"] == "adaptable_contribution"


@pytest.mark.parametrize("name", NAMES)
def test_override_shows_in_hparams_and_optimizer(name):
    agent = make(AGENTS[name], lr=0.003)
    assert agent.hparams["lr"] == 0.003
    assert agent.optimizer.param_groups[0]["lr"] == 0.003


@pytest.mark.parametrize("name", NAMES)
def test_unknown_hparam_is_named(name):
    with pytest.raises(InvalidConfigError, match="learning_rate"):
        make(AGENTS[name], learning_rate=0.1)


@pytest.mark.parametrize("name,field,value", [(n, f, v) for n in NAMES for f, v in OUT_OF_RANGE[n]])
def test_out_of_range_hparam_raises(name, field, value):
    with pytest.raises(InvalidConfigError, match=field.split("[")[0]):
        make(AGENTS[name], **{field: value})


@pytest.mark.parametrize("name", NAMES)
def test_no_preset_for_another_stream(name):
    obs, act = reg_spaces()
    with pytest.raises(InvalidConfigError, match="no preset"):
        AGENTS[name].make_agent(spec("lop/Unknown-v0"), obs, act, 0, "cpu")


@pytest.mark.parametrize("name", NAMES)
def test_registered_as_entry_point(name):
    eps = {ep.name for ep in importlib.metadata.entry_points(group="lop_bench.agents")}
    if name not in eps:
        pytest.skip("lop-bench is not pip-installed (pip install -e .)")
    assert resolve_factory(name)[1] is AGENTS[name].make_agent


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_weights_other_seed_differs(name):
    x, y = data(300)
    kw = (
        {"replacement_rate": 1e-2, "maturity_threshold": 10} if name == "continual_backprop" else {}
    )
    a, b, c = (make(AGENTS[name], seed=s, **kw) for s in (3, 3, 4))
    for agent in (a, b, c):
        train(agent, x, y)
    assert same(params(a), params(b))
    assert not same(params(a), params(c))


def test_backprop_learns_a_linear_target():
    x, y = data(2000, seed=1)
    errors = train(make(backprop), x, y)
    first, last = np.mean(errors[:200]), np.mean(errors[-300:])
    assert last < 0.05 * first


def test_linear_learner_learns_a_linear_target():
    x, y = data(2000, seed=1)
    agent = make(linear)
    errors = train(agent, x, y)
    assert np.mean(errors[-300:]) < 0.01 * np.mean(errors[:200])
    assert agent.features is None  # no hidden layers: the runner skips feature diagnostics


@pytest.mark.parametrize("name", [n for n in NAMES if n != "linear"])
def test_features_shapes_and_no_side_effects(name):
    agent = make(AGENTS[name], hidden=(5, 3))
    train(agent, *data(50))
    before = params(agent) + [b.clone() for b in agent.buffers()]
    gen_state = agent.generator.get_state()
    feats = agent.features(torch.rand(7, 20))
    assert [f.shape for f in feats] == [(7, 5), (7, 3)]
    assert not any(f.requires_grad for f in feats)
    assert (feats[0] >= 0).all()  # ReLU activations, not pre-activations
    assert same(before, params(agent) + list(agent.buffers()))
    assert torch.equal(agent.generator.get_state(), gen_state)
    assert [f.shape for f in agent.features(np.zeros((4, 1, 20), np.float32))] == [(4, 5), (4, 3)]


@pytest.mark.parametrize("name", NAMES)
def test_no_learning_without_target_nor_graph_on_test_batches(name):
    agent = make(AGENTS[name])
    x = np.ones((1, 20), np.float32)
    before = params(agent) + [b.clone() for b in agent.buffers()]
    test_info = {"task": 0, "phase": "test"}
    pred = agent.act(x, test_info)
    assert agent._out is None  # no autograd graph kept on a test batch
    agent.learn(x, pred, 0.0, x, False, False, test_info)
    pred = agent.act(x, TRAIN)
    agent.learn(x, pred, 0.0, x, False, False, dict(TRAIN))  # train step without a target
    assert same(before, params(agent) + list(agent.buffers()))


def test_one_forward_pass_per_step():
    agent = make(backprop)
    calls = []
    forward = agent.net.forward_with_features

    def counting(x):
        calls.append(1)
        return forward(x)

    agent.net.forward_with_features = counting
    train(agent, *data(5))
    assert len(calls) == 5


def test_learn_uses_the_prediction_of_act():
    # One SGD step on the kept output equals one step computed by hand.
    agent = make(backprop, hidden=(4,))
    x, y = data(1)
    w = [p.detach().clone().requires_grad_(True) for p in agent.parameters()]
    h = torch.relu(torch.from_numpy(x[0]) @ w[0].T + w[1])
    loss = ((h @ w[2].T + w[3] - torch.from_numpy(y[0])) ** 2).mean()
    grads = torch.autograd.grad(loss, w)
    train(agent, x, y)
    for p, p0, g in zip(agent.parameters(), w, grads, strict=True):
        assert torch.allclose(p, p0 - 0.01 * g, atol=1e-7)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "linear"])
def test_state_dict_resume_is_exact(name):
    kw = (
        {"replacement_rate": 1e-2, "maturity_threshold": 10} if name == "continual_backprop" else {}
    )
    x, y = data(600)
    a = make(AGENTS[name], momentum=0.9, **kw)
    train(a, x[:300], y[:300])
    state = copy.deepcopy(a.state_dict())
    train(a, x[300:], y[300:])
    b = make(AGENTS[name], seed=7, momentum=0.9, **kw)
    b.load_state_dict(state)
    train(b, x[300:], y[300:])
    assert same(params(a), params(b))
    assert same(list(a.buffers()), list(b.buffers()))
    if name == "continual_backprop":
        assert a.gnt.num_replaced == b.gnt.num_replaced and a.gnt.num_replaced[0] > 0


def test_entrywise_adam_equals_torch_adam():
    torch.manual_seed(0)
    p1 = torch.nn.Parameter(torch.randn(4, 3))
    p2 = torch.nn.Parameter(p1.detach().clone())
    ours = EntrywiseAdam([p1], lr=1e-2, betas=(0.9, 0.99), weight_decay=1e-3)
    ref = torch.optim.Adam([p2], lr=1e-2, betas=(0.9, 0.99), weight_decay=1e-3)
    for _ in range(50):
        g = torch.randn(4, 3)
        for p, opt in ((p1, ours), (p2, ref)):
            p.grad = g.clone()
            opt.step()
    assert torch.allclose(p1, p2, atol=1e-6)
    assert ours.state[p1]["step"].shape == (4, 3)


def test_adam_option_trains():
    agent = make(backprop, optimizer="adam", lr=1e-2)
    assert isinstance(agent.optimizer, EntrywiseAdam)
    errors = train(agent, *data(1500, seed=1))
    assert np.mean(errors[-300:]) < 0.05 * np.mean(errors[:200])


def test_classification_with_multidiscrete_actions():
    # 4 inputs per batch, 3 classes: the label is the argmax of a fixed linear map.
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3)).astype(np.float32)
    obs_space = Box(0.0, 1.0, (4, 6), np.float32)
    agent = backprop.make_agent(
        spec(), obs_space, MultiDiscrete([3] * 4), 0, "cpu", hidden=(16,), lr=0.1
    )
    correct = []
    for _ in range(1500):
        x = rng.random((4, 6), dtype=np.float32)
        labels = (x @ w).argmax(axis=1)
        pred = agent.act(x, TRAIN)
        assert pred.shape == (4,) and pred.dtype == np.int64
        correct.append(np.mean(pred == labels))
        agent.learn(x, pred, 0.0, x, False, False, {"target": labels, **TRAIN})
    assert np.mean(correct[-300:]) > np.mean(correct[:100]) + 0.2


def test_padded_rows_are_not_learned():
    obs_space, act_space = reg_spaces(batch=3)
    agent = backprop.make_agent(spec(), obs_space, act_space, 0, "cpu")
    ref = backprop.make_agent(spec(), *reg_spaces(batch=1), 0, "cpu")
    x, y = data(3)
    xb, yb = x[:, 0], y[:, 0]  # (3, 20), (3, 1)
    pred = agent.act(np.concatenate([xb[:1], np.ones((2, 20), np.float32)]), {**TRAIN, "valid": 1})
    agent.learn(
        None,
        pred,
        0.0,
        None,
        False,
        False,
        {"target": np.concatenate([yb[:1], [[9.0], [9.0]]]).astype(np.float32), **TRAIN},
    )
    train(ref, x[:1], y[:1])
    assert same(params(agent), params(ref))


def test_discrete_action_and_bad_spaces():
    obs_space = Box(0.0, 1.0, (1, 5), np.float32)
    agent = backprop.make_agent(spec(), obs_space, Discrete(4), 0, "cpu")
    x = np.zeros((1, 5), np.float32)
    action = agent.act(x, TRAIN)
    assert isinstance(action, int) and 0 <= action < 4
    agent.learn(x, action, 0.0, x, False, False, {"target": 2, **TRAIN})
    with pytest.raises(InvalidConfigError, match="action space"):
        backprop.make_agent(spec(), obs_space, Box(0, 1, (2, 1), np.float32), 0, "cpu")
    with pytest.raises(InvalidConfigError, match="observation space"):
        backprop.make_agent(spec(), Box(0, 1, (5,), np.float32), Discrete(4), 0, "cpu")


@pytest.mark.parametrize("name", NAMES)
def test_runs_the_regression_stream(name):
    import lop_bench

    env = lop_bench.make(REG, tier="smoke").unwrapped
    kw = (
        {"replacement_rate": 1e-2, "maturity_threshold": 20} if name == "continual_backprop" else {}
    )
    agent = AGENTS[name].make_agent(
        env.spec, env.observation_space, env.action_space, 0, "cpu", **kw
    )
    obs, info = env.reset(seed=0)
    scores = []
    while True:
        action = agent.act(obs, info)
        next_obs, reward, terminated, truncated, info = env.step(action)
        agent.learn(obs, action, reward, next_obs, terminated, truncated, info)
        if "task_metrics" in info:
            scores.append(info["task_metrics"]["mse"])
        if info["stream_done"]:
            break
        obs = next_obs
    assert len(scores) == env.num_tasks and np.isfinite(scores).all()
    assert np.mean(scores[-3:]) < scores[0]  # it learns something
    if name == "continual_backprop":
        assert agent.gnt.num_replaced[0] > 0


@pytest.mark.parametrize("name", ["backprop", "shrink_perturb", "continual_backprop"])
def test_incremental_cifar_gets_the_resnet_version_of_the_agent(name):
    import lop_bench
    from baselines.agents.incremental import IncrementalAgent

    env = lop_bench.make("lop/IncrementalCIFAR100-v0", tier="smoke")
    agent = lop_bench.make_agent(name, env, seed=0, lr=0.05)
    assert isinstance(agent, IncrementalAgent)
    assert agent.preset.startswith(f"{name}/lop/IncrementalCIFAR100-v0")
    assert agent.hparams["lr"] == 0.05  # overrides reach the ResNet agent's config
    variant = {"backprop": (0.0, False), "shrink_perturb": (1e-5, False),
               "continual_backprop": (0.0, True)}[name]
    assert (agent.cfg.noise_std, agent.cfg.continual_backprop) == variant
    with pytest.raises(InvalidConfigError, match="hidden"):  # MLP fields are not its fields
        lop_bench.make_agent(name, env, seed=0, hidden=(5,))


def test_l2_names_the_streams_it_has_presets_for_on_incremental_cifar():
    import lop_bench

    env = lop_bench.make("lop/IncrementalCIFAR100-v0", tier="smoke")
    with pytest.raises(InvalidConfigError, match="no preset for 'lop/IncrementalCIFAR100-v0'"):
        lop_bench.make_agent("l2", env, seed=0)
