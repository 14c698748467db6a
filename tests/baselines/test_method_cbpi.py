"""The Ant's named continual-backprop variant of the paper's ``cfg/ant/cbpi.yml``
(``continual_backprop_instantaneous``, alias ``ppo_cbpi``): ``cbp.yml``'s preset with decay
0, so each unit's utility is the last minibatch's contribution, not a running average."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.spaces import Box

import lop_bench
from baselines import continual_backprop
from baselines.agents.ppo import PPOAgent
from baselines.presets import ANT, REGRESSION
from lop_bench.errors import InvalidConfigError

ANT_SPACES = (Box(-np.inf, np.inf, (27,), np.float64), Box(-1, 1, (8,), np.float32))


def _env(env_id=ANT):
    return types.SimpleNamespace(spec=EnvSpec(env_id, entry_point="x:y", kwargs={"tier": "smoke"}),
                                 observation_space=ANT_SPACES[0], action_space=ANT_SPACES[1])


def test_the_preset_is_cbp_with_decay_zero():
    cbp = continual_backprop.ALGORITHM.presets[(ANT, "*")].config
    cbpi = continual_backprop.INSTANTANEOUS.presets[(ANT, "*")].config
    assert cbp.decay_rate == 0.99 and cbpi.decay_rate == 0.0
    assert dataclasses.replace(cbp, decay_rate=0.0) == cbpi  # the only difference
    a = lop_bench.make_agent("continual_backprop_instantaneous", _env(), seed=0)
    b = lop_bench.make_agent("ppo_cbpi", _env(), seed=0)
    assert type(a) is PPOAgent and a.cfg == b.cfg == cbpi
    assert b.preset == f"ppo_cbpi/{ANT}/*"
    with pytest.raises(InvalidConfigError, match="ppo_cbpi.*no preset"):
        lop_bench.make_agent("ppo_cbpi", _env(REGRESSION), seed=0)


def test_the_utility_is_the_last_minibatch_contribution():
    """Two steps of the policy's generate-and-test on different activations: with decay 0
    the utility is the second's contribution ``mean |outgoing| * mean |h|``, exactly."""
    agent = lop_bench.make_agent("ppo_cbpi", _env(), seed=0, hidden=(6, 6))
    gnt = agent.gnt[0]
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        feats = [torch.rand(16, 6, generator=g) for _ in range(2)]
        gnt.step(feats)
    out = [layer.weight.detach().abs().mean(0) for layer in agent.policy.layers[1:]]
    for i in range(2):
        assert torch.allclose(gnt.utility[i], out[i] * feats[i].abs().mean(0), rtol=1e-6, atol=0)
        assert torch.allclose(gnt.mean_activation(i), feats[i].mean(0), rtol=1e-6, atol=0)
