"""The networks of the paper's experiments, initialized from an explicit ``torch.Generator``.

Initialization follows the paper's code (``lop/nets/ffnn.py``): Kaiming-uniform weights,
``U(-b, b)`` with ``b = gain * sqrt(3 / fan_in)``, and zero biases. Hidden layers use the
gain of their activation (``torch.nn.init.calculate_gain``; swish and ELU take ReLU's gain,
as in the paper's code, since torch defines none for them); the output layer uses gain 1
("linear"). ``init="lecun"`` (the paper's PPO networks, ``lecun_init`` in
``lop/utils/miscellaneous.py``) uses gain 1 for every layer: ``b = sqrt(3 / fan_in)``. Every draw comes from the generator passed in, never from torch's global RNG:
layers are created on the ``meta`` device (no default init) and filled afterwards.

:class:`ConvNet` (Continual ImageNet) follows the paper's ``lop/nets/conv_net.py``, which
keeps torch's default init of ``nn.Conv2d`` / ``nn.Linear``: weights *and* biases
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (:func:`default_init_bound`); its continual-backprop
code draws fresh units from the same bound (``get_layer_bound``, ``init="default"``).

:class:`ResNet18` (class-incremental CIFAR-100) follows the paper's code
(``lop/nets/torchvision_modified_resnet.py``, a modified ``torchvision.models.resnet18``): a
3x3 stride-1 stem convolution with batch norm and ReLU, **no max-pool**, four stages of two
BasicBlocks (64, 128, 256, 512 channels; stages 2-4 start with stride 2 and a 1x1 conv +
batch-norm shortcut), global average pooling and a linear head. Every convolution has a bias
(the paper's code sets ``bias=True`` where torchvision has none). ``width`` scales the
channel counts (the cpu and smoke presets use a narrow net; ``width=1`` is the paper's).
Its init is ``kaiming_init_resnet_module`` of the paper's code: conv weights
Kaiming-normal with ReLU's gain and fan-in, ``N(0, 2 / fan_in)``; the head ``N(0, 1 /
fan_in)``; all biases 0; batch-norm weight 1, bias 0, running mean 0, running variance 1.

Variants of :class:`MLP` and :class:`ConvNet` (the ``crelu`` and ``layernorm`` reference
agents): ``activation="crelu"`` (:class:`~baselines.core.activations.CReLU`: a hidden layer
of ``k`` units gives ``2 k`` features, so the next layer's fan-in is ``2 k``; the features
are what diagnostics see) and ``layer_norm=True`` (a normalization with its affine
parameters between each hidden layer's pre-activation and its activation, Lyle et al.
2024's placement: ``nn.LayerNorm`` over a dense layer's units, ``nn.GroupNorm(1, C)`` over a
conv layer's (C, H, W) with one scale and shift per channel). The normalizations start at
scale 1, shift 0 and draw nothing, so the linear layers' init is the same; with
``layer_norm=False`` and another activation the networks are exactly the paper's.
Generate-and-test (``unit_pairs``) is not defined for either variant.

A leaf of ``baselines``: imports torch and ``lop_bench`` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.core.activations import CReLU, crelu
from lop_bench.config import check_choice
from lop_bench.errors import InvalidConfigError

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "activation_gain",
    "feature_width",
    "kaiming_uniform_bound",
    "default_init_bound",
    "MLP",
    "ConvNet",
    "STAGE_CHANNELS",
    "COVERAGES",
    "stage_channels",
    "conv_std",
    "BasicBlock",
    "ChannelLayer",
    "ResNet18",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,  # negative slope 0.01, torch's default (and calculate_gain's)
    "swish": nn.SiLU,
    "linear": nn.Identity,
    "crelu": CReLU,  # [relu(z), relu(-z)]: twice the features (feature_width)
}

# The same activations as plain functions: calling them skips nn.Module.__call__, which
# matters at batch size 1 and millions of steps.
_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "elu": F.elu,
    "leaky_relu": F.leaky_relu,
    "swish": F.silu,
    "linear": lambda x: x,
    "crelu": lambda x: crelu(x, -1),
}

CONV_ACTIVATIONS = ("relu", "crelu")
"""Activations of :class:`ConvNet`: the paper's ReLU, or CReLU."""


def feature_width(activation: str, units: int) -> int:
    """Features a hidden layer of ``units`` units gives: ``2 * units`` for CReLU, else
    ``units`` (the next layer's fan-in)."""
    return 2 * units if activation == "crelu" else units


INITS = ("kaiming", "lecun")
"""Weight inits of :class:`MLP`: Kaiming-uniform with the activation's gain, or LeCun-uniform."""


def activation_gain(activation: str) -> float:
    """The Kaiming gain of ``activation`` (swish and ELU use ReLU's, as the paper's code;
    CReLU ReLU's too: with the next layer's fan-in ``2 k`` counted, ``sqrt(2)`` keeps the
    variance, since ``relu(z)**2 + relu(-z)**2 = z**2``)."""
    check_choice("activation", activation, tuple(ACTIVATIONS))
    if activation in ("swish", "elu", "crelu"):
        activation = "relu"
    return torch.nn.init.calculate_gain(activation)


def kaiming_uniform_bound(fan_in: int, activation: str) -> float:
    """Bound ``b`` of the Kaiming-uniform init ``U(-b, b)``: ``gain * sqrt(3 / fan_in)``."""
    return activation_gain(activation) * math.sqrt(3.0 / fan_in)


def default_init_bound(fan_in: int) -> float:
    """Bound of torch's default init of ``nn.Linear`` / ``nn.Conv2d``: ``1 / sqrt(fan_in)``
    (``kaiming_uniform_(a=sqrt(5))`` for the weights, the same bound for the biases)."""
    return 1.0 / math.sqrt(fan_in)


class MLP(nn.Module):
    """A fully connected network: ``in_features -> hidden... -> out_features``.

    ``hidden=()`` gives a linear model. ``layers`` holds every ``nn.Linear`` (hidden layers
    first, the output layer last); ``init_bounds[i]`` is the bound of ``layers[i]``'s
    init, which generate-and-test reuses for fresh units. ``init``: ``"kaiming"`` (default:
    hidden layers use their activation's gain, the output layer gain 1) or ``"lecun"``
    (gain 1 everywhere, ``U(-sqrt(3 / fan_in), sqrt(3 / fan_in))``: the paper's PPO nets).
    ``input_fan_in`` replaces ``in_features`` as the first layer's fan-in in its bound (the
    paper's Ant inputs were 111, of which lop-bench's Ant keeps the 27 that were not always
    zero; default: ``in_features``). ``activation="crelu"`` and ``layer_norm=True``: the
    variants of the module docstring (``norms[i]``: hidden layer ``i``'s ``nn.LayerNorm``).

    >>> g = torch.Generator().manual_seed(0)
    >>> net = MLP(20, (5,), 1, "relu", generator=g)
    >>> out, feats = net.forward_with_features(torch.zeros(1, 20))   # feats: [(1, 5)]
    """

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        out_features: int,
        activation: str = "relu",
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        init: str = "kaiming",
        input_fan_in: int | None = None,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        check_choice("activation", activation, tuple(ACTIVATIONS))
        check_choice("init", init, INITS)
        sizes = (int(in_features), *map(int, hidden), int(out_features))
        if any(s <= 0 for s in sizes):
            raise InvalidConfigError(f"layer sizes must be > 0, got {sizes}.")
        # Inputs of each layer: the features of the layer below (2 x its units for CReLU).
        in_sizes = (sizes[0], *(feature_width(activation, h) for h in sizes[1:-1]))
        fan_ins = (sizes[0] if input_fan_in is None else int(input_fan_in), *in_sizes[1:])
        if fan_ins[0] <= 0:
            raise InvalidConfigError(f"input_fan_in must be > 0, got {input_fan_in!r}.")
        self.activation = activation
        self.act = ACTIVATIONS[activation]()
        self._act_fn = _FUNCTIONS[activation]
        # On the meta device nn.Linear allocates nothing and draws nothing from the
        # global RNG; to_empty then allocates, and reset_parameters fills from `generator`.
        self.layers = nn.ModuleList(
            nn.Linear(a, b, device="meta") for a, b in zip(in_sizes, sizes[1:], strict=True)
        )
        self.to_empty(device=device if device is not None else generator.device)
        self.layer_norm = bool(layer_norm)
        if self.layer_norm:  # scale 1, shift 0: nothing drawn (after the layers: same order)
            dev = self.layers[0].weight.device
            self.norms = nn.ModuleList(nn.LayerNorm(int(h), device=dev) for h in hidden)
        # Plain references for forward: slicing an nn.ModuleList builds a new one (about
        # 10 us a call). object.__setattr__ keeps nn.Module from registering them twice.
        object.__setattr__(self, "_hidden_layers", tuple(self.layers)[:-1])
        object.__setattr__(self, "_output_layer", self.layers[-1])
        object.__setattr__(self, "_norms", tuple(self.norms) if self.layer_norm else ())
        hidden_gain = activation if init == "kaiming" else "linear"
        gains = [hidden_gain] * len(hidden) + ["linear"]
        self.init_bounds = tuple(
            kaiming_uniform_bound(fan_in, g) for fan_in, g in zip(fan_ins, gains, strict=True)
        )
        self.reset_parameters(generator)

    @property
    def num_hidden(self) -> int:
        """Number of hidden layers."""
        return len(self.layers) - 1

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Kaiming-uniform weights (layer by layer, from ``generator``), zero biases."""
        for layer, bound in zip(self.layers, self.init_bounds, strict=True):
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.zero_()
        for norm in self._norms:
            norm.reset_parameters()

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The output and the activations of every hidden layer, from one forward pass."""
        feats = []
        act = self._act_fn
        if self._norms:
            for layer, norm in zip(self._hidden_layers, self._norms, strict=True):
                x = act(norm(F.linear(x, layer.weight, layer.bias)))
                feats.append(x)
        else:
            for layer in self._hidden_layers:
                x = act(F.linear(x, layer.weight, layer.bias))
                feats.append(x)
        last = self._output_layer
        return F.linear(x, last.weight, last.bias), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The output for inputs ``x`` of shape (batch, in_features)."""
        return self.forward_with_features(x)[0]

    def linear_pairs(self) -> list[tuple[nn.Linear, nn.Linear]]:
        """``(layer, next_layer)`` for every hidden layer: the unit's incoming and outgoing
        weights, as generate-and-test needs them."""
        _check_plain("MLP", self.activation, self.layer_norm)
        return [(self.layers[i], self.layers[i + 1]) for i in range(self.num_hidden)]

    def unit_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The same as :meth:`linear_pairs` (the name :class:`ConvNet` shares)."""
        return self.linear_pairs()


def _check_plain(net: str, activation: str, layer_norm: bool) -> None:
    """Generate-and-test's unit pairs need a unit's outgoing weights to be one column and
    nothing between the layers: not so with CReLU (two columns) or a normalization."""
    if activation == "crelu" or layer_norm:
        raise InvalidConfigError(
            f"generate-and-test is not defined for an {net} with activation={activation!r}, "
            f"layer_norm={layer_norm!r}; use activation='relu' (or another plain one) "
            "without layer_norm."
        )


class ConvNet(nn.Module):
    """The paper's Continual ImageNet network (``lop/nets/conv_net.py``), ReLU throughout::

        conv(3 -> 32, 5x5) ReLU maxpool 2 -> conv(32 -> 64, 3x3) ReLU maxpool 2
        -> conv(64 -> 128, 3x3) ReLU maxpool 2 -> flatten (128 x 2 x 2 = 512 for 32x32)
        -> fc 128 ReLU -> fc 128 ReLU -> fc out_features

    Convolutions are unpadded ("valid", stride 1), pools are ``max_pool2d(2)``, as in the
    paper's code. The input is (N, C, H, W); the flatten is torch's (channel-major: the
    inputs ``c * H' * W' ... (c + 1) * H' * W' - 1`` of the first fc layer belong to
    channel ``c``). Raw pixels (0..255) go in unnormalized, as in the paper.

    Init: torch's default (:func:`default_init_bound`), weights and biases
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` drawn from ``generator`` layer by layer
    (weight, then bias). ``init_bounds[i]`` is ``layers[i]``'s bound.

    ``forward_with_features`` returns the output and the hidden activations: for each conv
    layer its ReLU output after the max-pool, (N, C, H, W), the tensor the next layer
    reads (diagnostics and generate-and-test treat axis 1 as the units); for each hidden
    fc layer its ReLU output (N, units).

    ``activation="crelu"`` and ``layer_norm=True``: the variants of the module docstring
    (CReLU doubles the channels the max-pool and the next layer see; ``norms[i]`` is
    hidden layer ``i``'s ``nn.GroupNorm(1, C)`` (conv) or ``nn.LayerNorm`` (fc), before its
    activation).

    >>> net = ConvNet(generator=torch.Generator().manual_seed(0))
    >>> out, feats = net.forward_with_features(torch.zeros(4, 3, 32, 32))
    >>> [tuple(f.shape) for f in feats]
    [(4, 32, 14, 14), (4, 64, 6, 6), (4, 128, 2, 2), (4, 128), (4, 128)]
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int] = (3, 32, 32),
        out_features: int = 2,
        *,
        channels: tuple[int, ...] = (32, 64, 128),
        kernels: tuple[int, ...] = (5, 3, 3),
        hidden: tuple[int, ...] = (128, 128),
        generator: torch.Generator,
        device: torch.device | str | None = None,
        activation: str = "relu",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        check_choice("activation", activation, CONV_ACTIVATIONS)
        self.activation = activation
        if len(in_shape) != 3 or any(int(s) <= 0 for s in in_shape):
            raise InvalidConfigError(
                f"ConvNet needs an input shape (channels, height, width), got {in_shape!r}."
            )
        if len(channels) != len(kernels) or not channels:
            raise InvalidConfigError("ConvNet needs one kernel size per conv layer.")
        sizes = (*map(int, channels), *map(int, hidden), int(out_features))
        if any(s <= 0 for s in sizes) or any(int(k) <= 0 for k in kernels):
            raise InvalidConfigError(f"layer sizes must be > 0, got {sizes} (kernels {kernels}).")
        c, h, w = map(int, in_shape)
        self.in_shape = (c, h, w)
        convs = []
        for ch, k in zip(channels, kernels, strict=True):
            convs.append(nn.Conv2d(c, int(ch), int(k), device="meta"))
            c = feature_width(activation, int(ch))
            h, w = (h - int(k) + 1) // 2, (w - int(k) + 1) // 2
            if h < 1 or w < 1:
                raise InvalidConfigError(
                    f"input {in_shape!r} is too small for ConvNet's {len(channels)} conv + "
                    "max-pool stages (32x32 images give a 2x2 map; at least 24x24 is needed)."
                )
        self.conv_out_shape = (c, h, w)
        self.flat_features = c * h * w
        in_widths = (self.flat_features, *(feature_width(activation, int(u)) for u in hidden))
        outs = (*map(int, hidden), int(out_features))
        fcs = [nn.Linear(a, b, device="meta") for a, b in zip(in_widths, outs, strict=True)]
        self.layers = nn.ModuleList([*convs, *fcs])
        self.to_empty(device=device if device is not None else generator.device)
        self.layer_norm = bool(layer_norm)
        if self.layer_norm:  # scale 1, shift 0: nothing drawn
            dev = self.layers[0].weight.device
            self.norms = nn.ModuleList(
                [*(nn.GroupNorm(1, int(ch), device=dev) for ch in channels),
                 *(nn.LayerNorm(int(u), device=dev) for u in hidden)]
            )
        object.__setattr__(self, "_convs", tuple(self.layers)[: len(convs)])
        object.__setattr__(self, "_hidden_fcs", tuple(self.layers)[len(convs) : -1])
        object.__setattr__(self, "_output_layer", self.layers[-1])
        object.__setattr__(self, "_norms", tuple(self.norms) if self.layer_norm else ())
        self.num_conv = len(convs)
        self.init_bounds = tuple(
            default_init_bound(layer.weight[0].numel()) for layer in self.layers
        )
        self.reset_parameters(generator)

    @property
    def num_hidden(self) -> int:
        """Number of hidden layers (conv and fc)."""
        return len(self.layers) - 1

    @property
    def head(self) -> nn.Linear:
        """The output layer."""
        return self._output_layer

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """torch's default init (weights and biases ``U(-b, b)``, ``b = 1/sqrt(fan_in)``)."""
        for layer, bound in zip(self.layers, self.init_bounds, strict=True):
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
        for norm in self._norms:
            norm.reset_parameters()

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The output and the activations of every hidden layer, from one forward pass."""
        if self._norms or self.activation != "relu":
            return self._variant_forward(x)
        feats = []
        for conv in self._convs:
            x = F.max_pool2d(torch.relu(F.conv2d(x, conv.weight, conv.bias)), 2)
            feats.append(x)
        x = x.flatten(1)
        for layer in self._hidden_fcs:
            x = torch.relu(F.linear(x, layer.weight, layer.bias))
            feats.append(x)
        last = self._output_layer
        return F.linear(x, last.weight, last.bias), feats

    def _variant_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`forward_with_features` with CReLU and/or the normalizations."""
        act = crelu if self.activation == "crelu" else (lambda z, dim: torch.relu(z))
        norms = self._norms or (None,) * self.num_hidden
        feats = []
        for conv, norm in zip(self._convs, norms[: self.num_conv], strict=True):
            z = F.conv2d(x, conv.weight, conv.bias)
            x = F.max_pool2d(act(z if norm is None else norm(z), 1), 2)
            feats.append(x)
        x = x.flatten(1)
        for layer, norm in zip(self._hidden_fcs, norms[self.num_conv :], strict=True):
            z = F.linear(x, layer.weight, layer.bias)
            x = act(z if norm is None else norm(z), 1)
            feats.append(x)
        last = self._output_layer
        return F.linear(x, last.weight, last.bias), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The output for images ``x`` of shape (N, C, H, W)."""
        return self.forward_with_features(x)[0]

    def unit_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(layer, next_layer)`` for every hidden layer (conv layers first), as
        generate-and-test needs them: a conv channel's outgoing weights are the next conv's
        input-channel slice or, across the flatten, the first fc layer's columns of it."""
        _check_plain("ConvNet", self.activation, self.layer_norm)
        return [(self.layers[i], self.layers[i + 1]) for i in range(self.num_hidden)]


# -- ResNet-18 (class-incremental CIFAR-100) ----------------------------------------------
STAGE_CHANNELS = (64, 128, 256, 512)
"""Channels of ResNet-18's four stages at ``width=1`` (the stem has as many as stage 1)."""

COVERAGES = ("all_convs", "first_convs")
"""Which convolutions' channels generate-and-test replaces (:meth:`ResNet18.channel_layers`)."""

_RELU_GAIN = math.sqrt(2.0)


def stage_channels(width: float) -> tuple[int, int, int, int]:
    """The four stage widths for a width factor: ``round(c * width)``, at least 1."""
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise InvalidConfigError(f"width must be a number > 0, got {width!r}.")
    return tuple(max(1, int(round(c * width))) for c in STAGE_CHANNELS)  # type: ignore[return-value]


def conv_std(conv: nn.Conv2d) -> float:
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

    ``activation="crelu"`` (the ``crelu`` agent): the inner activation (after ``bn1``) is
    the concatenated ReLU, so ``conv2`` reads ``2 x channels``; the output ReLU after the
    residual sum stays a ReLU (the residual stream and the shortcut keep their widths).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 activation: str = "relu") -> None:
        super().__init__()
        check_choice("activation", activation, CONV_ACTIVATIONS)
        self.activation = activation
        meta = {"device": "meta"}
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=True, **meta)
        self.bn1 = nn.BatchNorm2d(channels, **meta)
        self.conv2 = nn.Conv2d(feature_width(activation, channels), channels, 3, 1, 1,
                               bias=True, **meta)
        self.bn2 = nn.BatchNorm2d(channels, **meta)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, 0, bias=True, **meta),
                nn.BatchNorm2d(channels, **meta),
            )

    def forward_with_mid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(block output, activation after conv1 -> bn1 -> ReLU)`` (CReLU: ``2 C`` channels)."""
        z = self.bn1(self.conv1(x))
        mid = crelu(z, 1) if self.activation == "crelu" else F.relu(z)
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
    ``block_activation="crelu"``: each block's inner activation is a CReLU
    (:class:`BasicBlock`; its first-conv activation then has ``2 C`` channels); the stem's
    and the blocks' output ReLUs stay (generate-and-test and ReDo refuse this net).

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
        block_activation: str = "relu",
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise InvalidConfigError(f"num_classes must be a positive integer, got {num_classes!r}.")
        check_choice("block_activation", block_activation, CONV_ACTIVATIONS)
        self.block_activation = block_activation
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
                blocks.append(BasicBlock(prev, c, stride, block_activation))
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
                m.weight.normal_(0.0, conv_std(m), generator=generator)
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
        :func:`baselines.core.gnt.resnet_units`). ``"first_convs"``: each block's first conv
        only, read by the block's second conv alone.
        """
        check_choice("coverage", coverage, COVERAGES)
        if self.block_activation != "relu":
            raise InvalidConfigError(
                f"generate-and-test and ReDo are not defined for a ResNet18 with "
                f"block_activation={self.block_activation!r}: a block's first conv has C "
                f"channels but its second conv reads 2 C CReLU features (ResidualUnits maps "
                f"channel c to next.weight[:, c] only); use block_activation='relu'."
            )
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
