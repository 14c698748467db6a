"""The vectorized agents' CUDA-graph replay of the step: its plumbing tested on the CPU
with a stand-in graph (replays equal eager steps bit for bit), the fallback when a capture
fails, and on a GPU (skipped without one) graph-replayed runs against eager ones."""

import warnings

import numpy as np
import pytest
import torch

import lop_bench
from baselines.agents.vectorized import _CudaGraphStep
from lop_bench.runner import run_vectorized

MNIST = "lop/PermutedMNIST-v0"
REG = "lop/SlowlyChangingRegression-v0"
REPLACING = {"replacement_rate": 1e-2, "maturity_threshold": 20}


def _copy_into(dst, src):
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    elif isinstance(dst, (list, tuple)):
        for d, s in zip(dst, src, strict=True):
            _copy_into(d, s)


class _ReplayOnCPU:
    """Stands in for :class:`baselines.agents.vectorized._CudaGraph` on the CPU: like a capture it
    runs nothing when made; each replay runs the function again and writes its outputs
    into the first replay's tensors, as a CUDA graph's replays rewrite its static outputs."""

    made = 0

    def __init__(self, fn, pool=None):
        self.fn, self.pool, self.outputs, self.replays = fn, pool, None, 0
        type(self).made += 1

    def replay(self):
        new = self.fn()
        if self.replays == 0:
            self.outputs = new
        else:
            _copy_into(self.outputs, new)
        self.replays += 1
        return self.outputs


def _pair(env_id, agent, seeds, hp):
    envs = lop_bench.make_vec(env_id, tier="smoke", seeds=seeds, device="cpu")
    eager = lop_bench.make_agent(agent, envs, seed=seeds, **hp)
    graphed = lop_bench.make_agent(agent, envs, seed=seeds, **hp)
    graphed.use_cuda_graphs = True
    graphed._graph_steps = _CudaGraphStep(graphed, graph=_ReplayOnCPU)
    return envs.unwrapped, eager, graphed


def _lockstep(venv, eager, graphed, steps):
    """Step both agents on the same stream (the eager agent's predictions drive it), each
    prediction equal; then their states equal bit for bit."""
    obs, infos = venv.reset()
    for _ in range(steps):
        a, b = eager.act(obs, infos), graphed.act(obs, infos)
        assert torch.equal(a, b)
        nobs, r, te, tr, infos = venv.step(a)
        eager.learn(obs, a, r, nobs, te, tr, infos)
        graphed.learn(obs, b, r, nobs, te, tr, infos)
        obs = nobs
    for x, y in zip(_tensors(eager.state_dict()), _tensors(graphed.state_dict()), strict=True):
        assert torch.equal(x, y)


def _tensors(state):
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in _tensors(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in _tensors(v)]
    return []


@pytest.mark.parametrize("env_id, agent, hp", [
    (MNIST, "backprop", {}),
    (MNIST, "l2", {}),
    (MNIST, "shrink_perturb", {}),
    (MNIST, "continual_backprop", REPLACING),
    (REG, "backprop", {"momentum": 0.9}),
    (REG, "continual_backprop", REPLACING),
])
def test_replayed_steps_equal_eager_steps_bit_for_bit(env_id, agent, hp):
    seeds = (0, 5)
    venv, eager, graphed = _pair(env_id, agent, seeds, hp)
    steps = 400
    _lockstep(venv, eager, graphed, steps)
    graphs = graphed._graph_steps
    assert graphs._forward.replays == steps - graphs.warmup
    assert graphs._step.replays == steps - graphs.warmup
    if agent == "continual_backprop":
        assert sum(int(n.sum()) for n in graphed.gnt.num_replaced) > 0


def test_a_prediction_survives_the_next_replay():
    venv, _, graphed = _pair(MNIST, "backprop", (0, 1), {})
    obs, infos = venv.reset()
    kept = []
    for _ in range(6):
        a = graphed.act(obs, infos)
        kept.append((a, a.clone()))
        nobs, r, te, tr, infos = venv.step(a)
        graphed.learn(obs, a, r, nobs, te, tr, infos)
        obs = nobs
    assert all(torch.equal(a, copy) for a, copy in kept)


def test_graphs_are_captured_anew_after_a_checkpoint_is_loaded():
    venv, eager, graphed = _pair(REG, "backprop", (0, 1), {"momentum": 0.9})
    obs, infos = venv.reset()

    def steps(k):
        nonlocal obs, infos
        for _ in range(k):
            a, b = eager.act(obs, infos), graphed.act(obs, infos)
            nobs, r, te, tr, infos = venv.step(a)
            eager.learn(obs, a, r, nobs, te, tr, infos)
            graphed.learn(obs, b, r, nobs, te, tr, infos)
            obs = nobs

    steps(10)
    old = graphed._graph_steps
    assert old._step.replays == 8
    for agent in (eager, graphed):
        agent.load_state_dict(eager.state_dict())  # new momentum buffers
    # A CUDA graph holds the addresses of the buffers it was captured with: capture anew.
    assert graphed._graph_steps is None
    graphed._graph_steps = _CudaGraphStep(graphed, graph=_ReplayOnCPU)
    steps(10)
    assert graphed._graph_steps is not old and graphed._graph_steps._step.replays == 8
    for x, y in zip(_tensors(eager.state_dict()), _tensors(graphed.state_dict()), strict=True):
        assert torch.equal(x, y)


def test_a_capture_that_fails_warns_once_and_leaves_the_step_eager():
    """On the CPU the real CUDA graph cannot be made: the agent says so and runs eagerly."""
    seeds = (0, 1)
    eager = run_vectorized(MNIST, "backprop", tier="smoke", seeds=seeds, progress=False,
                           diagnostics=False, env_kwargs={"num_tasks": 1})
    envs = lop_bench.make_vec(MNIST, tier="smoke", seeds=seeds, device="cpu", num_tasks=1)
    agent = lop_bench.make_agent("backprop", envs, seed=seeds)
    assert agent.use_cuda_graphs is False  # only on CUDA by default
    agent.use_cuda_graphs = True
    venv = envs.unwrapped
    obs, infos = venv.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while True:
            a = agent.act(obs, infos)
            nobs, r, te, tr, infos = venv.step(a)
            agent.learn(obs, a, r, nobs, te, tr, infos)
            obs = nobs
            if infos["stream_done"][0]:
                break
    assert len([w for w in caught if "CUDA graph capture" in str(w.message)]) == 1
    assert agent._graph_steps.failed
    np.testing.assert_array_equal(infos["task_metrics"]["accuracy"],
                                  [r.per_task[0] for r in eager])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("env_id, agent", [(MNIST, "backprop"), (MNIST, "continual_backprop"),
                                           (REG, "backprop"), (REG, "shrink_perturb")])
def test_on_a_gpu_graph_replayed_runs_equal_eager_runs(env_id, agent, monkeypatch):
    """Whole runs on the GPU, stream and agent there: graph-replayed against eager."""
    seeds = (0, 1, 2)
    kw = dict(tier="smoke", seeds=seeds, progress=False, device="cuda",
              env_kwargs={"device": "cuda"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed capture fails the test
        graphed = run_vectorized(env_id, agent, **kw)
    monkeypatch.setenv("LOP_BENCH_CUDA_GRAPHS", "0")
    eager = run_vectorized(env_id, agent, **kw)
    tol = 1 / 250 if env_id == MNIST else 1e-5  # one prediction of a task; float rounding
    for g, e in zip(graphed, eager, strict=True):
        np.testing.assert_allclose(g.per_task, e.per_task, rtol=tol, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("agent", ["backprop", "continual_backprop"])
def test_on_a_gpu_a_run_is_reproducible(agent):
    """The whole GPU path (device-resident stream, graphs, the row-sparse kernel, the
    one-pass utilities) twice: the same per-task scores, bit for bit. (A GPU run draws its
    weights from CUDA generators: it is another sample than the CPU run of its seed.)"""
    kw = dict(tier="smoke", seeds=(0, 1, 2), progress=False, device="cuda",
              env_kwargs={"device": "cuda"},
              agent_kwargs={"replacement_rate": 1e-2} if agent == "continual_backprop" else {})
    first, second = run_vectorized(MNIST, agent, **kw), run_vectorized(MNIST, agent, **kw)
    for a, b in zip(first, second, strict=True):
        assert a.per_task == b.per_task
        assert min(a.per_task) > 0.2  # it learns (chance: 0.1)


def test_a_step_capture_that_fails_with_the_measure_is_retried_without_it():
    """Generate-and-test's measure is part of the step's graph; a capture that fails with
    it warns, captures anew without it (measure then runs eagerly), and changes nothing."""

    class FailingOnce(_ReplayOnCPU):
        captures = 0

        def __init__(self, fn, pool=None):
            FailingOnce.captures += 1
            if FailingOnce.captures == 2:  # the first step capture (after the forward's)
                raise RuntimeError("operation not permitted when stream is capturing")
            super().__init__(fn, pool)

    seeds = (0, 5)
    envs = lop_bench.make_vec(MNIST, tier="smoke", seeds=seeds, device="cpu")
    eager = lop_bench.make_agent("continual_backprop", envs, seed=seeds, **REPLACING)
    graphed = lop_bench.make_agent("continual_backprop", envs, seed=seeds, **REPLACING)
    graphed.use_cuda_graphs = True
    graphed._graph_steps = _CudaGraphStep(graphed, graph=FailingOnce)
    assert graphed._measure_in_step
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _lockstep(envs.unwrapped, eager, graphed, 300)
    assert [str(w.message) for w in caught if "capture" in str(w.message)] == [
        "CUDA graph capture of the vectorized step with generate-and-test's measure failed "
        "(operation not permitted when stream is capturing); capturing it without."]
    graphs = graphed._graph_steps
    assert not graphs.failed and not graphed._measure_in_step
    assert graphs._step is not None and graphs._step.replays > 250
    assert sum(int(n.sum()) for n in graphed.gnt.num_replaced) > 0
