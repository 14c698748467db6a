"""The crelu preset of class-incremental CIFAR-100: the ResNet-18 learner with a CReLU as the
inner activation of every residual block (after conv1 -> bn1; conv2 reads 2 C channels),
the stem's and the blocks' output ReLUs kept; on the fake stream of the incremental
agents' tests (no real data). The default network is today's bit for bit; generate-and-test
and ReDo refuse the CReLU net."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lop_bench
from baselines import crelu as crelu_table
from baselines.agents.incremental import (
    CPU_WIDTH,
    IncrementalAgent,
    IncrementalConfig,
    IncrementalCReLUConfig,
    IncrementalReDoConfig,
)
from baselines.core.nets import BasicBlock, ResNet18
from baselines.presets import INCREMENTAL_CIFAR
from lop_bench.errors import InvalidConfigError
from tests.test_incremental_agents import FakeIncrementalStream, _roundtrip, _same, _tensors, drive

W = 1 / 16  # the narrow ResNet-18 of the incremental agents' tests


def _block(in_c, c, stride, activation, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = BasicBlock(in_c, c, stride, activation).to_empty(device="cpu")
    with torch.no_grad():
        for p in b.parameters():
            p.normal_(0.0, 0.5, generator=g)
        for name, buf in b.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.1, generator=g)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5, generator=g)
            else:
                buf.zero_()
    return b.eval()


def _crelu(env, seed=0, **hp):
    return crelu_table.make_agent(env.spec, env.observation_space, env.action_space, seed, "cpu",
                                  width=W, **hp)


@pytest.mark.parametrize("in_c,c,stride", [(3, 3, 1), (2, 3, 2)])
def test_block_forward_is_the_composition_of_its_layers(in_c, c, stride):
    b = _block(in_c, c, stride, "crelu")
    assert b.conv2.in_channels == 2 * c and b.conv2.out_channels == c
    assert (b.downsample is None) == (in_c == c and stride == 1)
    x = torch.randn(2, in_c, 5, 5, generator=torch.Generator().manual_seed(1))
    out, mid = b.forward_with_mid(x)
    z = b.bn1(b.conv1(x))
    by_hand = torch.cat([z.clamp(min=0), (-z).clamp(min=0)], dim=1)
    assert torch.equal(mid, by_hand)
    identity = x if b.downsample is None else b.downsample[1](b.downsample[0](x))
    expected = F.relu(b.bn2(b.conv2(by_hand)) + identity)
    assert torch.equal(out, expected) and torch.equal(b(x), out)
    side = (5 - 1) // stride + 1
    assert mid.shape == (2, 2 * c, side, side) and out.shape == (2, c, side, side)
    assert (out >= 0).all()  # the output ReLU stays


def test_block_forward_by_hand_on_a_one_channel_input():
    b = _block(1, 1, 1, "crelu")
    with torch.no_grad():
        b.conv1.weight.zero_()
        b.conv1.weight[0, 0, 1, 1] = 2.0  # conv1 = 2 x (centre tap)
        b.conv1.bias.fill_(-1.0)
        b.conv2.weight.zero_()
        b.conv2.weight[0, 0, 1, 1] = 1.0  # relu(z) half, weight 1
        b.conv2.weight[0, 1, 1, 1] = 3.0  # relu(-z) half, weight 3
        b.conv2.bias.zero_()
        for bn in (b.bn1, b.bn2):
            bn.weight.fill_(1.0), bn.bias.zero_(), bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # eval-mode batch norm is the identity
    x = torch.tensor([[[[1.5, 0.0], [-1.0, 0.25]]]])
    z = 2.0 * x - 1.0  # [[2, -1], [-3, -0.5]]
    expected = torch.relu(torch.relu(z) + 3.0 * torch.relu(-z) + x)
    out, mid = b.forward_with_mid(x)
    assert mid.shape == (1, 2, 2, 2)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out, torch.tensor([[[[3.5, 3.0], [8.0, 1.75]]]]))


def test_resnet_shapes_and_parameter_counts():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    relu, crelu = (ResNet18(100, CPU_WIDTH, generator=g(), block_activation=a)
                   for a in ("relu", "crelu"))
    n = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert (n(relu), n(crelu)) == (182_852, 280_772)  # the numbers of baselines/crelu.py
    extra = sum(b.conv2.out_channels * b.conv2.in_channels // 2 * 9 for b in crelu.blocks)
    assert n(crelu) - n(relu) == extra  # only each block's conv2 fan-in doubles
    for br, bc in zip(relu.blocks, crelu.blocks, strict=True):
        assert bc.conv2.in_channels == 2 * br.conv2.in_channels
        assert bc.conv1.weight.shape == br.conv1.weight.shape
        assert (bc.downsample is None) == (br.downsample is None)
    x = torch.randn(3, 3, 32, 32, generator=g())
    logits, feats = crelu.forward_with_features(x)
    assert logits.shape == (3, 100) and len(feats) == 17
    mids = crelu.forward_with_features(x, all_features=False)[1]
    assert [m.shape[1] for m in mids] == [2 * c for c in crelu.channels for _ in range(2)]
    assert torch.equal(crelu(x), logits)


def test_default_network_is_todays_bit_for_bit():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    a = ResNet18(10, W, generator=torch.Generator().manual_seed(5))
    b = ResNet18(10, W, generator=torch.Generator().manual_seed(5), block_activation="relu")
    assert a.block_activation == "relu" and _same(list(a.state_dict().values()),
                                                 list(b.state_dict().values()))
    assert torch.equal(a(x), b(x))
    assert "block_activation" not in dataclasses.asdict(IncrementalConfig())
    runs = []
    for cfg in (IncrementalConfig(width=W, epochs_per_block=2),
                IncrementalCReLUConfig(width=W, epochs_per_block=2, block_activation="relu")):
        env = FakeIncrementalStream(blocks=1, epochs=2)
        agent = IncrementalAgent(cfg, env.observation_space, env.action_space, 0)
        before = _tensors(agent)
        drive(agent, env)
        runs.append((before, _tensors(agent)))
    assert _same(runs[0][0], runs[1][0]) and _same(runs[0][1], runs[1][1])


def test_agent_learns_on_the_fake_stream_and_resumes_bit_for_bit():
    env = FakeIncrementalStream(blocks=1, epochs=6, train_batches=2)
    agent = _crelu(env)
    assert type(agent) is IncrementalAgent and isinstance(agent.cfg, IncrementalCReLUConfig)
    assert agent.net.block_activation == "crelu" and agent.gnt is None and agent.redo is None
    losses = []

    def on_learn(when, a, info):
        if when == "after" and "target" in info:
            losses.append(float(a.last_loss))

    drive(agent, env, on_learn=on_learn)
    assert all(np.isfinite(losses)) and np.mean(losses[-2:]) < np.mean(losses[:2])
    kw = dict(blocks=2, epochs=3, train_batches=2, val_batches=1, test_batches=2, pad=True,
              val_accuracies=[0.1, 0.3, 0.2, 0.5, 0.1, 0.2])
    env_a = FakeIncrementalStream(**kw)
    full = _crelu(env_a)
    ref_actions, _ = drive(full, env_a)
    env_b = FakeIncrementalStream(**kw)
    agent_b = _crelu(env_b)
    first, start = drive(agent_b, env_b, steps=9)
    resumed = _crelu(env_b)
    resumed.load_state_dict(_roundtrip(agent_b.state_dict()))
    rest, _ = drive(resumed, env_b, start=start)
    assert all(np.array_equal(a, b) for a, b in zip(first + rest, ref_actions, strict=True))
    assert _same(_tensors(full), _tensors(resumed))


def test_preset_rows_and_spec():
    rows = {t: crelu_table.ALGORITHM.presets[(INCREMENTAL_CIFAR, t)].config
            for t in ("*", "cpu", "smoke")}
    assert all(type(r) is IncrementalCReLUConfig and r.block_activation == "crelu"
               for r in rows.values())
    assert [r.width for r in rows.values()] == [1.0, CPU_WIDTH, CPU_WIDTH]
    base = dataclasses.asdict(IncrementalConfig())
    assert {k: v for k, v in dataclasses.asdict(rows["*"]).items() if k in base} == base
    env = FakeIncrementalStream(blocks=1, epochs=2)
    agent = crelu_table.make_agent(env.spec, env.observation_space, env.action_space, 0, "cpu")
    assert agent.preset == f"crelu/{INCREMENTAL_CIFAR}/smoke"
    assert agent.hparams["block_activation"] == "crelu"
    assert "crelu" in lop_bench.envs.incremental_cifar.SPEC.more_agents


def test_errors():
    with pytest.raises(InvalidConfigError, match="block_activation"):
        IncrementalCReLUConfig(block_activation="tanh")
    with pytest.raises(InvalidConfigError, match="continual_backprop"):
        IncrementalCReLUConfig(continual_backprop=True)
    IncrementalCReLUConfig(block_activation="relu", continual_backprop=True)  # plain: allowed
    with pytest.raises(InvalidConfigError, match="activation"):
        BasicBlock(2, 2, 1, "tanh")
    with pytest.raises(InvalidConfigError, match="block_activation"):
        ResNet18(10, W, generator=torch.Generator(), block_activation="swish")
    net = ResNet18(10, W, generator=torch.Generator().manual_seed(0), block_activation="crelu")
    for coverage in ("all_convs", "first_convs"):
        with pytest.raises(InvalidConfigError, match="generate-and-test and ReDo"):
            net.channel_layers(coverage)

    @dataclasses.dataclass(frozen=True)
    class CReLUReDo(IncrementalCReLUConfig, IncrementalReDoConfig):
        pass

    env = FakeIncrementalStream(blocks=1, epochs=2)
    with pytest.raises(InvalidConfigError, match="generate-and-test and ReDo"):
        IncrementalAgent(CReLUReDo(width=W, epochs_per_block=2), env.observation_space,
                         env.action_space, 0)
