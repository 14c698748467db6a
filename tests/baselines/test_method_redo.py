"""ReDo's mechanism (baselines.core.redo) against hand-computed cases: the scores, the
``<= tau`` rule, exactly the dormant units recycled (fresh incoming weights from the
generator, zero outgoing weights and optimizer state) and every other entry bit-identical;
the leading seed dimension equal to one network per seed; conv channels; the schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from baselines.core.redo import (
    ReDo,
    UnitLayer,
    dormant_mask,
    dormant_scores,
    module_unit_layers,
    optimizer_states,
    reset_units,
    unit_activity,
)
from lop_bench.errors import InvalidConfigError


def _linear(i: int, o: int, seed: int) -> nn.Linear:
    layer = nn.Linear(i, o)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.uniform_(-1, 1, generator=g)
        layer.bias.uniform_(-1, 1, generator=g)
    return layer


def _step_adam(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """torch's Adam after one step on a dummy loss: every state tensor nonzero."""
    opt = torch.optim.Adam(params, lr=1e-3)
    loss = sum((p * p).sum() + p.sum() for p in params)
    loss.backward()
    opt.step()
    return opt


def test_scores_and_mask_by_hand():
    # Two inputs of a layer of 4 units: mean |h| = [0, 2, 2, 0.1], layer mean 1.025.
    h = torch.tensor([[[0.0, 1.0, -2.0, 0.1], [0.0, 3.0, 2.0, -0.1]]])  # (S=1, B=2, 4)
    act = unit_activity(h)
    assert torch.allclose(act, torch.tensor([[0.0, 2.0, 2.0, 0.1]]))
    scores = dormant_scores(act)
    assert torch.allclose(scores, torch.tensor([[0.0, 2 / 1.025, 2 / 1.025, 0.1 / 1.025]]))
    assert dormant_mask(scores, 0.1).tolist() == [[True, False, False, True]]
    assert dormant_mask(scores, 0.05).tolist() == [[True, False, False, False]]
    # The boundary: s_i == tau is dormant (the paper's s_i <= tau). Layer mean exactly 1.
    exact = dormant_scores(torch.tensor([[0.5, 1.5, 1.0, 1.0]]))
    assert exact.tolist() == [[0.5, 1.5, 1.0, 1.0]]
    assert dormant_mask(exact, 0.5).tolist() == [[True, False, False, False]]
    # A silent layer: every unit scores 0 and is dormant (no 0/0).
    assert dormant_scores(torch.zeros(2, 3)).tolist() == [[0.0] * 3] * 2
    # Conv channels: the mean over the batch and the positions.
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(1, 2, 3, 2, 2) - 10
    assert torch.allclose(unit_activity(maps), maps.abs().mean((1, 3, 4)))
    with pytest.raises(ValueError, match="unsqueeze"):
        unit_activity(torch.ones(4, 3))


def test_reset_exactly_the_dormant_units_of_a_linear_layer():
    layer, nxt = _linear(3, 4, 0), _linear(4, 2, 1)
    opt = _step_adam([*layer.parameters(), *nxt.parameters()])
    before = {n: t.detach().clone() for n, t in
              [("w", layer.weight), ("b", layer.bias), ("nw", nxt.weight), ("nb", nxt.bias)]}
    states = {n: [s.clone() for s in optimizer_states(opt, p)]
              for n, p in [("w", layer.weight), ("b", layer.bias), ("nw", nxt.weight)]}
    step_before = opt.state[layer.weight]["step"].clone()
    g = torch.Generator().manual_seed(7)
    expected_fresh = torch.empty(2, 3).uniform_(-0.25, 0.25, generator=torch.Generator().manual_seed(7))
    mask = torch.tensor([[True, False, False, True]])
    [unit] = module_unit_layers([(layer, nxt)], [0.25], opt)
    counts = reset_units(unit, mask, [g])
    assert counts.tolist() == [2]
    dormant, kept = [0, 3], [1, 2]
    # Incoming weights of the dormant units: the next draws of the generator, in unit order.
    assert torch.equal(layer.weight[dormant], expected_fresh)
    assert torch.equal(layer.bias[dormant], torch.zeros(2))
    assert torch.equal(nxt.weight[:, dormant], torch.zeros(2, 2))
    # Everything else bit-identical.
    assert torch.equal(layer.weight[kept], before["w"][kept])
    assert torch.equal(layer.bias[kept], before["b"][kept])
    assert torch.equal(nxt.weight[:, kept], before["nw"][:, kept])
    assert torch.equal(nxt.bias, before["nb"])
    # Adam's moments: zero at the reset entries, untouched elsewhere; its per-tensor step stays.
    for s_new, s_old in zip(optimizer_states(opt, layer.weight), states["w"]):
        assert torch.equal(s_new[dormant], torch.zeros(2, 3))
        assert torch.equal(s_new[kept], s_old[kept])
        assert s_old[dormant].abs().sum() > 0  # they were nonzero: the test can fail
    for s_new, s_old in zip(optimizer_states(opt, layer.bias), states["b"]):
        assert torch.equal(s_new[dormant], torch.zeros(2))
        assert torch.equal(s_new[kept], s_old[kept])
    for s_new, s_old in zip(optimizer_states(opt, nxt.weight), states["nw"]):
        assert torch.equal(s_new[:, dormant], torch.zeros(2, 2))
        assert torch.equal(s_new[:, kept], s_old[:, kept])
    assert torch.equal(opt.state[layer.weight]["step"], step_before)
    # Nothing dormant: nothing changes, nothing drawn.
    snapshot, g_state = layer.weight.detach().clone(), g.get_state()
    assert reset_units(unit, torch.zeros(1, 4, dtype=torch.bool), [g]).tolist() == [0]
    assert torch.equal(layer.weight, snapshot) and torch.equal(g.get_state(), g_state)


def test_sgd_momentum_and_bias_draws():
    layer, nxt = _linear(2, 3, 2), _linear(3, 1, 3)
    opt = torch.optim.SGD([*layer.parameters(), *nxt.parameters()], lr=0.1, momentum=0.9)
    (layer(torch.ones(1, 2)).sum() + nxt(torch.ones(1, 3)).sum()).backward()
    opt.step()
    [unit] = module_unit_layers([(layer, nxt)], [0.5], opt, bias_bounds=[0.125])
    ref = torch.Generator().manual_seed(3)
    w_fresh = torch.empty(1, 2).uniform_(-0.5, 0.5, generator=ref)
    b_fresh = torch.empty(1).uniform_(-0.125, 0.125, generator=ref)
    reset_units(unit, torch.tensor([[False, True, False]]), [torch.Generator().manual_seed(3)])
    assert torch.equal(layer.weight[1:2], w_fresh)
    assert torch.equal(layer.bias[1:2], b_fresh)  # a net whose biases are drawn: drawn again
    assert opt.state[layer.weight]["momentum_buffer"][1].abs().sum() == 0
    assert opt.state[layer.weight]["momentum_buffer"][0].abs().sum() > 0
    assert opt.state[nxt.weight]["momentum_buffer"][:, 1].abs().sum() == 0


def test_seed_dimension_equals_one_network_per_seed():
    """Batched (S, out, in) tensors with one generator per seed give, seed by seed, what a
    single network with that generator gets, bit for bit."""
    S, sizes = 3, (5, 4, 3, 2)
    init = torch.Generator().manual_seed(0)
    W = [torch.empty(S, o, i).uniform_(-1, 1, generator=init) for i, o in zip(sizes[:-1], sizes[1:])]
    b = [torch.empty(S, o).uniform_(-1, 1, generator=init) for o in sizes[1:]]
    masks = [torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool),
             torch.tensor([[0, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=torch.bool)]
    singles = []
    for s in range(S):  # one nn.Linear network per seed, same values
        layers = [nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:])]
        with torch.no_grad():
            for layer, w, bb in zip(layers, W, b):
                layer.weight.copy_(w[s])
                layer.bias.copy_(bb[s])
        g = torch.Generator().manual_seed(100 + s)
        units = module_unit_layers(list(zip(layers[:-1], layers[1:])), [0.3, 0.4])
        for unit, m in zip(units, masks):
            reset_units(unit, m[s : s + 1], [g])
        singles.append(layers)
    gens = [torch.Generator().manual_seed(100 + s) for s in range(S)]
    batched = [UnitLayer(W[i], b[i], W[i + 1], bound) for i, bound in enumerate([0.3, 0.4])]
    counts = [reset_units(unit, m, gens).tolist() for unit, m in zip(batched, masks)]
    assert counts == [[2, 0, 4], [1, 2, 0]]
    for s in range(S):
        for layer, w, bb in zip(singles[s], W, b):
            assert torch.equal(layer.weight, w[s]) and torch.equal(layer.bias, bb[s])
    with pytest.raises(ValueError, match="one generator per seed"):
        reset_units(batched[0], masks[0], gens[:2])
    with pytest.raises(ValueError, match="mask"):
        reset_units(batched[0], masks[1], gens)


def test_conv_channels_into_a_conv_and_across_the_flatten():
    g0 = torch.Generator().manual_seed(0)
    conv1, conv2 = nn.Conv2d(2, 3, 3), nn.Conv2d(3, 2, 2)
    fc = nn.Linear(2 * 2 * 2, 4)  # conv2's 2 channels of 2x2 maps, flattened channel-major
    for m in (conv1, conv2, fc):
        with torch.no_grad():
            m.weight.uniform_(-1, 1, generator=g0)
            m.bias.uniform_(-1, 1, generator=g0)
    w1, w2, wf = conv1.weight.detach().clone(), conv2.weight.detach().clone(), fc.weight.detach().clone()
    units = module_unit_layers([(conv1, conv2), (conv2, fc)], [0.2, 0.3])
    reset_units(units[0], torch.tensor([[False, True, False]]), [torch.Generator().manual_seed(1)])
    reset_units(units[1], torch.tensor([[True, False]]), [torch.Generator().manual_seed(2)])
    fresh1 = torch.empty(1, 2, 3, 3).uniform_(-0.2, 0.2, generator=torch.Generator().manual_seed(1))
    fresh2 = torch.empty(1, 3, 2, 2).uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(conv1.weight[1:2], fresh1)
    assert torch.equal(conv1.weight[[0, 2]], w1[[0, 2]])
    # Channel 1 of conv1 feeds conv2 through its input-channel slice (conv2's filter 0 was
    # then re-drawn whole by the second reset).
    assert torch.equal(conv2.weight[1, 1], torch.zeros(2, 2))
    assert torch.equal(conv2.weight[1:, [0, 2]], w2[1:, [0, 2]])
    assert torch.equal(conv2.weight[0:1], fresh2)
    # Channel 0 of conv2 is fc's columns 0..3 (its 2x2 positions); channel 1's are kept.
    assert torch.equal(fc.weight[:, :4], torch.zeros(4, 4))
    assert torch.equal(fc.weight[:, 4:], wf[:, 4:])


def test_schedule_every_period_updates():
    layer, nxt = _linear(2, 4, 0), _linear(4, 1, 1)
    redo = ReDo(threshold=0.1, period=3)
    g = torch.Generator().manual_seed(0)

    def layers():
        return module_unit_layers([(layer, nxt)], [0.5])

    h_dead0 = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
    w0 = layer.weight.detach().clone()
    assert redo.step([h_dead0], layers, [g]) is None
    assert redo.step([h_dead0], layers, [g]) is None
    assert torch.equal(layer.weight, w0)
    masks = redo.step([h_dead0], layers, [g])
    assert masks[0].tolist() == [[True, False, False, False]]
    assert redo.num_reset[0].tolist() == [1] and redo.last_dormant[0].tolist() == [0.25]
    assert not torch.equal(layer.weight[0], w0[0]) and torch.equal(layer.weight[1:], w0[1:])
    assert redo.steps == 0


def test_period_scores_accumulate_over_the_window():
    """Batch-1 streams: unit 0 is silent on the last input but active on average since the
    last check; ``"period"`` keeps it, ``"batch"`` recycles it."""
    feats = [torch.tensor([[[3.0, 1.0, 1.0]]]), torch.tensor([[[0.0, 1.0, 1.0]]])]
    results = {}
    for mode in ("period", "batch"):
        layer, nxt = _linear(2, 3, 0), _linear(3, 1, 1)
        redo = ReDo(threshold=0.1, period=2, score_over=mode)
        g = torch.Generator().manual_seed(0)
        pairs = [(layer, nxt)]
        for h in feats:
            out = redo.step([h], lambda pairs=pairs: module_unit_layers(pairs, [0.5]), [g])
        results[mode] = out[0].tolist()
    assert results == {"period": [[False, False, False]], "batch": [[True, False, False]]}


def test_state_dict_resumes_mid_period():
    feats = [torch.rand(1, 1, 4, generator=torch.Generator().manual_seed(i)) for i in range(7)]
    feats[5][0, 0, 2] = 0.0

    def run(split: int | None) -> torch.Tensor:
        layer, nxt = _linear(3, 4, 0), _linear(4, 1, 1)
        g = torch.Generator().manual_seed(0)
        redo = ReDo(threshold=0.5, period=3, score_over="period")
        for i, h in enumerate(feats):
            if i == split:
                state = redo.state_dict()
                redo = ReDo(threshold=0.5, period=3, score_over="period")
                redo.load_state_dict(state)
            redo.step([h], lambda: module_unit_layers([(layer, nxt)], [0.5]), [g])
        return torch.cat([layer.weight.flatten(), nxt.weight.flatten(), redo.num_reset[0].float()])

    full = run(None)
    assert torch.equal(full, run(4)) and torch.equal(full, run(1))


@pytest.mark.parametrize("kwargs, field", [
    (dict(threshold=-0.1, period=10), "threshold"),
    (dict(threshold=0.1, period=0), "period"),
    (dict(threshold=0.1, period=2.5), "period"),
    (dict(threshold=0.1, period=10, score_over="window"), "score_over"),
])
def test_bad_settings_are_named(kwargs, field):
    with pytest.raises(InvalidConfigError, match=field):
        ReDo(**kwargs)


# -- the agents ---------------------------------------------------------------------------
import copy  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
from gymnasium.envs.registration import EnvSpec  # noqa: E402
from gymnasium.spaces import Box, MultiDiscrete  # noqa: E402

import lop_bench  # noqa: E402
from baselines import redo as redo_table  # noqa: E402
from baselines.agents.ppo import PPOAgent, PPOReDoConfig  # noqa: E402
from baselines.agents.supervised import BackpropConfig, ReDoConfig, SupervisedAgent  # noqa: E402
from baselines.agents.vectorized import VectorMLPAgent  # noqa: E402
from baselines.presets import (  # noqa: E402
    ANT,
    CONTINUAL_IMAGENET,
    INCREMENTAL_CIFAR,
    PERMUTED_MNIST,
    REGRESSION,
)
from lop_bench.errors import VectorizationNotSupported  # noqa: E402

REG_SPACES = (Box(-np.inf, np.inf, (1, 20), np.float32), Box(-np.inf, np.inf, (1, 1), np.float32))
SPACES = {
    REGRESSION: REG_SPACES,
    PERMUTED_MNIST: (Box(0, 1, (1, 784), np.float32), MultiDiscrete([10])),
    CONTINUAL_IMAGENET: (Box(0, 255, (100, 3, 32, 32), np.float32), MultiDiscrete([2] * 100)),
    INCREMENTAL_CIFAR: (Box(0, 1, (90, 3, 32, 32), np.float32), MultiDiscrete([100] * 90)),
    ANT: (Box(-np.inf, np.inf, (27,), np.float64), Box(-1, 1, (8,), np.float32)),
}


def _env(env_id, tier="smoke", **kwargs):
    """What make_agent reads of an env: its spec and spaces."""
    obs, act = SPACES[env_id]
    return types.SimpleNamespace(
        spec=EnvSpec(env_id, entry_point="x:y", kwargs={"tier": tier, **kwargs}),
        observation_space=obs, action_space=act)


def _data(steps, seeds=None, seed=0):
    g = np.random.default_rng(seed)
    shape = (steps, 1, 20) if seeds is None else (steps, seeds, 1, 20)
    x = g.random(shape, dtype=np.float32)
    y = g.standard_normal(shape[:-1] + (1,)).astype(np.float32)
    return x, y


def _kill(layer: nn.Linear, unit: int) -> None:
    """A ReLU unit that is 0 on every input in [0, 1]^n."""
    with torch.no_grad():
        layer.weight[unit] = -1.0
        layer.bias[unit] = -10.0


def _step(agent, x, y):
    agent.act(x, {"phase": "train"})
    agent.learn(x, None, 0.0, x, False, False, {"target": y})


def test_supervised_agent_recycles_exactly_the_dead_unit():
    """Beside a backprop twin on the same data: after F steps the units that were silent on
    all F inputs (tau 0: only those; the killed unit among them) have the generator's next
    draws, zero bias and zero outgoing weights; every other entry is the twin's, bit for bit."""
    cfg = ReDoConfig(redo_threshold=0.0, redo_period=5, redo_score_over="period")
    a = SupervisedAgent(cfg, *REG_SPACES, seed=0)
    b = SupervisedAgent(BackpropConfig(), *REG_SPACES, seed=0)
    for agent in (a, b):
        _kill(agent.net.layers[0], 2)
    x, y = _data(5)
    activity = torch.zeros(5)
    for t in range(5):
        if t == 4:
            g = copy.deepcopy(b.generator)  # the state ReDo's draws start from
        _step(a, x[t], y[t])
        b.act(x[t], {"phase": "train"})
        activity += b._feats[0].detach().abs()[0]
        b.learn(x[t], None, 0.0, x[t], False, False, {"target": y[t]})
        if t < 4:
            assert a.redo.num_reset == []  # no check before the 5th step
    dead = torch.nonzero(activity == 0).flatten().tolist()
    keep = [u for u in range(5) if u not in dead]
    assert 2 in dead and keep
    bound = a.net.init_bounds[0]
    expected = torch.empty(len(dead), 20).uniform_(-bound, bound, generator=g)
    assert a.redo.num_reset[0].tolist() == [len(dead)]
    (w_a, b_a), (v_a, c_a) = [(lay.weight, lay.bias) for lay in a.net.layers]
    (w_b, b_b), (v_b, c_b) = [(lay.weight, lay.bias) for lay in b.net.layers]
    assert torch.equal(w_a[dead], expected)
    assert torch.equal(b_a[dead], torch.zeros(len(dead)))
    assert torch.equal(v_a[:, dead], torch.zeros(1, len(dead)))
    assert v_b[0, 2] != 0  # the twin's dead unit kept its outgoing weight
    assert torch.equal(w_a[keep], w_b[keep]) and torch.equal(b_a[keep], b_b[keep])
    assert torch.equal(v_a[:, keep], v_b[:, keep]) and torch.equal(c_a, c_b)


def test_vectorized_redo_is_the_single_agent_per_seed():
    cfg = ReDoConfig(redo_threshold=0.0, redo_period=7, redo_score_over="period")
    vec = VectorMLPAgent(cfg, *REG_SPACES, seeds=(3, 4))
    singles = [SupervisedAgent(cfg, *REG_SPACES, seed=s) for s in (3, 4)]
    with torch.no_grad():  # kill unit 1 of seed 4 in both
        vec.W[0][1, 1], vec.b[0][1, 1] = -1.0, -10.0
    _kill(singles[1].net.layers[0], 1)
    x, y = _data(15, seeds=2)
    for t in range(15):
        vec.act(x[t], {"phase": "train"})
        vec.learn(x[t], None, 0.0, x[t], False, False, {"target": y[t]})
        for s, agent in enumerate(singles):
            _step(agent, x[t, s], y[t, s])
    assert vec.redo.num_reset[0][1] >= 1  # the killed unit, at least
    assert not torch.equal(vec.W[0][1, 1], torch.full((20,), -1.0))
    for s, agent in enumerate(singles):
        assert agent.redo.num_reset[0].tolist() == [vec.redo.num_reset[0][s].item()]
        for layer, W, b in zip(agent.net.layers, vec.W, vec.b):
            assert torch.allclose(layer.weight, W[s], atol=1e-6)
            assert torch.allclose(layer.bias, b[s], atol=1e-6)


def test_resume_mid_period_is_bit_identical():
    cfg = ReDoConfig(redo_threshold=0.5, redo_period=4, redo_score_over="period")
    x, y = _data(11)

    def run(split):
        agent = SupervisedAgent(cfg, *REG_SPACES, seed=1)
        _kill(agent.net.layers[0], 0)
        for t in range(11):
            if t == split:
                state = copy.deepcopy(agent.state_dict())
                agent = SupervisedAgent(cfg, *REG_SPACES, seed=99)
                agent.load_state_dict(state)
            _step(agent, x[t], y[t])
        return agent

    full, resumed = run(None), run(6)
    assert full.redo.num_reset[0].sum() > 0
    for p, q in zip(full.net.parameters(), resumed.net.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(full.redo.num_reset[0], resumed.redo.num_reset[0])


def test_ppo_redo_recycles_a_dead_policy_unit():
    cfg = PPOReDoConfig(hidden=(8, 8), batch_size=32, num_minibatches=2, num_epochs=2,
                        redo_threshold=0.1, redo_period=3)
    agent = PPOAgent(cfg, *SPACES[ANT], seed=0)
    layer = agent.policy.layers[0]
    with torch.no_grad():
        layer.weight[5], layer.bias[5] = 0.0, -100.0
    g = np.random.default_rng(0)
    for _ in range(32):
        obs = g.standard_normal(27)
        a = agent.act(obs, {})
        agent.learn(obs, a, float(g.standard_normal()), g.standard_normal(27), False, False, {})
    # 4 minibatch updates: one check, at the 3rd, on both networks.
    assert agent.redo[0].steps == 1 and agent.redo[1].steps == 1
    assert agent.redo[0].num_reset[0][0] >= 1
    assert layer.bias[5].abs() < 1.0 and layer.weight[5].abs().sum() > 0
    state = agent.state_dict()
    assert len(state["redo"]) == 2
    other = PPOAgent(cfg, *SPACES[ANT], seed=1)
    other.load_state_dict(copy.deepcopy(state))
    assert other.redo[0].num_reset[0].tolist() == agent.redo[0].num_reset[0].tolist()


@pytest.mark.parametrize("env_id", [REGRESSION, PERMUTED_MNIST, CONTINUAL_IMAGENET, ANT])
def test_redo_on_its_streams_and_a_clear_error_elsewhere(env_id):
    agent = lop_bench.make_agent("redo", _env(env_id), seed=0)
    assert agent.redo and agent.preset.startswith(f"redo/{env_id}/")
    # Class-incremental CIFAR-100: the ResNet-18 learner's first convs
    # (tests/baselines/test_method_cifar_rows.py).
    inc = lop_bench.make_agent("redo", _env(INCREMENTAL_CIFAR), seed=0)
    assert inc.redo is not None and inc.preset.startswith(f"redo/{INCREMENTAL_CIFAR}/")


def test_redo_presets_and_names():
    ant = redo_table.ALGORITHM.presets[(ANT, "*")].config  # cfg/ant/redo.yml
    assert (ant.redo_threshold, ant.redo_period, ant.redo_score_over) == (0.1, 100, "batch")
    assert (ant.betas, ant.weight_decay, ant.lr, ant.hidden) == ((0.99, 0.99), 1e-4, 1e-4, (256, 256))
    assert ant.replacement_rate == 0.0  # no generate-and-test besides
    reg = redo_table.ALGORITHM.presets[(REGRESSION, "*")].config
    assert (reg.redo_threshold, reg.redo_period, reg.redo_score_over) == (0.1, 1000, "period")
    a = lop_bench.make_agent("ppo_redo", _env(ANT), seed=0)
    b = lop_bench.make_agent("redo", _env(ANT), seed=0)
    assert a.cfg == b.cfg and a.preset == f"ppo_redo/{ANT}/*"
    vec = lop_bench.make_agent("redo", _env(REGRESSION, vectorization_mode="vector_entry_point",
                                            num_envs=2), seed=(0, 1))
    assert type(vec) is VectorMLPAgent and vec.redo is not None
    with pytest.raises(VectorizationNotSupported):
        lop_bench.make_agent("redo", _env(CONTINUAL_IMAGENET, vectorization_mode="vector_entry_point",
                                          num_envs=2), seed=0)
    with pytest.raises(InvalidConfigError, match="redo_score_over"):
        lop_bench.make_agent("redo", _env(REGRESSION), seed=0, redo_score_over="epoch")


def test_convnet_channels_recycled_with_their_biases_drawn():
    """Continual ImageNet's ConvNet: a silent conv channel gets a fresh filter and a fresh
    bias (the net's default init draws both), its slice of the next conv's filters 0; every
    entry of the live channels is the backprop twin's."""
    spaces_ = (Box(0, 255, (4, 3, 32, 32), np.float32), MultiDiscrete([2] * 4))
    base = dict(lr=0.01, momentum=0.9, arch="convnet", hidden=(16, 16))
    a = SupervisedAgent(ReDoConfig(redo_threshold=0.0, redo_period=2, **base), *spaces_, seed=0)
    b = SupervisedAgent(BackpropConfig(**base), *spaces_, seed=0)
    for agent in (a, b):
        with torch.no_grad():
            agent.net.layers[0].weight[3] = -1.0
            agent.net.layers[0].bias[3] = -1000.0
    g = np.random.default_rng(0)
    activity = torch.zeros(32)
    for t in range(2):
        x = g.random((4, 3, 32, 32), dtype=np.float32)
        y = g.integers(0, 2, 4)
        if t == 1:
            gen = copy.deepcopy(b.generator)
        _step(a, x, y)
        b.act(x, {"phase": "train"})
        activity += b._feats[0].detach().abs().mean((0, 2, 3))
        b.learn(x, None, 0.0, x, False, False, {"target": y})
    dead = torch.nonzero(activity == 0).flatten().tolist()
    live = [c for c in range(32) if c not in dead]
    assert 3 in dead and a.redo.num_reset[0].tolist() == [len(dead)]
    bound = a.net.init_bounds[0]
    w_fresh = torch.empty(len(dead), 3, 5, 5).uniform_(-bound, bound, generator=gen)
    b_fresh = torch.empty(len(dead)).uniform_(-bound, bound, generator=gen)
    conv_a, conv_b = a.net.layers[0], b.net.layers[0]
    assert torch.equal(conv_a.weight[dead], w_fresh) and torch.equal(conv_a.bias[dead], b_fresh)
    assert torch.equal(conv_a.weight[live], conv_b.weight[live])
    # Into the next conv: the dead channels' slices are 0 in every filter that layer did not
    # re-draw itself (those equal the twin's on the live slices).
    w1a, w1b = a.net.layers[1].weight, b.net.layers[1].weight
    kept = [o for o in range(w1a.shape[0]) if torch.equal(w1a[o, live], w1b[o, live])]
    assert len(kept) == w1a.shape[0] - a.redo.num_reset[1].item()
    assert w1a[kept][:, dead].abs().sum() == 0 and w1b[kept][:, dead].abs().sum() > 0
    assert a.optimizer.state[conv_a.weight]["momentum_buffer"][dead].abs().sum() == 0
