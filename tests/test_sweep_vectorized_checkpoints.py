"""Vectorized runs checkpoint and resume, so that a sweep's many-seeds jobs survive a
preemption: the vector envs and the vectorized agents save and restore their whole state,
and a resumed ``run_vectorized`` writes the results of an uninterrupted one."""

import json

import numpy as np
import pytest

import lop_bench
import lop_bench.runner as runner
from lop_bench.checkpoint import load_checkpoint
from lop_bench.errors import IdentityMismatchError
from lop_bench.runner import run_vectorized, vector_checkpoint_path

REG = "lop/SlowlyChangingRegression-v0"
MNIST = "lop/PermutedMNIST-v0"


def _deterministic(path):
    data = json.loads(path.read_text())
    data.pop("run_info")
    return data


class _Stop(Exception):
    """Raised after the n-th checkpoint: a run killed just after writing it."""


def _interrupt_after(monkeypatch, n):
    real = runner._save_checkpoint
    saved = []

    def save(*args, **kwargs):
        real(*args, **kwargs)
        saved.append(args[0])
        if len(saved) == n:
            raise _Stop

    monkeypatch.setattr(runner, "_save_checkpoint", save)
    return saved


@pytest.mark.parametrize("agent, hps", [
    ("backprop", {"momentum": 0.9}),
    ("shrink_perturb", {}),
    ("continual_backprop", {"replacement_rate": 0.05, "maturity_threshold": 20}),
])
def test_a_resumed_vectorized_run_writes_the_uninterrupted_results(tmp_path, monkeypatch, agent,
                                                                   hps):
    seeds = [0, 3, 5]
    whole = run_vectorized(REG, agent, tier="smoke", seeds=seeds, agent_kwargs=hps,
                           progress=False, out=tmp_path / "whole")
    saved = _interrupt_after(monkeypatch, 2)
    with pytest.raises(_Stop):
        run_vectorized(REG, agent, tier="smoke", seeds=seeds, agent_kwargs=hps, progress=False,
                       out=tmp_path / "cut", checkpoint_every=2)
    monkeypatch.undo()
    (ckpt,) = (tmp_path / "cut").glob("*.ckpt.pt")
    assert ckpt == saved[-1] and ckpt.name.endswith("__seeds0_3_5.ckpt.pt")
    state = load_checkpoint(ckpt)
    assert state["run"]["seed"] == seeds and state["loop"]["steps"] == 800  # after task 4
    if agent == "continual_backprop":  # units were replaced before the checkpoint
        assert sum(int(n.sum()) for n in state["agent"]["gnt"]["num_replaced"]) > 0
    resumed = run_vectorized(REG, agent, tier="smoke", seeds=seeds, agent_kwargs=hps,
                             progress=False, out=tmp_path / "cut", resume=True)
    assert not list((tmp_path / "cut").glob("*.ckpt.pt"))  # deleted once the results are written
    for a, b in zip(whole, resumed):
        assert b.data["run_info"]["resumed_at_step"] == 800
        name = next((tmp_path / "whole").glob(f"*__seed{a.seed}.json")).name
        assert _deterministic(tmp_path / "cut" / name) == _deterministic(tmp_path / "whole" / name)
    # Resumed again: every result is there, so they are returned without running.
    again = run_vectorized(REG, agent, tier="smoke", seeds=seeds, agent_kwargs=hps,
                           progress=False, out=tmp_path / "cut", resume=True)
    assert [r.data for r in again] == [r.data for r in resumed]


def test_a_checkpoint_of_another_group_of_seeds_is_refused(tmp_path, monkeypatch):
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(_Stop):
        run_vectorized(REG, "backprop", tier="smoke", seeds=[0, 1], progress=False,
                       out=tmp_path, checkpoint_every=1)
    monkeypatch.undo()
    (ckpt,) = tmp_path.glob("*.ckpt.pt")
    with pytest.raises(IdentityMismatchError, match=r"seed: \[0, 1\] there, \[0, 2\] here"):
        run_vectorized(REG, "backprop", tier="smoke", seeds=[0, 2], progress=False,
                       out=tmp_path, checkpoint=ckpt, resume=True)


def test_vector_checkpoint_names_say_the_group():
    first = "/r/SlowlyChangingRegression-v0__cpu__backprop__1f0c2a9b__seed0.json"
    stem = "/r/SlowlyChangingRegression-v0__cpu__backprop__1f0c2a9b"
    assert str(vector_checkpoint_path(first, range(10))) == f"{stem}__seeds0-9.ckpt.pt"
    assert str(vector_checkpoint_path(first, [0, 2])) == f"{stem}__seeds0_2.ckpt.pt"
    many = str(vector_checkpoint_path(first, [0, 2, 4, 6, 8]))
    assert many.startswith(f"{stem}__seeds0+4_") and many.endswith(".ckpt.pt")
    assert many != str(vector_checkpoint_path(first, [0, 2, 4, 6, 9]))


@pytest.mark.parametrize("env_id, tier", [(REG, "smoke"), (MNIST, "smoke")])
def test_vector_envs_continue_bit_for_bit_from_their_state(env_id, tier):
    seeds = [4, 1, 7]
    rng = np.random.default_rng(0)
    a = lop_bench.make_vec(env_id, tier=tier, seeds=seeds).unwrapped
    obs, _ = a.reset()
    space = a.action_space

    def actions():
        if env_id == MNIST:
            return rng.integers(0, 10, space.shape)
        return rng.normal(size=space.shape).astype(np.float32)

    for _ in range(333):  # into task 1 (MNIST) / task 1 (regression), mid-task
        obs, *_ = a.step(actions())
    state = a.state_dict()
    b = lop_bench.make_vec(env_id, tier=tier, seeds=[9, 9, 9]).unwrapped
    b.reset()
    b.load_state_dict(state)
    assert b.seeds == tuple(seeds)
    for _ in range(400):  # across a task's end
        act = actions()
        out_a, out_b = a.step(act), b.step(act)
        for x, y in zip(out_a[:4], out_b[:4]):
            np.testing.assert_array_equal(x, y)
        assert out_a[4].keys() == out_b[4].keys()
        for key in out_a[4]:
            if key == "task_metrics":
                np.testing.assert_array_equal(*(o[4][key][a.METRIC] for o in (out_a, out_b)))
            else:
                np.testing.assert_array_equal(out_a[4][key], out_b[4][key])
        if out_a[4]["stream_done"][0]:
            break


def test_a_sweep_checkpoints_its_vectorized_jobs(tmp_path):
    from lop_bench.sweeps import sweep

    result = sweep({"streams": [REG], "tiers": ["cpu"], "seeds": "0-3",
                    "agents": {"backprop": {}, "continual_backprop": {}}},
                   out=tmp_path, jobs=2, dry_run=True)
    jobs = result.plan.jobs
    assert [j["vectorized"] for j in jobs] == [True, True]
    assert [j["checkpoint_every"] for j in jobs] == [3, 3]  # 150 tasks: about 50 checkpoints
    assert all(j["resume"] for j in jobs)
