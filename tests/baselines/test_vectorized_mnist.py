"""Vectorized agents on online permuted MNIST (the classification head): seed i of a
batched run is the single-seed run of seed i, task by task; a resumed run writes the
uninterrupted one's results; ``reproduce`` and ``run --vectorized`` plan them."""

import json

import numpy as np
import pytest
import torch

import lop_bench
import lop_bench.runner as runner
from lop_bench.runner import run, run_vectorized

MNIST = "lop/PermutedMNIST-v0"
SEEDS = (0, 1, 2)
AGENTS = ("linear", "backprop", "l2", "shrink_perturb", "continual_backprop")
# Hidden layers of tanh, not the presets' ReLU: with ReLU a pre-activation within float32
# rounding of 0 (the two paths add 784 products in another order) is positive in one path
# and not in the other, about once per 10^5 unit-steps, and from then on the two differ by
# that unit's SGD step, not by rounding (test_relu_presets_...). A smooth activation keeps
# every difference at rounding level, so the comparison is tight.
SMOOTH = {"activation": "tanh"}
# Units are replaced within the smoke tier's 1,000 steps.
REPLACING = {"replacement_rate": 1e-3, "maturity_threshold": 20}
ONE_PREDICTION = 1 / 250  # of a smoke-tier task


def _hparams(agent: str) -> dict:
    hp = {} if agent == "linear" else dict(SMOOTH)
    if agent == "continual_backprop":
        hp.update(REPLACING)
    return hp


@pytest.mark.parametrize("agent", AGENTS)
def test_seed_i_is_the_single_seed_run_of_seed_i_task_by_task(agent):
    hp = _hparams(agent)
    vec = run_vectorized(MNIST, agent, tier="smoke", seeds=SEEDS, progress=False,
                         agent_kwargs=hp, diagnostics=agent == "continual_backprop")
    for r in vec:
        single = run(MNIST, agent, tier="smoke", seed=r.seed, progress=False, agent_kwargs=hp,
                     diagnostics=agent == "continual_backprop")
        assert len(r.per_task) == 4
        # Every task's online accuracy, up to one prediction (an argmax of two logits
        # within rounding of each other; none here).
        np.testing.assert_allclose(r.per_task, single.per_task, rtol=0, atol=ONE_PREDICTION)
        assert r.data["agent"]["vectorized"] is True
        assert r.data["agent"]["hparams"] == single.data["agent"]["hparams"]
        assert r.data["protocol_hash"] == single.data["protocol_hash"]
        if single.diagnostics is not None:
            dv, ds = r.diagnostics["measures"], single.diagnostics["measures"]
            np.testing.assert_allclose(dv["dormant_fraction"], ds["dormant_fraction"])
            np.testing.assert_allclose(dv["weight_magnitude"], ds["weight_magnitude"], rtol=1e-5)


def test_batches_of_several_images_average_the_loss_over_the_batch():
    """batch_size 5: cross-entropy is the mean over the batch, as the single agent's."""
    env = {"batch_size": 5}
    vec = run_vectorized(MNIST, "backprop", tier="smoke", seeds=SEEDS, progress=False,
                         env_kwargs=env, agent_kwargs=SMOOTH, diagnostics=False)
    for r in vec:
        single = run(MNIST, "backprop", tier="smoke", seed=r.seed, progress=False,
                     env_kwargs=env, agent_kwargs=SMOOTH, diagnostics=False)
        np.testing.assert_allclose(r.per_task, single.per_task, rtol=0, atol=ONE_PREDICTION)


def test_relu_presets_agree_within_a_few_predictions_per_task():
    """The presets (ReLU): equal until a pre-activation within rounding of 0 takes the other
    branch in one path (see SMOOTH); then within a few predictions of a task."""
    vec = run_vectorized(MNIST, "backprop", tier="smoke", seeds=SEEDS, progress=False,
                         diagnostics=False)
    for r in vec:
        single = run(MNIST, "backprop", tier="smoke", seed=r.seed, progress=False,
                     diagnostics=False)
        np.testing.assert_allclose(r.per_task, single.per_task, rtol=0, atol=15 * ONE_PREDICTION)
        assert r.per_task[-1] > 0.5  # learned (chance: 0.1)


def test_continual_backprop_replaces_the_same_units_as_the_single_agents():
    hp = {**SMOOTH, "replacement_rate": 0.01, "maturity_threshold": 20}
    envs = lop_bench.make_vec(MNIST, tier="smoke", seeds=SEEDS)
    vec = lop_bench.make_agent("continual_backprop", envs, seed=SEEDS, **hp)
    singles = []
    for s in SEEDS:
        env = lop_bench.make(MNIST, tier="smoke")
        singles.append((env, lop_bench.make_agent("continual_backprop", env, seed=s, **hp)))
    obs, infos = envs.reset()
    single_obs = [env.reset(seed=s)[0] for (env, _), s in zip(singles, SEEDS, strict=True)]
    info = {"task": 0, "phase": "train"}
    for _ in range(300):
        a = vec.act(obs, infos)
        assert a.shape == (3, 1) and a.dtype == np.int64
        nobs, r, te, tr, infos = envs.step(a)
        vec.learn(obs, a, r, nobs, te, tr, infos)
        obs = nobs
        for k, (env, agent) in enumerate(singles):
            act = agent.act(single_obs[k], info)
            assert act[0] == a[k, 0]
            o, rew, t1, t2, info = env.step(act)
            agent.learn(single_obs[k], act, rew, o, t1, t2, info)
            single_obs[k] = o
    for k, (_, agent) in enumerate(singles):
        assert [int(n[k]) for n in vec.gnt.num_replaced] == agent.gnt.num_replaced
        assert all(n > 0 for n in agent.gnt.num_replaced)
        for i in range(3):
            assert np.array_equal(vec.gnt.ages(i)[k], agent.gnt.age[i].numpy())
        for W, b, layer in zip(vec.W, vec.b, agent.net.layers, strict=True):
            torch.testing.assert_close(W[k], layer.weight.detach(), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(b[k], layer.bias.detach(), rtol=1e-4, atol=1e-5)


def test_the_fused_step_is_sgd_with_coupled_weight_decay():
    """One step by hand: W <- W - lr (grad + wd W) on every layer (all fused at width 100)."""
    envs = lop_bench.make_vec(MNIST, tier="smoke", seeds=(4,))
    agent = lop_bench.make_agent("l2", envs, seed=(4,), weight_decay=0.1)
    assert all(agent._fused)
    obs, infos = envs.reset()
    before = [p.clone().requires_grad_() for p in agent.parameters()]
    a = agent.act(obs, infos)
    nobs, r, te, tr, infos = envs.step(a)
    agent.learn(obs, a, r, nobs, te, tr, infos)
    h = torch.as_tensor(obs)[0]
    for W, b in zip(before[:-2:2], before[1:-2:2], strict=True):
        h = torch.relu(h @ W[0].T + b[0])
    loss = torch.nn.functional.cross_entropy(h @ before[-2][0].T + before[-1][0],
                                             torch.as_tensor(infos["target"][0]))
    grads = torch.autograd.grad(loss, before)
    for p, p0, g in zip(agent.parameters(), before, grads, strict=True):
        expected = p0.detach() - 0.003 * (g + 0.1 * p0.detach())
        torch.testing.assert_close(p, expected, rtol=1e-5, atol=1e-7)


def _deterministic(path):
    data = json.loads(path.read_text())
    data.pop("run_info")
    return data


class _Stop(Exception):
    """Raised after a checkpoint is written: the run killed there."""


@pytest.mark.parametrize("agent, hps", [
    ("shrink_perturb", {}),
    ("continual_backprop", REPLACING),
])
def test_a_resumed_run_writes_the_uninterrupted_results(tmp_path, monkeypatch, agent, hps):
    seeds = [0, 3]
    whole = run_vectorized(MNIST, agent, tier="smoke", seeds=seeds, agent_kwargs=hps,
                           progress=False, out=tmp_path / "whole")
    real = runner._save_checkpoint

    def save_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise _Stop

    monkeypatch.setattr(runner, "_save_checkpoint", save_then_stop)
    with pytest.raises(_Stop):
        run_vectorized(MNIST, agent, tier="smoke", seeds=seeds, agent_kwargs=hps,
                       progress=False, out=tmp_path / "cut", checkpoint_every=2)
    monkeypatch.undo()
    resumed = run_vectorized(MNIST, agent, tier="smoke", seeds=seeds, agent_kwargs=hps,
                             progress=False, out=tmp_path / "cut", resume=True)
    for a in whole:
        name = next((tmp_path / "whole").glob(f"*__seed{a.seed}.json")).name
        assert _deterministic(tmp_path / "cut" / name) == _deterministic(tmp_path / "whole" / name)
    assert all(r.data["run_info"]["resumed_at_step"] == 500 for r in resumed)


def test_reproduce_and_run_vectorized_plan_many_seeds_jobs(tmp_path):
    from lop_bench.sweeps import sweep

    result = sweep({"streams": [MNIST], "tiers": ["smoke"], "seeds": "0-1",
                    "agents": {a: {} for a in AGENTS}}, out=tmp_path, jobs=2, dry_run=True)
    jobs = result.plan.jobs
    assert [j["agent"] for j in jobs] == list(AGENTS)
    assert all(j["vectorized"] and j["seeds"] == [0, 1] for j in jobs)
