"""The conv networks train on CPU without a native crash, at every x86 instruction-set level.

torch's CPU convolutions are oneDNN's, which picks its kernels by the CPU's instruction set.
One of them corrupts the heap (issue 14: the channels-last backward's ``brgemm`` 1x1
kernels on AVX2 CPUs, at the tests' width 1/16, one thread): ``free(): invalid next size``
and an abort that killed pytest. So the forward and backward passes of the ResNet-18
agents (every variant, at the widths and batch shapes the tests and tiers use) and of the
Continual ImageNet ConvNet run here in a child process, once per instruction-set level:
a native abort fails one test, naming the signal and the child's last lines.

``ONEDNN_MAX_CPU_ISA`` caps the kernels oneDNN may pick and ``ATEN_CPU_CAPABILITY`` those
of torch's own vectorized code, so the child runs what a CPU of that level would run; an
AVX-512 machine checks the AVX2 and SSE4.1 paths too. (The cap cannot raise the level: on
an AVX2 machine the AVX-512 case runs the native kernels.)
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The child: ResNet-18 agents take two SGD steps (forward with features, backward,
# optimizer, generate-and-test or noise) and one eval prediction, on the agent's default
# CPU layout: every variant at the tests' shape, continual backprop (the network's passes
# plus unit replacement) at the others, since the kernels depend on the shapes only. Then
# the ConvNet of Continual ImageNet, forward and backward. One thread, as the tests and
# the workers of `lop-bench run` use.
_CHILD = """
import types

import numpy as np
import torch
from gymnasium import spaces

import importlib
from baselines.core.nets import ConvNet
from baselines.presets import INCREMENTAL_CIFAR

torch.set_num_threads(1)
SHAPES = [  # (width, image size, batch): where each one is used
    (1 / 16, 8, 6),   # tests/test_incremental_agents.py
    (1 / 8, 32, 4),   # the smoke tier (batch 4)
    (1 / 8, 32, 90),  # the cpu tier (batch 90)
    (1.0, 32, 2),     # the paper tier's width (batch 90 on a GPU; 2 keeps this fast)
]
VARIANTS = ["backprop", "shrink_perturb", "continual_backprop", "head_reset", "from_scratch"]
classes = 10
for width, size, batch in SHAPES:
    obs_space = spaces.Box(-np.inf, np.inf, (batch, 3, size, size), np.float32)
    act_space = spaces.MultiDiscrete([classes] * batch)
    spec = types.SimpleNamespace(id=INCREMENTAL_CIFAR,
                                 kwargs={"tier": "smoke", "epochs_per_block": 1})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 3, size, size)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    info = {"phase": "train", "task": 0, "epoch": 0, "active_classes": np.arange(classes)}
    for name in VARIANTS if width == SHAPES[0][0] else ["continual_backprop"]:
        make = importlib.import_module(f"baselines.{name}").make_agent
        agent = make(spec, obs_space, act_space, 0, "cpu", width=width, maturity_threshold=0)
        for _ in range(2):
            action = agent.act(x, info)
            agent.learn(x, action, 0.0, x, False, False, {**info, "target": y})
        agent.act(x, {**info, "phase": "test"})
        print("ok", name, width, size, batch, agent.memory_format, flush=True)
net = ConvNet(generator=torch.Generator().manual_seed(0))
net(torch.rand(90, 3, 32, 32) * 255).sum().backward()
print("ok ConvNet", flush=True)
"""

# (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY): the machine's own level, then capped ones.
_LEVELS = {
    "native": (None, None),
    "avx512": ("AVX512_CORE", "avx512"),
    "avx2": ("AVX2", "avx2"),
    "sse41": ("SSE41", "default"),
}
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def run_isolated(code: str, env: dict[str, str] | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python (the repository importable), one thread."""
    child_env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": "1", "PYTHONPATH":
                 os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env,
                          capture_output=True, text=True, timeout=timeout)


def check_survived(proc: subprocess.CompletedProcess, what: str) -> None:
    """Fail (one test, not the session) when the child died or failed, naming how."""
    if proc.returncode == 0:
        return
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        pytest.fail(
            f"{what}: the child process was killed by {sig}: a native crash (issue 14 was "
            f"oneDNN's channels-last convolution backward corrupting the heap on AVX2). "
            f"Run the child's code under gdb for the native stack. Its last lines:\n{tail}",
            pytrace=False,
        )
    pytest.fail(f"{what}: the child process exited with status {proc.returncode}:\n{tail}",
                pytrace=False)


@pytest.mark.parametrize("level", [
    pytest.param(name, marks=pytest.mark.skipif(
        name != "native" and not _X86, reason="instruction-set caps are x86 levels"))
    for name in _LEVELS
])
def test_conv_networks_train_on_cpu_without_a_native_crash(level):
    onednn, aten = _LEVELS[level]
    env = {k: v for k, v in (("ONEDNN_MAX_CPU_ISA", onednn), ("ATEN_CPU_CAPABILITY", aten)) if v}
    proc = run_isolated(_CHILD, env)
    check_survived(proc, f"ResNet-18 agents and ConvNet on CPU at level {level} ({env or 'uncapped'})")
    assert proc.stdout.count("ok ") == 5 + 3 + 1


def test_a_native_abort_fails_one_test_with_the_signal_and_the_last_lines():
    proc = run_isolated("import os, sys; print('before the crash', flush=True); os.abort()")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)killed by SIGABRT.*before the crash"):
        check_survived(proc, "a child that aborts")
    with pytest.raises(pytest.fail.Exception, match="exited with status 3"):
        check_survived(run_isolated("raise SystemExit(3)"), "a child that fails")
