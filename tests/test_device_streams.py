"""The device-resident mode of the batch-1 streams (``device=``), run on the CPU: the same
stream, rewards and scores as the numpy mode, bit for bit; predictions checked per step
for what needs no device read, their values at the task's end; checkpoints."""

import numpy as np
import pytest
import torch

import lop_bench
from lop_bench.errors import InvalidActionError, InvalidConfigError
from lop_bench.results import deterministic_part
from lop_bench.runner import run, run_vectorized

MNIST = "lop/PermutedMNIST-v0"
REG = "lop/SlowlyChangingRegression-v0"
STREAMS = [(MNIST, {}), (MNIST, {"batch_size": 5}), (REG, {})]


def _actions(env_id, shape, rng):
    if env_id == MNIST:
        return rng.integers(0, 10, shape)
    return rng.normal(size=shape).astype(np.float32)


def _same(host, dev):
    """A numpy-mode value and its device-mode tensor hold the same numbers (and dtype)."""
    assert isinstance(dev, torch.Tensor) and dev.device.type == "cpu"
    value = dev.numpy()
    assert value.dtype == np.asarray(host).dtype
    np.testing.assert_array_equal(value, host)


def _compare(host_env, dev_env, num_envs, env_id, seed):
    """Step both envs with the same predictions to the end; compare everything returned."""
    oh, ih = host_env.reset(seed=seed)
    od, idev = dev_env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    shape = host_env.action_space.shape
    scores = 0
    while True:
        _same(oh, od)
        action = _actions(env_id, shape, rng)
        oh, rh, _, _, ih = host_env.step(action)
        od, rd, _, _, idev = dev_env.step(torch.as_tensor(action))
        _same(np.asarray(rh, dtype=np.float64), rd)
        _same(ih["target"], idev["target"])
        assert ih.keys() == idev.keys()
        for key in ("task", "task_end", "stream_done"):
            assert np.array_equal(ih[key], idev[key])
        if np.all(ih["task_end"]):
            metric = host_env.unwrapped.METRIC
            assert np.array_equal(ih["task_metrics"][metric], idev["task_metrics"][metric])
            scores += 1
            if not np.all(ih["stream_done"]):
                _same(host_env.unwrapped.probe(), dev_env.unwrapped.probe())
        if np.all(ih["stream_done"]):
            break
    assert scores == host_env.unwrapped.num_tasks


@pytest.mark.parametrize("env_id, kw", STREAMS)
def test_the_single_env_on_a_device_is_the_numpy_env(env_id, kw):
    host = lop_bench.make(env_id, tier="smoke", **kw).unwrapped
    dev = lop_bench.make(env_id, tier="smoke", device="cpu", **kw).unwrapped
    assert dev.device == torch.device("cpu") and host.device is None
    assert dev.protocol_hash == host.protocol_hash and dev.custom == host.custom
    _compare(host, dev, 1, env_id, seed=3)


@pytest.mark.parametrize("env_id, kw", STREAMS)
def test_the_vector_env_on_a_device_is_the_numpy_vector_env(env_id, kw):
    seeds = [5, 2, 8]
    host = lop_bench.make_vec(env_id, tier="smoke", seeds=seeds, **kw).unwrapped
    dev = lop_bench.make_vec(env_id, tier="smoke", seeds=seeds, device="cpu", **kw).unwrapped
    _compare(host, dev, 3, env_id, seed=seeds)


@pytest.mark.parametrize("env_id", [MNIST, REG])
@pytest.mark.parametrize("agent", ["backprop", "continual_backprop"])
def test_runs_on_a_device_write_the_numpy_runs_results(env_id, agent):
    """Single-seed and vectorized runs, with the agents' own predictions (tensors)."""
    dev = {"device": "cpu"}
    a = run(env_id, agent, tier="smoke", seed=1, progress=False)
    b = run(env_id, agent, tier="smoke", seed=1, progress=False, env_kwargs=dev)
    assert deterministic_part(a.data) == deterministic_part(b.data)
    va = run_vectorized(env_id, agent, tier="smoke", seeds=[1, 4], progress=False)
    vb = run_vectorized(env_id, agent, tier="smoke", seeds=[1, 4], progress=False, env_kwargs=dev)
    assert [deterministic_part(r.data) for r in va] == [deterministic_part(r.data) for r in vb]


def test_the_vectorized_agent_keeps_tensor_predictions_as_tensors():
    envs = lop_bench.make_vec(MNIST, tier="smoke", seeds=[0, 1], device="cpu")
    agent = lop_bench.make_agent("backprop", envs, seed=(0, 1))
    obs, infos = envs.unwrapped.reset()
    labels = agent.act(obs, infos)
    assert isinstance(labels, torch.Tensor) and labels.shape == (2, 1)
    assert labels.dtype == torch.int64
    numpy_labels = agent.act(obs.numpy(), infos)
    assert isinstance(numpy_labels, np.ndarray) and np.array_equal(numpy_labels, labels.numpy())


def _run_task(env, action):
    for _ in range(env.unwrapped._T):
        *_, info = env.step(action)
    return info


def test_predictions_are_checked_per_step_and_their_values_at_the_task_end():
    env = lop_bench.make(MNIST, tier="smoke", device="cpu").unwrapped
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="integer tensor"):
        env.step(torch.zeros(1))
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(torch.zeros(2, dtype=torch.int64))
    with pytest.raises(InvalidActionError, match="torch tensor"):
        env.step([3])
    env.reset(seed=0)
    env.step(torch.tensor([12]))  # out of range: recorded, reported with its task
    with pytest.raises(InvalidActionError, match=r"task 0 was given values from 0 to 12"):
        _run_task(env, torch.zeros(1, dtype=torch.int64))
    reg = lop_bench.make(REG, tier="smoke", device="cpu").unwrapped
    reg.reset(seed=0)
    with pytest.raises(InvalidActionError, match="floating-point"):
        reg.step(torch.zeros((1, 1), dtype=torch.int64))
    reg.step(torch.full((1, 1), float("nan")))
    with pytest.raises(InvalidActionError, match=r"task 0 .*non-finite"):
        _run_task(reg, torch.zeros((1, 1)))
    with pytest.raises(InvalidConfigError, match="device"):
        lop_bench.make(REG, tier="smoke", device="no-such-device")


@pytest.mark.parametrize("env_id", [MNIST, REG])
def test_a_device_state_taken_mid_task_continues_bit_for_bit(env_id):
    seeds = [3, 6]
    a = lop_bench.make_vec(env_id, tier="smoke", seeds=seeds, device="cpu").unwrapped
    a.reset()
    rng = np.random.default_rng(0)
    shape = a.action_space.shape
    for _ in range(130):  # mid-task (smoke tasks: 250 and 200 steps)
        a.step(torch.as_tensor(_actions(env_id, shape, rng)))
    state = a.state_dict()
    b = lop_bench.make_vec(env_id, tier="smoke", seeds=[0, 0], device="cpu").unwrapped
    b.reset()
    b.load_state_dict(state)
    host = lop_bench.make_vec(env_id, tier="smoke", seeds=[0, 0]).unwrapped
    host.reset()
    host.load_state_dict(state)  # the numpy mode reads the device mode's state too
    for _ in range(150):  # across the task's end
        action = _actions(env_id, shape, rng)
        out_a, out_b = a.step(torch.as_tensor(action)), b.step(torch.as_tensor(action))
        out_h = host.step(action)
        for x, y, z in zip(out_a[:2], out_b[:2], out_h[:2]):
            assert torch.equal(x, y) and np.array_equal(x.numpy(), z)
        if out_a[4]["task_end"][0]:
            metric = a.METRIC
            assert np.array_equal(out_a[4]["task_metrics"][metric], out_b[4]["task_metrics"][metric])
            assert np.array_equal(out_a[4]["task_metrics"][metric], out_h[4]["task_metrics"][metric])
    # A numpy-mode state continues in the device mode between tasks, not mid-task.
    mid = lop_bench.make_vec(env_id, tier="smoke", seeds=seeds).unwrapped
    mid.reset()
    mid.step(_actions(env_id, shape, rng))
    with pytest.raises(InvalidConfigError, match="middle of a task"):
        b.load_state_dict(mid.state_dict())
