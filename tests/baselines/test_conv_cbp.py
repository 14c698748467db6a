"""Continual backprop on conv layers: per-channel utilities, replacement of a channel
(fresh filter, zero outgoing weights across a conv or the flatten, optimizer state) and
the bias correction that leaves the output unchanged for a constant channel."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines import backprop, continual_backprop

from . import params, same
from .imagenet_fakes import images, make_imagenet_agent

TRAIN0 = {"task": 0, "phase": "train", "epoch": 0, "valid": 10, "stream_done": False}
CONV_TO_CONV, CONV_TO_FC = 0, 2  # gnt layer indices: conv1 -> conv2, conv3 -> flatten -> fc1


def _agent(**kw):
    kw.setdefault("replacement_rate", 0.0)  # replacements only where a test forces them
    kw.setdefault("reset_head", False)  # a non-zero head: outputs depend on every layer
    return make_imagenet_agent(continual_backprop, **kw)


def _train(agent, steps, seed=0):
    x, y = images(10 * steps, seed=seed)
    for i in range(steps):
        xb, yb = x[10 * i : 10 * i + 10], y[10 * i : 10 * i + 10]
        agent.learn(xb, agent.act(xb, TRAIN0), 0.0, xb, False, False, {**TRAIN0, "target": yb})


def _outgoing_cols(gnt, i, c):
    """The next layer's dim-1 entries that read unit ``c`` of layer ``i``."""
    if gnt.layers[i].next_conv:
        return torch.tensor([c])
    g = gnt.layers[i].group
    return torch.arange(c * g, (c + 1) * g)


def _opt_state(agent, p):
    return {k: v.clone() for k, v in agent.optimizer.state[p].items() if torch.is_tensor(v) and v.shape == p.shape}


@pytest.mark.parametrize("layer_index", [CONV_TO_CONV, CONV_TO_FC])
@pytest.mark.parametrize(
    "opt_kw,keys",
    [({}, {"momentum_buffer"}), ({"optimizer": "adam", "momentum": 0.0, "lr": 1e-3}, {"exp_avg", "exp_avg_sq", "step"})],
)
def test_forced_channel_replacement(layer_index, opt_kw, keys):
    agent = _agent(**opt_kw)
    _train(agent, 5)
    gnt = agent.gnt
    layer, nxt = gnt.pairs[layer_index]
    c = int(torch.argmax(gnt.mean_activation(layer_index)))
    cols = _outgoing_cols(gnt, layer_index, c)
    assert len(cols) == (4 if layer_index == CONV_TO_FC else 1)  # 2x2 positions per channel
    others = torch.arange(layer.weight.shape[0]) != c
    other_cols = torch.ones(nxt.weight.shape[1], dtype=torch.bool)
    other_cols[cols] = False
    before = {n: t.detach().clone() for n, t in (("w_in", layer.weight), ("b_in", layer.bias), ("w_out", nxt.weight), ("b_out", nxt.bias))}
    opt_before = {n: _opt_state(agent, p) for n, p in (("w_in", layer.weight), ("b_in", layer.bias), ("w_out", nxt.weight))}
    assert set(opt_before["w_in"]) == keys
    mean = gnt.mean_activation(layer_index)[c].item()
    assert mean > 0
    gnt.replace(layer_index, [c])
    # fresh filter from the init distribution, zero bias
    bound = agent.net.init_bounds[layer_index]
    assert not torch.equal(layer.weight[c], before["w_in"][c])
    assert 0 < layer.weight[c].abs().max() <= bound
    assert layer.bias[c] == 0
    # zero outgoing weights (a conv's input-channel slice or the flattened columns)
    assert (nxt.weight[:, cols] == 0).all()
    # every other entry untouched
    assert torch.equal(layer.weight[others], before["w_in"][others])
    assert torch.equal(layer.bias[others], before["b_in"][others])
    assert torch.equal(nxt.weight[:, other_cols], before["w_out"][:, other_cols])
    # the mean contribution moved into the next layer's bias
    w_c = before["w_out"][:, cols].reshape(nxt.weight.shape[0], -1).sum(1)
    assert torch.allclose(nxt.bias, before["b_out"] + w_c * mean, atol=1e-6)
    # optimizer state of the reset entries zeroed, the rest kept
    for name, p in (("w_in", layer.weight), ("b_in", layer.bias), ("w_out", nxt.weight)):
        for key, old in opt_before[name].items():
            new = agent.optimizer.state[p][key]
            if name == "w_out":
                assert (old[:, cols] != 0).any() and (new[:, cols] == 0).all(), key
                assert torch.equal(new[:, other_cols], old[:, other_cols]), key
            else:
                assert (old[c] != 0).any() and (new[c] == 0).all(), key
                assert torch.equal(new[others], old[others]), key
    # statistics of the channel reset
    assert gnt.age[layer_index][c] == 0 and gnt.utility[layer_index][c] == 0
    assert gnt.mean_act[layer_index][c] == 0
    assert gnt.num_replaced[layer_index] == 1


def _constant_channel_agent(layer_index, c, value=0.75):
    """Channel ``c`` of conv layer ``layer_index`` outputs ``value`` everywhere (zero filter,
    bias ``value``): its pooled map is constant over the batch and the positions."""
    agent = _agent()
    layer = agent.gnt.pairs[layer_index][0]
    with torch.no_grad():
        layer.weight[c] = 0.0
        layer.bias[c] = value
    x, _ = images(60, seed=3)
    for i in range(6):  # running means from forward passes, weights kept fixed
        agent.gnt.step(agent.net.forward_with_features(torch.from_numpy(x[10 * i : 10 * i + 10]))[1])
    assert agent.gnt.mean_activation(layer_index)[c].item() == pytest.approx(value, rel=1e-6)
    return agent


@pytest.mark.parametrize("layer_index", [CONV_TO_CONV, 1, CONV_TO_FC])
def test_replacing_a_constant_channel_leaves_the_output_unchanged(layer_index):
    c = 5
    agent = _constant_channel_agent(layer_index, c)
    nxt = agent.gnt.pairs[layer_index][1]
    x = torch.from_numpy(images(16, seed=9)[0])
    with torch.no_grad():
        out_before = agent.net(x)
        bias_before = nxt.bias.clone()
        w_c = nxt.weight[:, _outgoing_cols(agent.gnt, layer_index, c)].reshape(nxt.weight.shape[0], -1).sum(1)
    assert w_c.abs().max() > 1e-2
    agent.gnt.replace(layer_index, [c])
    with torch.no_grad():
        out_after = agent.net(x)
    assert torch.allclose(out_after, out_before, rtol=1e-5, atol=1e-4 * out_before.abs().max().item())
    # the correction is what keeps it: mean * (sum of the channel's outgoing weights)
    assert torch.allclose(nxt.bias - bias_before, 0.75 * w_c, atol=1e-6)
    # without it, the output would have moved
    with torch.no_grad():
        nxt.bias.copy_(bias_before)
        assert not torch.allclose(agent.net(x), out_before, atol=1e-3)


@pytest.mark.parametrize("layer_index", [CONV_TO_CONV, CONV_TO_FC])
def test_next_layer_changes_only_by_the_removed_channels_deviation(layer_index):
    agent = _agent()
    _train(agent, 4)
    gnt = agent.gnt
    layer, nxt = gnt.pairs[layer_index]
    x = torch.from_numpy(images(12, seed=4)[0])

    def next_input(feats):  # what the next layer reads, and its pre-activation
        h = feats[layer_index]
        if gnt.layers[layer_index].next_conv:
            return h, F.conv2d(h, nxt.weight, nxt.bias)
        return h, F.linear(h.flatten(1), nxt.weight, nxt.bias)

    with torch.no_grad():
        h, z_before = next_input(agent.net.forward_with_features(x)[1])
        c = int(gnt.mean_activation(layer_index).argmax())
        m = gnt.mean_activation(layer_index)[c]
        deviation = h[:, c : c + 1] - m
        assert deviation.abs().max() > 0.1  # not constant: the output must change
        if gnt.layers[layer_index].next_conv:
            expected = -F.conv2d(deviation, nxt.weight[:, c : c + 1])
        else:
            cols = _outgoing_cols(gnt, layer_index, c)
            expected = -deviation.flatten(1) @ nxt.weight[:, cols].T
        gnt.replace(layer_index, [c])
        _, z_after = next_input(agent.net.forward_with_features(x)[1])
    assert torch.allclose(z_after - z_before, expected, atol=1e-4)


def test_channel_utility_and_mean_activation_by_hand():
    agent = _agent(utility="contribution")
    gnt = agent.gnt
    x = torch.from_numpy(images(10, seed=2)[0])
    with torch.no_grad():
        feats = agent.net.forward_with_features(x)[1]
    gnt.step(feats)
    eta = gnt.decay_rate
    conv2, fc1 = gnt.pairs[CONV_TO_CONV][1], gnt.pairs[CONV_TO_FC][1]
    # conv -> conv: mean |next conv's input-channel slice| * mean |h| over batch and positions
    h = feats[CONV_TO_CONV]
    util = conv2.weight.abs().mean((0, 2, 3)) * h.abs().mean((0, 2, 3))
    assert torch.allclose(gnt.utility[CONV_TO_CONV], (1 - eta) * util, rtol=1e-5)
    assert torch.allclose(gnt.mean_act[CONV_TO_CONV], (1 - eta) * h.mean((0, 2, 3)), rtol=1e-5)
    # conv -> flatten -> fc: the channel's 4 columns of fc1, each with its own position
    h = feats[CONV_TO_FC]
    util = torch.zeros(128)
    for c in range(128):
        for p in range(4):  # position p = (p // 2, p % 2) of the 2x2 map is column 4c + p
            col = fc1.weight[:, 4 * c + p].abs().mean()
            util[c] += col * h[:, c, p // 2, p % 2].abs().mean() / 4
    assert torch.allclose(gnt.utility[CONV_TO_FC], (1 - eta) * util, rtol=1e-5, atol=1e-9)
    assert torch.allclose(gnt.mean_activation(CONV_TO_FC), h.mean((0, 2, 3)), rtol=1e-5)


def test_adaptable_utility_on_channels_by_hand():
    agent = _agent(utility="adaptable_contribution")
    gnt = agent.gnt
    x = torch.from_numpy(images(10, seed=2)[0])
    with torch.no_grad():
        feats = agent.net.forward_with_features(x)[1]
    gnt.step(feats)
    conv1, conv2 = gnt.pairs[0]
    h = feats[0]
    f_hat = h.mean((0, 2, 3)).view(1, -1, 1, 1)  # bias-corrected mean after one step
    util = (
        conv2.weight.abs().mean((0, 2, 3))
        * (h - f_hat).abs().mean((0, 2, 3))
        / conv1.weight.abs().mean((1, 2, 3))
    )
    assert torch.allclose(gnt.utility[0], (1 - gnt.decay_rate) * util, rtol=1e-4, atol=1e-9)
    # across the flatten: per position, then the mean over the 4 positions
    conv3, fc1 = gnt.pairs[CONV_TO_FC]
    h = feats[CONV_TO_FC].flatten(2)  # (N, 128, 4): column 4c + p of fc1 reads h[:, c, p]
    f_hat = h.mean((0, 2)).view(1, -1, 1)
    per_position = fc1.weight.abs().mean(0).view(128, 4) * (h - f_hat).abs().mean(0)
    util = per_position.mean(1) / conv3.weight.abs().mean((1, 2, 3))
    assert torch.allclose(gnt.utility[CONV_TO_FC], (1 - gnt.decay_rate) * util, rtol=1e-4, atol=1e-9)


def test_lowest_utility_eligible_channels_are_replaced():
    agent = _agent(maturity_threshold=10)
    gnt = agent.gnt
    state = gnt.state_dict()
    state["birth"][0][0, :] = gnt.step_count - 50  # age 50
    state["birth"][0][0, 3] = gnt.step_count - 5  # lowest utility but not mature: kept
    state["bias_correction"][0][:] = 1.0
    state["utility"][0][0, :] = torch.arange(32, dtype=torch.float32) + 10.0
    state["utility"][0][0, 3] = 0.0
    state["utility"][0][0, 7] = 1.0
    state["utility"][0][0, 20] = 2.0
    gnt.load_state_dict(state)
    gnt.replacement_rate = 2 / 31  # 31 eligible channels -> 2 replaced this step
    _train(agent, 1)
    assert gnt.num_replaced[0] == 2
    assert sorted(torch.nonzero(gnt.age[0] == 0).flatten().tolist()) == [7, 20]


def test_zero_rate_is_backprop_on_the_convnet():
    cbp = _agent(reset_head=True)
    bp = make_imagenet_agent(backprop)
    for agent in (cbp, bp):
        _train(agent, 6)
    assert same(params(cbp), params(bp))
    assert cbp.gnt.num_replaced == [0] * 5
    assert all((age == 6).all() for age in cbp.gnt.age)


@pytest.mark.parametrize(
    "utility, rate, least",
    # The preset's utility (cfg/cbp.json) at 3x its rate; the contribution utility at 30x.
    # (At 10x, about 10% of each fc layer replaced within 40 steps, this small run stops
    # learning with the adaptable utility; with the contribution utility it does not.)
    [("adaptable_contribution", 1e-3, 1), ("contribution", 1e-2, 10)],
)
def test_replacements_in_a_run_keep_the_network_finite_and_learning(utility, rate, least):
    agent = _agent(replacement_rate=rate, maturity_threshold=5, reset_head=True, utility=utility)
    x, y = images(400, seed=7)
    acc = []
    for i in range(0, 400, 10):
        pred = agent.act(x[i : i + 10], TRAIN0)
        acc.append(np.mean(pred == y[i : i + 10]))
        agent.learn(x[i : i + 10], pred, 0.0, None, False, False, {**TRAIN0, "target": y[i : i + 10]})
    assert all(n >= least for n in agent.gnt.num_replaced)
    # the host-side count of eligible units, kept between recounts, is exact
    gnt = agent.gnt.gnt
    counted = [n.copy() for n in gnt._num_mature]
    for i in range(5):
        gnt._recount(i)
    assert [n.tolist() for n in gnt._num_mature] == [n.tolist() for n in counted]
    assert [n.tolist() for n in counted] == [(gnt.ages(i) > 5).sum(1).tolist() for i in range(5)]
    assert all(torch.isfinite(p).all() for p in agent.parameters())
    assert np.mean(acc[-10:]) >= 0.9 > np.mean(acc[:10])
