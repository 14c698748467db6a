"""baselines.core.nets: the MLP's init, features and independence from the global RNG."""

import math

import pytest
import torch

from baselines.core.nets import ACTIVATIONS, MLP, activation_gain, kaiming_uniform_bound
from lop_bench.errors import InvalidConfigError


def _net(seed=0, hidden=(5,), activation="relu"):
    return MLP(20, hidden, 1, activation, generator=torch.Generator().manual_seed(seed))


def test_kaiming_uniform_init_bounds_and_zero_biases():
    net = MLP(200, (300,), 400, "relu", generator=torch.Generator().manual_seed(0))
    hidden, out = net.layers
    b_hidden = math.sqrt(2.0) * math.sqrt(3.0 / 200)
    b_out = math.sqrt(3.0 / 300)
    assert net.init_bounds == pytest.approx((b_hidden, b_out))
    for layer, b in ((hidden, b_hidden), (out, b_out)):
        w = layer.weight
        assert w.abs().max() <= b
        assert w.abs().max() > 0.99 * b  # spread over the whole interval
        assert w.mean().abs() < 0.02 * b
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_gains_follow_the_papers_code():
    assert activation_gain("relu") == pytest.approx(math.sqrt(2))
    assert activation_gain("tanh") == pytest.approx(5 / 3)
    assert activation_gain("sigmoid") == 1.0
    assert activation_gain("linear") == 1.0
    assert activation_gain("swish") == activation_gain("elu") == activation_gain("relu")
    assert kaiming_uniform_bound(12, "sigmoid") == pytest.approx(0.5)


def test_init_comes_from_the_generator_only():
    state = torch.random.get_rng_state()
    a, b, c = _net(0), _net(0), _net(1)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)


# CReLU doubles the features: tests/baselines/test_method_crelu_layernorm.py.
@pytest.mark.parametrize("activation", sorted(set(ACTIVATIONS) - {"crelu"}))
def test_forward_with_features(activation):
    net = _net(hidden=(5, 7), activation=activation)
    x = torch.rand(3, 20)
    out, feats = net.forward_with_features(x)
    assert out.shape == (3, 1) and [f.shape for f in feats] == [(3, 5), (3, 7)]
    assert torch.equal(net(x), out)
    h1 = ACTIVATIONS[activation]()(x @ net.layers[0].weight.T + net.layers[0].bias)
    assert torch.allclose(feats[0], h1, atol=1e-6)
    assert [p[0] for p in net.linear_pairs()] == list(net.layers[:2])


def test_linear_model_and_state_dict_keys():
    net = _net(hidden=())
    assert net.num_hidden == 0 and net.linear_pairs() == []
    assert net.forward_with_features(torch.rand(2, 20))[1] == []
    assert list(_net().state_dict()) == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
    ]


def test_bad_activation_or_size():
    with pytest.raises(InvalidConfigError, match="activation"):
        _net(activation="gelu2")
    with pytest.raises(InvalidConfigError, match="sizes"):
        _net(hidden=(0,))
