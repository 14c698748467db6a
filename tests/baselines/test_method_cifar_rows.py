"""Presets of methods beyond the paper on class-incremental CIFAR-100 (the ResNet-18 learner
of baselines.agents.incremental), on the fake stream of its own tests (no real data).

UPGD (IncrementalUPGDConfig): with beta_utility 0 and sigma 0 every step is the by-hand
gated step w <- (1 - lr * wd) w - lr * g * (1 - sigmoid(u / eta)), u = -g * w, eta the
global maximum of u, lr the learner's schedule; its noise comes from the agent's "noise"
generator; the learner resumes bit for bit; the defaults (backprop) keep SGD.

ReDo (IncrementalReDoConfig) on the first conv of every residual block: at each check the
channels whose mean |h| over the batch, over the layer's mean, is <= tau (and only those)
get a fresh Kaiming-normal filter from the "gnt" generator, bias 0, a fresh batch norm,
zero outgoing kernels and zero momentum; every other entry is bit-identical (replayed on
a twin that never resets); a ReDo that never fires is backprop bit for bit; resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lop_bench
from baselines import upgd as upgd_table
from baselines.agents.incremental import (
    IncrementalAgent,
    IncrementalConfig,
    IncrementalUPGDConfig,
    learning_rate,
)
from baselines.core.upgd import UPGD
from baselines.presets import INCREMENTAL_CIFAR
from lop_bench.errors import InvalidConfigError
from tests.test_incremental_agents import FakeIncrementalStream, _roundtrip, _same, _tensors, drive

W = 1 / 16  # the narrow ResNet-18 of the incremental agents' tests


def _upgd(env, seed=0, **hp):
    return upgd_table.make_agent(env.spec, env.observation_space, env.action_space, seed, "cpu",
                                 width=W, **hp)


def test_upgd_with_beta_and_sigma_zero_is_the_by_hand_step_under_the_schedule():
    env = FakeIncrementalStream(blocks=2, epochs=5, train_batches=2)
    agent = _upgd(env, beta_utility=0.0, sigma=0.0, weight_decay=0.01)
    assert type(agent) is IncrementalAgent and isinstance(agent.optimizer, UPGD)
    assert isinstance(agent.cfg, IncrementalUPGDConfig) and agent.cfg.momentum == 0.0
    seen, lrs = {}, set()

    def on_learn(when, a, info):
        if "target" not in info:
            return
        if when == "before":
            seen["w"] = [p.detach().clone() for p in a.parameters()]
            seen["epoch"] = a._epoch
            return
        lr = learning_rate(a.cfg, seen["epoch"])
        assert all(g["lr"] == lr for g in a.optimizer.param_groups)
        lrs.add(lr)
        grads = [p.grad for p in a.parameters()]
        us = [-(g * w) for g, w in zip(grads, seen["w"])]
        eta = torch.stack([u.max() for u in us]).max().clamp_min(torch.finfo(torch.float32).tiny)
        for p, w, g, u in zip(a.parameters(), seen["w"], grads, us):
            gate = 1.0 - torch.sigmoid(u / eta)
            expected = w * (1.0 - lr * 0.01) - lr * (g * gate)
            torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
        seen["steps"] = seen.get("steps", 0) + 1

    drive(agent, env, on_learn=on_learn)
    assert seen["steps"] == 2 * 5 * 2
    assert len(lrs) == 4  # the schedule passed its three milestones (epochs 2, 3, 4 of 5)
    assert all(s["step"] == 20 for s in agent.optimizer.state.values())


def test_upgd_noise_comes_from_the_agents_noise_generator():
    env = FakeIncrementalStream(blocks=1, epochs=2)
    agent = _upgd(env)
    assert agent.optimizer.generator is agent.generators["noise"]
    before = agent.generators["noise"].get_state()
    drive(agent, env)
    assert not torch.equal(before, agent.generators["noise"].get_state())
    # Same seed, same run; another seed's noise (and weights) differ.
    runs = []
    for seed in (0, 0, 1):
        e = FakeIncrementalStream(blocks=1, epochs=2)
        a = _upgd(e, seed=seed)
        drive(a, e)
        runs.append(_tensors(a))
    assert _same(runs[0], runs[1]) and not _same(runs[0], runs[2])


@pytest.mark.parametrize("split", [9, 17, 18])
def test_upgd_learner_resumes_bit_for_bit(split):
    kw = dict(blocks=2, epochs=3, train_batches=2, val_batches=1, test_batches=2, pad=True,
              val_accuracies=[0.1, 0.3, 0.2, 0.5, 0.1, 0.2])
    env_a = FakeIncrementalStream(**kw)
    ref_actions, _ = drive(_upgd(env_a), env_a)
    env_b = FakeIncrementalStream(**kw)
    agent_b = _upgd(env_b)
    first, start = drive(agent_b, env_b, steps=split)
    state = _roundtrip(agent_b.state_dict())
    resumed = _upgd(env_b)
    resumed.load_state_dict(state)
    rest, _ = drive(resumed, env_b, start=start)
    assert all(np.array_equal(a, b) for a, b in zip(first + rest, ref_actions, strict=True))
    env_c = FakeIncrementalStream(**kw)
    full = _upgd(env_c)
    drive(full, env_c)
    assert _same(_tensors(full), _tensors(resumed))
    sf, sr = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert sf.keys() == sr.keys() and len(sf) == len(full._params)
    assert all(sf[i]["step"] == sr[i]["step"] and torch.equal(sf[i]["utility"], sr[i]["utility"])
               for i in sf)
    assert all(torch.equal(full.generators[k].get_state(), resumed.generators[k].get_state())
               for k in full.generators)


def test_upgd_preset_and_defaults_unchanged():
    row = upgd_table.ALGORITHM.presets[(INCREMENTAL_CIFAR, "*")].config
    assert type(row) is IncrementalUPGDConfig
    assert (row.lr, row.beta_utility, row.sigma, row.weight_decay, row.momentum) == (
        IncrementalConfig().lr, 0.999, 0.001, 0.0, 0.0)
    env = FakeIncrementalStream(blocks=1, epochs=2)
    agent = upgd_table.make_agent(env.spec, env.observation_space, env.action_space, 0, "cpu")
    assert agent.preset == f"upgd/{INCREMENTAL_CIFAR}/smoke" and isinstance(agent.optimizer, UPGD)
    backprop = lop_bench.agents.resolve_factory("backprop")[1](
        env.spec, env.observation_space, env.action_space, 0, "cpu", width=W)
    assert type(backprop.optimizer) is torch.optim.SGD and backprop.cfg.momentum == 0.9
    with pytest.raises(InvalidConfigError, match="momentum"):
        IncrementalUPGDConfig(momentum=0.9)
    with pytest.raises(InvalidConfigError, match="beta_utility"):
        IncrementalUPGDConfig(beta_utility=1.0)
    assert "upgd" in lop_bench.envs.incremental_cifar.SPEC.more_agents


# -- ReDo on the ResNet-18's first convs ------------------------------------------------------
from baselines import redo as redo_table  # noqa: E402
from baselines.agents.incremental import IncrementalReDoConfig  # noqa: E402
from baselines.core.nets import conv_std  # noqa: E402


def _redo(env, seed=0, **hp):
    return redo_table.make_agent(env.spec, env.observation_space, env.action_space, seed, "cpu",
                                 width=W, **hp)


def test_redo_resets_exactly_the_dormant_channels_and_nothing_else():
    env = FakeIncrementalStream(blocks=2, epochs=3, train_batches=2)
    agent = _redo(env, redo_period=3, redo_threshold=0.9)
    assert isinstance(agent.cfg, IncrementalReDoConfig) and agent.redo["steps"] == 0
    checks = []

    def on_learn(when, a, info):
        if "target" not in info:
            return
        if when == "before":
            checks.append({
                "due": a.redo["steps"] + 1 == a.cfg.redo_period,
                "mids": [h.detach().clone() for h in a._mids],
                "gen": a.generators["gnt"].get_state(),
            })
            return
        c = checks[-1]
        c["after"] = {k: v.detach().clone() for k, v in a.net.state_dict().items()}
        c["momentum"] = {n: a.optimizer.state[p]["momentum_buffer"].clone()
                         for n, p in a.net.named_parameters()}

    drive(agent, env, on_learn=on_learn)
    due = [c for c in checks if c["due"]]
    assert len(due) == len(checks) // 3 and agent.redo["steps"] == len(checks) % 3
    # Replay one check: from the state just before its reset (SGD step taken), the reset
    # is exactly the dormant channels' entries.
    env2 = FakeIncrementalStream(blocks=2, epochs=3, train_batches=2)
    twin = _redo(env2, redo_period=10**6, redo_threshold=0.9)  # never resets by itself
    n_train, resets = 0, 0
    obs, info = env2.reset()
    while True:
        action = twin.act(obs, info)
        next_obs, reward, term, trunc, info = env2.step(action)
        train = "target" in info
        mids = [h.detach().clone() for h in twin._mids] if train else None
        twin.learn(obs, action, reward, next_obs, term, trunc, info)
        if train:
            c = checks[n_train]
            n_train += 1
            if c["due"]:
                before = {k: v.detach().clone() for k, v in twin.net.state_dict().items()}
                mom = {n: twin.optimizer.state[p]["momentum_buffer"].clone()
                       for n, p in twin.net.named_parameters()}
                twin.generators["gnt"].set_state(c["gen"])
                layers = twin.net.channel_layers("first_convs")
                names = {id(m): n for n, m in twin.net.named_modules()}
                expected = dict(before)
                exp_mom = dict(mom)
                gen = twin.generators["gnt"]
                for layer, h in zip(layers, mids, strict=True):
                    act = h.abs().mean(dim=(0, 2, 3))
                    dormant = torch.nonzero(act / act.mean() <= 0.9).flatten()
                    cv, bn, nx = (names[id(m)] for m in (layer.conv, layer.bn, layer.next))
                    if dormant.numel():
                        resets += dormant.numel()
                        w = expected[cv + ".weight"].clone()
                        w[dormant] = torch.empty((dormant.numel(), *w.shape[1:])).normal_(
                            0.0, conv_std(layer.conv), generator=gen)
                        expected[cv + ".weight"] = w
                        for key, val in ((cv + ".bias", 0.0), (bn + ".weight", 1.0),
                                         (bn + ".bias", 0.0), (bn + ".running_mean", 0.0),
                                         (bn + ".running_var", 1.0)):
                            t = expected[key].clone()
                            t[dormant] = val
                            expected[key] = t
                        t = expected[nx + ".weight"].clone()
                        t[:, dormant] = 0.0
                        expected[nx + ".weight"] = t
                        for key in (cv + ".weight", cv + ".bias", bn + ".weight", bn + ".bias"):
                            m = exp_mom[key].clone()
                            m[dormant] = 0.0
                            exp_mom[key] = m
                        m = exp_mom[nx + ".weight"].clone()
                        m[:, dormant] = 0.0
                        exp_mom[nx + ".weight"] = m
                for k, v in c["after"].items():
                    assert torch.equal(v, expected[k]), k
                for k, v in c["momentum"].items():
                    assert torch.equal(v, exp_mom[k]), k
                # Continue the twin from the ReDo agent's state at this point.
                with torch.no_grad():
                    twin.net.load_state_dict(c["after"])
                    for n, p in twin.net.named_parameters():
                        twin.optimizer.state[p]["momentum_buffer"].copy_(c["momentum"][n])
        if info["stream_done"]:
            break
        obs = next_obs
    channels = sum(layer.conv.weight.shape[0] for layer in twin.net.channel_layers("first_convs"))
    assert n_train == len(checks) and 0 < resets < channels * len(due)
    assert sum(agent.redo["num_reset"]) == resets


def test_redo_that_never_fires_is_backprop_bit_for_bit_and_resumes():
    runs = []
    for make, hp in ((_redo, dict(redo_period=10**6)),
                     (lop_bench.agents.resolve_factory("backprop")[1], dict(width=W))):
        env = FakeIncrementalStream(blocks=1, epochs=2)
        if make is _redo:
            a = _redo(env, **hp)
        else:
            a = make(env.spec, env.observation_space, env.action_space, 0, "cpu", **hp)
        drive(a, env)
        runs.append(_tensors(a))
    assert _same(runs[0], runs[1])
    kw = dict(blocks=2, epochs=3, train_batches=2, val_batches=1, test_batches=2, pad=True,
              val_accuracies=[0.1, 0.3, 0.2, 0.5, 0.1, 0.2])
    hp = dict(redo_period=2, redo_threshold=0.9)
    env_a = FakeIncrementalStream(**kw)
    full = _redo(env_a, **hp)
    ref_actions, _ = drive(full, env_a)
    assert sum(full.redo["num_reset"]) > 0
    env_b = FakeIncrementalStream(**kw)
    agent_b = _redo(env_b, **hp)
    first, start = drive(agent_b, env_b, steps=9)
    resumed = _redo(env_b, **hp)
    resumed.load_state_dict(_roundtrip(agent_b.state_dict()))
    rest, _ = drive(resumed, env_b, start=start)
    assert all(np.array_equal(a, b) for a, b in zip(first + rest, ref_actions, strict=True))
    assert _same(_tensors(full), _tensors(resumed)) and full.redo == resumed.redo


def test_redo_preset_and_errors():
    rows = {t: redo_table.ALGORITHM.presets[(INCREMENTAL_CIFAR, t)].config
            for t in ("*", "cpu", "smoke")}
    assert [(r.redo_threshold, r.redo_period) for r in rows.values()] == [
        (0.1, 1000), (0.1, 20), (0.1, 5)]
    env = FakeIncrementalStream(blocks=1, epochs=2)
    agent = redo_table.make_agent(env.spec, env.observation_space, env.action_space, 0, "cpu")
    assert agent.preset == f"redo/{INCREMENTAL_CIFAR}/smoke" and agent.cfg.redo_period == 5
    with pytest.raises(InvalidConfigError, match="redo_score_over"):
        IncrementalReDoConfig(redo_score_over="period")
    with pytest.raises(InvalidConfigError, match="continual_backprop"):
        IncrementalReDoConfig(continual_backprop=True)
    assert "redo" in lop_bench.envs.incremental_cifar.SPEC.more_agents
