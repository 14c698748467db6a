"""Vectorized agents: seed i of the batched run equals the single-seed run of seed i."""

import numpy as np
import pytest

import lop_bench
from lop_bench.errors import VectorizationNotSupported
from lop_bench.runner import run, run_vectorized

REG = "lop/SlowlyChangingRegression-v0"
SEEDS = (0, 1, 2)
# Batched products add in another order than autograd's: the weights differ by float32
# rounding (~1e-7 relative per step), which stays small over a smoke run. Stated
# tolerance on every per-task score: 1e-4 relative.
RTOL = 1e-4


@pytest.mark.parametrize(
    "agent", ["linear", "backprop", "l2", "shrink_perturb", "continual_backprop"]
)
def test_vectorized_curve_equals_single_seed_curve(agent):
    vec = run_vectorized(REG, agent, tier="smoke", seeds=SEEDS, progress=False)
    for r in vec:
        single = run(REG, agent, tier="smoke", seed=r.seed, progress=False)
        np.testing.assert_allclose(r.per_task, single.per_task, rtol=RTOL)
        assert r.data["agent"]["vectorized"] is True
        assert r.data["agent"]["hparams"] == single.data["agent"]["hparams"]
        assert r.data["protocol_hash"] == single.data["protocol_hash"]
        dv, ds = r.diagnostics, single.diagnostics
        if ds is not None:
            assert dv["tasks"] == ds["tasks"]
            np.testing.assert_allclose(
                dv["measures"]["dormant_fraction"], ds["measures"]["dormant_fraction"]
            )


@pytest.mark.parametrize("accumulate", [True, False])
@pytest.mark.parametrize("hidden", [(5,), (6, 4)])
def test_continual_backprop_replaces_the_same_units_in_both_paths(hidden, accumulate):
    """Both count rules (the coins come from each seed's generator) and the two-pass step
    (every layer scored, then replaced): the same units, the same fresh weights."""
    import torch

    hp = dict(replacement_rate=0.02, maturity_threshold=10, hidden=hidden, accumulate=accumulate)
    envs = lop_bench.make_vec(REG, tier="smoke", seeds=SEEDS)
    vec = lop_bench.make_agent("continual_backprop", envs, seed=SEEDS, **hp)
    singles = []
    for s in SEEDS:
        env = lop_bench.make(REG, tier="smoke")
        singles.append((env, lop_bench.make_agent("continual_backprop", env, seed=s, **hp)))
    obs, infos = envs.reset()
    single_obs = [env.reset(seed=s)[0] for (env, _), s in zip(singles, SEEDS, strict=True)]
    info = {"task": 0, "phase": "train"}
    for _ in range(300):
        a = vec.act(obs, infos)
        nobs, r, te, tr, infos = envs.step(a)
        vec.learn(obs, a, r, nobs, te, tr, infos)
        obs = nobs
        for k, (env, agent) in enumerate(singles):
            act = agent.act(single_obs[k], info)
            o, rew, t1, t2, info_k = env.step(act)
            agent.learn(single_obs[k], act, rew, o, t1, t2, info_k)
            single_obs[k] = o
    for k, (_, agent) in enumerate(singles):
        assert [int(n[k]) for n in vec.gnt.num_replaced] == agent.gnt.num_replaced
        assert all(n > 0 for n in agent.gnt.num_replaced)
        for i in range(len(hidden)):
            assert np.array_equal(vec.gnt.ages(i)[k], agent.gnt.age[i].numpy())
        for W, layer in zip(vec.W, agent.net.layers, strict=True):
            torch.testing.assert_close(W[k], layer.weight.detach(), rtol=1e-4, atol=1e-5)


def test_continual_backprop_replaces_units_in_both_paths():
    hp = {"replacement_rate": 0.01, "maturity_threshold": 20}
    vec = run_vectorized(
        REG, "continual_backprop", tier="smoke", seeds=SEEDS, progress=False, agent_kwargs=hp
    )
    for r in vec:
        single = run(
            REG, "continual_backprop", tier="smoke", seed=r.seed, progress=False, agent_kwargs=hp
        )
        np.testing.assert_allclose(r.per_task, single.per_task, rtol=1e-3)


def test_vectorized_agent_replaces_and_resets_like_the_single_one():
    envs = lop_bench.make_vec(REG, tier="smoke", seeds=SEEDS)
    agent = lop_bench.make_agent("continual_backprop", envs, seed=SEEDS, momentum=0.9)
    obs, infos = envs.reset()
    for _ in range(50):
        a = agent.act(obs, infos)
        nobs, r, te, tr, infos = envs.step(a)
        agent.learn(obs, a, r, nobs, te, tr, infos)
        obs = nobs
    gnt = agent.gnt
    W_out_before = agent.W[1][1].clone()
    b_out_before = agent.b[1][1].clone()
    mean = gnt.mean_act[0][1][2] / gnt.bias_correction[0][1][2]
    other_seed = [w.clone() for w in (agent.W[0][0], agent.W[0][2])]
    gnt.replace(0, 1, [2])
    assert agent.b[0][1][2] == 0 and (agent.W[1][1][:, 2] == 0).all()
    assert agent.momentum_buffers[0][1][2].abs().sum() == 0
    assert agent.momentum_buffers[2][1][:, 2].abs().sum() == 0
    assert agent.b[1][1] == pytest.approx(b_out_before + W_out_before[:, 2] * mean)
    assert gnt.ages(0)[1][2] == 0 and gnt.utility[0][1][2] == 0
    assert all(a.equal(b) for a, b in zip(other_seed, (agent.W[0][0], agent.W[0][2])))


def test_unsupported_settings_are_named():
    envs = lop_bench.make_vec(REG, tier="smoke", seeds=SEEDS)
    with pytest.raises(VectorizationNotSupported, match="sgd"):
        lop_bench.make_agent("backprop", envs, seed=SEEDS, optimizer="adam")
    with pytest.raises(VectorizationNotSupported, match="vectorized"):
        run_vectorized(
            REG, "tests.helpers:make_mean_agent", tier="smoke", seeds=SEEDS, progress=False
        )


def test_a_seed_does_not_depend_on_the_other_seeds_in_the_batch():
    """Seed 0 alone, or batched with others in any order, gives the same file (bit for bit):
    so splitting seeds over processes (--jobs) never changes a result."""
    from lop_bench.results import deterministic_part

    alone = run_vectorized(REG, "continual_backprop", tier="smoke", seeds=[0], progress=False)[0]
    batch = run_vectorized(REG, "continual_backprop", tier="smoke", seeds=[3, 0, 1], progress=False)
    assert deterministic_part(batch[1].data) == deterministic_part(alone.data)
