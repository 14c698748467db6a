"""CReLU (baselines.core.activations) and layer normalization against hand computations:
CReLU's forward pass, width and derivative (equal to autograd's); the MLP and ConvNet built
with them (forward passes by hand, output widths, parameter counts); ``layer_norm=False``
is today's network bit for bit; the ``crelu`` and ``layernorm`` agents on their streams."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.spaces import Box, MultiDiscrete

import lop_bench
from baselines.core.activations import CReLU, crelu, crelu_backward
from baselines.core.nets import MLP, ConvNet
from baselines.presets import ANT, CONTINUAL_IMAGENET, INCREMENTAL_CIFAR, PERMUTED_MNIST, REGRESSION
from lop_bench.errors import InvalidConfigError


def test_crelu_forward_by_hand():
    x = torch.tensor([[1.5, -2.0, 0.0], [-0.5, 0.25, 3.0]])
    out = CReLU()(x)
    assert out.tolist() == [[1.5, 0.0, 0.0, 0.0, 2.0, 0.0], [0.0, 0.25, 3.0, 0.5, 0.0, 0.0]]
    # Channels of an image batch: (N, C, H, W) -> (N, 2C, H, W), channel c + C is relu(-x_c).
    img = torch.tensor([[[[1.0, -1.0]], [[-3.0, 2.0]]]])  # (1, 2, 1, 2)
    out = CReLU()(img)
    assert out.shape == (1, 4, 1, 2)
    assert out[0, :, 0].tolist() == [[1.0, 0.0], [0.0, 2.0], [0.0, 1.0], [3.0, 0.0]]
    assert crelu(torch.tensor([-1.0, 2.0]), dim=0).tolist() == [0.0, 2.0, 1.0, 0.0]


def test_crelu_backward_equals_autograd():
    z = torch.tensor([[0.7, -1.2, 0.0, 2.0]], requires_grad=True)
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0]])
    (crelu(z, dim=1) * g).sum().backward()
    assert crelu_backward(g, z.detach(), dim=1).tolist() == z.grad.tolist()
    # By hand: z > 0 takes the first half's gradient, z < 0 minus the second half's.
    assert z.grad.tolist() == [[1.0, 2.0, 0.0, 4.0]]
    with pytest.raises(ValueError, match="twice"):
        crelu_backward(torch.zeros(1, 5), torch.zeros(1, 4))


# -- the networks built with them (baselines.core.nets) ------------------------------------
def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_crelu_mlp_widths_and_parameter_count():
    g = torch.Generator().manual_seed(0)
    net = MLP(20, (5,), 1, "crelu", generator=g)
    # 20 -> 5 units -> 10 features -> 1: 20*5 + 5 + 10*1 + 1 = 116 (ReLU: 111).
    assert [tuple(layer.weight.shape) for layer in net.layers] == [(5, 20), (1, 10)]
    assert _count(net) == 116 and _count(MLP(20, (5,), 1, "relu", generator=g)) == 111
    out, feats = net.forward_with_features(torch.rand(3, 20, generator=g))
    assert out.shape == (3, 1) and feats[0].shape == (3, 10)
    # Permuted MNIST's cpu-tier net, 784 -> 3 x 100 -> 10: 120,710 (ReLU: 99,710).
    assert _count(MLP(784, (100, 100, 100), 10, "crelu", generator=g)) == 120_710
    assert _count(MLP(784, (100, 100, 100), 10, "relu", generator=g)) == 99_710
    # Init: ReLU's gain over the real fan-in (2 x 5 features) for the output layer's
    # neighbour: the hidden layer of a 2-hidden-layer net reads 2 x 5 features.
    two = MLP(20, (5, 4), 1, "crelu", generator=g)
    assert two.init_bounds[1] == pytest.approx(math.sqrt(2.0) * math.sqrt(3.0 / 10))
    with pytest.raises(InvalidConfigError, match="generate-and-test"):
        two.unit_pairs()


def test_crelu_mlp_forward_by_hand():
    net = MLP(2, (2,), 1, "crelu", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        net.layers[0].bias.copy_(torch.tensor([0.0, -1.0]))
        net.layers[1].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        net.layers[1].bias.copy_(torch.tensor([0.5]))
    # x = (1, 2): z = (1 - 2, 0.5 + 4 - 1) = (-1, 3.5); features (0, 3.5, 1, 0);
    # out = 0 + 7 + 3 + 0 + 0.5 = 10.5.
    out, feats = net.forward_with_features(torch.tensor([[1.0, 2.0]]))
    assert feats[0].tolist() == [[0.0, 3.5, 1.0, 0.0]]
    assert out.item() == 10.5


def test_layernorm_mlp_forward_by_hand():
    net = MLP(2, (3,), 1, "relu", generator=torch.Generator().manual_seed(0), layer_norm=True)
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]))
        net.layers[0].bias.zero_()
        net.norms[0].weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        net.norms[0].bias.copy_(torch.tensor([0.0, 0.1, -0.2]))
        net.layers[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0]]))
        net.layers[1].bias.zero_()
    # x = (1, 2): z = (1, 2, 6), mean 3, variance 14/3 (biased, as LayerNorm), eps 1e-5.
    sd = math.sqrt(14.0 / 3.0 + 1e-5)
    normed = [(1 - 3) / sd * 1.0 + 0.0, (2 - 3) / sd * 2.0 + 0.1, (6 - 3) / sd * 0.5 - 0.2]
    h = [max(v, 0.0) for v in normed]
    out, feats = net.forward_with_features(torch.tensor([[1.0, 2.0]]))
    assert feats[0][0].tolist() == pytest.approx(h, abs=1e-6)
    assert out.item() == pytest.approx(sum(h), abs=1e-6)
    with pytest.raises(InvalidConfigError, match="generate-and-test"):
        net.linear_pairs()


def test_layer_norm_false_is_todays_net_bit_for_bit():
    kw = dict(generator=torch.Generator().manual_seed(3))
    plain = MLP(20, (6, 4), 2, "tanh", **kw)
    kw = dict(generator=torch.Generator().manual_seed(3))
    same = MLP(20, (6, 4), 2, "tanh", layer_norm=False, **kw)
    kw = dict(generator=torch.Generator().manual_seed(3))
    normed = MLP(20, (6, 4), 2, "tanh", layer_norm=True, **kw)
    assert list(plain.state_dict()) == list(same.state_dict()) == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
        "layers.2.weight", "layers.2.bias"]
    x = torch.rand(5, 20, generator=torch.Generator().manual_seed(1))
    h = x
    for layer in plain.layers[:-1]:  # today's forward, written out
        h = torch.tanh(h @ layer.weight.T + layer.bias)
    ref = h @ plain.layers[-1].weight.T + plain.layers[-1].bias
    assert torch.equal(same(x), plain(x)) and torch.allclose(plain(x), ref, atol=1e-6)
    # The normalized net draws the very same linear weights (its norms draw nothing).
    for a, b in zip(plain.layers, normed.layers):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert _count(normed) == _count(plain) + 2 * (6 + 4)


def test_convnet_variants():
    g = torch.Generator().manual_seed(0)
    plain = ConvNet(generator=torch.Generator().manual_seed(0))
    assert _count(plain) == 177_218
    net = ConvNet(generator=g, activation="crelu")
    # CReLU doubles what each layer reads: 3->32 (5x5), 64->64, 128->128 (3x3), flatten
    # 256 x 2 x 2 = 1024 -> 128, 256 -> 128, 256 -> 2: 351,554 parameters.
    assert _count(net) == 351_554
    out, feats = net.forward_with_features(torch.rand(2, 3, 32, 32, generator=g))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 14, 14), (2, 128, 6, 6), (2, 256, 2, 2),
                                              (2, 256), (2, 256)]
    ln = ConvNet(generator=torch.Generator().manual_seed(0), layer_norm=True)
    # GroupNorm(1, C) per conv layer: one scale and shift per channel; LayerNorm per fc.
    assert _count(ln) == 177_218 + 2 * (32 + 64 + 128 + 128 + 128)
    assert isinstance(ln.norms[0], torch.nn.GroupNorm) and ln.norms[0].num_groups == 1
    for a, b in zip(plain.layers, ln.layers):  # same draws for the conv and fc layers
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    x = torch.rand(2, 3, 32, 32, generator=g) * 255
    z = torch.nn.functional.conv2d(x, ln.layers[0].weight, ln.layers[0].bias)
    mu = z.mean(dim=(1, 2, 3), keepdim=True)
    var = z.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    by_hand = torch.nn.functional.max_pool2d(torch.relu((z - mu) / torch.sqrt(var + 1e-5)), 2)
    assert torch.allclose(ln.forward_with_features(x)[1][0], by_hand, atol=1e-5)
    with pytest.raises(InvalidConfigError, match="activation"):
        ConvNet(generator=g, activation="tanh")


# -- the crelu and layernorm agents (baselines/crelu.py, baselines/layernorm.py) ------------
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


def _probe(env_id):
    shape = _SPACES[env_id][0].shape
    return torch.rand(4, *shape[1:], generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("env_id", [REGRESSION, PERMUTED_MNIST, CONTINUAL_IMAGENET, ANT])
def test_crelu_agents_see_twice_the_features(env_id):
    crelu_agent = lop_bench.make_agent("crelu", _env(env_id), seed=0)
    base = lop_bench.make_agent("backprop", _env(env_id), seed=0)
    if env_id == ANT:
        widths = [f.shape[-1] for f in crelu_agent.policy.forward_with_features(
            torch.zeros(2, 27))[1]]
        assert widths == [512, 512] and crelu_agent.cfg.activation == "crelu"
        return
    x = _probe(env_id)
    got = [tuple(f.shape[1:]) for f in crelu_agent.features(x)]
    ref = [tuple(f.shape[1:]) for f in base.features(x)]
    assert got == [(2 * s[0], *s[1:]) for s in ref]
    assert crelu_agent.cfg.lr == base.cfg.lr and crelu_agent.cfg.hidden == base.cfg.hidden


@pytest.mark.parametrize("env_id", [REGRESSION, PERMUTED_MNIST, CONTINUAL_IMAGENET, ANT])
def test_layernorm_agents_normalize_every_hidden_layer(env_id):
    agent = lop_bench.make_agent("layernorm", _env(env_id), seed=0)
    nets = [agent.policy, agent.value] if env_id == ANT else [agent.net]
    for net in nets:
        assert net.layer_norm and len(net.norms) == net.num_hidden
    # The optimizer trains the norms' scale and shift too.
    trained = {id(p) for g in agent.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in trained for net in nets for p in net.norms.parameters())


@pytest.mark.parametrize("name", ["layernorm"])  # crelu's: test_method_crelu_resnet.py
def test_no_preset_on_incremental_cifar(name):
    with pytest.raises(InvalidConfigError, match=f"{name}.*no preset.*It has presets for"):
        lop_bench.make_agent(name, _env(INCREMENTAL_CIFAR), seed=0)


def test_layernorm_off_is_backprop_bit_for_bit():
    env = _env(REGRESSION)
    a = lop_bench.make_agent("layernorm", env, seed=5, layer_norm=False)
    b = lop_bench.make_agent("backprop", env, seed=5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs = rng.normal(size=(1, 20)).astype(np.float32)
        info = {"target": rng.normal(size=(1, 1)).astype(np.float32), "phase": "train"}
        for agent in (a, b):
            agent.act(obs, {"phase": "train"})
            agent.learn(obs, None, 0.0, obs, False, False, info)
    assert list(a.net.state_dict()) == list(b.net.state_dict())
    for p, q in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(p, q)


def test_generate_and_test_refuses_crelu():
    with pytest.raises(InvalidConfigError, match="generate-and-test is not defined"):
        lop_bench.make_agent("continual_backprop", _env(REGRESSION), seed=0, activation="crelu")


@pytest.mark.parametrize("name", ["crelu", "layernorm", "upgd"])
def test_continual_imagenet_convnet_variants_learn(name):
    # Two train steps of each method's ConvNet on a batch of 100 random images: finite
    # loss, every conv and fc layer moved, the head zeroed at the task's start (reset_head).
    agent = lop_bench.make_agent(name, _env(CONTINUAL_IMAGENET), seed=0)
    g = torch.Generator().manual_seed(1)
    obs = (torch.rand(100, 3, 32, 32, generator=g) * 255).numpy()
    labels = torch.randint(0, 2, (100,), generator=g).numpy()
    before = [layer.weight.detach().clone() for layer in agent.net.layers[:-1]]
    for _ in range(2):
        agent.act(obs, {"phase": "train", "task": 0})
        agent.learn(obs, None, 0.0, obs, False, False,
                    {"target": labels, "phase": "train", "task": 0})
    assert torch.isfinite(agent.last_loss)
    assert all(not torch.equal(b, layer.weight) for b, layer in zip(before, agent.net.layers))
