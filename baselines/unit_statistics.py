"""Generate-and-test's per-unit bookkeeping, shared by every continual-backprop network.

:class:`UnitStatistics` keeps, for each hidden unit (or conv channel) of a network, its age,
its running mean activation and its utility, counts how many units are due for replacement
(``rate x eligible units``, carried over or by the public code's coin flip) and picks the
lowest-utility mature ones; :func:`reset_optimizer_entries` clears a replaced unit's
optimizer state. A leaf: it imports nothing above it in ``baselines`` (the MLP, conv and
residual generate-and-test classes build on it).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from baselines.vectorized import coin_flip

__all__ = ["UnitStatistics", "reset_optimizer_entries"]


def reset_optimizer_entries(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, index: torch.Tensor, dim: int
) -> None:
    """Zero the optimizer state of ``param``'s entries ``index`` along ``dim``.

    Every state tensor with the parameter's shape is reset: SGD's ``momentum_buffer``,
    Adam's ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``), and
    :class:`~baselines.backprop.EntrywiseAdam`'s per-entry ``step``. A per-tensor step
    count (``torch.optim.Adam``) cannot be reset per entry and is left alone.
    """
    state = optimizer.state.get(param)
    if not state:
        return
    for value in state.values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.index_fill_(dim, index, 0)


class UnitStatistics:
    """Per-unit bookkeeping shared by the generate-and-test variants (this module's layers,
    :class:`baselines.resnet.ResidualGenerateAndTest`'s residual blocks).

    Per layer: ``utility``, ``mean_act``, ``age`` and ``bias_correction`` (``1 - eta **
    age``), tensors on the layer's device; ``accumulated`` (the fractional replacement
    count carried over) and ``num_replaced``. Subclasses set ``step_count``,
    ``maturity_threshold``, ``replacement_rate``, ``accumulate`` and ``generator`` (the
    coin flips of ``accumulate=False``), then call :meth:`_init_statistics`.
    """

    step_count: int
    maturity_threshold: int
    replacement_rate: float
    accumulate: bool
    generator: torch.Generator

    def _init_statistics(self, weights: list[torch.Tensor]) -> None:
        """Zero statistics for layers whose incoming weights are ``weights`` (units = rows)."""
        self.utility: list[torch.Tensor] = []
        self.mean_act: list[torch.Tensor] = []
        self.age: list[torch.Tensor] = []
        self.bias_correction: list[torch.Tensor] = []
        for w in weights:
            n = w.shape[0]
            self.utility.append(torch.zeros(n, device=w.device, dtype=w.dtype))
            self.mean_act.append(torch.zeros(n, device=w.device, dtype=w.dtype))
            self.age.append(torch.zeros(n, device=w.device, dtype=torch.long))
            self.bias_correction.append(torch.zeros(n, device=w.device, dtype=w.dtype))
        num = len(weights)
        self.accumulated = [0.0] * num
        self.num_replaced = [0] * num
        # Host-side count of eligible units: it changes only when units are replaced or
        # cross the threshold, so it is recounted (one device read) only then.
        self._num_mature = [0] * num
        self._next_recount: list[float] = [float(self.maturity_threshold + 1)] * num

    def _num_due(self, i: int) -> int:
        """How many units of layer ``i`` to replace now (at most the eligible count), with
        ``n = replacement_rate * eligible``: with ``accumulate`` an accumulator gains ``n``
        a step, its integer part is due and the fraction carries over; without, one unit
        with probability ``n`` when ``n < 1`` (a draw from ``generator``), else ``int(n)``
        (the public code's ``gnt.py``, ``accumulate=False``)."""
        if self.replacement_rate == 0.0:
            return 0
        if self.step_count >= self._next_recount[i]:
            self._recount(i)
        if self._num_mature[i] == 0:
            return 0
        n = self.replacement_rate * self._num_mature[i]
        if self.accumulate:
            acc = self.accumulated[i] + n
            k = int(acc)
            self.accumulated[i] = acc - k
        elif n < 1.0:
            k = int(coin_flip(self.generator) <= n)
        else:
            k = int(n)
        return min(k, self._num_mature[i])

    def _lowest(self, i: int, k: int) -> torch.Tensor:
        """The ``k`` eligible units of layer ``i`` of lowest bias-corrected utility, sorted."""
        # nan_to_num also maps +inf to the largest float: only immature units score inf,
        # so the k (<= number eligible) lowest are all eligible.
        score = torch.nan_to_num(self.utility[i] / self.bias_correction[i], nan=0.0)
        score = score.masked_fill(self.age[i] <= self.maturity_threshold, math.inf)
        # Sorted, as torch.unique would give them, without unique's device sync.
        return torch.topk(score, k, largest=False).indices.sort().values

    def _count_replaced(self, i: int, k: int) -> None:
        """Bookkeeping after ``k`` eligible units of layer ``i`` became age 0."""
        # The eligible count follows without reading the ages back from the device: they
        # are eligible again mt + 1 steps from now.
        self.num_replaced[i] += k
        self._num_mature[i] -= k
        self._next_recount[i] = min(
            self._next_recount[i], float(self.step_count + self.maturity_threshold + 1)
        )

    def _recount(self, i: int) -> None:
        """Count the eligible units of layer ``i`` and when the next one matures."""
        ages = self.age[i].cpu()
        mature = ages > self.maturity_threshold
        self._num_mature[i] = int(mature.sum())
        immature = ages[~mature]
        if immature.numel():
            oldest = int(immature.max())
            self._next_recount[i] = float(self.step_count + self.maturity_threshold + 1 - oldest)
        else:
            self._next_recount[i] = math.inf

    # -- state ---------------------------------------------------------------------------
    def buffers(self) -> list[torch.Tensor]:
        """Utilities, mean activations and ages of every layer."""
        return [*self.utility, *self.mean_act, *self.age]

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values (copies)."""
        return {
            "step_count": self.step_count,
            "utility": [t.clone() for t in self.utility],
            "mean_act": [t.clone() for t in self.mean_act],
            "age": [t.clone() for t in self.age],
            "bias_correction": [t.clone() for t in self.bias_correction],
            "accumulated": [float(a) for a in self.accumulated],
            "num_replaced": [int(n) for n in self.num_replaced],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.step_count = int(state["step_count"])
        for name in ("utility", "mean_act", "age", "bias_correction"):
            for dst, src in zip(getattr(self, name), state[name], strict=True):
                dst.copy_(src)
        self.accumulated = [float(a) for a in state["accumulated"]]
        self.num_replaced = [int(n) for n in state["num_replaced"]]
        for i in range(len(self.utility)):
            self._recount(i)
