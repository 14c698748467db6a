"""The phase check: an agent's state must not change inside a ``val`` or ``test`` phase.

The state compared is the agent's whole ``state_dict()`` when it has one, else its
parameters and buffers (DESIGN.md section 4): :func:`snapshot` copies it when a phase
begins, :func:`check_unchanged` compares it when the phase ends and raises
:class:`~lop_bench.errors.PhaseViolationError` naming the first change. The runner drives
them through :class:`PhaseGuard`, step by step.

The check guards against mistakes (a forgotten ``eval()``, a ``learn`` that ignores
``info["phase"]``), not against a determined cheat: an agent can keep what it sees outside
its ``state_dict()``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from lop_bench.errors import LopBenchError, PhaseViolationError

__all__ = ["EVAL_PHASES", "PhaseGuard", "snapshot", "check_unchanged"]

EVAL_PHASES = ("val", "test")
"""The phases in which an agent must not learn."""


class PhaseGuard:
    """The phase check: the agent's state must not change inside a ``val``/``test`` phase.

    A snapshot is taken after the ``learn`` call whose ``info`` announced the phase
    (:meth:`after_learn`) and compared after the phase's last ``act`` (:meth:`after_step`,
    before the ``learn`` call that announces what comes next)."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.taken: tuple[str, Any] | None = None
        self.phase: str | None = None

    @property
    def idle(self) -> bool:
        """Whether no eval phase is under way (a checkpoint may be taken)."""
        return self.taken is None

    def after_step(self, phase: str, done: bool, task: int) -> None:
        """Compare with the snapshot when the phase it was taken in has ended."""
        if self.taken is not None and (phase != self.phase or done):
            check_unchanged(self.agent, self.taken, self.phase, task)
            self.taken = None

    def after_learn(self, phase: str) -> None:
        """Take the snapshot when an eval phase begins."""
        if self.taken is None and phase in EVAL_PHASES:
            self.phase = phase
            self.taken = snapshot(self.agent)


def _agent_state(agent: Any) -> tuple[str, Any]:
    """``(what, state)``: the agent's whole ``state_dict()`` when it has one, else the
    tensors of its ``parameters()`` and ``buffers()`` (live objects, not copies)."""
    state_dict = getattr(agent, "state_dict", None)
    if callable(state_dict):
        return "state_dict()", state_dict()
    tensors = []
    for attr in ("parameters", "buffers"):
        fn = getattr(agent, attr, None)
        if callable(fn):
            tensors.extend(t for t in fn() if hasattr(t, "detach"))
    return "parameters() and buffers()", tensors


def _copy_state(obj: Any, where: str) -> Any:
    """A deep copy of a state (a ``state_dict()`` may alias the live tensors)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, Mapping):
        return {k: _copy_state(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_copy_state(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    try:
        return copy.deepcopy(obj)
    except Exception as exc:
        raise LopBenchError(
            f"the agent's {where} is a {type(obj).__name__}, which cannot be copied ({exc}): "
            "state_dict() must hold only tensors, numpy arrays, plain values and lists / "
            "dicts of them (DESIGN.md section 5)."
        ) from None


def _same_tensor(a: Any, b: Any) -> bool:
    import torch

    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if torch.equal(a, b):
        return True
    # A diverged network holds NaNs, which equal nothing: compare NaN positions too.
    if a.is_floating_point() or a.is_complex():
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        return torch.equal(nan_a, nan_b) and torch.equal(a[~nan_a], b[~nan_b])
    return False


def _first_change(before: Any, now: Any, where: str) -> str | None:
    """Where ``now`` first differs from the snapshot ``before`` (NaNs equal NaNs), or None."""
    import torch

    if isinstance(before, torch.Tensor):
        return None if isinstance(now, torch.Tensor) and _same_tensor(before, now) else where
    if isinstance(before, np.ndarray):
        same = (isinstance(now, np.ndarray) and before.shape == now.shape
                and before.dtype == now.dtype
                and np.array_equal(before, now, equal_nan=before.dtype.kind in "fc"))
        return None if same else where
    if isinstance(before, Mapping):
        if not isinstance(now, Mapping) or before.keys() != now.keys():
            return where
        for k, v in before.items():
            found = _first_change(v, now[k], f"{where}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(before, (list, tuple)):
        if not isinstance(now, (list, tuple)) or len(before) != len(now):
            return where
        for i, (v, w) in enumerate(zip(before, now)):
            found = _first_change(v, w, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(before, float) and isinstance(now, float) and math.isnan(before) \
            and math.isnan(now):
        return None
    try:
        return None if bool(before == now) else where
    except Exception:  # an object whose == does not give a truth value
        return where


def snapshot(agent: Any) -> tuple[str, Any]:
    """A copy of the state the phase check compares (:func:`_agent_state`)."""
    what, state = _agent_state(agent)
    return what, _copy_state(state, what)


def check_unchanged(agent: Any, snap: tuple[str, Any], phase: str, task: int) -> None:
    """Raise :class:`~lop_bench.errors.PhaseViolationError` naming the first change when the
    agent's state differs from the snapshot taken when the ``phase`` began."""
    what, before = snap
    now_what, now = _agent_state(agent)
    where = what if now_what != what else _first_change(before, now, what)
    if where is not None:
        raise PhaseViolationError(
            f"the agent changed its state during the {phase!r} phase of task {task} (first "
            f"change: {where}). Agents must not learn (or update batch-norm statistics, "
            "optimizer state or counters) on val/test batches: check info['phase'] and "
            "info.get('target') in learn(), and use eval mode."
        )
