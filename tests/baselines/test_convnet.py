"""The paper's ConvNet and the backprop family on Continual ImageNet: init, features,
presets, head reset, eval phases, device-free inputs and bit-identical resume."""

import io
import math

import numpy as np
import pytest
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.spaces import Box

from baselines import backprop, continual_backprop, l2, shrink_perturb
from baselines.core.nets import ConvNet, default_init_bound
from lop_bench.errors import InvalidConfigError, VectorizationNotSupported

from . import params, same, spec
from .imagenet_fakes import (
    IMAGENET,
    FakeImageNetStream,
    imagenet_spaces,
    images,
    make_imagenet_agent,
    run_protocol,
)

AGENTS = {
    "backprop": backprop,
    "l2": l2,
    "shrink_perturb": shrink_perturb,
    "continual_backprop": continual_backprop,
}
NAMES = sorted(AGENTS)
TRAIN0 = {"task": 0, "phase": "train", "epoch": 0, "valid": 10, "stream_done": False}


def _net(seed=0, **kw):
    return ConvNet(generator=torch.Generator().manual_seed(seed), **kw)


# -- the network -----------------------------------------------------------------------


def test_convnet_architecture_and_feature_shapes():
    net = _net()
    convs, fcs = net.layers[:3], net.layers[3:]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 32, (5, 5)),
        (32, 64, (3, 3)),
        (64, 128, (3, 3)),
    ]
    assert all(c.padding == (0, 0) and c.stride == (1, 1) for c in convs)  # "valid" convs
    assert [(f.in_features, f.out_features) for f in fcs] == [(512, 128), (128, 128), (128, 2)]
    assert net.flat_features == 512 and net.head is net.layers[-1]
    x = torch.rand(4, 3, 32, 32) * 255
    out, feats = net.forward_with_features(x)
    assert out.shape == (4, 2)
    assert [tuple(f.shape) for f in feats] == [
        (4, 32, 14, 14),
        (4, 64, 6, 6),
        (4, 128, 2, 2),
        (4, 128),
        (4, 128),
    ]
    assert all((f >= 0).all() for f in feats)  # after ReLU
    # the features are the pooled maps: the next conv reads exactly them
    h1 = torch.nn.functional.max_pool2d(torch.relu(net.layers[0](x)), 2)
    assert torch.equal(feats[0], h1)
    assert torch.equal(net(x), out)


def test_convnet_torch_default_init_from_the_generator():
    net = _net(seed=3)
    fan_ins = [3 * 25, 32 * 9, 64 * 9, 512, 128, 128]
    assert net.init_bounds == pytest.approx(tuple(1 / math.sqrt(f) for f in fan_ins))
    assert default_init_bound(75) == pytest.approx(1 / math.sqrt(75))
    for layer, b in zip(net.layers, net.init_bounds, strict=True):
        for p in (layer.weight, layer.bias):  # weights and biases: U(-b, b)
            assert p.abs().max() <= b
            if p.numel() >= 32:  # spread over the whole interval
                assert p.abs().max() > 0.8 * b
    # the generator alone decides: same seed same weights, global RNG untouched
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    assert same(list(_net(seed=3).parameters()), list(net.parameters()))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not same(list(_net(seed=4).parameters()), list(net.parameters()))


def test_convnet_other_input_sizes_and_too_small_inputs():
    net = _net(in_shape=(1, 24, 24), out_features=5, hidden=(16,))
    assert net.flat_features == 128 and net(torch.zeros(2, 1, 24, 24)).shape == (2, 5)
    with pytest.raises(InvalidConfigError, match="too small"):
        _net(in_shape=(3, 16, 16))
    with pytest.raises(InvalidConfigError, match="channels, height, width"):
        _net(in_shape=(3, 32))


# -- presets and hyperparameters -------------------------------------------------------

PAPER = {
    "backprop": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
    "l2": {"lr": 0.03, "momentum": 0.9, "weight_decay": 3e-6},
    "shrink_perturb": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-5, "noise_std": 1e-5},
    "continual_backprop": {
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "replacement_rate": 3e-4,
        "maturity_threshold": 100,
        "decay_rate": 0.99,
        "utility": "adaptable_contribution",  # lop/imagenet/cfg/cbp.json, the plotted run
        "accumulate": True,
    },
}


@pytest.mark.parametrize("tier", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("name", NAMES)
def test_presets_resolve_for_every_tier_with_the_papers_values(name, tier):
    agent = make_imagenet_agent(AGENTS[name], tier=tier)
    assert agent.preset == f"{name}/{IMAGENET}/*"
    hp = agent.hparams
    assert {k: hp[k] for k in PAPER[name]} == PAPER[name]
    assert (hp["arch"], hp["hidden"], hp["reset_head"], hp["optimizer"]) == (
        "convnet",
        [128, 128],
        True,
        "sgd",
    )
    assert isinstance(agent.net, ConvNet)
    group = agent.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (
        PAPER[name]["lr"],
        0.9,
        PAPER[name]["weight_decay"],
    )
    if name == "continual_backprop":
        assert len(agent.gnt.pairs) == 5  # 3 conv + 2 fc hidden layers


@pytest.mark.parametrize(
    "hp,match",
    [
        ({"arch": "resnet"}, "arch"),
        ({"activation": "tanh"}, "activation"),
        ({"reset_head": "yes"}, "reset_head"),
        ({"hidden": (128, 0)}, "hidden"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_bad_hparams_are_named(hp, match):
    with pytest.raises(InvalidConfigError, match=match):
        make_imagenet_agent(backprop, **hp)


def test_convnet_needs_image_observations_and_mlp_can_be_picked():
    flat = Box(0.0, 1.0, (10, 784), np.float32)
    _, act = imagenet_spaces()
    with pytest.raises(InvalidConfigError, match="image observations"):
        backprop.make_agent(spec(IMAGENET), flat, act, 0, "cpu")
    # arch is an ordinary hyperparameter: the MLP on the flattened pixels by --hp
    mlp = make_imagenet_agent(backprop, arch="mlp", hidden=(8,))
    assert not isinstance(mlp.net, ConvNet) and mlp.net.layers[0].in_features == 3072
    # ... and the ConvNet on another stream's images
    conv = backprop.make_agent(
        spec("lop/PermutedMNIST-v0"), Box(0, 1, (1, 1, 28, 28), np.float32),
        imagenet_spaces(1)[1], 0, "cpu", arch="convnet", hidden=(16,),
    )
    assert conv.net.flat_features == 128


def test_no_vectorized_convnet():
    vspec = EnvSpec(
        id=IMAGENET, entry_point="x:y",
        kwargs={"tier": "cpu", "vectorization_mode": "vector_entry_point", "num_envs": 2},
    )
    obs, act = imagenet_spaces()
    with pytest.raises(VectorizationNotSupported, match="ContinualImageNet-v0 .* no vectorized"):
        backprop.make_agent(vspec, obs, act, 0, "cpu")


# -- the online protocol -----------------------------------------------------------------


def test_inputs_as_numpy_tensors_uint8_or_flat_give_the_same_prediction():
    agent = make_imagenet_agent(backprop)
    with torch.no_grad():  # a non-zero head, so the predictions mean something
        agent.net.head.weight.normal_(generator=torch.Generator().manual_seed(1))
    agent._task = 0
    x, _ = images(10)
    x = np.round(x)
    test = {**TRAIN0, "phase": "test"}
    ref = agent.act(x, test)
    assert ref.shape == (10,) and ref.dtype == np.int64
    for obs in (torch.from_numpy(x), torch.from_numpy(x).to(torch.uint8), x.reshape(10, -1)):
        assert np.array_equal(agent.act(obs, test), ref)
    feats = agent.features(x)
    assert [tuple(f.shape) for f in feats][:3] == [(10, 32, 14, 14), (10, 64, 6, 6), (10, 128, 2, 2)]
    # a large probe is chunked: same values as one pass
    big = np.concatenate([x] * 60)
    chunked = agent.features(big)
    assert all(torch.allclose(c[:10], f, atol=1e-5) for c, f in zip(chunked, feats, strict=True))


def test_backprop_convnet_learns_two_classes():
    agent = make_imagenet_agent(backprop)
    x, y = images(400, seed=5)
    acc = []
    for i in range(0, 400, 10):
        pred = agent.act(x[i : i + 10], TRAIN0)
        acc.append(np.mean(pred == y[i : i + 10]))
        agent.learn(x[i : i + 10], pred, acc[-1], None, False, False, {**TRAIN0, "target": y[i : i + 10]})
    assert np.mean(acc[-10:]) >= 0.9 > np.mean(acc[:3]) - 0.2


def test_head_is_zero_exactly_at_each_tasks_first_prediction():
    agent = make_imagenet_agent(backprop)
    env = FakeImageNetStream(num_tasks=3, epochs=2, train_batches=3, test_batches=2)
    head_at_act = []
    forward = agent.net.forward_with_features

    def recording(x):
        head_at_act.append(agent.net.head.weight.detach().clone())
        return forward(x)

    agent.net.forward_with_features = recording
    out = run_protocol(agent, env)
    assert out["checks"] == 3  # every test phase checked: no change inside it
    tasks = [t for t, _, _ in out["acts"]]
    firsts = {i for i, t in enumerate(tasks) if i == 0 or t != tasks[i - 1]}
    assert len(firsts) == 3
    for i, w in enumerate(head_at_act):
        if i in firsts:
            assert torch.equal(w, torch.zeros_like(w)), i
        else:  # never reset inside a task, nor in its test phase
            assert (w != 0).any(), i
    # the head was learned, not frozen: its first update after each reset is non-zero
    assert not torch.equal(head_at_act[1], head_at_act[0])


def test_head_reset_zeroes_its_optimizer_state_only():
    agent = make_imagenet_agent(backprop)
    x, y = images(10)
    for _ in range(3):
        agent.learn(x, agent.act(x, TRAIN0), 0.0, x, False, False, {**TRAIN0, "target": y})
    head = agent.net.head
    momentum = {p: agent.optimizer.state[p]["momentum_buffer"] for p in agent.net.parameters()}
    assert all((m != 0).any() for m in momentum.values())
    body = [p.detach().clone() for p in agent.net.layers[:-1].parameters()]
    body_mom = [momentum[p].clone() for p in agent.net.layers[:-1].parameters()]
    # a train step whose info already announces task 1 (a stream whose boundary falls on
    # a train step): that step's update first, then the reset
    agent.learn(x, agent.act(x, TRAIN0), 0.0, x, False, False, {**TRAIN0, "task": 1, "target": y})
    for p in head.parameters():
        assert torch.equal(p, torch.zeros_like(p))
        assert torch.equal(momentum[p], torch.zeros_like(p))
    assert not same(body, [p.detach() for p in agent.net.layers[:-1].parameters()])
    assert not same(body_mom, [momentum[p] for p in agent.net.layers[:-1].parameters()])
    # same task again: nothing is reset
    agent.learn(x, agent.act(x, {**TRAIN0, "task": 1}), 0.0, x, False, False, {**TRAIN0, "task": 1, "target": y})
    assert (head.weight != 0).any()


def test_no_head_reset_unless_configured():
    agent = make_imagenet_agent(backprop, reset_head=False)
    assert (agent.net.head.weight != 0).all()
    x, y = images(10)
    agent.learn(x, agent.act(x, TRAIN0), 0.0, x, False, False, {**TRAIN0, "task": 1, "target": y})
    assert (agent.net.head.weight != 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_test_phases_never_change_the_agent(name):
    kw = {"replacement_rate": 0.05, "maturity_threshold": 2} if name == "continual_backprop" else {}
    agent = make_imagenet_agent(AGENTS[name], **kw)
    env = FakeImageNetStream(num_tasks=2, epochs=2, train_batches=3, test_batches=2)
    out = run_protocol(agent, env)
    assert out["checks"] == 2 and len(out["scores"]) == 2
    assert agent._out is None  # no graph kept from a test batch
    if name == "continual_backprop":
        assert sum(agent.gnt.num_replaced) > 0


# -- checkpoints ---------------------------------------------------------------------------


def _roundtrip(state):
    """What the runner does with a state: numpy to torch, torch.save, weights-only load."""
    from lop_bench.checkpoint import decode, encode

    buf = io.BytesIO()
    torch.save(encode(state), buf)
    buf.seek(0)
    return decode(torch.load(buf, weights_only=True))


def _continue(agent, env, steps, obs, info):
    """``steps`` more steps of the protocol; the actions and losses taken."""
    record = []
    for _ in range(steps):
        action = agent.act(obs, info)
        obs2, reward, term, trunc, info = env.step(action)
        agent.learn(obs, action, reward, obs2, term, trunc, info)
        loss = agent.last_loss.clone() if "target" in info else None
        record.append((np.asarray(action).copy(), loss))
        obs = obs2
    return record


@pytest.mark.parametrize("name", ["continual_backprop", "shrink_perturb"])
def test_resume_is_bit_identical(name):
    kw = {"replacement_rate": 0.02, "maturity_threshold": 3} if name == "continual_backprop" else {}
    make_env = lambda: FakeImageNetStream(num_tasks=3, epochs=2, train_batches=3, test_batches=2)  # noqa: E731
    a, env_a = make_imagenet_agent(AGENTS[name], **kw), make_env()
    obs, info = env_a.reset(seed=1)
    _continue(a, env_a, 6, obs, info)  # up to task 0's test phase announcement
    obs, info = env_a._obs(), env_a._context()
    assert info["phase"] == "test"
    state = _roundtrip(a.state_dict())
    replaced = list(a.gnt.num_replaced) if name == "continual_backprop" else None
    env_b = make_env()
    env_b.reset(seed=1)
    for _ in range(6):  # the stream's position does not depend on the actions
        env_b.step(np.zeros(10, np.int64))
    rec_a = _continue(a, env_a, 14, obs, info)  # into task 2: head resets, replacements
    b = make_imagenet_agent(AGENTS[name], seed=0, **kw)
    b.load_state_dict(state)
    rec_b = _continue(b, env_b, 14, env_b._obs(), env_b._context())
    for (act_a, loss_a), (act_b, loss_b) in zip(rec_a, rec_b, strict=True):
        assert np.array_equal(act_a, act_b)
        assert (loss_a is None and loss_b is None) or torch.equal(loss_a, loss_b)
    assert same(params(a), params(b))
    assert same(list(a.buffers()), list(b.buffers()))
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    if name == "continual_backprop":
        assert a.gnt.num_replaced == b.gnt.num_replaced
        # conv channels were replaced after the resume
        assert sum(a.gnt.num_replaced[:3]) > sum(replaced[:3])
        assert a.gnt.accumulated == b.gnt.accumulated
