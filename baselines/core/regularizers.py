"""Regularizers added to the loss gradient: L2 Init, an L2 penalty toward the initial
parameters (Kumar, Marklund & Van Roy, 2023, "Maintaining plasticity in continual learning
via regenerative regularization").

:class:`L2Init` keeps a copy ``theta0`` of the parameters as they were built and, after the
loss's ``backward()`` and before the optimizer's step, adds ``strength * (theta - theta0)``
to every parameter's gradient: the gradient of ``strength / 2 * ||theta - theta0||^2``.
This is *coupled*, like the optimizers' ``weight_decay`` in this codebase
(``torch.optim.SGD``'s and :class:`EntrywiseAdam`'s: ``grad + weight_decay * theta``, which
Adam then normalizes), so ``l2_init`` with ``theta0 = 0`` is ``l2`` with ``weight_decay =
strength`` up to float rounding. The paper writes the penalty ``lambda * ||theta -
theta0||^2`` (gradient ``2 lambda (theta - theta0)``): its ``lambda`` is ``strength / 2``.

Tensors may carry a leading seed dimension (a many-seeds network's ``(N, out, in)``): the
penalty is elementwise, so each seed is pulled toward its own initial parameters.
:meth:`L2Init.gradient` gives the term for agents that compute their gradients by hand.

A leaf: imports torch and ``lop_bench`` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from lop_bench.config import check_positive

__all__ = ["L2InitFields", "check_l2_init_fields", "L2Init"]


@dataclass(frozen=True)
class L2InitFields:
    """L2 Init's config field, for the configs of agents that use it."""

    l2_init_strength: float = 1e-3
    """``strength``: the gradient gets ``strength * (theta - theta0)`` (coupled, like
    ``weight_decay``); the paper's ``lambda`` is half of it (module docstring)."""


def check_l2_init_fields(cfg: Any) -> None:
    """Range check of ``cfg``'s :class:`L2InitFields`."""
    check_positive("l2_init_strength", cfg.l2_init_strength, allow_zero=True)


class L2Init:
    """L2 toward the initial parameters: ``grad += strength * (theta - theta0)``.

    ``params``: the parameters to regularize (every trained parameter, in the paper); their
    values now are ``theta0``. ``initial`` holds those copies (part of the agent's state, so
    a resumed run pulls toward the same point).
    """

    def __init__(self, params: Iterable[torch.Tensor], strength: float) -> None:
        check_positive("strength", strength, allow_zero=True)
        self.params = list(params)
        if not self.params:
            raise ValueError("L2Init needs at least one parameter.")
        self.strength = float(strength)
        self.initial = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def add_to_grad(self) -> None:
        """Add ``strength * (theta - theta0)`` to the ``.grad`` of every parameter that has
        one (call between ``backward()`` and the optimizer's ``step()``)."""
        if self.strength == 0.0:
            return
        for p, p0 in zip(self.params, self.initial, strict=True):
            if p.grad is not None:
                p.grad.add_(p.detach() - p0, alpha=self.strength)

    @torch.no_grad()
    def gradient(self) -> list[torch.Tensor]:
        """``strength * (theta - theta0)`` per parameter (new tensors)."""
        return [(p.detach() - p0).mul_(self.strength) for p, p0 in zip(self.params, self.initial, strict=True)]

    def penalty(self) -> torch.Tensor:
        """``strength / 2 * sum ||theta - theta0||^2`` (differentiable: its gradient is
        what :meth:`add_to_grad` adds)."""
        total = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.params, self.initial, strict=True))
        return 0.5 * self.strength * total

    def state_dict(self) -> dict[str, Any]:
        """``theta0`` (copies)."""
        return {"initial": [t.clone() for t in self.initial]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (same parameter shapes)."""
        initial = state["initial"]
        if len(initial) != len(self.initial) or any(
            tuple(a.shape) != tuple(torch.as_tensor(b).shape) for a, b in zip(self.initial, initial)
        ):
            raise ValueError("the saved initial parameters do not match this network's shapes.")
        for dst, src in zip(self.initial, initial, strict=True):
            dst.copy_(torch.as_tensor(src))
