"""The row-sparse backward-and-update kernel (baselines.core.rowsparse): on the CPU through
Triton's interpreter (in a subprocess: the interpreter is chosen when the kernel is
defined), on a GPU against the dense path (skipped without one)."""

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from baselines.core import rowsparse  # noqa: E402
from lop_bench.runner import run_vectorized  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MNIST = "lop/PermutedMNIST-v0"

CHECKS = """
import torch
from baselines.core.rowsparse import available, prop_update, dense_reference

assert available(torch.device("cpu"))
g = torch.Generator().manual_seed(0)
for n, rows, cols, prop in [(3, 70, 130, True), (2, 5, 2000, True), (2, 100, 784, False),
                            (1, 64, 128, True)]:
    W = torch.randn(n, rows, cols, generator=g)
    fire = torch.rand(n, 1, rows, generator=g) < 0.5
    delta = torch.where(fire, torch.randn(n, 1, rows, generator=g), torch.zeros(()))
    h = torch.relu(torch.randn(n, 1, cols, generator=g))
    dense = W.clone()
    below = prop_update(W, delta, h, 0.01, prop=prop)
    expected = dense_reference(dense, delta, h, 0.01, prop=prop)
    silent = ~fire.reshape(n, rows)
    assert torch.equal(W[silent], dense[silent]), "a silent row changed"
    torch.testing.assert_close(W, dense, rtol=1e-6, atol=1e-6)
    if prop:
        assert below.shape == (n, 1, cols)
        torch.testing.assert_close(below, expected, rtol=1e-5, atol=1e-5)
    else:
        assert below is None
# Input-major weights (W = Wp.transpose(1, 2)): the forward pass and the update skip the
# zero inputs; the error below is delta @ W where the input is nonzero, 0 where it is zero.
from baselines.core.rowsparse import prop_update_input_major, sparse_input_linear
for n, out, inputs, prop in [(3, 70, 130, True), (2, 10, 200, True), (2, 100, 78, False)]:
    Wp = torch.randn(n, inputs, out, generator=g)
    W = Wp.transpose(1, 2)
    h = torch.relu(torch.randn(n, 1, inputs, generator=g))
    b = torch.randn(n, 1, out, generator=g)
    torch.testing.assert_close(sparse_input_linear(W, h, b), torch.baddbmm(b, h, Wp),
                               rtol=1e-5, atol=1e-5)
    delta = torch.randn(n, 1, out, generator=g)
    dense = W.contiguous()
    below = prop_update_input_major(W, delta, h, 0.01, prop=prop)
    expected = dense_reference(dense, delta, h, 0.01, prop=prop)
    silent = (h == 0).reshape(n, inputs)
    assert torch.equal(Wp[silent], dense.transpose(1, 2)[silent]), "a silent input's row changed"
    torch.testing.assert_close(W, dense, rtol=1e-6, atol=1e-6)
    if prop:
        torch.testing.assert_close(below, torch.where(h > 0, expected, 0.0), rtol=1e-5, atol=1e-5)
try:
    sparse_input_linear(torch.zeros(2, 30, 40), torch.ones(2, 1, 40), torch.zeros(2, 1, 30))
except ValueError as exc:
    assert "input-major" in str(exc)
else:
    raise AssertionError("an output-major W was accepted")
# No error anywhere: nothing moves, the error below is zero.
W = torch.randn(2, 30, 40, generator=g)
before = W.clone()
below = prop_update(W, torch.zeros(2, 1, 30), torch.ones(2, 1, 40), 0.5)
assert torch.equal(W, before) and torch.equal(below, torch.zeros(2, 1, 40))
try:
    prop_update(torch.zeros(2, 40, 30).transpose(1, 2), torch.ones(2, 1, 30), torch.ones(2, 1, 40), 0.1)
except ValueError as exc:
    assert "contiguous rows" in str(exc)
else:
    raise AssertionError("a transposed W was accepted")
print("ok")
"""

RUN = """
import numpy as np
from baselines.agents import vectorized
from lop_bench.runner import run_vectorized

calls = {}
for name in ("prop_update", "prop_update_input_major", "sparse_input_linear"):
    def counted(*a, _real=getattr(vectorized, name), _name=name, **k):
        calls[_name] = calls.get(_name, 0) + 1
        return _real(*a, **k)
    setattr(vectorized, name, counted)
kw = dict(tier="smoke", seeds=[0, 1], progress=False, diagnostics=False,
          env_kwargs={"device": "cpu", "num_tasks": 1, "examples_per_task": 25})
import os
from baselines.core import rowsparse
# The smoke net (784-100x3-10) is narrower than the input-major kernels pay for: the
# row-sparse update alone ...
run_vectorized("lop/PermutedMNIST-v0", "backprop", **{**kw, "env_kwargs": {
    **kw["env_kwargs"], "examples_per_task": 3}})
assert set(calls) == {"prop_update"}, calls
# ... which the rest of this check lowers, so that the smoke net takes them.
rowsparse.INPUT_MAJOR_MIN_WEIGHTS = 0
for agent, used in (("backprop", {"prop_update_input_major", "sparse_input_linear"}),
                    ("shrink_perturb", set())):  # decay and noise: the dense step
    calls.clear()
    os.environ.pop("LOP_BENCH_TRITON", None)
    sparse = run_vectorized("lop/PermutedMNIST-v0", agent, **kw)
    assert set(calls) == used, (agent, calls)
    os.environ["LOP_BENCH_TRITON"] = "0"
    calls.clear()
    dense = run_vectorized("lop/PermutedMNIST-v0", agent, **kw)
    assert not calls, "LOP_BENCH_TRITON=0 still used a kernel"
    a = np.array([r.per_task for r in sparse])
    b = np.array([r.per_task for r in dense])
    assert np.abs(a - b).max() <= 1 / 25, (agent, a, b)
# The row-sparse kernel alone: a net whose activation is not ReLU keeps the output-major
# layout and skips the rows of zero error.
calls.clear()
os.environ.pop("LOP_BENCH_TRITON", None)
run_vectorized("lop/PermutedMNIST-v0", "backprop", agent_kwargs={"activation": "tanh"}, **kw)
assert set(calls) == {"prop_update"}, calls
print("ok")
"""


def _interpreted(script: str) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("LOP_BENCH_TRITON", None)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_the_kernel_is_the_dense_update_and_skips_silent_rows():
    _interpreted(CHECKS)


def test_the_vectorized_agent_uses_it_unless_turned_off():
    _interpreted(RUN)


def test_it_is_off_without_a_gpu_or_when_turned_off(monkeypatch):
    from lop_bench.errors import InvalidConfigError

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not rowsparse.available(torch.device("cpu"))
    monkeypatch.setenv("LOP_BENCH_TRITON", "0")
    assert not rowsparse.available(torch.device("cuda"))
    monkeypatch.setenv("LOP_BENCH_TRITON", "off")  # not a value: said, not read as "on"
    with pytest.raises(InvalidConfigError, match=r"\$LOP_BENCH_TRITON must be one of 1, rows, 0"):
        rowsparse.available(torch.device("cuda"))


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_gpu
def test_on_a_gpu_the_kernel_is_the_dense_update_at_paper_width():
    g = torch.Generator(device="cuda").manual_seed(0)
    n, rows, cols = 30, 2000, 2000
    W = torch.randn(n, rows, cols, device="cuda", generator=g)
    fire = torch.rand(n, 1, rows, device="cuda", generator=g) < 0.5
    delta = torch.where(fire, torch.randn(n, 1, rows, device="cuda", generator=g), 0.0)
    h = torch.relu(torch.randn(n, 1, cols, device="cuda", generator=g))
    dense = W.clone()
    below = rowsparse.prop_update(W, delta, h, 0.01)
    expected = rowsparse.dense_reference(dense, delta, h, 0.01)
    silent = ~fire.reshape(n, rows)
    assert torch.equal(W[silent], dense[silent])
    torch.testing.assert_close(W, dense, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(below, expected, rtol=1e-4, atol=5e-4)


@needs_gpu
@pytest.mark.parametrize("kernels", ["1", "rows"])
@pytest.mark.parametrize("agent", ["backprop", "continual_backprop"])
def test_on_a_gpu_runs_with_the_kernels_equal_dense_runs(agent, kernels, monkeypatch):
    """Whole GPU runs (graphs on) with the kernels (input-major: 1, the row-sparse update
    alone: rows) against cuBLAS alone (0): the same weights at the start, float rounding."""
    seeds = (0, 1, 2)
    kw = dict(tier="smoke", seeds=seeds, progress=False, device="cuda",
              env_kwargs={"device": "cuda"})
    monkeypatch.setenv("LOP_BENCH_TRITON", kernels)
    monkeypatch.setattr(rowsparse, "INPUT_MAJOR_MIN_WEIGHTS", 0)  # the smoke net too
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed graph capture fails
        sparse = run_vectorized(MNIST, agent, **kw)
    monkeypatch.setenv("LOP_BENCH_TRITON", "0")
    dense = run_vectorized(MNIST, agent, **kw)
    for a, b in zip(sparse, dense, strict=True):
        np.testing.assert_allclose(a.per_task, b.per_task, atol=5 / 250)


@needs_gpu
def test_on_a_gpu_the_input_major_kernels_are_the_dense_ones_at_paper_width():
    g = torch.Generator(device="cuda").manual_seed(1)
    n, out, inputs = 30, 2000, 2000
    Wp = torch.randn(n, inputs, out, device="cuda", generator=g)
    W = Wp.transpose(1, 2)
    h = torch.relu(torch.randn(n, 1, inputs, device="cuda", generator=g))
    b = torch.randn(n, 1, out, device="cuda", generator=g)
    torch.testing.assert_close(rowsparse.sparse_input_linear(W, h, b), torch.baddbmm(b, h, Wp),
                               rtol=1e-4, atol=5e-4)
    delta = torch.randn(n, 1, out, device="cuda", generator=g)
    dense = W.contiguous()
    below = rowsparse.prop_update_input_major(W, delta, h, 0.01)
    expected = rowsparse.dense_reference(dense, delta, h, 0.01)
    silent = (h == 0).reshape(n, inputs)
    assert torch.equal(Wp[silent], dense.transpose(1, 2)[silent])
    torch.testing.assert_close(W, dense, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(below, torch.where(h > 0, expected, 0.0), rtol=1e-4, atol=5e-4)
