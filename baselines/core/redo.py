"""ReDo: recycle the dormant units of a network (Sokar et al., ICML 2023), for layers with a
leading seed dimension.

Every ``period`` updates, each hidden layer's units are scored by their activity relative to
the layer's::

    s_i = a_i / mean_j a_j,    a_i = mean |h_i|

over the batch (and, for conv channels, the spatial positions), and a unit is
``tau``-dormant when ``s_i <= tau`` (the paper's Definition 3.1, ``<=`` as the paper and the
public Ant code, ``lop/algos/gntRedo.py``). Each dormant unit is recycled: its incoming
weights are drawn afresh from the network's own init (``U(-bound, bound)`` from the agent's
generator), its incoming bias re-drawn the same way (``bias_bound``; 0 for networks whose
biases start at 0), its outgoing weights set to 0 (so the network's output does not jump),
and the optimizer state of all these entries (SGD momentum, Adam's moments and
:class:`EntrywiseAdam`'s per-entry step count) set to 0, as generate-and-test does. Units
that are not dormant, and every other parameter, are left bit for bit as they were.

Which activations are scored (``score_over``):

- ``"batch"``: the activations of the update at which the check falls (the forward pass
  the agent already made for that update, before its optimizer step). The paper scores a
  batch drawn at the check (its DQN batch of 32); ``gntRedo.py`` scores the PPO minibatch
  (128 states) of that update, as here.
- ``"period"``: the mean of ``mean |h|`` over every update since the last check. For
  batch-1 streams a single sample is too noisy a score (a ReLU unit is 0 on about half the
  inputs), so their presets accumulate over the ``period`` updates.

A layer whose units are all silent (``mean_j a_j = 0``) scores 0 everywhere: every unit is
dormant and recycled. (``gntRedo.py`` divides 0 by 0 there and resets nothing.)

Tensors carry a leading seed dimension ``S``: a unit layer's incoming weights are
``(S, units, *fan_in)`` (``nn.Linear`` rows, ``nn.Conv2d`` output channels), its outgoing
weights ``(S, out, units * group)`` (a linear next layer; ``group`` inputs per unit, > 1
after a channel-major flatten) or ``(S, out, units, kh, kw)`` (a next conv); activations
``(S, batch, units)`` or ``(S, batch, channels, height, width)``. A single-seed network is
a seed dimension of 1 (:func:`module_unit_layers` makes the views); a many-seeds network
passes its batched tensors and one ``torch.Generator`` per seed, and seed ``s`` draws from
``generators[s]`` exactly what a single-seed agent of that generator draws (layer by
layer, the dormant units' weights in ascending unit order, then their biases).

A leaf: imports torch and ``lop_bench`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lop_bench.config import check_choice, check_positive, check_range
from lop_bench.errors import InvalidConfigError

__all__ = [
    "SCORE_OVER",
    "ReDoFields",
    "check_redo_fields",
    "unit_activity",
    "dormant_scores",
    "dormant_mask",
    "UnitLayer",
    "module_unit_layers",
    "optimizer_states",
    "reset_units",
    "ReDo",
]

SCORE_OVER = ("batch", "period")
"""What :class:`ReDo` scores: the check's batch, or every update since the last check."""


@dataclass(frozen=True)
class ReDoFields:
    """ReDo's config fields, for the configs of agents that use it (defaults: the paper's
    tau and period, Sokar et al. 2023, scored on the check's batch)."""

    redo_threshold: float = 0.1
    """``tau``: a unit whose score (its activity over the layer's mean) is ``<= tau`` is
    recycled (the paper: 0.1 for most runs, 0.025 for some; ``cfg/ant/redo.yml``: 0.1)."""
    redo_period: int = 1000
    """``F``: optimizer updates between two checks (the paper: 1000 gradient steps;
    ``cfg/ant/redo.yml``'s ``reset_period``: 100 minibatch updates)."""
    redo_score_over: str = "batch"
    """What is scored (:data:`SCORE_OVER`): ``"batch"``, the check's update's batch;
    ``"period"``, every update since the last check (batch-1 streams)."""


def check_redo_fields(cfg: Any) -> None:
    """Range checks of ``cfg``'s :class:`ReDoFields`."""
    check_range("redo_threshold", cfg.redo_threshold, 0.0, float("inf"))
    period = cfg.redo_period
    if isinstance(period, bool) or not isinstance(period, int):
        raise InvalidConfigError(f"redo_period must be a whole number of updates, got {period!r}.")
    check_positive("redo_period", period)
    check_choice("redo_score_over", cfg.redo_score_over, SCORE_OVER)


def unit_activity(h: torch.Tensor) -> torch.Tensor:
    """``mean |h|`` per seed and unit, ``(S, units)``, of activations ``(S, batch, units)``
    or ``(S, batch, channels, height, width)`` (the mean over the batch and positions)."""
    if h.dim() < 3:
        raise ValueError(
            f"activations need a seed, a batch and a unit dimension, got shape {tuple(h.shape)} "
            "(a single-seed network's (batch, units) is h.unsqueeze(0))."
        )
    dims = (1, *range(3, h.dim()))
    return h.detach().abs().mean(dims)


def dormant_scores(activity: torch.Tensor) -> torch.Tensor:
    """``s_i = a_i / mean_j a_j`` per seed, from activities ``(S, units)``; a layer whose
    activities are all 0 scores 0 everywhere."""
    mean = activity.mean(-1, keepdim=True)
    return torch.where(mean > 0, activity / mean.clamp_min(torch.finfo(activity.dtype).tiny),
                       torch.zeros_like(activity))


def dormant_mask(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """The ``threshold``-dormant units: ``scores <= threshold`` (bool, the scores' shape)."""
    return scores <= threshold


def optimizer_states(optimizer: torch.optim.Optimizer | None, param: torch.Tensor) -> list[torch.Tensor]:
    """The optimizer's state tensors of ``param``'s shape (momentum, Adam's moments,
    :class:`EntrywiseAdam`'s per-entry step): the entries a unit reset zeroes. Empty before
    the optimizer's first step (its state is created lazily) and without an optimizer. A
    per-tensor step count (``torch.optim.Adam``'s) cannot be reset per entry and is not
    returned."""
    if optimizer is None:
        return []
    state = optimizer.state.get(param)
    if not state:
        return []
    return [v for v in state.values() if torch.is_tensor(v) and v.shape == param.shape]


@dataclass
class UnitLayer:
    """One hidden layer's units as :func:`reset_units` changes them (views with a leading
    seed dimension).

    ``weight``: incoming weights ``(S, units, *fan_in)``; ``bias``: incoming biases ``(S,
    units)`` or None; ``next_weight``: outgoing weights ``(S, out, units * group)`` or
    ``(S, out, units, kh, kw)``; ``bound``/``bias_bound``: the init ``U(-b, b)`` of fresh
    weights and biases (``bias_bound`` 0: biases reset to 0). ``*_states``: optimizer state
    tensors of the same shapes as ``weight``, ``bias`` and ``next_weight`` (zeroed at the
    reset entries).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    next_weight: torch.Tensor
    bound: float
    bias_bound: float = 0.0
    weight_states: Sequence[torch.Tensor] = field(default_factory=tuple)
    bias_states: Sequence[torch.Tensor] = field(default_factory=tuple)
    next_states: Sequence[torch.Tensor] = field(default_factory=tuple)

    def outgoing(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (``next_weight``'s shape) as a view ``(S, out, units, group)``."""
        units = self.weight.shape[1]
        if t.dim() == 3:
            if t.shape[2] % units:
                raise ValueError(
                    f"a next linear layer of {t.shape[2]} inputs cannot read {units} units."
                )
            return t.view(t.shape[0], t.shape[1], units, t.shape[2] // units)
        if t.dim() == 5 and t.shape[2] == units:
            return t.view(t.shape[0], t.shape[1], units, -1)
        raise ValueError(f"a next layer of weight shape {tuple(t.shape)} cannot read {units} units.")


def module_unit_layers(
    pairs: Sequence[tuple[torch.nn.Module, torch.nn.Module]],
    bounds: Sequence[float],
    optimizer: torch.optim.Optimizer | None = None,
    bias_bounds: Sequence[float] | None = None,
) -> list[UnitLayer]:
    """:class:`UnitLayer` views (seed dimension 1) of a single network's ``(layer,
    next_layer)`` pairs (``nn.Linear``/``nn.Conv2d``), with ``optimizer``'s state of their
    parameters. Build them at the reset, not once: the optimizer creates its state at its
    first step and ``load_state_dict`` replaces it."""
    if len(bounds) != len(pairs):
        raise ValueError(f"one init bound per (layer, next_layer) pair is needed, got "
                         f"{len(bounds)} for {len(pairs)} pairs.")
    bias_bounds = [0.0] * len(pairs) if bias_bounds is None else list(bias_bounds)
    out = []
    for (layer, nxt), bound, bias_bound in zip(pairs, bounds, bias_bounds, strict=True):
        w, b, w_next = layer.weight, layer.bias, nxt.weight
        out.append(UnitLayer(
            weight=w.data.unsqueeze(0),
            bias=None if b is None else b.data.unsqueeze(0),
            next_weight=w_next.data.unsqueeze(0),
            bound=float(bound),
            bias_bound=float(bias_bound),
            weight_states=[s.unsqueeze(0) for s in optimizer_states(optimizer, w)],
            bias_states=[] if b is None else [s.unsqueeze(0) for s in optimizer_states(optimizer, b)],
            next_states=[s.unsqueeze(0) for s in optimizer_states(optimizer, w_next)],
        ))
    return out


@torch.no_grad()
def reset_units(
    layer: UnitLayer, mask: torch.Tensor, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Recycle the units ``mask`` (bool ``(S, units)``) of ``layer``: fresh incoming weights
    (and biases) from ``generators[s]``, zero outgoing weights, zero optimizer state of those
    entries. Returns the number of units reset per seed (an int64 tensor on the CPU)."""
    w = layer.weight
    seeds, units = w.shape[0], w.shape[1]
    if mask.shape != (seeds, units):
        raise ValueError(f"the mask must be (seeds, units) = {(seeds, units)}, got {tuple(mask.shape)}.")
    if len(generators) != seeds:
        raise ValueError(f"one generator per seed is needed: {seeds} seeds, {len(generators)} generators.")
    mask = mask.to(device=w.device, dtype=torch.bool)
    counts = mask.sum(1).cpu()
    if not bool(counts.any()):
        return counts
    for s in torch.nonzero(counts).flatten().tolist():
        idx = torch.nonzero(mask[s]).flatten()
        k = idx.numel()
        g = generators[s]
        fresh = torch.empty((k, *w.shape[2:]), device=w.device, dtype=w.dtype)
        w[s, idx] = fresh.uniform_(-layer.bound, layer.bound, generator=g)
        if layer.bias is not None:
            if layer.bias_bound > 0:
                fresh_b = torch.empty(k, device=w.device, dtype=layer.bias.dtype)
                layer.bias[s, idx] = fresh_b.uniform_(-layer.bias_bound, layer.bias_bound, generator=g)
            else:
                layer.bias[s, idx] = 0.0
    # Masked fills, every seed at once: the states and the outgoing weights.
    rows = mask.view(seeds, units, *([1] * (w.dim() - 2)))
    for t in layer.weight_states:
        t.masked_fill_(rows, 0.0)
    for t in layer.bias_states:
        t.masked_fill_(mask, 0.0)
    cols = mask.view(seeds, 1, units, 1)
    for t in (layer.next_weight, *layer.next_states):
        layer.outgoing(t).masked_fill_(cols, 0.0)
    return counts


class ReDo:
    """ReDo's schedule: every ``period`` calls of :meth:`step` (one per optimizer update),
    score the layers, recycle their ``threshold``-dormant units.

    State: ``steps`` (updates since the last check), the activity sums of ``score_over=
    "period"``, and per layer ``num_reset`` (units recycled so far, per seed) and
    ``last_dormant`` (the dormant fraction at the last check, per seed).
    """

    def __init__(self, *, threshold: float, period: int, score_over: str = "batch") -> None:
        check_range("threshold", threshold, 0.0, float("inf"))
        if isinstance(period, bool) or not isinstance(period, int):
            raise InvalidConfigError(f"period must be a whole number of updates, got {period!r}.")
        check_positive("period", period)
        check_choice("score_over", score_over, SCORE_OVER)
        self.threshold = float(threshold)
        self.period = int(period)
        self.score_over = score_over
        self.steps = 0
        self.activity_sum: list[torch.Tensor] = []
        self.num_reset: list[torch.Tensor] = []
        self.last_dormant: list[torch.Tensor] = []

    @classmethod
    def from_config(cls, cfg: ReDoFields) -> ReDo:
        """The schedule of a config's :class:`ReDoFields`."""
        return cls(threshold=cfg.redo_threshold, period=cfg.redo_period,
                   score_over=cfg.redo_score_over)

    def step(
        self,
        features: Sequence[torch.Tensor],
        layers: Callable[[], Sequence[UnitLayer]],
        generators: Sequence[torch.Generator],
    ) -> list[torch.Tensor] | None:
        """Count one update with its hidden activations ``features`` (one per layer, with the
        seed dimension); at every ``period``-th, recycle the dormant units of ``layers()``
        (called only then) and return the masks of the units reset, else None."""
        self.steps += 1
        if self.score_over == "period":
            acts = [unit_activity(h) for h in features]
            if not self.activity_sum:
                self.activity_sum = [torch.zeros_like(a) for a in acts]
            elif self.activity_sum[0].device != acts[0].device:  # restored from a CPU copy
                self.activity_sum = [t.to(acts[0].device) for t in self.activity_sum]
            for total, a in zip(self.activity_sum, acts, strict=True):
                total.add_(a)
        if self.steps < self.period:
            return None
        if self.score_over == "period":
            acts = [total / self.steps for total in self.activity_sum]
            for total in self.activity_sum:
                total.zero_()
        else:
            acts = [unit_activity(h) for h in features]
        self.steps = 0
        masks = [dormant_mask(dormant_scores(a), self.threshold) for a in acts]
        unit_layers = layers()
        if len(unit_layers) != len(masks):
            raise ValueError(f"{len(masks)} layers of activations but {len(unit_layers)} unit layers.")
        if not self.num_reset:
            self.num_reset = [torch.zeros(m.shape[0], dtype=torch.long) for m in masks]
            self.last_dormant = [torch.zeros(m.shape[0]) for m in masks]
        # Every layer is scored (above) before any changes, then each is reset in order.
        for i, (layer, mask) in enumerate(zip(unit_layers, masks, strict=True)):
            counts = reset_units(layer, mask, generators)
            self.num_reset[i] += counts
            self.last_dormant[i] = counts.float() / mask.shape[1]
        return masks

    def state_dict(self) -> dict[str, Any]:
        """Plain values and tensor copies."""
        return {
            "steps": self.steps,
            "activity_sum": [t.clone() for t in self.activity_sum],
            "num_reset": [t.clone() for t in self.num_reset],
            "last_dormant": [t.clone() for t in self.last_dormant],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.steps = int(state["steps"])
        self.activity_sum = [torch.as_tensor(t).clone() for t in state["activity_sum"]]
        self.num_reset = [torch.as_tensor(t).clone() for t in state["num_reset"]]
        self.last_dormant = [torch.as_tensor(t).clone() for t in state["last_dormant"]]
