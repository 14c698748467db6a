"""baselines.agents.ppo: GAE, the clipped loss, the Gaussian log-density, presets, determinism,
generate-and-test on both networks, diagnostics and resume. No MuJoCo needed: transitions
come from a small fake dynamics."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.spaces import Box

from baselines import backprop, continual_backprop, l2, shrink_perturb
from baselines.agents import ppo
from baselines.agents.ppo import PPOAgent, PPOConfig, clipped_policy_loss, compute_gae
from baselines.presets import ANT
from lop_bench.diagnostics import measure
from lop_bench.errors import InvalidConfigError, VectorizationNotSupported

OBS = Box(-np.inf, np.inf, (27,), np.float32)
ACT = Box(-1.0, 1.0, (8,), np.float32)
SMALL = dict(hidden=(16, 16), batch_size=64, num_minibatches=4, num_epochs=2, probe_size=50)


def spec(env_id=ANT, tier="cpu", **extra):
    return EnvSpec(id=env_id, entry_point="x:y", kwargs={"tier": tier, **extra})


def agent(seed=0, **kw):
    return PPOAgent(PPOConfig(**{**SMALL, **kw}), OBS, ACT, seed)


def drive(a, steps, seed=0, start=0):
    """Feed ``steps`` transitions of a fixed fake dynamics; return the actions taken."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=27).astype(np.float32)
    actions = []
    for i in range(start, start + steps):
        act = a.act(obs, {"task": 0})
        actions.append(act)
        nxt = (0.9 * obs + 0.1 * np.resize(act, 27) + 0.01 * rng.normal(size=27)).astype(np.float32)
        reward = float(act[0] - 0.1 * np.square(act).sum())
        term, trunc = i % 37 == 36, i % 50 == 49
        a.learn(obs, act, reward, nxt, term, trunc, {"task": 0})
        obs = rng.normal(size=27).astype(np.float32) if term or trunc else nxt
    return np.stack(actions)


def params(a):
    return [p.detach().clone() for p in a.parameters()]


# -- the pieces ---------------------------------------------------------------------------


def test_gae_by_hand_with_a_truncation_and_a_termination():
    # t=0 continues into t=1; t=1 is truncated (bootstraps from its last state's value 9);
    # t=2 terminates (no bootstrap).
    gamma, lam = 0.9, 0.8
    adv, ret = compute_gae(
        rewards=[1.0, 2.0, 3.0],
        values=[0.5, 1.0, 1.5],
        next_values=[1.0, 9.0, 4.0],
        terminated=[False, False, True],
        dones=[False, True, True],
        gamma=gamma,
        lam=lam,
    )
    a2 = 3.0 - 1.5
    a1 = 2.0 + 0.9 * 9.0 - 1.0
    a0 = (1.0 + 0.9 * 1.0 - 0.5) + gamma * lam * a1
    np.testing.assert_allclose(adv, [a0, a1, a2])
    np.testing.assert_allclose(adv, [7.952, 9.1, 1.5])
    np.testing.assert_allclose(ret, [8.452, 10.1, 3.0])


def test_gae_bootstraps_at_the_batch_end():
    adv, ret = compute_gae([1.0, 1.0], [0.0, 0.0], [2.0, 3.0], [False, False], [False, False], 0.5, 1.0)
    # delta = [1 + 0.5*2, 1 + 0.5*3] = [2, 2.5]; A1 = 2.5; A0 = 2 + 0.5 * 2.5
    np.testing.assert_allclose(adv, [3.25, 2.5])
    np.testing.assert_allclose(ret, adv)


def test_clipped_loss_by_hand():
    ratio = torch.tensor([1.5, 1.5, 0.5, 0.5])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    logp = torch.log(ratio).requires_grad_()
    loss = clipped_policy_loss(logp, torch.zeros(4), adv, clip_eps=0.2)
    # max(-r A, -clip(r) A): -1.2 (clipped), 1.5, -0.5, 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8) / 4)
    loss.backward()
    # Clipped terms have no gradient; the others -r A / 4.
    np.testing.assert_allclose(logp.grad.numpy(), [0.0, 1.5 / 4, -0.5 / 4, 0.0], rtol=1e-6)


def test_gaussian_log_prob_matches_torch():
    g = torch.Generator().manual_seed(0)
    mean, log_std, x = torch.randn(5, 8, generator=g), torch.randn(8, generator=g), torch.randn(5, 8, generator=g)
    want = torch.distributions.Normal(mean, log_std.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(ppo.gaussian_log_prob(mean, log_std, x), want)


# -- presets and factories ----------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, betas, wd, rr, noise",
    [
        (backprop.make_ppo_agent, (0.9, 0.999), 0.0, 0.0, 0.0),
        (backprop.make_proper_adam_agent, (0.99, 0.99), 0.0, 0.0, 0.0),
        (l2.make_ppo_l2_agent, (0.99, 0.99), 1e-3, 0.0, 0.0),
        (continual_backprop.make_ppo_cbp_agent, (0.99, 0.99), 1e-4, 1e-4, 0.0),
        (shrink_perturb.make_ppo_shrink_perturb_agent, (0.99, 0.99), 1e-3, 0.0, 1e-5),
    ],
)
def test_presets_hold_the_papers_settings(factory, betas, wd, rr, noise):
    a = factory(spec(), OBS, ACT, 0, "cpu")
    c = a.cfg
    assert (c.betas, c.weight_decay, c.replacement_rate, c.noise_std) == (betas, wd, rr, noise)
    assert (c.hidden, c.lr, c.batch_size, c.num_epochs, c.num_minibatches) == ((256, 256), 1e-4, 2048, 10, 16)
    assert (c.clip_eps, c.gamma, c.gae_lambda, c.init) == (0.2, 0.99, 0.95, "lecun")
    assert (c.input_fan_in, c.clip_actions, c.accumulate) == (111, False, False)
    assert c.maturity_threshold == 10_000 and a.preset.endswith(f"{ANT}/*")
    assert len(a.gnt) == (2 if rr else 0)
    # LeCun init: U(-sqrt(3 / fan_in), sqrt(3 / fan_in)), zero biases; the first layers'
    # fan-in is the paper's 111 Ant-v3 inputs, not the 27 of the observation.
    for net in (a.policy, a.value):
        for k, layer in enumerate(net.layers):
            bound = math.sqrt(3.0 / (111 if k == 0 else layer.in_features))
            assert net.init_bounds[k] == bound
            assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
            assert not layer.bias.any()
    assert torch.equal(a.log_std, torch.zeros(8))


@pytest.mark.parametrize("tier", ["paper", "cpu"])
def test_ant_preset_first_layer_bound_is_the_papers(tier):
    a = continual_backprop.make_ppo_cbp_agent(spec(tier=tier), OBS, ACT, 0)
    assert a.policy.layers[0].in_features == 27
    assert a.policy.init_bounds[0] == pytest.approx(math.sqrt(3 / 111)) == pytest.approx(0.1644, abs=1e-4)
    w = a.policy.layers[0].weight
    assert 0.15 < w.abs().max() <= 0.1644  # not sqrt(3 / 27) = 0.333
    # continual backprop re-initializes the first layer from the same bound
    assert a.gnt[0].layers[0].init_bound == a.policy.init_bounds[0]
    a.gnt[0].replace(0, torch.arange(256))
    assert 0.15 < a.policy.layers[0].weight.abs().max() <= 0.1644
    plain = PPOAgent(PPOConfig(), OBS, ACT, 0)  # input_fan_in 0: the observation's size
    assert plain.policy.init_bounds[0] == pytest.approx(math.sqrt(3 / 27))


def test_factory_errors():
    with pytest.raises(InvalidConfigError, match="no preset"):
        backprop.make_ppo_agent(spec("lop/SlowlyChangingRegression-v0"), OBS, ACT, 0)
    with pytest.raises(VectorizationNotSupported, match="separate processes"):
        backprop.make_ppo_agent(spec(vectorization_mode="vector_entry_point", num_envs=2), OBS, ACT, 0)
    with pytest.raises(InvalidConfigError, match="multiple of num_minibatches"):
        backprop.make_ppo_agent(spec(), OBS, ACT, 0, batch_size=100)
    with pytest.raises(InvalidConfigError, match="unknown ppo hyperparameter"):
        backprop.make_ppo_agent(spec(), OBS, ACT, 0, learning_rate=1e-3)
    a = backprop.make_ppo_agent(spec(), OBS, ACT, 0, betas=[0.9, 0.9], hidden=[32])
    assert a.cfg.betas == (0.9, 0.9) and a.hparams["hidden"] == [32]


# -- the agent ----------------------------------------------------------------------------


def test_actions_are_raw_samples_and_updates_happen_every_batch():
    a = agent()
    acts = drive(a, 63)
    assert acts.dtype == np.float32 and acts.shape == (63, 8)
    assert np.abs(acts).max() > 1.0  # the raw Gaussian samples (std 1) reach the env
    assert np.array_equal(acts, a._raw_np[:63])  # the samples it learns from
    before = params(a)
    assert a.num_updates == 0
    drive(a, 1, start=63)
    assert a.num_updates == 1 and a._t == 0
    assert any(not torch.equal(p, q) for p, q in zip(before, params(a), strict=True))


def test_clip_actions_clips_what_the_env_sees_not_what_it_learns_from():
    a, b = agent(), agent(clip_actions=True)
    obs = np.random.default_rng(0).normal(size=(20, 27)).astype(np.float32)
    raw = np.stack([a.act(o, {}) for o in obs])  # (no learn: the same slot, the same net)
    clipped = np.stack([b.act(o, {}) for o in obs])
    assert np.abs(raw).max() > 1.0 and (np.abs(clipped) == 1.0).any()
    assert np.array_equal(np.clip(raw, -1.0, 1.0), clipped)  # the same samples, clipped
    assert np.array_equal(a._raw_np[0], b._raw_np[0])  # it learns from the raw sample
    with pytest.raises(InvalidConfigError, match="bounded"):
        PPOAgent(PPOConfig(clip_actions=True), OBS, Box(-np.inf, np.inf, (8,), np.float32), 0)


def test_same_seed_same_agent_and_other_seeds_differ():
    a, b, c = agent(seed=3), agent(seed=3), agent(seed=4)
    xa, xb, xc = drive(a, 200), drive(b, 200), drive(c, 200)
    assert np.array_equal(xa, xb)
    assert all(torch.equal(p, q) for p, q in zip(params(a), params(b), strict=True))
    assert not np.array_equal(xa, xc)


def test_global_rng_is_untouched():
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    drive(agent(), 70)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_continual_backprop_replaces_units_of_both_networks():
    a = agent(replacement_rate=0.05, maturity_threshold=2, weight_decay=1e-4, betas=(0.99, 0.99))
    drive(a, 64 * 3)
    assert [sum(g.num_replaced) > 0 for g in a.gnt] == [True, True]
    assert a.gnt[0].pairs[0][0] is a.policy.layers[0] and a.gnt[1].pairs[1][1] is a.value.layers[2]
    assert a.gnt[0].step_count == 3 * 2 * 4  # one generate-and-test step per minibatch update


def test_shrink_and_perturb_adds_noise_to_both_networks():
    a = agent(weight_decay=1e-3, noise_std=1e-2)
    before = params(a)
    a._perturb()
    changed = [not torch.equal(p, q) for p, q in zip(before, params(a), strict=True)]
    assert all(changed[:-1]) and not changed[-1]  # every weight and bias; not the log-std
    plain, noisy = agent(weight_decay=1e-3), agent(weight_decay=1e-3, noise_std=1e-2)
    drive(plain, 64)
    drive(noisy, 64)
    assert not torch.equal(plain.policy.layers[0].weight, noisy.policy.layers[0].weight)


def test_features_and_probe_for_diagnostics():
    a = agent()
    assert a.probe().shape == (0, 27)
    drive(a, 30)
    p = a.probe()
    assert p.shape == (30, 27) and np.array_equal(p[-1], a._obs_np[29])
    drive(a, 100, seed=1, start=30)
    p = a.probe()
    assert p.shape == (50, 27) and p.dtype == np.float32
    assert np.array_equal(p[-1], a._obs_np[(130 - 1) % 64])  # newest last
    policy, value = a.features(p)
    assert (policy.name, value.name) == ("policy", "value")
    assert [f.shape for f in policy.layers + value.layers] == [(50, 16)] * 4
    value_h2 = torch.relu(a.value.layers[1](torch.relu(a.value.layers[0](torch.as_tensor(p)))))
    torch.testing.assert_close(value.layers[1], value_h2)
    assert all(q is r for q, r in zip(policy.params, a.policy.parameters(), strict=True))
    m = measure([policy, value], a.parameters(), definition="rl", layer_ranks=False)
    alone = measure(policy.layers, list(a.policy.parameters()), definition="rl", layer_ranks=False)
    assert m["network"] == "policy" and m["num_units"] == 32 and m["value_num_units"] == 32
    assert m["dormant_fraction"] == alone["dormant_fraction"]
    assert m["effective_rank"] == alone["effective_rank"]  # the policy's last hidden layer
    assert m["weight_magnitude"] == alone["weight_magnitude"]


def test_state_dict_resumes_exactly():
    a = agent(replacement_rate=0.05, maturity_threshold=2)
    drive(a, 100)
    state = copy.deepcopy(a.state_dict())
    rest_a = drive(a, 120, seed=9, start=100)
    b = agent(seed=123, replacement_rate=0.05, maturity_threshold=2)
    b.load_state_dict(state)
    rest_b = drive(b, 120, seed=9, start=100)
    assert np.array_equal(rest_a, rest_b)
    assert all(torch.equal(p, q) for p, q in zip(params(a), params(b), strict=True))
    assert a.num_updates == b.num_updates == 3
