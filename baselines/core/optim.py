"""Optimizers of the reference agents: SGD or an Adam with a step count per entry, built from
a config's optimizer fields, and the reset of single entries' optimizer state.

- :class:`OptimizerFields`: the fields ``lr``, ``momentum``, ``weight_decay``, ``optimizer``,
  ``betas``, ``eps`` of a config that trains with :func:`make_optimizer`, and their checks
  (:func:`check_optimizer_fields`, once for every config).
- :class:`EntrywiseAdam`: Adam whose step count has the parameter's shape, so a reset entry
  (a unit replaced by generate-and-test) restarts as if freshly created.
- :func:`reset_optimizer_entries` / :class:`OptimizerEntries`: zero the optimizer state of
  some entries of a parameter (SGD momentum, Adam moments and per-entry steps).
- :func:`noise_chunk_size`: how many steps of shrink-and-perturb noise are drawn at once
  (the same rule for one seed and for many, so both draw the same numbers).

A leaf of ``baselines``: imports torch, ``lop_bench`` and ``baselines.core.upgd`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from baselines.core.upgd import UPGDFields, make_upgd
from lop_bench.config import check_choice, check_positive, check_range
from lop_bench.errors import InvalidConfigError

__all__ = [
    "OPTIMIZERS",
    "OptimizerFields",
    "check_optimizer_fields",
    "EntrywiseAdam",
    "make_optimizer",
    "reset_optimizer_entries",
    "OptimizerEntries",
    "noise_chunk_size",
]

OPTIMIZERS = ("sgd", "adam")

_NOISE_CHUNK_ELEMENTS = 1 << 20


def check_optimizer_fields(cfg: Any) -> None:
    """Range checks of the optimizer fields (:class:`OptimizerFields`) of ``cfg``."""
    check_positive("lr", cfg.lr)
    check_range("momentum", cfg.momentum, 0.0, 1.0)
    if cfg.momentum >= 1.0:
        raise InvalidConfigError(f"momentum must be < 1, got {cfg.momentum!r}.")
    check_positive("weight_decay", cfg.weight_decay, allow_zero=True)
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    if len(cfg.betas) != 2:
        raise InvalidConfigError(f"betas must be two numbers, got {cfg.betas!r}.")
    for i, b in enumerate(cfg.betas):
        check_range(f"betas[{i}]", b, 0.0, 1.0)
        if b >= 1.0:
            raise InvalidConfigError(f"betas[{i}] must be < 1, got {b!r}.")
    check_positive("eps", cfg.eps)
    if cfg.optimizer == "adam" and cfg.momentum != 0.0:
        raise InvalidConfigError("momentum applies to optimizer='sgd' only; Adam uses betas.")


@dataclass(frozen=True)
class OptimizerFields:
    """The optimizer fields of a config (defaults: plain SGD, lr 0.01). A config that trains
    with :func:`make_optimizer` inherits them and calls :func:`check_optimizer_fields`."""

    lr: float = 0.01
    """Step size."""
    momentum: float = 0.0
    """SGD momentum (plain SGD in the paper's regression and MNIST runs, ``lop/algos/bp.py``)."""
    weight_decay: float = 0.0
    """Coupled L2 penalty of the optimizer (``torch.optim.SGD``'s ``weight_decay``: the
    gradient gets ``weight_decay * w`` added)."""
    optimizer: str = "sgd"
    """``"sgd"`` (``torch.optim.SGD``) or ``"adam"`` (:class:`EntrywiseAdam`, which equals
    ``torch.optim.Adam`` until an entry is reset)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's betas (torch's defaults; the paper's code default ``beta_1, beta_2``)."""
    eps: float = 1e-8
    """Adam's epsilon (torch's default)."""


class EntrywiseAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba) with coupled L2 weight decay and a step count per entry.

    ``torch.optim.Adam`` keeps one step count per tensor, so after continual backprop
    zeroes a replaced unit's moments, the bias correction of those entries uses the
    tensor's (large) step count and their first updates are too small. Here ``state["step"]``
    has the parameter's shape: zeroing an entry's ``step``, ``exp_avg`` and ``exp_avg_sq``
    restarts that entry as if freshly created. Until an entry is reset the update equals
    ``torch.optim.Adam(lr, betas, eps, weight_decay)`` (``amsgrad=False``) up to rounding.
    (The step counts are float32: exact up to 2**24 steps, after which the bias
    corrections are 1 to float precision anyway.)
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Adam update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = (
                group["lr"],
                group["betas"],
                group["eps"],
                group["weight_decay"],
            )
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                step, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                step.add_(1)
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bc1 = 1 - torch.pow(beta1, step)
                bc2 = 1 - torch.pow(beta2, step)
                denom = (v / bc2).sqrt_().add_(eps)
                p.addcdiv_(m / bc1, denom, value=-lr)
        return loss


def make_optimizer(cfg: Any, params: Any,
                   generator: torch.Generator | None = None) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or :class:`EntrywiseAdam` with the settings of ``cfg``'s
    :class:`OptimizerFields`; for a config with :class:`~baselines.core.upgd.UPGDFields`,
    :class:`~baselines.core.upgd.UPGD` (its adaptive variant for ``optimizer="adam"``), whose
    noise comes from ``generator``."""
    if isinstance(cfg, UPGDFields):
        if generator is None:
            raise InvalidConfigError("UPGD needs the agent's torch.Generator for its noise.")
        return make_upgd(cfg, params, generator, adaptive=cfg.optimizer == "adam")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return EntrywiseAdam(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
    )


def reset_optimizer_entries(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, index: torch.Tensor, dim: int
) -> None:
    """Zero the optimizer state of ``param``'s entries ``index`` along ``dim``.

    Every state tensor with the parameter's shape is reset: SGD's ``momentum_buffer``,
    Adam's ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``), and
    :class:`EntrywiseAdam`'s per-entry ``step``. A per-tensor step count
    (``torch.optim.Adam``) cannot be reset per entry and is left alone.
    """
    state = optimizer.state.get(param)
    if not state:
        return
    for value in state.values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.index_fill_(dim, index, 0)


class OptimizerEntries:
    """The state reset of generate-and-test (:class:`baselines.core.gnt.GenerateAndTest`'s
    ``reset_state``) for a network of one seed trained by a ``torch.optim`` optimizer:
    ``(param, seed, index, dim)`` zeroes ``param``'s entries (:func:`reset_optimizer_entries`;
    the seed is 0)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def __call__(self, param: torch.Tensor, seed: int, index: torch.Tensor, dim: int) -> None:
        reset_optimizer_entries(self.optimizer, param, index, dim)


def noise_chunk_size(num_params: int) -> int:
    """Steps of shrink-and-perturb noise drawn at once (same rule single and vectorized)."""
    return max(1, min(1024, _NOISE_CHUNK_ELEMENTS // max(1, num_params)))
