"""Concatenated ReLU (CReLU): ``[relu(x), relu(-x)]``, concatenated along the feature axis.

Shang et al. (2016) introduced it; Abbas et al. (CoLLAs 2023) found that it keeps deep RL
agents plastic across a sequence of Atari games. A layer of ``k`` pre-activation units
gives ``2 k`` features: the first ``k`` are ``relu(z)``, the next ``k`` are ``relu(-z)``
(unit ``j``'s two halves are features ``j`` and ``k + j``). A network built with it has a
next layer with twice the fan-in: the networks of :mod:`baselines.core.nets` count fan-ins
from the features, so their init bounds use ``2 k``.

For any ``z != 0`` exactly one half of a pair is active, so a CReLU layer cannot have a
unit that is dead on every input unless its pre-activation is exactly zero; the
diagnostics, which read the features after the CReLU, count ``2 k`` features per layer.

:func:`crelu_backward` is the derivative for hand-written backward passes (the vectorized
many-seeds learner): ``dL/dz = dL/dh[:k] * (z > 0) - dL/dh[k:] * (z < 0)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["crelu", "crelu_backward", "CReLU"]


def crelu(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``torch.cat([relu(x), relu(-x)], dim)``: twice ``x``'s size along ``dim``."""
    return torch.cat((torch.relu(x), torch.relu(-x)), dim)


def crelu_backward(grad_out: torch.Tensor, z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """dL/dz from dL/dh (``grad_out``, twice ``z``'s size along ``dim``) and the
    pre-activation ``z``; as autograd's derivative of :func:`crelu` (0 at ``z = 0``)."""
    k = z.shape[dim]
    if grad_out.shape[dim] != 2 * k:
        raise ValueError(
            f"crelu_backward: grad_out has {grad_out.shape[dim]} features along dim {dim}, "
            f"expected 2 x {k} (twice the pre-activation's)."
        )
    pos, neg = grad_out.split(k, dim)
    return pos * (z > 0) - neg * (z < 0)


class CReLU(nn.Module):
    """Concatenated ReLU as a module: ``(N, k, ...) -> (N, 2k, ...)`` along ``dim`` (default
    1: the feature axis of ``(N, features)`` and the channel axis of ``(N, C, H, W)``).

    >>> CReLU()(torch.tensor([[1.0, -2.0, 0.5]]))
    tensor([[1.0000, 0.0000, 0.5000, 0.0000, 2.0000, 0.0000]])
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[relu(x), relu(-x)]`` along ``self.dim``."""
        return crelu(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
