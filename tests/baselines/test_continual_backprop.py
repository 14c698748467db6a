"""baselines.continual_backprop: generate-and-test's replacement, bias correction,
optimizer-state reset, fractional accumulation and maturity threshold."""

import math

import numpy as np
import pytest
import torch

from baselines import backprop, continual_backprop
from baselines.core.gnt import DenseUnits, GenerateAndTest, SingleSeed
from baselines.core.optim import OptimizerEntries, reset_optimizer_entries

from . import TRAIN, data, make, params, same, train


def _agent(**kw):
    kw.setdefault("replacement_rate", 0.0)  # replacements only where a test forces them
    return make(continual_backprop, **kw)


def _snapshot(agent):
    layer, nxt = agent.net.layers
    opt = agent.optimizer
    snap = {
        "w_in": layer.weight,
        "b_in": layer.bias,
        "w_out": nxt.weight,
        "b_out": nxt.bias,
        "util": agent.gnt.utility[0],
        "mean": agent.gnt.mean_act[0],
        "age": agent.gnt.age[0],
    }
    for key, p in (("w_in", layer.weight), ("b_in", layer.bias), ("w_out", nxt.weight)):
        for name, value in opt.state[p].items():
            if torch.is_tensor(value) and value.shape == p.shape:
                snap[f"{key}.{name}"] = value
    return {k: v.detach().clone() for k, v in snap.items()}


def _check_replaced(before, after, unit, bound):
    rows = torch.arange(before["w_in"].shape[0]) != unit
    # fresh incoming weights from the init distribution, zero incoming bias
    assert not torch.equal(after["w_in"][unit], before["w_in"][unit])
    assert after["w_in"][unit].abs().max() <= bound
    assert after["w_in"][unit].abs().max() > 0
    assert after["b_in"][unit] == 0
    # zero outgoing weights
    assert (after["w_out"][:, unit] == 0).all()
    # every other unit untouched
    for key in ("w_in", "b_in", "util", "mean", "age"):
        assert torch.equal(after[key][rows], before[key][rows]), key
    assert torch.equal(after["w_out"][:, rows], before["w_out"][:, rows])
    for key in ("util", "mean", "age"):
        assert after[key][unit] == 0, key
    # optimizer state: the unit's rows (incoming) and columns (outgoing) zeroed, rest kept
    opt_keys = [k for k in before if "." in k]
    assert opt_keys
    for key in opt_keys:
        if key.startswith("w_out"):
            assert (before[key][:, unit] != 0).all(), key  # a reset that shows
            assert (after[key][:, unit] == 0).all(), key
            assert torch.equal(after[key][:, rows], before[key][:, rows]), key
        else:
            assert (before[key][unit] != 0).all(), key
            assert (after[key][unit] == 0).all(), key
            assert torch.equal(after[key][rows], before[key][rows]), key


@pytest.mark.parametrize(
    "opt_kw,state_keys",
    [
        ({"momentum": 0.9, "lr": 1e-3}, {"momentum_buffer"}),
        ({"optimizer": "adam", "lr": 1e-3}, {"exp_avg", "exp_avg_sq", "step"}),
    ],
)
def test_forced_replacement_resets_the_unit(opt_kw, state_keys):
    agent = _agent(**opt_kw)
    train(agent, *data(300))
    gnt = agent.gnt
    mean_hat = gnt.mean_activation(0)
    unit = int(torch.argmax(mean_hat))
    assert mean_hat[unit] > 0.05  # an active unit: the bias correction is visible
    before = _snapshot(agent)
    assert {k.split(".")[1] for k in before if "." in k} == state_keys
    gnt.replace(0, [unit])
    after = _snapshot(agent)
    _check_replaced(before, after, unit, agent.net.init_bounds[0])
    # the removed unit's mean contribution moved into the next layer's bias
    expected = before["b_out"] + before["w_out"][:, unit] * mean_hat[unit]
    assert torch.allclose(after["b_out"], expected, atol=1e-7)
    assert not torch.equal(after["b_out"], before["b_out"])
    assert gnt.num_replaced == [1]
    if opt_kw.get("optimizer") == "adam":  # per-entry step counts restart
        assert agent.optimizer.state[agent.net.layers[0].weight]["step"][unit].eq(0).all()
        other = (unit + 1) % 5
        assert agent.optimizer.state[agent.net.layers[1].weight]["step"][0, other] == 300


def test_reset_with_torch_adam_zeroes_moments_and_keeps_the_tensor_step():
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = torch.optim.Adam([p])
    for _ in range(3):
        p.grad = torch.randn(4, 3)
        opt.step()
    reset_optimizer_entries(opt, p, torch.tensor([1]), 0)
    state = opt.state[p]
    assert (state["exp_avg"][1] == 0).all() and (state["exp_avg_sq"][1] == 0).all()
    assert (state["exp_avg"][0] != 0).all()
    assert float(state["step"]) == 3


def _constant_unit_agent():
    """An agent whose hidden unit 0 outputs 0.5 for every input (zero incoming weights)."""
    agent = _agent(hidden=(6,))
    layer = agent.net.layers[0]
    with torch.no_grad():
        layer.weight[0] = 0.0
        layer.bias[0] = 0.5
    rng = np.random.default_rng(0)
    for _ in range(500):  # running means from the forward pass, weights kept fixed
        x = torch.from_numpy(rng.integers(0, 2, (1, 20)).astype(np.float32))
        agent.gnt.step(agent.net.forward_with_features(x)[1])
    return agent


def test_replacing_a_constant_unit_leaves_the_output_unchanged():
    agent = _constant_unit_agent()
    nxt = agent.net.layers[1]
    x = torch.randint(0, 2, (64, 20)).float()
    w0 = nxt.weight[0, 0].item()
    assert abs(w0) > 1e-2
    out_before = agent.net(x).detach()
    bias_before = nxt.bias.detach().clone()
    agent.gnt.replace(0, [0])
    assert torch.allclose(agent.net(x).detach(), out_before, atol=1e-6)
    # the paper's correction: without it the output would shift by -w0 * 0.5
    assert torch.allclose(nxt.bias - bias_before, torch.tensor([w0 * 0.5]), atol=1e-6)


def test_output_changes_only_by_the_removed_units_deviation():
    agent = _constant_unit_agent()
    gnt, nxt = agent.gnt, agent.net.layers[1]
    x = torch.randint(0, 2, (64, 20)).float()
    out_before, feats = agent.net.forward_with_features(x)
    mean_hat = gnt.mean_activation(0)
    deviation = feats[0] - mean_hat  # (64, 6)
    unit = int(deviation.abs().mean(0).argmax())
    assert deviation[:, unit].abs().max() > 0.1
    w = nxt.weight[:, unit].detach().clone()
    gnt.replace(0, [unit])
    change = agent.net(x) - out_before
    assert torch.allclose(change, -deviation[:, unit : unit + 1] * w, atol=1e-5)


def test_fractional_accumulation_replaces_floor_of_the_sum():
    rate, steps, units = 1 / 64, 1000, 5
    agent = _agent(replacement_rate=rate, maturity_threshold=0, hidden=(units,), accumulate=True)
    train(agent, *data(steps))
    expected = steps * units * rate  # every unit is eligible at every step (age >= 1)
    assert agent.gnt.num_replaced == [math.floor(expected)]
    assert agent.gnt.accumulated[0] == pytest.approx(expected - math.floor(expected))


def test_coin_flip_count_below_one_unit_and_integer_part_above():
    """gnt.py's accumulate=False: n = rate * eligible; n < 1: one unit with probability n
    (a draw from the agent's generator), else int(n) with the fraction dropped."""
    rate, steps, units = 1 / 64, 2000, 5  # n = 5/64 a step
    agent = _agent(replacement_rate=rate, maturity_threshold=0, hidden=(units,), accumulate=False)
    x, y = data(steps)
    counts = []
    for xi, yi in zip(x, y, strict=True):
        before = agent.gnt.num_replaced[0]
        train(agent, xi[None], yi[None])
        counts.append(agent.gnt.num_replaced[0] - before)
    assert set(counts) == {0, 1}
    mean, sd = steps * units * rate, math.sqrt(steps * units * rate * (1 - units * rate))
    assert abs(sum(counts) - mean) < 4 * sd  # 156 +- 48
    assert agent.gnt.accumulated == [0.0]
    again = _agent(replacement_rate=rate, maturity_threshold=0, hidden=(units,), accumulate=False)
    train(again, x, y)
    assert again.gnt.num_replaced == agent.gnt.num_replaced  # the coins come from the seed
    big = _agent(replacement_rate=0.5, maturity_threshold=0, hidden=(units,), accumulate=False)
    train(big, *data(10))  # n = 2.5: two units every step, the half dropped
    assert big.gnt.num_replaced == [20] and big.gnt.accumulated == [0.0]


def test_presets_count_rule_is_the_public_runs():
    presets = continual_backprop.ALGORITHM.presets
    assert make(continual_backprop).cfg.accumulate is False  # regression: expr.py, gnt.py
    assert presets["lop/PermutedMNIST-v0", "*"].config.accumulate is True  # online_expr.py
    assert presets["lop/ContinualImageNet-v0", "*"].config.accumulate is True  # convGnT.py
    assert presets["lop/ChangingFrictionAnt-v0", "*"].config.accumulate is False  # rl/ppo.py


def _two_layer_gnt(w1_rows):
    """Generate-and-test over 2 -> 3 -> 3 -> 1 linear layers with decay 0 (a utility is
    this step's), maturity 0 and rate 1/3 (one unit due per layer and step)."""
    l0, l1, l2 = torch.nn.Linear(2, 3), torch.nn.Linear(3, len(w1_rows)), torch.nn.Linear(len(w1_rows), 1)
    with torch.no_grad():
        l0.weight.fill_(1.0)
        l1.weight.copy_(torch.tensor(w1_rows))
        l2.weight.copy_(torch.tensor([[1.0, 1.0, 2.0][: len(w1_rows)]]))
    layers = [l0, l1, l2]
    return _gnt_over([(l0, l1), (l1, l2)], layers), layers


def _gnt_over(pairs, layers):
    opt = torch.optim.SGD([p for m in layers for p in m.parameters()], lr=0.1)
    units = [DenseUnits.of(layer, nxt, 0.5) for layer, nxt in pairs]
    return SingleSeed(GenerateAndTest(
        units, [torch.Generator().manual_seed(0)], OptimizerEntries(opt), replacement_rate=1 / 3,
        decay_rate=0.0, maturity_threshold=0, utility="adaptable_contribution",
    ))


def test_every_layer_is_scored_before_any_unit_is_replaced():
    """The order of gnt.py changes which unit of the second layer is replaced.

    Layer 0: unit 0's activation is constant (utility 0), so it is replaced, which zeroes
    column 0 of layer 1's weights. Layer 1 (each unit's deviation 1; outgoing weights
    1, 1, 2): with the weights it was trained to, unit 0's mean |incoming weight| is 3.4,
    its utility 1 / 3.4 = 0.29 the lowest (then 1 and 2): unit 0 is replaced. Scored after
    layer 0's replacement, unit 0's incoming mean would be 0.2 / 3 (utility 15) and unit 1
    (utility 1.5; unit 2: 3) would go instead.
    """
    w1 = [[10.0, 0.1, 0.1], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    h0 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 2.0, 2.0]])  # unit 0 constant
    h1 = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    gnt, layers = _two_layer_gnt(w1)
    gnt.step([h0, h1])
    assert gnt.num_replaced == [1, 1]
    assert gnt.age[0].tolist() == [0, 1, 1] and gnt.age[1].tolist() == [0, 1, 1]
    # column 0 of layer 1 zeroed, then its row 0 drawn afresh; layer 2's column 0 zeroed
    assert (layers[1].weight[1:, 0] == 0).all() and layers[1].weight[0].abs().min() > 0
    assert (layers[2].weight[:, 0] == 0).all()
    # The other order, for contrast: layer 1 scored with column 0 already zeroed.
    w1_after = [[0.0, 0.1, 0.1], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    _, layers = _two_layer_gnt(w1_after)
    late = _gnt_over([(layers[1], layers[2])], layers)
    late.step([h1])
    assert late.age[0].tolist() == [1, 0, 1]  # unit 1, not unit 0


def test_maturity_threshold_is_honoured():
    mt = 5
    agent = _agent(replacement_rate=1.0, maturity_threshold=mt, hidden=(4,))
    x, y = data(40)
    for xi, yi in zip(x, y, strict=True):
        age_before = agent.gnt.age[0].clone()
        train(agent, xi[None], yi[None])
        replaced = agent.gnt.age[0] == 0
        assert (age_before[replaced] + 1 > mt).all()  # only units older than the threshold
        assert (agent.gnt.age[0] <= mt + 1).all()  # ... and all of them, at rate 1
    # every unit is replaced at ages 6, 12, ..., 36
    assert agent.gnt.num_replaced == [4 * (40 // (mt + 1))]


def test_default_maturity_is_100_not_10():
    agent = _agent(replacement_rate=1.0)
    x, y = data(101)
    train(agent, x[:100], y[:100])
    assert agent.gnt.num_replaced == [0]
    train(agent, x[100:], y[100:])
    assert agent.gnt.num_replaced == [5]


def test_lowest_utility_eligible_units_are_replaced():
    agent = _agent(maturity_threshold=10)
    gnt = agent.gnt
    state = gnt.state_dict()
    state["birth"][0][0, :] = gnt.step_count - 50  # age 50
    state["birth"][0][0, 3] = gnt.step_count - 5  # lowest utility but not mature: must be kept
    state["bias_correction"][0][:] = 1.0
    state["utility"][0][:] = torch.tensor([5.0, 1.0, 3.0, 0.5, 4.0])
    gnt.load_state_dict(state)
    gnt.replacement_rate = 0.5  # 4 eligible units -> 2 replaced this step
    train(agent, *data(1))
    assert gnt.num_replaced == [2]
    assert sorted(torch.nonzero(gnt.age[0] == 0).flatten().tolist()) == [1, 2]


def test_zero_rate_is_backprop():
    x, y = data(500)
    cbp = make(continual_backprop, replacement_rate=0.0)
    bp = make(backprop)
    train(cbp, x, y)
    train(bp, x, y)
    assert same(params(cbp), params(bp))
    assert cbp.gnt.num_replaced == [0]
    assert (cbp.gnt.age[0] == 500).all() and (cbp.gnt.utility[0] > 0).any()


def test_buffers_and_no_update_on_test_batches():
    agent = make(continual_backprop)
    train(agent, *data(20))
    buffers = agent.buffers()
    assert len(buffers) == 3  # utilities, mean activations, bias corrections (1 - eta ** age)
    assert same([b[0] for b in buffers],
                [agent.gnt.utility[0], agent.gnt.mean_act[0], agent.gnt.bias_correction[0]])
    before = [b.clone() for b in buffers]
    x = np.ones((1, 20), np.float32)
    agent.learn(x, agent.act(x, {"phase": "test"}), 0.0, x, False, False, {"phase": "test"})
    assert same(before, list(agent.buffers()))
    agent.learn(
        x, agent.act(x, TRAIN), 0.0, x, False, False, {"target": np.ones((1, 1), np.float32)}
    )
    assert not same(before, list(agent.buffers()))


def test_statistics_carry_no_autograd_history_and_the_rate_can_be_changed():
    agent = _agent(replacement_rate=0.0, maturity_threshold=3)
    train(agent, *data(10))  # the activations come from the autograd forward pass
    assert not any(b.requires_grad or b.grad_fn is not None for b in agent.buffers())
    assert agent.gnt.num_replaced == [0]
    agent.gnt.replacement_rate = 0.4  # 5 eligible units -> 2 due this step (recounted now)
    train(agent, *data(1, seed=3))
    assert agent.gnt.num_replaced == [2]
