"""Generate-and-test (Dohare et al., Nature 2024): continual backprop's replacement of the
hidden units of lowest utility by fresh ones, for every network of the reference agents.

After every optimizer step, in two passes over the hidden layers (as the public code's
``gnt.py``: every layer is scored before any layer changes, so a replacement in layer
``l`` never alters the weights layer ``l + 1`` is scored with):

1. *Test*, every layer. Each unit's age grows by one; its running mean activation ``f``
   and its utility ``u`` are exponential averages with decay ``eta`` (``decay_rate``),
   both bias-corrected like Adam's moments by ``1 - eta ** age``. The utilities
   (:data:`UTILITIES`): ``"contribution"`` (the paper's eq. 1), ``mean |outgoing weights|
   * mean |h|``; ``"adaptable_contribution"`` (the public regression and Continual
   ImageNet configs), ``mean |outgoing weights| * mean |h - f_hat| / mean |incoming
   weights|``. Units older than ``maturity_threshold`` are eligible.
2. *Generate*, every layer with units due: the count due (below) of eligible units of
   lowest bias-corrected utility are replaced. A replaced unit gets fresh incoming weights
   (the network's init distribution, from the seed's generator), its outgoing weights are
   zeroed, and the optimizer state of all these entries, its utility, mean activation and
   age are reset to 0. Before anything is zeroed, its mean contribution moves into the
   next layer's bias (DESIGN.md section 5), so the output changes only by the removed
   unit's deviation from its mean.

The count due is ``replacement_rate * (number eligible)`` per step in expectation, by one
of the public code's two rules (``accumulate``): the fraction carried over to later steps
(deterministic; ``gnt.py``'s ``accumulate=True``, its permuted-MNIST runs), or ``gnt.py``'s
default ``accumulate=False`` (its regression and Ant runs): when the expected count is
below 1, one unit with that probability (a coin flip from the seed's generator), else its
integer part.

One implementation for every network, with a leading **seed dimension**: the statistics
of layer ``i`` are ``(num_seeds, units)`` tensors, the counts per seed. A network of one
seed (the single-seed, ConvNet, ResNet and PPO agents) has a seed dimension of 1 and is
used through :class:`SingleSeed`, a thin view without it; the many-seeds MLP learner has
N seeds. What differs between networks is the *layout* of a layer's units (where their
incoming and outgoing weights are, how a fresh one is drawn), one small class each:

- :class:`DenseUnits`: fully connected units (MLPs of one or many seeds, PPO's nets);
- :class:`ConvUnits`: the output channels of a conv layer of :class:`~baselines.core.nets.ConvNet`,
  read by the next conv or, across the flatten, by an fc layer;
- :class:`ResidualUnits`: the output channels (each with its batch norm) of a ResNet-18
  convolution (:class:`~baselines.core.nets.ChannelLayer`).

Differences from the paper's code (``lop/algos/gnt.py``, ``convGnT.py``, ``res_gnt.py``),
which are bugs there or simplifications: the configured maturity threshold is honoured
(``gnt.py`` silently used 10); the bias correction of the mean activation uses the mean
before it is reset (the code zeroed it first, so the correction never happened; the conv
and ResNet codes apply none); the replaced units' optimizer state is reset for SGD with
momentum and for Adam (torch's Adam was never reset; with
:class:`~baselines.core.optim.EntrywiseAdam` the per-entry step count restarts too);
the number due is ``rate * eligible`` everywhere (``convGnT.py`` and ``res_gnt.py`` count
``rate * all units``); the ResNet's mean activation and utility are bias-corrected
exponential averages (``res_gnt.py`` sums ``(1 - eta) * |h|`` without decay).

Conv channels (:class:`ConvUnits`): a unit's activation is the layer's feature map as the
next layer reads it, (N, C, H, W) after ReLU *and max-pool*; every statistic is averaged
over the batch and the positions. Into a conv, the utility is ``mean |outgoing weights|``
(over the next conv's filters and kernel positions) times the channel's mean size; across
the flatten, where each position ``p`` has its own column, the mean over positions of
``mean |column p|`` times the mean size of ``h[:, c, p]`` (as ``convGnT.py``). The pool
acts per channel, so measuring after it makes the bias correction exact for unpadded next
convs and the flatten (a padded next conv sees zeros at the border, where the moved bias
over-corrects).

ResNet channels (:class:`ResidualUnits`): a unit is channel ``c`` after its batch norm
and ReLU (for a block's second conv: the block's output after the residual addition,
pooled for the last block, as the head reads it). The removed channel's mean contribution
is subtracted from the next layer's batch-norm running mean (a next conv is only ever read
through its batch norm) or added to the head's bias; the fresh conv filter is drawn from
the init (``N(0, 2 / fan_in)``), the batch norm of ``c`` reset to weight 1, bias 0, mean 0,
variance 1. The stem's and the blocks' output channels are also read by the next block's
shortcut, which is left alone (as the paper's code): such a replacement does change the
network's output, a fresh block-first-conv channel does not.

A leaf of ``baselines``: imports torch, numpy, ``lop_bench`` and :mod:`baselines.core.nets`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from baselines.core.nets import ChannelLayer, conv_std
from lop_bench.config import check_choice, check_positive, check_range
from lop_bench.errors import InvalidConfigError

__all__ = [
    "UTILITIES",
    "GnTFields",
    "check_gnt_fields",
    "coin_flip",
    "ResetState",
    "Units",
    "DenseUnits",
    "ConvUnits",
    "ResidualUnits",
    "network_units",
    "resnet_units",
    "GenerateAndTest",
    "SingleSeed",
]

UTILITIES = ("adaptable_contribution", "contribution")
"""Generate-and-test's utilities (module docstring): which config uses which is said at
each preset."""

ResetState = Callable[[Any, int, torch.Tensor, int], None]
"""``reset_state(param, seed, index, dim)``: zero the optimizer state of ``param``'s entries
``index`` along ``dim`` (of one seed's parameter) for seed ``seed``. ``param`` is whatever
key a :class:`Units` was given for the parameter (the ``nn.Parameter`` itself for
:class:`~baselines.core.optim.OptimizerEntries`)."""


@dataclass(frozen=True)
class GnTFields:
    """Generate-and-test's config fields, for the configs of agents that use it (defaults:
    slowly-changing regression's; each agent's config may change the defaults)."""

    replacement_rate: float = 1e-4
    """Fraction of the eligible units replaced per step (0: no generate-and-test)."""
    decay_rate: float = 0.99
    """Decay ``eta`` of the running utility and mean activation (PROTOCOLS.md: 0.99)."""
    maturity_threshold: int = 100
    """Units are eligible for replacement once older than this many steps (PROTOCOLS.md:
    100; the public ``gnt.py`` ignored the key and used 10, a bug not copied)."""
    utility: str = "adaptable_contribution"
    """``"adaptable_contribution"`` or ``"contribution"`` (:data:`UTILITIES`)."""
    accumulate: bool = True
    """The count rule: True, the fraction of ``replacement_rate * eligible`` carries over
    (deterministic; ``gnt.py``'s ``accumulate=True``); False, ``gnt.py``'s default: below
    1, one unit with that probability (a coin flip), else the integer part."""


def check_gnt_fields(cfg: Any) -> None:
    """Range checks of ``cfg``'s :class:`GnTFields`."""
    check_range("replacement_rate", cfg.replacement_rate, 0.0, 1.0)
    check_range("decay_rate", cfg.decay_rate, 0.0, 1.0)
    if cfg.decay_rate >= 1.0:
        raise InvalidConfigError(f"decay_rate must be < 1, got {cfg.decay_rate!r}.")
    check_positive("maturity_threshold", cfg.maturity_threshold, allow_zero=True)
    check_choice("utility", cfg.utility, UTILITIES)
    if not isinstance(cfg.accumulate, bool):
        raise InvalidConfigError(f"accumulate must be true or false, got {cfg.accumulate!r}.")


def coin_flip(generator: torch.Generator) -> float:
    """One uniform draw in ``[0, 1)`` from ``generator`` (on its device): the coin of
    ``accumulate=False``."""
    return float(torch.rand(1, generator=generator, device=generator.device))


def abs_mean(w: torch.Tensor, dim: int) -> torch.Tensor:
    """``w.abs().mean(dim)``. On a GPU in one pass over ``w`` (an L1 norm: no ``|w|``
    temporary, a third of the memory traffic, which bounds a step of a wide batch-1 net);
    on the CPU as written (the arithmetic of the committed results)."""
    if w.is_cuda:
        return torch.linalg.vector_norm(w, 1, dim=dim).div_(w.shape[dim])
    return w.abs().mean(dim)


# -- unit layouts ---------------------------------------------------------------------------
class Units:
    """The hidden units of one layer, for :class:`GenerateAndTest`: how they are measured
    and how one is replaced. ``num_seeds`` and ``num_units`` size the statistics;
    ``modules`` is ``(layer, next_layer)`` for a layout built from ``nn.Module`` layers."""

    num_seeds: int
    num_units: int
    device: torch.device
    dtype: torch.dtype
    modules: tuple[nn.Module, nn.Module] | None = None

    def measure(self, h: torch.Tensor, mean_act: torch.Tensor, bias_correction: torch.Tensor,
                rate: float, adaptable: bool) -> torch.Tensor:
        """Move ``mean_act`` (``(num_seeds, num_units)``, in place) toward the mean of the
        activations ``h`` by ``rate``, and return the step's new utility, shaped like it
        (``bias_correction`` is this step's ``1 - eta ** age``)."""
        raise NotImplementedError

    def replace(self, seed: int, index: torch.Tensor, mean: torch.Tensor,
                generator: torch.Generator, reset_state: ResetState) -> None:
        """Replace units ``index`` (sorted, distinct, on the device) of ``seed`` whose
        bias-corrected mean activations are ``mean``: the mean contribution into the next
        layer's bias, fresh incoming weights from ``generator``, zero outgoing weights,
        ``reset_state`` for every reset entry."""
        raise NotImplementedError


class DenseUnits(Units):
    """Fully connected units: incoming weights ``w_in[s]`` (units, inputs) and bias
    ``b_in[s]``, outgoing weights ``w_out[s][:, u]``, next bias ``b_out[s]``; tensors with a
    leading seed dimension. Fresh incoming weights are ``U(-init_bound, init_bound)``, the
    incoming bias 0. ``keys`` are the parameters as ``reset_state`` knows them (``w_in``,
    ``b_in``, ``w_out``). ``batched``: the activations come as ``(num_seeds, batch, units)``;
    else as ``(batch, units)`` of the only seed."""

    def __init__(self, w_in: torch.Tensor, b_in: torch.Tensor | None, w_out: torch.Tensor,
                 b_out: torch.Tensor | None, init_bound: float, keys: Sequence[Any], *,
                 batched: bool) -> None:
        if w_in.dim() != 3 or w_out.dim() != 3 or w_out.shape[2] != w_in.shape[1]:
            raise ValueError(f"a next layer of weights {tuple(w_out.shape[1:])} cannot read "
                             f"{w_in.shape[1]} units.")
        self.w_in, self.b_in, self.w_out, self.b_out = w_in, b_in, w_out, b_out
        self.init_bound = float(init_bound)
        self.keys = tuple(keys)
        self.batched = batched
        self.num_seeds, self.num_units = int(w_in.shape[0]), int(w_in.shape[1])
        self.device, self.dtype = w_in.device, w_in.dtype

    @classmethod
    def of(cls, layer: nn.Linear, nxt: nn.Linear, init_bound: float) -> DenseUnits:
        """The units of ``layer`` of a network of one seed, read by ``nxt``."""
        def view(p: torch.Tensor | None) -> torch.Tensor | None:
            return None if p is None else p.detach().unsqueeze(0)

        units = cls(view(layer.weight), view(layer.bias), view(nxt.weight), view(nxt.bias),
                    init_bound, (layer.weight, layer.bias, nxt.weight), batched=False)
        units.modules = (layer, nxt)
        return units

    def measure(self, h, mean_act, bias_correction, rate, adaptable):
        if not self.batched:
            h = h.unsqueeze(0)
        # Batch means; at batch size 1 a view of the single row does (no reduction).
        single = h.shape[1] == 1
        h_mean = h[:, 0] if single else h.mean(1)
        mean_act = mean_act.lerp_(h_mean, rate)
        out_mag = abs_mean(self.w_out, 1)
        if adaptable:
            f_hat = mean_act / bias_correction
            if single:
                deviation = (h_mean - f_hat).abs_()
            else:
                deviation = (h - f_hat.unsqueeze(1)).abs_().mean(1)
            return out_mag.mul_(deviation).div_(abs_mean(self.w_in, 2))
        return out_mag.mul_(h_mean.abs() if single else h.abs().mean(1))

    def replace(self, seed, index, mean, generator, reset_state):
        w_in, w_out = self.w_in[seed], self.w_out[seed]
        if self.b_out is not None:
            self.b_out[seed].add_(w_out[:, index] @ mean)
        fresh = torch.empty((index.numel(), w_in.shape[1]), device=w_in.device, dtype=w_in.dtype)
        w_in[index] = fresh.uniform_(-self.init_bound, self.init_bound, generator=generator)
        if self.b_in is not None:
            self.b_in[seed][index] = 0.0
        w_out[:, index] = 0.0
        key_w_in, key_b_in, key_w_out = self.keys
        reset_state(key_w_in, seed, index, 0)
        if self.b_in is not None:
            reset_state(key_b_in, seed, index, 0)
        reset_state(key_w_out, seed, index, 1)


class ConvUnits(Units):
    """The output channels of a conv ``layer`` (one seed) read by ``nxt``: a conv reading the
    channels, or a linear layer reading them flattened channel-major (``in_features`` a
    multiple of the channels). Activations ``(N, C, H, W)``, after the pool. A fresh filter
    is ``U(-init_bound, init_bound)``, its bias 0 (module docstring)."""

    num_seeds = 1

    def __init__(self, layer: nn.Conv2d, nxt: nn.Module, init_bound: float) -> None:
        n = layer.weight.shape[0]
        w_out = nxt.weight
        if w_out.dim() == 2:
            group, rest = divmod(w_out.shape[1], n)
            if rest or group == 0:
                raise ValueError(
                    f"a next linear layer of {w_out.shape[1]} inputs cannot read {n} units."
                )
        elif w_out.dim() == 4 and w_out.shape[1] == n:
            group = w_out.shape[2] * w_out.shape[3]
        else:
            raise ValueError(
                f"a next layer of weight shape {tuple(w_out.shape)} cannot read {n} units."
            )
        self.layer, self.next = layer, nxt
        self.modules = (layer, nxt)
        self.next_conv = w_out.dim() == 4
        self.group = group  # inputs of the next layer per channel: kernel or flattened positions
        self.init_bound = float(init_bound)
        self.num_units = n
        self.device, self.dtype = layer.weight.device, layer.weight.dtype

    def _outgoing(self) -> torch.Tensor:
        """The next layer's weights as a view (out, units, group): unit ``u``'s outgoing
        weights are ``[:, u, :]`` (a conv's kernel positions, a flattened channel's inputs)."""
        w_out = self.next.weight
        return w_out.view(w_out.shape[0], self.num_units, self.group)

    def measure(self, h, mean_act, bias_correction, rate, adaptable):
        dims = (0, *range(2, h.dim()))
        mean_act = mean_act[0].lerp_(h.mean(dims), rate)
        if adaptable:
            f_hat = (mean_act / bias_correction[0]).view(1, -1, *([1] * (h.dim() - 2)))
            size = (h - f_hat).abs_()
        else:
            size = h.abs()
        if self.next_conv or self.group == 1:
            # A next conv applies the same kernel at every position: mean |kernel entries|
            # times the mean size of the channel over the batch and the positions.
            new_util = self._outgoing().abs().mean((0, 2)).mul_(size.mean(dims))
        else:
            # Across the flatten each position p has its own column of the fc layer: per
            # position, mean |column p| times the mean size of h[:, c, p] over the batch,
            # then the mean over the positions (as the paper's convGnT).
            per_position = self._outgoing().abs().mean(0).mul_(size.flatten(2).mean(0))
            new_util = per_position.mean(1)
        if adaptable:
            new_util.div_(self.layer.weight.abs().flatten(1).mean(1))
        return new_util.unsqueeze(0)

    def replace(self, seed, index, mean, generator, reset_state):
        layer, nxt = self.layer, self.next
        w_in, w_out = layer.weight, nxt.weight
        group = self.group
        # Outgoing entries along the next layer's dim 1: the channels themselves (a next
        # conv's input channels), or a flattened channel's H * W inputs.
        cols = index
        if not self.next_conv and group > 1:
            offsets = torch.arange(group, device=index.device)
            cols = (index[:, None] * group + offsets).reshape(-1)
        if nxt.bias is not None:
            if self.next_conv:  # a constant channel adds mean * (sum of its kernel)
                nxt.bias.add_(w_out[:, index].sum((2, 3)) @ mean)
            elif group > 1:
                nxt.bias.add_(w_out[:, cols] @ mean.repeat_interleave(group))
            else:
                nxt.bias.add_(w_out[:, index] @ mean)
        bound = self.init_bound
        fresh = torch.empty((index.numel(), *w_in.shape[1:]), device=w_in.device, dtype=w_in.dtype)
        w_in[index] = fresh.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias[index] = 0.0
        w_out[:, cols] = 0.0
        reset_state(w_in, seed, index, 0)
        if layer.bias is not None:
            reset_state(layer.bias, seed, index, 0)
        reset_state(w_out, seed, cols, 1)


class ResidualUnits(Units):
    """The output channels of a ResNet-18 convolution and its batch norm
    (:class:`~baselines.core.nets.ChannelLayer`, one seed); activations ``(N, C, H, W)``
    or, for the last block, pooled ``(N, C)`` (module docstring)."""

    num_seeds = 1

    def __init__(self, layer: ChannelLayer) -> None:
        if not isinstance(layer, ChannelLayer):
            raise TypeError("layers must be ChannelLayer entries (ResNet18.channel_layers()).")
        self.layer = layer
        self.modules = (layer.conv, layer.next)
        self.num_units = int(layer.conv.weight.shape[0])
        self.device, self.dtype = layer.conv.weight.device, layer.conv.weight.dtype

    conv = property(lambda self: self.layer.conv)
    bn = property(lambda self: self.layer.bn)
    next = property(lambda self: self.layer.next)
    next_bn = property(lambda self: self.layer.next_bn)

    def measure(self, h, mean_act, bias_correction, rate, adaptable):
        layer = self.layer
        dims = (0, *range(2, h.dim()))
        bc = bias_correction[0]
        mean_act = mean_act[0].lerp_(h.mean(dim=dims), rate)
        w_out = layer.next.weight
        out_mag = w_out.abs().mean(dim=(0, *range(2, w_out.dim())))
        if adaptable:
            f_hat = (mean_act / bc).view(1, -1, *([1] * (h.dim() - 2)))
            in_mag = layer.conv.weight.abs().mean(dim=(1, 2, 3))
            new_util = out_mag.mul_((h - f_hat).abs_().mean(dim=dims)).div_(in_mag)
        else:
            new_util = out_mag.mul_(h.abs().mean(dim=dims))
        return new_util.unsqueeze(0)

    def replace(self, seed, index, mean, generator, reset_state):
        layer = self.layer
        conv, bn, nxt = layer.conv, layer.bn, layer.next
        # 1. The removed channels' mean contribution to the next layer's output, moved into
        #    its batch norm's running mean or the head's bias.
        w_next = nxt.weight
        if layer.next_bn is not None:
            kernel_sums = w_next[:, index].sum(dim=(2, 3))  # (out, k)
            layer.next_bn.running_mean.sub_(kernel_sums @ mean)
        else:
            nxt.bias.add_(w_next[:, index] @ mean)
        # 2. Fresh incoming weights, batch norm reset, zero outgoing weights.
        w = conv.weight
        fresh = torch.empty((index.numel(), *w.shape[1:]), device=w.device, dtype=w.dtype)
        w[index] = fresh.normal_(0.0, conv_std(conv), generator=generator)
        conv.bias[index] = 0.0
        bn.weight[index] = 1.0
        bn.bias[index] = 0.0
        bn.running_mean[index] = 0.0
        bn.running_var[index] = 1.0
        w_next[:, index] = 0.0
        # 3. Optimizer state of every reset entry.
        for p in (conv.weight, conv.bias, bn.weight, bn.bias):
            reset_state(p, seed, index, 0)
        reset_state(w_next, seed, index, 1)


def network_units(net: nn.Module) -> list[Units]:
    """The hidden layers of an :class:`~baselines.core.nets.MLP` or
    :class:`~baselines.core.nets.ConvNet` of one seed (``unit_pairs()``, ``init_bounds``)."""
    units: list[Units] = []
    for (layer, nxt), bound in zip(net.unit_pairs(), net.init_bounds[:-1], strict=True):
        if isinstance(layer, nn.Conv2d):
            units.append(ConvUnits(layer, nxt, bound))
        else:
            units.append(DenseUnits.of(layer, nxt, bound))
    return units


def resnet_units(layers: Sequence[ChannelLayer]) -> list[Units]:
    """The channel layers of a ResNet-18 (``ResNet18.channel_layers(coverage)``)."""
    return [ResidualUnits(layer) for layer in layers]


# -- the algorithm --------------------------------------------------------------------------
class GenerateAndTest:
    """Generate-and-test over ``layers`` (:class:`Units`, in forward order) of
    ``len(generators)`` seeds (module docstring).

    ``generators[s]`` draws seed ``s``'s coin flips and fresh units; ``reset_state`` zeroes
    the optimizer state of replaced entries (:data:`ResetState`). State per layer ``i``:
    ``utility[i]``, ``mean_act[i]`` and ``bias_correction[i]`` (``1 - eta ** age``),
    tensors ``(num_seeds, units)`` on the layer's device; ``birth[i]`` (host, the step at
    which each unit was born: ``ages(i) = step_count - birth[i]``) and ``num_replaced[i]``,
    host arrays per seed; ``accumulated[i]`` (the fractional count carried over), a list of
    floats per seed (plain Python numbers: the per-step count of one seed or of a few
    dozen costs less than numpy's per-call overhead, with the same float64 arithmetic).
    """

    def __init__(
        self,
        layers: Sequence[Units],
        generators: Sequence[torch.Generator],
        reset_state: ResetState,
        *,
        replacement_rate: float,
        decay_rate: float,
        maturity_threshold: int,
        utility: str = "adaptable_contribution",
        accumulate: bool = True,
    ) -> None:
        check_choice("utility", utility, UTILITIES)
        self.layers = list(layers)
        self.generators = list(generators)
        if any(u.num_seeds != len(self.generators) for u in self.layers):
            raise ValueError(f"layers of {[u.num_seeds for u in self.layers]} seeds for "
                             f"{len(self.generators)} generators.")
        self.reset_state = reset_state
        self._replacement_rate = float(replacement_rate)
        self.decay_rate = float(decay_rate)
        self.maturity_threshold = int(maturity_threshold)
        self.utility_type = utility
        self.accumulate = bool(accumulate)
        self.step_count = 0
        n = len(self.generators)
        self.utility: list[torch.Tensor] = []
        self.mean_act: list[torch.Tensor] = []
        self.bias_correction: list[torch.Tensor] = []
        self.birth: list[np.ndarray] = []
        for u in self.layers:
            for stat in (self.utility, self.mean_act, self.bias_correction):
                stat.append(torch.zeros(n, u.num_units, device=u.device, dtype=u.dtype))
            self.birth.append(np.zeros((n, u.num_units), dtype=np.int64))
        self.accumulated: list[list[float]] = [[0.0] * n for _ in self.layers]
        self.num_replaced = [np.zeros(n, dtype=np.int64) for _ in self.layers]
        # Eligible units per seed (and replacement_rate times them): they change only when a
        # unit matures or is replaced, so they are recounted (host only) then, not every step.
        self._num_mature = [np.zeros(n, dtype=np.int64) for _ in self.layers]
        self._due_rate: list[list[float]] = [[0.0] * n for _ in self.layers]
        self._next_recount = [self.maturity_threshold + 1] * len(self.layers)
        # A network of nn.Modules (weights and activations that require grad) is measured
        # under no_grad; the many-seeds agent's batched tensors never require grad, and skip
        # its cost (a few microseconds a step).
        self._no_grad = any(not (isinstance(u, DenseUnits) and u.batched) for u in self.layers)

    @classmethod
    def from_config(cls, layers: Sequence[Units], generators: Sequence[torch.Generator],
                    reset_state: ResetState, cfg: GnTFields) -> GenerateAndTest:
        """Generate-and-test with the settings of a config's :class:`GnTFields`."""
        return cls(layers, generators, reset_state, replacement_rate=cfg.replacement_rate,
                   decay_rate=cfg.decay_rate, maturity_threshold=cfg.maturity_threshold,
                   utility=cfg.utility, accumulate=cfg.accumulate)

    @property
    def replacement_rate(self) -> float:
        """Fraction of the eligible units replaced per step (settable)."""
        return self._replacement_rate

    @replacement_rate.setter
    def replacement_rate(self, value: float) -> None:
        self._replacement_rate = float(value)
        for i in range(len(self.layers)):
            self._recount(i)

    @property
    def num_seeds(self) -> int:
        """Seeds (networks) of the layers."""
        return len(self.generators)

    def ages(self, layer: int) -> np.ndarray:
        """Ages ``(num_seeds, units)`` of a layer's units, in steps (host)."""
        return self.step_count - self.birth[layer]

    # -- the per-step update -------------------------------------------------------------
    def step(self, features: Sequence[torch.Tensor]) -> None:
        """Score every layer, then replace the units due in every layer.

        ``features[i]``: layer ``i``'s activations in the forward pass of the step just
        taken, as its :class:`Units` reads them; the weights are those after the step.
        """
        self.measure(features)
        self.generate()

    def _grad_mode(self) -> Any:
        return torch.no_grad() if self._no_grad else contextlib.nullcontext()

    def measure(self, features: Sequence[torch.Tensor]) -> None:
        """The test pass alone, every layer: statistics on the device, nothing on the host
        (so the many-seeds agent replays it inside its step's CUDA graph). :meth:`step` is
        ``measure`` then :meth:`generate`."""
        if len(features) != len(self.layers):
            raise ValueError(f"{len(features)} activations for {len(self.layers)} layers.")
        with self._grad_mode():
            self._measure(features)

    def _measure(self, features: Sequence[torch.Tensor]) -> None:
        eta = self.decay_rate
        adaptable = self.utility_type == "adaptable_contribution"
        for i, (units, h) in enumerate(zip(self.layers, features)):
            # 1 - eta ** age, kept by its recurrence c <- eta * c + (1 - eta) (0 at age 0).
            bias_correction = self.bias_correction[i].mul_(eta).add_(1.0 - eta)
            new_util = units.measure(h, self.mean_act[i], bias_correction, 1.0 - eta, adaptable)
            self.utility[i].lerp_(new_util, 1.0 - eta)

    def generate(self) -> None:
        """The step's count and generate pass, after :meth:`measure`: ages grow by one, the
        units due (counted on the host) are replaced."""
        with self._grad_mode():
            self._generate()

    def _generate(self) -> None:
        self.step_count += 1
        due = []
        for i in range(len(self.layers)):
            if self._replacement_rate == 0.0:
                continue
            if self.step_count >= self._next_recount[i]:
                self._recount(i)
            k = self._num_due(i)
            if k is None:  # nothing due in any seed (the common case)
                continue
            mature = self.ages(i) > self.maturity_threshold
            for s, ks in enumerate(k):
                kk = min(ks, int(self._num_mature[i][s]))
                if kk:
                    due.append((i, s, self._lowest(i, s, kk, mature[s])))
        for i, s, idx in due:
            self._replace(i, s, idx)
        for i in sorted({i for i, _, _ in due}):
            self._recount(i)

    def _num_due(self, i: int) -> list[int] | None:
        """Units due per seed in layer ``i`` (before the cap at the eligible count), or None
        when none is due in any seed: with ``n = replacement_rate * eligible``, with
        ``accumulate`` an accumulator gains ``n`` a step, its integer part is due and the
        fraction carries over; without, one unit with probability ``n`` when ``n < 1`` (a
        draw from the seed's generator), else ``int(n)``."""
        rate = self._due_rate[i]
        if self.accumulate:
            acc = [a + r for a, r in zip(self.accumulated[i], rate)]
            if max(acc) < 1.0:
                self.accumulated[i] = acc
                return None
            k = [int(a) for a in acc]
            self.accumulated[i] = [a - n for a, n in zip(acc, k)]
            return k
        k = [int(r) for r in rate]  # int(n) where n >= 1
        for s, r in enumerate(rate):
            if 0.0 < r < 1.0:
                k[s] = int(coin_flip(self.generators[s]) <= r)
        return k if any(k) else None

    def _recount(self, i: int) -> None:
        """Eligible units per seed of layer ``i``, and the step at which the next one matures."""
        ages = self.ages(i)
        mature = ages > self.maturity_threshold
        self._num_mature[i] = mature.sum(1)
        self._due_rate[i] = [self._replacement_rate * int(m) for m in self._num_mature[i]]
        young = ages[~mature]
        self._next_recount[i] = (self.step_count + self.maturity_threshold + 1 - int(young.max())
                                 if young.size else np.iinfo(np.int64).max)

    def _lowest(self, i: int, s: int, k: int, mature: np.ndarray) -> torch.Tensor:
        """The ``k`` eligible units (``mature``) of layer ``i`` of seed ``s`` of lowest
        bias-corrected utility, sorted."""
        # nan_to_num also maps +inf to the largest float: only immature units score inf,
        # so the k (<= number eligible) lowest are all eligible.
        score = torch.nan_to_num(self.utility[i][s] / self.bias_correction[i][s], nan=0.0)
        score = score.masked_fill(~torch.from_numpy(mature).to(score.device), math.inf)
        return torch.topk(score, k, largest=False).indices.sort().values

    # -- replacement -----------------------------------------------------------------------
    @torch.no_grad()
    def replace(self, layer: int, seed: int, indices: Any) -> None:
        """Replace units ``indices`` of hidden layer ``layer`` of seed ``seed`` by fresh ones
        (public so that tests and users can force a replacement; :meth:`step` replaces the
        lowest-utility eligible units)."""
        device = self.utility[layer].device
        idx = torch.unique(torch.as_tensor(indices, dtype=torch.long, device=device).reshape(-1))
        if idx.numel() == 0:
            return
        self._replace(layer, seed, idx)
        self._recount(layer)

    def _replace(self, i: int, s: int, idx: torch.Tensor) -> None:
        mean = self.mean_activation(i)[s][idx]
        self.layers[i].replace(s, idx, mean, self.generators[s], self.reset_state)
        self.utility[i][s][idx] = 0.0
        self.mean_act[i][s][idx] = 0.0
        self.bias_correction[i][s][idx] = 0.0
        self.birth[i][s][idx.cpu().numpy()] = self.step_count
        self.num_replaced[i][s] += idx.numel()

    @torch.no_grad()
    def mean_activation(self, layer: int) -> torch.Tensor:
        """The bias-corrected running mean activation ``(num_seeds, units)`` of a layer's
        units (0 at age 0)."""
        bias_correction = self.bias_correction[layer]
        mean = self.mean_act[layer] / bias_correction
        return torch.where(bias_correction > 0, mean, torch.zeros_like(mean))

    # -- state -----------------------------------------------------------------------------
    def buffers(self) -> list[torch.Tensor]:
        """Utilities, mean activations and bias corrections of every layer."""
        return [*self.utility, *self.mean_act, *self.bias_correction]

    _TENSORS = ("utility", "mean_act", "bias_correction")
    _ARRAYS = ("birth", "num_replaced")

    def state_dict(self) -> dict[str, Any]:
        """Step count and per-layer statistics (copies: tensors, numpy arrays, floats)."""
        state: dict[str, Any] = {"step_count": self.step_count}
        for name in self._TENSORS:
            state[name] = [t.clone() for t in getattr(self, name)]
        for name in self._ARRAYS:
            state[name] = [a.copy() for a in getattr(self, name)]
        state["accumulated"] = [list(a) for a in self.accumulated]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (and recount the eligible units)."""
        self.step_count = int(state["step_count"])
        for name in self._TENSORS:
            for dst, src in zip(getattr(self, name), state[name], strict=True):
                dst.copy_(torch.as_tensor(src))
        for name in self._ARRAYS:
            for dst, src in zip(getattr(self, name), state[name], strict=True):
                dst[...] = np.asarray(src)
        if len(state["accumulated"]) != len(self.accumulated):
            raise ValueError(f"a state of {len(state['accumulated'])} layers for "
                             f"{len(self.accumulated)}.")
        self.accumulated = [[float(a) for a in layer] for layer in state["accumulated"]]
        for i in range(len(self.layers)):
            self._recount(i)


class SingleSeed:
    """A :class:`GenerateAndTest` of one seed seen without its seed dimension: per layer,
    ``utility[i]``, ``mean_act[i]``, ``bias_correction[i]`` (views of the seed's row),
    ``age[i]`` (a CPU tensor), ``num_replaced`` and ``accumulated`` (plain numbers);
    ``replace(layer, indices)``. Settings (``replacement_rate``, ``maturity_threshold``,
    ``decay_rate``) read and write the algorithm's."""

    def __init__(self, gnt: GenerateAndTest) -> None:
        if gnt.num_seeds != 1:
            raise ValueError(f"a single-seed view of {gnt.num_seeds} seeds.")
        self.gnt = gnt

    @classmethod
    def of(cls, layers: Sequence[Units], generator: torch.Generator, reset_state: ResetState,
           cfg: GnTFields) -> SingleSeed:
        """Generate-and-test of one network with a config's settings."""
        return cls(GenerateAndTest.from_config(layers, [generator], reset_state, cfg))

    def step(self, features: Sequence[torch.Tensor]) -> None:
        """:meth:`GenerateAndTest.step` (the activations without a seed dimension)."""
        self.gnt.step(features)

    def replace(self, layer: int, indices: Any) -> None:
        """Replace units ``indices`` of hidden layer ``layer``."""
        self.gnt.replace(layer, 0, indices)

    def mean_activation(self, layer: int) -> torch.Tensor:
        """Bias-corrected running mean activation of each unit of a layer (0 at age 0)."""
        return self.gnt.mean_activation(layer)[0]

    layers = property(lambda self: self.gnt.layers)
    pairs = property(lambda self: [u.modules for u in self.gnt.layers])
    generator = property(lambda self: self.gnt.generators[0])
    step_count = property(lambda self: self.gnt.step_count)
    utility = property(lambda self: [t[0] for t in self.gnt.utility])
    mean_act = property(lambda self: [t[0] for t in self.gnt.mean_act])
    bias_correction = property(lambda self: [t[0] for t in self.gnt.bias_correction])
    age = property(lambda self: [torch.from_numpy(self.gnt.ages(i)[0])
                                 for i in range(len(self.gnt.layers))])
    num_replaced = property(lambda self: [int(n[0]) for n in self.gnt.num_replaced])
    accumulated = property(lambda self: [float(a[0]) for a in self.gnt.accumulated])

    def _setting(name: str) -> property:  # type: ignore[misc]
        return property(lambda self: getattr(self.gnt, name),
                        lambda self, value: setattr(self.gnt, name, value))

    replacement_rate = _setting("replacement_rate")
    maturity_threshold = _setting("maturity_threshold")
    decay_rate = _setting("decay_rate")
    utility_type = _setting("utility_type")
    accumulate = _setting("accumulate")
    del _setting

    def buffers(self) -> list[torch.Tensor]:
        """The statistics tensors (:meth:`GenerateAndTest.buffers`)."""
        return self.gnt.buffers()

    def state_dict(self) -> dict[str, Any]:
        """:meth:`GenerateAndTest.state_dict`."""
        return self.gnt.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """:meth:`GenerateAndTest.load_state_dict`."""
        self.gnt.load_state_dict(state)
