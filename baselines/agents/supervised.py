"""The supervised stepwise learner: a network (MLP or the paper's ConvNet) trained online by
one optimizer step per train batch, optionally with shrink-and-perturb noise or
generate-and-test after every step.

One agent class, :class:`SupervisedAgent`, whose behaviour is set by its typed config:

- :class:`BackpropConfig`: plain backprop (SGD or Adam; ``weight_decay`` > 0 is L2);
- :class:`ShrinkPerturbConfig`: plus Gaussian noise on every weight and bias after each
  step (Ash & Adams 2020; the paper's ``Backprop.perturb`` in ``lop/algos/bp.py``);
- :class:`ContinualBackpropConfig`: plus generate-and-test
  (:mod:`baselines.core.gnt`) after each step;
- :class:`ReDoConfig`: plus ReDo (:mod:`baselines.core.redo`): every ``redo_period`` steps
  the dormant units are recycled;
- :class:`L2InitConfig`: plus L2 Init (:mod:`baselines.core.regularizers`): the gradient
  gets ``l2_init_strength * (theta - theta0)`` before each optimizer step;
- :class:`UPGDConfig`: UPGD (:mod:`baselines.core.upgd`, Elsayed & Mahmood 2024) as the
  optimizer: utility-gated steps and perturbations;
- :class:`LayerNormConfig`: a layer normalization before every hidden activation (Lyle et
  al. 2024); ``activation="crelu"`` (any config): CReLU (Abbas et al. 2023), twice the
  features per hidden layer (:mod:`baselines.core.nets`);
- :class:`LinearConfig` (with :class:`LinearAgent`): no hidden layer, inputs straight to
  outputs (Kaiming-uniform with gain 1, zero bias, as ``lop/nets/linear.py``).

Online protocol (DESIGN.md section 4): ``act`` predicts and keeps the forward pass (with
its autograd graph); ``learn`` takes one optimizer step on that same output against
``info["target"]``, so a step costs one forward pass. Without a target (val/test steps)
``learn`` does nothing, and ``act`` on a val/test batch builds no graph.

Regression (``Box`` action of shape (B, k)) uses the mean squared error
(``torch.nn.functional.mse_loss``, mean over the batch and outputs). Classification
(``MultiDiscrete([n] * B)`` or, for B = 1, ``Discrete(n)``) returns the argmax and uses
cross-entropy against the integer labels in ``info["target"]``.

The network is chosen by ``arch``: ``"mlp"`` (:class:`~baselines.core.nets.MLP`, inputs
flattened) or ``"convnet"`` (:class:`~baselines.core.nets.ConvNet`, the paper's Continual
ImageNet net, for image observations (B, C, H, W)). ``reset_head=True`` (the Continual
ImageNet presets, as the paper) sets the output layer's weights and bias, and their
optimizer state, to zero whenever ``info["task"]`` changes: in the ``learn`` call whose
``info`` announces the new task (after that call's own update, if it has a target), so the
head is zero at the first prediction of every task, task 0 included, and never changes
inside a test phase. Observations may be numpy arrays or torch tensors on the agent's
device; for tensor observations on a non-CPU device the predictions (labels or regression
outputs) come back as a tensor there (no copy to the host per step).

Where things happen (for adding an option): the network is built in
:meth:`SupervisedAgent._build_net`, the optimizer in :func:`~baselines.core.optim.make_optimizer`
(called in ``__init__``); :meth:`SupervisedAgent.learn` runs ``loss.backward()``, the
optimizer step, then :meth:`SupervisedAgent._after_step` (noise, generate-and-test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from baselines.core.gnt import GnTFields, SingleSeed, check_gnt_fields, network_units
from baselines.core.nets import ACTIVATIONS, CONV_ACTIVATIONS, MLP, ConvNet
from baselines.core.optim import (
    OptimizerEntries,
    OptimizerFields,
    check_optimizer_fields,
    make_optimizer,
    noise_chunk_size,
)
from baselines.core.redo import ReDo, ReDoFields, check_redo_fields, module_unit_layers
from baselines.core.regularizers import L2Init, L2InitFields, check_l2_init_fields
from baselines.core.upgd import UPGDFields, check_upgd_config
from lop_bench.config import check_choice, check_positive, config_to_dict
from lop_bench.errors import InvalidConfigError
from lop_bench.seeding import check_seed

__all__ = [
    "ARCHS",
    "BackpropConfig",
    "ShrinkPerturbConfig",
    "ContinualBackpropConfig",
    "ReDoConfig",
    "L2InitConfig",
    "UPGDConfig",
    "LayerNormConfig",
    "LinearConfig",
    "SupervisedAgent",
    "LinearAgent",
]

ARCHS = ("mlp", "convnet")
"""Networks of :class:`BackpropConfig`'s ``arch``: :class:`~baselines.core.nets.MLP` or
:class:`~baselines.core.nets.ConvNet`."""

_FEATURE_CHUNK = 500  # images per forward pass of ConvNet features (diagnostic probes)


@dataclass(frozen=True)
class BackpropConfig(OptimizerFields):
    """Hyperparameters of backprop (defaults: the paper's slowly-changing regression: SGD,
    lr 0.01; swept over {0.01, 0.003, 0.001}, 0.01 shows the loss of plasticity,
    PROTOCOLS.md, public config ``slowly_changing_regression/cfg/sgd/bp/relu.json``)."""

    hidden: tuple[int, ...] = (5,)
    """Hidden layer widths. Regression: 20 -> 5 -> 1 (PROTOCOLS.md; ``num_features: 5``).
    With ``arch="convnet"``: the widths of the fc layers after the conv layers (the
    paper's (128, 128))."""
    activation: str = "relu"
    """Hidden activation: relu (default), tanh, sigmoid, elu, leaky_relu, swish, linear
    (the paper's regression study covers all of them), or crelu (the ``crelu`` agent: a
    layer of k units gives 2k features). ``arch="convnet"``: relu or crelu."""
    arch: str = "mlp"
    """The network: ``"mlp"`` (fully connected, inputs flattened) or ``"convnet"`` (the
    paper's Continual ImageNet ConvNet, :class:`~baselines.core.nets.ConvNet`; needs image
    observations of shape (batch, channels, height, width))."""
    reset_head: bool = False
    """Set the output layer (weights, bias and their optimizer state) to zero at the start
    of every task (``info["task"]`` changes). Continual ImageNet: True, as the paper
    ("the output layer is re-initialized to zero at every task"; ``new_heads`` in
    ``lop/imagenet/single_expr.py``)."""

    def __post_init__(self) -> None:
        check_optimizer_fields(self)
        if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in self.hidden):
            raise InvalidConfigError(
                f"hidden must be a tuple of positive layer widths, got {self.hidden!r}."
            )
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("arch", self.arch, ARCHS)
        if self.arch == "convnet" and self.activation not in CONV_ACTIVATIONS:
            raise InvalidConfigError(
                f"arch='convnet' is the paper's ReLU network; activation must be 'relu' (or "
                f"'crelu'), got {self.activation!r}."
            )
        if not isinstance(self.reset_head, bool):
            raise InvalidConfigError(f"reset_head must be true or false, got {self.reset_head!r}.")


@dataclass(frozen=True)
class ShrinkPerturbConfig(BackpropConfig):
    """Backprop's hyperparameters plus the noise scale (the shrink is ``weight_decay``)."""

    weight_decay: float = 1e-2
    """The shrink: coupled L2 penalty of the optimizer (public regression config: 1e-2)."""
    noise_std: float = 1e-3
    """Standard deviation of the Gaussian noise added to every weight and bias after each
    step (``perturb_scale`` in the paper's code). 0 gives the ``l2`` agent exactly."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("noise_std", self.noise_std, allow_zero=True)


@dataclass(frozen=True)
class ContinualBackpropConfig(BackpropConfig, GnTFields):
    """Backprop's hyperparameters plus those of generate-and-test
    (:class:`~baselines.core.gnt.GnTFields`: replacement rate 1e-4, decay 0.99, maturity
    100, adaptable contribution, accumulated count by default)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_gnt_fields(self)


@dataclass(frozen=True)
class ReDoConfig(BackpropConfig, ReDoFields):
    """Backprop's hyperparameters plus ReDo's (:class:`~baselines.core.redo.ReDoFields`:
    tau 0.1, every 1000 steps, scored on the batch by default)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_redo_fields(self)


@dataclass(frozen=True)
class L2InitConfig(BackpropConfig, L2InitFields):
    """Backprop's hyperparameters plus L2 Init's strength
    (:class:`~baselines.core.regularizers.L2InitFields`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_l2_init_fields(self)


@dataclass(frozen=True)
class UPGDConfig(BackpropConfig, UPGDFields):
    """Backprop's hyperparameters with UPGD (:mod:`baselines.core.upgd`) as the optimizer:
    ``lr`` is its step size, ``weight_decay`` its shrink ``w <- (1 - lr * weight_decay) w``
    (before the gated step, as the paper's code; not SGD's coupled L2), ``beta_utility``
    and ``sigma`` (:class:`~baselines.core.upgd.UPGDFields`) its own; ``optimizer="adam"``
    selects the adaptive variant (``betas``, ``eps``). UPGD has no momentum. Its noise comes
    from the agent's generator."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_upgd_config(self)


@dataclass(frozen=True)
class LayerNormConfig(BackpropConfig):
    """Backprop's hyperparameters with a normalization before every hidden activation
    (:mod:`baselines.core.nets`: ``nn.LayerNorm`` over a dense layer's units,
    ``nn.GroupNorm(1, C)`` over a conv layer's (C, H, W)), whose scale and shift the
    optimizer trains with the weights (and decays with them, if ``weight_decay`` > 0)."""

    layer_norm: bool = True
    """Normalize every hidden layer's pre-activations (False: backprop's network, exactly)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.layer_norm, bool):
            raise InvalidConfigError(f"layer_norm must be true or false, got {self.layer_norm!r}.")


@dataclass(frozen=True)
class LinearConfig(OptimizerFields):
    """Hyperparameters of the linear learner (defaults: slowly-changing regression, SGD lr
    0.01, backprop's step size; the public config cfg/flip_one/linear.json sweeps 0.03 ...
    0.0003). Its network is fixed: no hidden layer (not hyperparameters)."""

    hidden: ClassVar[tuple[int, ...]] = ()
    activation: ClassVar[str] = "linear"
    arch: ClassVar[str] = "mlp"
    reset_head: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_optimizer_fields(self)


SupervisedConfig = BackpropConfig | LinearConfig
"""The configs :class:`SupervisedAgent` takes (its variants subclass :class:`BackpropConfig`)."""


class _Noise:
    """Shrink and perturb's noise after each step: Gaussian, std ``std``, on every parameter
    (weights and biases in parameter order), drawn from ``generator`` a chunk of steps at a
    time (one row per step: fewer generator calls; the vectorized agent draws the very same
    numbers per seed, :func:`~baselines.core.optim.noise_chunk_size`)."""

    def __init__(self, params: list[torch.Tensor], std: float, generator: torch.Generator) -> None:
        self.params, self.std, self.generator = params, std, generator
        self.num_params = sum(p.numel() for p in params)
        self.chunk = noise_chunk_size(self.num_params)
        self.noise: torch.Tensor | None = None
        self.row = 0

    @torch.no_grad()
    def step(self) -> None:
        if self.noise is None or self.row == self.chunk:
            p0 = self.params[0]
            self.noise = torch.randn(self.chunk, self.num_params, generator=self.generator,
                                     device=p0.device, dtype=p0.dtype)
            self.row = 0
        row = self.noise[self.row]
        self.row += 1
        offset = 0
        for p in self.params:
            k = p.numel()
            p.add_(row[offset : offset + k].view_as(p), alpha=self.std)
            offset += k

    def state_dict(self) -> dict[str, Any]:
        return {"noise": None if self.noise is None else self.noise.clone(), "row": self.row}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.noise = None if state["noise"] is None else state["noise"].clone()
        self.row = int(state["row"])


def _io_spec(observation_space: Any, action_space: Any) -> tuple[int, int, str, int]:
    """``(in_features, out_features, kind, first_label)`` from the spaces; kind is
    ``"regression"``, ``"classification"`` (MultiDiscrete) or ``"classification_scalar"``
    (Discrete); ``first_label`` is the Discrete space's ``start``."""
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) < 2:
        raise InvalidConfigError(
            "the observation space must be a Box of shape (batch, features...), "
            f"got {observation_space!r}."
        )
    batch = observation_space.shape[0]
    in_features = math.prod(observation_space.shape[1:])
    if isinstance(action_space, spaces.Box):
        if len(action_space.shape) != 2 or action_space.shape[0] != batch:
            raise InvalidConfigError(
                f"a Box action space must have shape ({batch}, outputs), got {action_space.shape}."
            )
        return in_features, action_space.shape[1], "regression", 0
    if isinstance(action_space, spaces.MultiDiscrete):
        nvec, start = np.asarray(action_space.nvec), np.asarray(action_space.start)
        if nvec.shape != (batch,) or (nvec != nvec[0]).any() or (start != 0).any():
            raise InvalidConfigError(
                f"a MultiDiscrete action space must be MultiDiscrete([n] * {batch}), got {action_space!r}."
            )
        return in_features, int(nvec[0]), "classification", 0
    if isinstance(action_space, spaces.Discrete) and batch == 1:
        return in_features, int(action_space.n), "classification_scalar", int(action_space.start)
    raise InvalidConfigError(
        "the action space must be Box (batch, outputs) for regression, MultiDiscrete([n] * "
        f"batch) or (batch 1) Discrete(n) for classification, got {action_space!r}."
    )


class SupervisedAgent:
    """A network (:class:`~baselines.core.nets.MLP` or :class:`~baselines.core.nets.ConvNet`)
    trained by one optimizer step per train batch (module docstring).

    Attributes: ``cfg`` (the frozen config), ``preset`` (name of the preset used),
    ``hparams`` (the config as a dict), ``net``, ``optimizer``, ``generator`` (the agent's
    own ``torch.Generator``: init, noise, fresh units), ``gnt`` (generate-and-test, a
    :class:`~baselines.core.gnt.SingleSeed`, for a :class:`ContinualBackpropConfig`, else
    ``None``), ``noise`` (shrink and perturb's, or ``None``), ``last_loss`` (a 0-d tensor,
    the loss of the last step, or ``None``).
    """

    @classmethod
    def for_stream(cls, cfg: SupervisedConfig, env_spec: Any, observation_space: Any,
                   action_space: Any, seed: int, device: str | torch.device,
                   preset: str | None) -> SupervisedAgent:
        """The agent for a stream (:class:`baselines.presets.Preset` builds it so)."""
        return cls(cfg, observation_space, action_space, seed, device, preset=preset)

    def __init__(
        self,
        cfg: SupervisedConfig,
        observation_space: Any,
        action_space: Any,
        seed: int,
        device: str | torch.device = "cpu",
        preset: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.preset = preset
        self.hparams = config_to_dict(cfg)
        self.device = torch.device(device)
        in_features, out_features, self._kind, self._first_label = _io_spec(
            observation_space, action_space
        )
        self._loss_fn = F.mse_loss if self._kind == "regression" else F.cross_entropy
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(check_seed(seed))
        self._conv = cfg.arch == "convnet"
        self._reset_head = cfg.reset_head
        self.net = self._build_net(observation_space, in_features, out_features)
        self.optimizer = make_optimizer(cfg, self.net.parameters(), generator=self.generator)
        self.gnt: SingleSeed | None = None
        if isinstance(cfg, GnTFields):
            self.gnt = SingleSeed.of(network_units(self.net), self.generator,
                                     OptimizerEntries(self.optimizer), cfg)
        self.noise: _Noise | None = None
        if isinstance(cfg, ShrinkPerturbConfig) and cfg.noise_std > 0:
            self.noise = _Noise(list(self.net.parameters()), cfg.noise_std, self.generator)
        self.redo: ReDo | None = ReDo.from_config(cfg) if isinstance(cfg, ReDoFields) else None
        self.last_loss: torch.Tensor | None = None
        self._out: torch.Tensor | None = None  # the train prediction kept for learn()
        self._feats: list[torch.Tensor] = []
        self._valid: int | None = None
        self._task: Any = None  # the task the head was last reset for (reset_head only)
        if self._reset_head:  # zero from the start (diagnostics before the first act see it)
            with torch.no_grad():
                for p in self.net.layers[-1].parameters():
                    p.zero_()
        # L2 Init's theta0: the parameters as built (after the head's zeroing).
        self.l2_init: L2Init | None = None
        if isinstance(cfg, L2InitFields):
            self.l2_init = L2Init(self.net.parameters(), cfg.l2_init_strength)

    def _build_net(self, observation_space: Any, in_features: int,
                   out_features: int) -> MLP | ConvNet:
        """The config's network, initialized from the agent's generator."""
        cfg = self.cfg
        norm = isinstance(cfg, LayerNormConfig) and cfg.layer_norm
        if self._conv:
            self._in_shape = tuple(int(s) for s in observation_space.shape[1:])
            if len(self._in_shape) != 3:
                raise InvalidConfigError(
                    "arch='convnet' needs image observations of shape (batch, channels, "
                    f"height, width), got {observation_space.shape}."
                )
            return ConvNet(self._in_shape, out_features, hidden=tuple(cfg.hidden),
                           generator=self.generator, device=self.device,
                           activation=cfg.activation, layer_norm=norm)
        return MLP(in_features, tuple(cfg.hidden), out_features, cfg.activation,
                   generator=self.generator, device=self.device, layer_norm=norm)

    # -- the online protocol -------------------------------------------------------------
    def _input(self, obs: Any) -> torch.Tensor:
        x = torch.as_tensor(obs, device=self.device)
        if x.dtype != torch.float32:
            x = x.float()
        if self._conv:
            if x.dim() != 4:
                x = x.reshape(-1, *self._in_shape)
        elif x.dim() != 2:
            x = x.reshape(x.shape[0], -1)
        return x

    @torch.no_grad()
    def _new_task(self, info: dict) -> None:
        """Zero the output layer and its optimizer state if ``info`` starts another task."""
        task = info.get("task")
        if task is None or task == self._task:
            return
        self._task = int(task) if isinstance(task, (int, np.integer)) else task
        for p in self.net.layers[-1].parameters():
            p.zero_()
            for value in self.optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    value.zero_()

    def act(self, obs: Any, info: dict) -> Any:
        """Predict for ``obs``; on train batches keep the forward pass for :meth:`learn`."""
        if self._reset_head and info.get("task") != self._task:
            self._new_task(info)  # the stream's first task (later ones: in learn)
        x = self._input(obs)
        if info.get("phase", "train") == "train":
            out, self._feats = self.net.forward_with_features(x)
            self._out = out
            self._valid = info.get("valid")
        else:
            self._out = None
            with torch.no_grad():
                out = self.net(x)
        out = out.detach()
        if self._kind == "regression":
            if out.device.type != "cpu" and torch.is_tensor(obs):
                return out  # stays on the device: no host sync per step
            return out.cpu().numpy()
        labels = out.argmax(dim=1)
        if self._kind == "classification":
            if labels.device.type != "cpu" and torch.is_tensor(obs):
                return labels  # stays on the device: no host sync per step
            return labels.cpu().numpy()
        return int(labels[0]) + self._first_label

    def learn(
        self,
        obs: Any,
        action: Any,
        reward: float,
        next_obs: Any,
        terminated: bool,
        truncated: bool,
        info: dict,
    ) -> None:
        """One optimizer step on the kept prediction against ``info["target"]`` (if any)."""
        target = info.get("target")
        out, feats = self._out, self._feats
        self._out = None
        if target is None:
            if self._reset_head:
                self._new_task(info)
            return
        if out is None:  # learn() without a train act(): do the forward pass here
            out, feats = self.net.forward_with_features(self._input(obs))
        if self._kind == "regression":
            t = torch.as_tensor(target, device=self.device)
            if t.dtype != out.dtype:
                t = t.to(out.dtype)
            if t.shape != out.shape:
                t = t.reshape(out.shape)
        else:
            t = torch.as_tensor(target, device=self.device).reshape(-1)
            if self._kind == "classification_scalar":
                t = t - self._first_label
            t = t.long()
        valid = self._valid
        if valid is not None and valid < out.shape[0]:  # padded rows are never learned
            out, t = out[:valid], t[:valid]
            feats = [h[:valid] for h in feats]
        loss = self._loss_fn(out, t)
        self.optimizer.zero_grad()
        loss.backward()
        if self.l2_init is not None:
            self.l2_init.add_to_grad()
        self.optimizer.step()
        self.last_loss = loss.detach()
        self._after_step(feats)
        if self._reset_head:
            self._new_task(info)

    def _after_step(self, feats: list[torch.Tensor]) -> None:
        """Run after every optimizer step, with the step's hidden activations: shrink and
        perturb's noise, generate-and-test."""
        if self.noise is not None:
            self.noise.step()
        if self.gnt is not None:
            self.gnt.step(feats)
        if self.redo is not None:
            self.redo.step([h.unsqueeze(0) for h in feats], self._redo_layers, [self.generator])

    def _redo_layers(self) -> list:
        """ReDo's view of the hidden layers (fresh weights from the net's own init bounds;
        the ConvNet's biases are drawn too, the MLP's start at 0)."""
        hidden_bounds = self.net.init_bounds[:-1]
        return module_unit_layers(self.net.unit_pairs(), hidden_bounds, self.optimizer,
                                  bias_bounds=hidden_bounds if self._conv else None)

    # -- diagnostics and checkpoints -------------------------------------------------------
    def features(self, x: Any) -> list[torch.Tensor]:
        """Hidden activations per hidden layer for inputs ``x`` (N, ...): (N, units) for fc
        layers, (N, channels, height, width) for conv layers (after ReLU and max-pool)."""
        with torch.no_grad():
            x = self._input(x)
            if not self._conv or x.shape[0] <= _FEATURE_CHUNK:
                return self.net.forward_with_features(x)[1]
            # Large probes in chunks: a conv layer's maps of 2,000 images are big.
            parts = [self.net.forward_with_features(c)[1] for c in x.split(_FEATURE_CHUNK)]
            return [torch.cat(layer) for layer in zip(*parts, strict=True)]

    def parameters(self) -> Any:
        """The network's parameters."""
        return self.net.parameters()

    def buffers(self) -> list[torch.Tensor]:
        """Non-parameter state tensors: generate-and-test's statistics (if any)."""
        return self.gnt.buffers() if self.gnt is not None else []

    def state_dict(self) -> dict[str, Any]:
        """Network, optimizer and generator state (tensors and plain values)."""
        state = {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }
        if self._reset_head:
            state["head_task"] = self._task
        if self.noise is not None:
            state["noise"] = self.noise.state_dict()
        if self.gnt is not None:
            state["gnt"] = self.gnt.state_dict()
        if self.redo is not None:
            state["redo"] = self.redo.state_dict()
        if self.l2_init is not None:
            state["l2_init"] = self.l2_init.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self._out, self._feats = None, []
        if self._reset_head:
            task = state.get("head_task")
            self._task = int(task) if isinstance(task, (int, np.integer)) else task
        if self.noise is not None:
            self.noise.load_state_dict(state["noise"])
        if self.gnt is not None:
            self.gnt.load_state_dict(state["gnt"])
        if self.redo is not None:
            self.redo.load_state_dict(state["redo"])
        if self.l2_init is not None:
            self.l2_init.load_state_dict(state["l2_init"])


class LinearAgent(SupervisedAgent):
    """:class:`SupervisedAgent` with a :class:`LinearConfig`: no hidden layer, so no
    ``features`` (the runner then skips the feature diagnostics)."""

    features = None  # no hidden layers: nothing for the feature diagnostics
