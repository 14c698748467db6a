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

:class:`ResidualGenerateAndTest` is continual backprop for the residual blocks: its units
are the channels of each BasicBlock's first convolution (after its batch norm and ReLU).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.continual_backprop import UnitStatistics, reset_optimizer_entries
from lop_bench.config import check_choice
from lop_bench.errors import InvalidConfigError

__all__ = [
    "STAGE_CHANNELS",
    "UTILITIES",
    "stage_channels",
    "BasicBlock",
    "ResNet18",
    "ResidualGenerateAndTest",
]

STAGE_CHANNELS = (64, 128, 256, 512)
"""Channels of ResNet-18's four stages at ``width=1`` (the stem has as many as stage 1)."""

UTILITIES = ("adaptable_contribution", "contribution")
"""Utilities of :class:`ResidualGenerateAndTest` (as :mod:`baselines.continual_backprop`)."""

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
        activations (what generate-and-test needs).
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for images ``(N, 3, 32, 32)``."""
        h = F.relu(self.bn1(self.conv1(x)))
        for block in self._blocks:
            h = block(h)
        return self.fc(h.mean(dim=(2, 3)))


class ResidualGenerateAndTest(UnitStatistics):
    """Generate-and-test over the channels of each BasicBlock's first convolution.

    A unit is channel ``c`` of ``block.conv1`` after ``block.bn1`` and the ReLU; its incoming
    weights are ``conv1.weight[c]`` and ``conv1.bias[c]`` (and ``bn1``'s affine pair), its
    outgoing weights ``conv2.weight[:, c]``. After every optimizer step
    (:meth:`step`, given the blocks' first-conv activations of that step):

    1. *Test.* Ages grow by one; the running mean activation ``f`` (averaged over batch and
       positions) and the utility ``u`` are exponential averages with decay ``eta``,
       bias-corrected by ``1 - eta ** age`` as in :mod:`baselines.continual_backprop`.
       ``"contribution"`` (the image experiments) is ``mean |outgoing weights| * mean |h|``;
       ``"adaptable_contribution"`` also takes ``|h - f|`` and divides by the mean
       ``|incoming weights|``.
    2. *Generate.* Units older than ``maturity_threshold`` are eligible; a per-block
       accumulator gains ``replacement_rate * eligible`` a step, and its integer part is the
       number of lowest-utility eligible units replaced now (the fraction carries over).

    :meth:`replace`: the removed channel's mean contribution to ``conv2``'s output,
    ``f_c * sum over the kernel of conv2.weight[o, c]``, is subtracted from ``bn2``'s running
    mean (``conv2``'s output is only ever read through ``bn2``). Then ``conv1.weight[c]``
    is redrawn from the init distribution (``N(0, 2 / fan_in)``, from ``generator``),
    ``conv1.bias[c]`` zeroed, ``bn1``'s weight, bias, running mean and variance of ``c``
    reset to 1, 0, 0, 1, ``conv2.weight[:, c]`` zeroed, and the optimizer state (SGD
    momentum, Adam moments) of all of these entries reset. So in eval mode the fresh unit
    adds nothing, and the output changes only by the removed unit's deviation from its
    mean (DESIGN.md section 5). In train mode ``bn2`` normalizes with the batch's own
    mean, so a constant shift never mattered there.

    Zero padding: a channel with constant activation ``f`` contributes
    ``f * sum(conv2.weight[o, c])`` only where the whole 3x3 window lies inside the image;
    at the border part of the window reads padding zeros. The correction is therefore exact
    (up to float rounding) away from the border for a constant non-zero activation, and
    exact everywhere for a dead channel (constant 0: nothing moves, nothing changes).

    Differences from the paper's code (``lop/algos/res_gnt.py``): units are only the
    blocks' first-conv channels (the paper's code also replaces the stem's and every block
    output's channels, whose "next layer" ignores the skip connection); the number due is
    ``replacement_rate * eligible`` (the code: ``* all channels``); the mean activation is
    a bias-corrected exponential average (the code sums ``(1 - eta) * |h|`` without
    decaying it); the removed unit's mean contribution is kept (the code drops it);
    the optimizer state of replaced entries is reset (the code keeps the momentum).
    """

    def __init__(
        self,
        blocks: list[BasicBlock] | tuple[BasicBlock, ...],
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        *,
        replacement_rate: float,
        decay_rate: float,
        maturity_threshold: int,
        utility: str = "contribution",
    ) -> None:
        check_choice("utility", utility, UTILITIES)
        self.blocks = list(blocks)
        self.optimizer = optimizer
        self.generator = generator
        self.replacement_rate = float(replacement_rate)
        self.decay_rate = float(decay_rate)
        self.maturity_threshold = int(maturity_threshold)
        self.utility_type = utility
        self.step_count = 0
        self._init_statistics([block.conv1.weight for block in self.blocks])

    @torch.no_grad()
    def step(self, features: list[torch.Tensor]) -> None:
        """Update the statistics from ``features[i]`` (block ``i``'s first-conv activation,
        ``(N, C, H, W)``, of the step just taken) and replace the units due."""
        self.step_count += 1
        eta = self.decay_rate
        adaptable = self.utility_type == "adaptable_contribution"
        for i, (block, h) in enumerate(zip(self.blocks, features, strict=True)):
            h = h.detach()
            self.age[i].add_(1)
            bc = self.bias_correction[i].mul_(eta).add_(1.0 - eta)
            mean_act = self.mean_act[i].lerp_(h.mean(dim=(0, 2, 3)), 1.0 - eta)
            out_mag = block.conv2.weight.abs().mean(dim=(0, 2, 3))
            if adaptable:
                dev = (h - (mean_act / bc).view(1, -1, 1, 1)).abs_().mean(dim=(0, 2, 3))
                in_mag = block.conv1.weight.abs().mean(dim=(1, 2, 3))
                new_util = out_mag.mul_(dev).div_(in_mag)
            else:
                new_util = out_mag.mul_(h.abs().mean(dim=(0, 2, 3)))
            self.utility[i].lerp_(new_util, 1.0 - eta)
            k = self._num_due(i)
            if k:
                score = torch.nan_to_num(self.utility[i] / bc, nan=0.0)
                score = score.masked_fill(self.age[i] <= self.maturity_threshold, math.inf)
                self.replace(i, torch.topk(score, k, largest=False).indices)

    @torch.no_grad()
    def mean_activation(self, block_index: int) -> torch.Tensor:
        """Bias-corrected running mean activation of each channel of a block (0 at age 0)."""
        bc = self.bias_correction[block_index]
        mean = self.mean_act[block_index] / bc
        return torch.where(bc > 0, mean, torch.zeros_like(mean))

    @torch.no_grad()
    def replace(self, block_index: int, indices: Any) -> None:
        """Replace channels ``indices`` of block ``block_index``'s first conv by fresh ones."""
        i = block_index
        block = self.blocks[i]
        conv1, bn1, conv2, bn2 = block.conv1, block.bn1, block.conv2, block.bn2
        idx = torch.unique(
            torch.as_tensor(indices, dtype=torch.long, device=conv1.weight.device).reshape(-1)
        )
        k = idx.numel()
        if k == 0:
            return
        # 1. The removed channels' mean contribution to conv2's output, moved into bn2's
        #    running mean (before the mean activation and the outgoing weights are reset).
        mean = self.mean_activation(i)[idx]
        kernel_sums = conv2.weight[:, idx].sum(dim=(2, 3))  # (out, k)
        bn2.running_mean.sub_(kernel_sums @ mean)
        # 2. Fresh incoming weights, batch norm reset, zero outgoing weights.
        w = conv1.weight
        fresh = torch.empty((k, *w.shape[1:]), device=w.device, dtype=w.dtype)
        w[idx] = fresh.normal_(0.0, _conv_std(conv1), generator=self.generator)
        conv1.bias[idx] = 0.0
        bn1.weight[idx] = 1.0
        bn1.bias[idx] = 0.0
        bn1.running_mean[idx] = 0.0
        bn1.running_var[idx] = 1.0
        conv2.weight[:, idx] = 0.0
        # 3. Optimizer state of every reset entry.
        for p in (conv1.weight, conv1.bias, bn1.weight, bn1.bias):
            reset_optimizer_entries(self.optimizer, p, idx, 0)
        reset_optimizer_entries(self.optimizer, conv2.weight, idx, 1)
        # 4. Statistics.
        self.utility[i][idx] = 0.0
        self.mean_act[i][idx] = 0.0
        self.age[i][idx] = 0
        self.bias_correction[i][idx] = 0.0
        self.num_replaced[i] += k
        self._recount(i)
