"""ResNet-18 of the class-incremental CIFAR-100 experiment, and generate-and-test for it.

The network follows the paper's code (``lop/nets/torchvision_modified_resnet.py``, a
modified ``torchvision.models.resnet18``): a 3x3 stride-1 stem convolution 3 -> 64 with
batch norm and ReLU, **no max-pool**, four stages of two BasicBlocks (64, 128, 256, 512
channels; stages 2-4 start with stride 2 and a 1x1 conv + batch-norm shortcut), global
average pooling and a linear head. Every convolution has a bias (the paper's code sets
``bias=True`` where torchvision has none). ``width`` scales the channel counts (the cpu
and smoke presets use a narrow net; ``width=1`` is the paper's ResNet-18).

Initialization (``kaiming_init_resnet_module`` in the paper's code, applied after
construction): conv weights Kaiming-normal with ReLU's gain and fan-in, ``N(0, 2 / fan_in)``;
the head Kaiming-normal with gain 1, ``N(0, 1 / fan_in)``; all biases 0; batch-norm weight 1,
bias 0, running mean 0, running variance 1. Every draw comes from the generator passed in:
layers are created on the ``meta`` device (no default init, no global RNG) and filled
afterwards.

:class:`ResidualGenerateAndTest` is continual backprop for the ResNet: its units are the
output channels of convolutions (each with its batch norm), listed by
:meth:`ResNet18.channel_layers`: as the paper's code (``lop/algos/res_gnt.py``), every
convolution outside the downsample shortcuts (``"all_convs"``), or each block's first
convolution only (``"first_convs"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.unit_statistics import UnitStatistics, reset_optimizer_entries
from lop_bench.config import check_choice
from lop_bench.errors import InvalidConfigError

__all__ = [
    "STAGE_CHANNELS",
    "UTILITIES",
    "COVERAGES",
    "stage_channels",
    "BasicBlock",
    "ChannelLayer",
    "ResNet18",
    "ResidualGenerateAndTest",
]

STAGE_CHANNELS = (64, 128, 256, 512)
"""Channels of ResNet-18's four stages at ``width=1`` (the stem has as many as stage 1)."""

UTILITIES = ("adaptable_contribution", "contribution")
"""Utilities of :class:`ResidualGenerateAndTest` (as :mod:`baselines.continual_backprop`)."""

COVERAGES = ("all_convs", "first_convs")
"""Which convolutions' channels generate-and-test replaces (:meth:`ResNet18.channel_layers`)."""

_RELU_GAIN = math.sqrt(2.0)


def stage_channels(width: float) -> tuple[int, int, int, int]:
    """The four stage widths for a width factor: ``round(c * width)``, at least 1."""
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise InvalidConfigError(f"width must be a number > 0, got {width!r}.")
    return tuple(max(1, int(round(c * width))) for c in STAGE_CHANNELS)  # type: ignore[return-value]


def _conv_std(conv: nn.Conv2d) -> float:
    """Kaiming-normal standard deviation (ReLU gain, fan-in) of a conv layer's weights."""
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    return _RELU_GAIN / math.sqrt(fan_in)


@torch.no_grad()
def _reset_bn(bn: nn.BatchNorm2d) -> None:
    bn.weight.fill_(1.0)
    bn.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0)
    bn.num_batches_tracked.zero_()


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm; ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the identity, or a 1x1 conv (stride ``stride``) and batch norm when the
    shape changes. :meth:`forward_with_mid` also returns the first conv's activation (the
    units of generate-and-test).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        meta = {"device": "meta"}
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=True, **meta)
        self.bn1 = nn.BatchNorm2d(channels, **meta)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=True, **meta)
        self.bn2 = nn.BatchNorm2d(channels, **meta)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, 0, bias=True, **meta),
                nn.BatchNorm2d(channels, **meta),
            )

    def forward_with_mid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(block output, activation after conv1 -> bn1 -> ReLU)``."""
        mid = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(mid))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity), mid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output."""
        return self.forward_with_mid(x)[0]


@dataclass(frozen=True, eq=False)
class ChannelLayer:
    """A convolution whose output channels generate-and-test may replace.

    Channel ``c``'s incoming weights are ``conv.weight[c]``, ``conv.bias[c]`` and ``bn``'s
    affine pair and running statistics of ``c``; its outgoing weights are ``next``'s input
    slice: ``next.weight[:, c]``, a conv's whole kernel (read through ``next_bn``) or the
    head's column (``next`` a linear layer reading the globally pooled channels,
    ``next_bn`` ``None``).
    """

    conv: nn.Conv2d
    bn: nn.BatchNorm2d
    next: nn.Conv2d | nn.Linear
    next_bn: nn.BatchNorm2d | None


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 images: 3x3 stem, no max-pool, 4 x 2 BasicBlocks, linear head.

    ``blocks`` lists the eight BasicBlocks in forward order; ``fc`` is the head.
    ``forward_with_features`` returns the logits and the hidden activations the paper's
    analysis uses: the stem's output, each block's first-conv activation and output (the
    last block's output replaced by its global average, the head's input), 17 tensors.

    >>> g = torch.Generator().manual_seed(0)
    >>> net = ResNet18(100, width=0.125, generator=g)
    >>> logits, feats = net.forward_with_features(torch.zeros(2, 3, 32, 32))  # (2, 100)
    """

    def __init__(
        self,
        num_classes: int = 100,
        width: float = 1.0,
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise InvalidConfigError(f"num_classes must be a positive integer, got {num_classes!r}.")
        self.width = float(width)
        self.channels = stage_channels(width)
        c0 = self.channels[0]
        self.conv1 = nn.Conv2d(in_channels, c0, 3, 1, 1, bias=True, device="meta")
        self.bn1 = nn.BatchNorm2d(c0, device="meta")
        blocks = []
        prev = c0
        for stage, c in enumerate(self.channels):
            for j in range(2):
                stride = 2 if stage > 0 and j == 0 else 1
                blocks.append(BasicBlock(prev, c, stride))
                prev = c
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(prev, num_classes, device="meta")
        self.to_empty(device=device if device is not None else generator.device)
        object.__setattr__(self, "_blocks", tuple(self.blocks))
        self.reset_parameters(generator)

    @property
    def num_classes(self) -> int:
        """Number of outputs of the head."""
        return self.fc.out_features

    # -- initialization ------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Re-initialize every layer from ``generator`` (module order; head last)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0.0, _conv_std(m), generator=generator)
                m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                _reset_bn(m)
        self.reset_head(generator)

    @torch.no_grad()
    def reset_head(self, generator: torch.Generator) -> None:
        """Kaiming-normal (gain 1) head weights from ``generator``, zero head bias."""
        self.fc.weight.normal_(0.0, 1.0 / math.sqrt(self.fc.in_features), generator=generator)
        self.fc.bias.zero_()

    # -- forward -------------------------------------------------------------------------
    def forward_with_features(
        self, x: torch.Tensor, *, all_features: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and hidden activations (see the class docstring) from one forward pass.

        With ``all_features=False`` the list holds only the eight blocks' first-conv
        activations. Either list is aligned with :meth:`channel_layers`: ``"all_convs"``
        reads the 17 tensors of ``all_features=True``, ``"first_convs"`` the eight of
        ``all_features=False``.
        """
        h = F.relu(self.bn1(self.conv1(x)))
        feats = [h] if all_features else []
        last = len(self._blocks) - 1
        for i, block in enumerate(self._blocks):
            h, mid = block.forward_with_mid(h)
            feats.append(mid)
            if all_features and i < last:
                feats.append(h)
        pooled = h.mean(dim=(2, 3))
        if all_features:
            feats.append(pooled)
        return F.linear(pooled, self.fc.weight, self.fc.bias), feats

    def channel_layers(self, coverage: str = "all_convs") -> list[ChannelLayer]:
        """The convolutions whose channels generate-and-test replaces, in forward order.

        ``"all_convs"`` (the paper's code, ``res_gnt.py``'s ``get_weight_layers``): every
        convolution outside the downsample shortcuts, 17 at depth 18: the stem, read by
        block 0's first conv; each block's first conv, read by its second; each block's
        second conv, read by the next block's first conv or, for the last block, by the
        head (through the global pooling). The stem's and the second convs' channels are
        also read by the next block's shortcut, which is left alone (see
        :class:`ResidualGenerateAndTest`). ``"first_convs"``: each block's first conv
        only, read by the block's second conv alone.
        """
        check_choice("coverage", coverage, COVERAGES)
        blocks = self._blocks
        if coverage == "first_convs":
            return [ChannelLayer(b.conv1, b.bn1, b.conv2, b.bn2) for b in blocks]
        layers = [ChannelLayer(self.conv1, self.bn1, blocks[0].conv1, blocks[0].bn1)]
        for k, b in enumerate(blocks):
            layers.append(ChannelLayer(b.conv1, b.bn1, b.conv2, b.bn2))
            if k + 1 < len(blocks):
                layers.append(ChannelLayer(b.conv2, b.bn2, blocks[k + 1].conv1, blocks[k + 1].bn1))
            else:
                layers.append(ChannelLayer(b.conv2, b.bn2, self.fc, None))
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, 3, 32, 32)``."""
        h = F.relu(self.bn1(self.conv1(x)))
        for block in self._blocks:
            h = block(h)
        return self.fc(h.mean(dim=(2, 3)))


class ResidualGenerateAndTest(UnitStatistics):
    """Generate-and-test over the output channels of a ResNet's convolutions.

    A unit is channel ``c`` of a :class:`ChannelLayer`'s ``conv``, after its batch norm and
    ReLU (and, for a block's second conv, after the residual addition and its ReLU: the
    block's output, as the next layer reads it; pooled for the last block, as the head
    reads it). After every optimizer step (:meth:`step`, given each layer's activation of
    that step, ``(N, C, H, W)`` or pooled ``(N, C)``), in two passes as the paper's code:

    1. *Test*, every layer. Ages grow by one; the running mean activation ``f`` (averaged
       over batch and positions) and the utility ``u`` are exponential averages with decay
       ``eta``, bias-corrected by ``1 - eta ** age`` as in :mod:`baselines.continual_backprop`.
       ``"contribution"`` (the CIFAR-100 config) is ``mean |outgoing weights| * mean |h|``;
       ``"adaptable_contribution"`` also takes ``|h - f|`` and divides by the mean
       ``|incoming weights|``. Units older than ``maturity_threshold`` are eligible; the
       count due (``replacement_rate * eligible`` in expectation, ``accumulate`` as in
       :class:`~baselines.unit_statistics.UnitStatistics`) of lowest-utility eligible
       units are chosen.
    2. *Generate*, every layer: the chosen channels are replaced (:meth:`replace`).

    :meth:`replace`: the removed channel's mean contribution to ``next``'s output,
    ``f_c * sum over the kernel of next.weight[o, c]``, is subtracted from ``next_bn``'s
    running mean (a next conv's output is only ever read through its batch norm), or, for
    the head, ``f_c * fc.weight[:, c]`` is added to its bias. Then ``conv.weight[c]`` is
    redrawn from the init distribution (``N(0, 2 / fan_in)``, from ``generator``),
    ``conv.bias[c]`` zeroed, ``bn``'s weight, bias, running mean and variance of ``c``
    reset to 1, 0, 0, 1, ``next.weight[:, c]`` zeroed, and the optimizer state (SGD
    momentum, Adam moments) of all of these entries reset. In eval mode the output changes
    only by the removed unit's deviation from its mean (DESIGN.md section 5), where the
    channel is read by ``next`` alone: a block's first conv. In train mode ``next_bn``
    normalizes with the batch's own mean, so a constant shift never mattered there.

    The residual stream: the stem's channels and the blocks' output channels (a second
    conv's ``bn2`` plus the shortcut) are also read by the next block's shortcut (the
    identity, or a 1x1 downsample conv, never replaced), which generate-and-test leaves
    alone, as the paper's code does. For these channels the zeroed outgoing weights and
    the bias correction cover the next block's first conv only (which loses the whole
    channel, shortcut part included), while the shortcut keeps reading the channel: its
    fresh conv, batch-normalized with weight 1 and bias 0, enters the residual stream at
    once, so such a replacement does change the network's output (a fresh unit of a plain
    network, or of a block's first conv, is hidden by its zero outgoing weights).

    Zero padding: a channel with constant activation ``f`` contributes
    ``f * sum(next.weight[o, c])`` only where the whole 3x3 window lies inside the image;
    at the border part of the window reads padding zeros. The correction is therefore exact
    (up to float rounding) away from the border for a constant non-zero activation, and
    exact everywhere for a dead channel (constant 0: nothing moves, nothing changes).

    Differences from the paper's code (``lop/algos/res_gnt.py``): the number due is
    ``replacement_rate * eligible`` (the code: ``* all channels``); the mean activation and
    the utility are bias-corrected exponential averages (the code sums ``(1 - eta) * |h|``
    without ever decaying it, and multiplies that sum by the current outgoing weights when
    it replaces); the removed unit's mean contribution is kept (the code drops it); the
    optimizer state of replaced entries is reset (the code keeps the momentum).
    """

    def __init__(
        self,
        layers: Sequence[ChannelLayer],
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        *,
        replacement_rate: float,
        decay_rate: float,
        maturity_threshold: int,
        utility: str = "contribution",
        accumulate: bool = True,
    ) -> None:
        check_choice("utility", utility, UTILITIES)
        self.layers = list(layers)
        if not all(isinstance(layer, ChannelLayer) for layer in self.layers):
            raise TypeError("layers must be ChannelLayer entries (ResNet18.channel_layers()).")
        self.optimizer = optimizer
        self.generator = generator
        self.replacement_rate = float(replacement_rate)
        self.decay_rate = float(decay_rate)
        self.maturity_threshold = int(maturity_threshold)
        self.utility_type = utility
        self.accumulate = bool(accumulate)
        self.step_count = 0
        self._init_statistics([layer.conv.weight for layer in self.layers])

    @torch.no_grad()
    def step(self, features: list[torch.Tensor]) -> None:
        """Update the statistics of every layer from ``features[i]`` (layer ``i``'s
        activation of the step just taken, ``(N, C, H, W)`` or pooled ``(N, C)``), then
        replace the units due in every layer."""
        if len(features) != len(self.layers):
            raise ValueError(f"{len(features)} activations for {len(self.layers)} layers.")
        self.step_count += 1
        due = []
        for i, h in enumerate(features):
            self._update(i, h.detach())
            k = self._num_due(i)
            if k:
                due.append((i, self._lowest(i, k)))
        for i, idx in due:
            self._replace(i, idx)
            self._count_replaced(i, idx.numel())

    def _update(self, i: int, h: torch.Tensor) -> None:
        """Age, mean activation and utility of layer ``i``'s channels."""
        eta = self.decay_rate
        layer = self.layers[i]
        dims = (0, *range(2, h.dim()))
        self.age[i].add_(1)
        bc = self.bias_correction[i].mul_(eta).add_(1.0 - eta)
        mean_act = self.mean_act[i].lerp_(h.mean(dim=dims), 1.0 - eta)
        w_out = layer.next.weight
        out_mag = w_out.abs().mean(dim=(0, *range(2, w_out.dim())))
        if self.utility_type == "adaptable_contribution":
            f_hat = (mean_act / bc).view(1, -1, *([1] * (h.dim() - 2)))
            in_mag = layer.conv.weight.abs().mean(dim=(1, 2, 3))
            new_util = out_mag.mul_((h - f_hat).abs_().mean(dim=dims)).div_(in_mag)
        else:
            new_util = out_mag.mul_(h.abs().mean(dim=dims))
        self.utility[i].lerp_(new_util, 1.0 - eta)

    @torch.no_grad()
    def mean_activation(self, layer_index: int) -> torch.Tensor:
        """Bias-corrected running mean activation of each channel of a layer (0 at age 0)."""
        bc = self.bias_correction[layer_index]
        mean = self.mean_act[layer_index] / bc
        return torch.where(bc > 0, mean, torch.zeros_like(mean))

    @torch.no_grad()
    def replace(self, layer_index: int, indices: Any) -> None:
        """Replace channels ``indices`` of layer ``layer_index`` by fresh ones (public so that
        tests and users can force a replacement; :meth:`step` replaces the lowest-utility
        eligible channels)."""
        conv = self.layers[layer_index].conv
        idx = torch.unique(
            torch.as_tensor(indices, dtype=torch.long, device=conv.weight.device).reshape(-1)
        )
        if idx.numel() == 0:
            return
        self._replace(layer_index, idx)
        self.num_replaced[layer_index] += idx.numel()
        self._recount(layer_index)

    def _replace(self, i: int, idx: torch.Tensor) -> None:
        """:meth:`replace` of the sorted, distinct channels ``idx``, without the counts."""
        layer = self.layers[i]
        conv, bn, nxt = layer.conv, layer.bn, layer.next
        k = idx.numel()
        # 1. The removed channels' mean contribution to the next layer's output, moved into
        #    its batch norm's running mean or the head's bias (before the mean activation
        #    and the outgoing weights are reset).
        mean = self.mean_activation(i)[idx]
        w_next = nxt.weight
        if layer.next_bn is not None:
            kernel_sums = w_next[:, idx].sum(dim=(2, 3))  # (out, k)
            layer.next_bn.running_mean.sub_(kernel_sums @ mean)
        else:
            nxt.bias.add_(w_next[:, idx] @ mean)
        # 2. Fresh incoming weights, batch norm reset, zero outgoing weights.
        w = conv.weight
        fresh = torch.empty((k, *w.shape[1:]), device=w.device, dtype=w.dtype)
        w[idx] = fresh.normal_(0.0, _conv_std(conv), generator=self.generator)
        conv.bias[idx] = 0.0
        bn.weight[idx] = 1.0
        bn.bias[idx] = 0.0
        bn.running_mean[idx] = 0.0
        bn.running_var[idx] = 1.0
        w_next[:, idx] = 0.0
        # 3. Optimizer state of every reset entry.
        for p in (conv.weight, conv.bias, bn.weight, bn.bias):
            reset_optimizer_entries(self.optimizer, p, idx, 0)
        reset_optimizer_entries(self.optimizer, w_next, idx, 1)
        # 4. Statistics.
        self.utility[i][idx] = 0.0
        self.mean_act[i][idx] = 0.0
        self.age[i][idx] = 0
        self.bias_correction[i][idx] = 0.0
