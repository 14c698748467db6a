"""Presets of methods beyond the paper on class-incremental CIFAR-100 (the ResNet-18 learner
of baselines.agents.incremental), on the fake stream of its own tests (no real data).

UPGD (IncrementalUPGDConfig): with beta_utility 0 and sigma 0 every step is the by-hand
gated step w <- (1 - lr * wd) w - lr * g * (1 - sigmoid(u / eta)), u = -g * w, eta the
global maximum of u, lr the learner's schedule; its noise comes from the agent's "noise"
generator; the learner resumes bit for bit; the defaults (backprop) keep SGD."""

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
