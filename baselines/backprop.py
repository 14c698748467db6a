"""Backprop: a network trained online by SGD (or Adam), one step per train batch.

The reference learner of Dohare et al. (Nature 2024) and the base of the other reference
agents: ``l2`` (weight decay), ``shrink_perturb`` (weight decay + noise) and
``continual_backprop`` (generate-and-test) reuse :class:`BackpropAgent` and override only
:meth:`BackpropAgent._after_step`.

Online protocol (DESIGN.md section 4): ``act`` predicts and keeps the forward pass (with
its autograd graph); ``learn`` takes one optimizer step on that same output against
``info["target"]``, so a step costs one forward pass. Without a target (val/test steps)
``learn`` does nothing, and ``act`` on a val/test batch builds no graph.

Regression (``Box`` action of shape (B, k)) uses the mean squared error
(``torch.nn.functional.mse_loss``, mean over the batch and outputs). Classification
(``MultiDiscrete([n] * B)`` or, for B = 1, ``Discrete(n)``) returns the argmax and uses
cross-entropy against the integer labels in ``info["target"]``.

The network is chosen by ``arch``: ``"mlp"`` (:class:`~baselines.nets.MLP`, inputs
flattened) or ``"convnet"`` (:class:`~baselines.nets.ConvNet`, the paper's Continual
ImageNet net, for image observations (B, C, H, W)). ``reset_head=True`` (the Continual
ImageNet presets, as the paper) sets the output layer's weights and bias, and their
optimizer state, to zero whenever ``info["task"]`` changes: in the ``learn`` call whose
``info`` announces the new task (after that call's own update, if it has a target), so the
head is zero at the first prediction of every task, task 0 included, and never changes
inside a test phase. Observations may be numpy arrays or torch tensors on the agent's
device; on a non-CPU device the predicted labels come back as a tensor there (no copy to
the host per step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from baselines.nets import ACTIVATIONS, MLP, ConvNet
from lop_bench.agents import is_vector_spec, select_preset, vector_seeds
from lop_bench.config import (
    check_choice,
    check_positive,
    check_range,
    config_to_dict,
    replace_checked,
)
from lop_bench.errors import InvalidConfigError, VectorizationNotSupported
from lop_bench.seeding import check_seed

__all__ = [
    "REGRESSION",
    "PERMUTED_MNIST",
    "CONTINUAL_IMAGENET",
    "ARCHS",
    "BackpropConfig",
    "PRESETS",
    "EntrywiseAdam",
    "make_optimizer",
    "BackpropAgent",
    "build_agent",
    "make_agent",
]

REGRESSION = "lop/SlowlyChangingRegression-v0"
PERMUTED_MNIST = "lop/PermutedMNIST-v0"
CONTINUAL_IMAGENET = "lop/ContinualImageNet-v0"

ARCHS = ("mlp", "convnet")
"""Networks of :class:`BackpropConfig`'s ``arch``: :class:`~baselines.nets.MLP` or
:class:`~baselines.nets.ConvNet`."""


_FEATURE_CHUNK = 500  # images per forward pass of ConvNet features (diagnostic probes)


def check_optimizer_fields(cfg: Any) -> None:
    """Range checks shared by every config that trains with :func:`make_optimizer`."""
    check_positive("lr", cfg.lr)
    check_range("momentum", cfg.momentum, 0.0, 1.0)
    if cfg.momentum >= 1.0:
        raise InvalidConfigError(f"momentum must be < 1, got {cfg.momentum!r}.")
    check_positive("weight_decay", cfg.weight_decay, allow_zero=True)
    check_choice("optimizer", cfg.optimizer, ("sgd", "adam"))
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
class BackpropConfig:
    """Hyperparameters of backprop (defaults: the paper's slowly-changing regression)."""

    lr: float = 0.01
    """Step size. Regression: swept over {0.01, 0.003, 0.001}; 0.01 shows the loss of
    plasticity (PROTOCOLS.md; public config ``slowly_changing_regression/cfg/sgd/bp/relu.json``)."""
    momentum: float = 0.0
    """SGD momentum. Plain SGD in the paper's regression and MNIST runs (``lop/algos/bp.py``)."""
    weight_decay: float = 0.0
    """Coupled L2 penalty of the optimizer (``torch.optim.SGD``'s ``weight_decay``); 0 for
    plain backprop, > 0 for the ``l2`` and ``shrink_perturb`` agents."""
    hidden: tuple[int, ...] = (5,)
    """Hidden layer widths. Regression: 20 -> 5 -> 1 (PROTOCOLS.md; ``num_features: 5``).
    With ``arch="convnet"``: the widths of the fc layers after the conv layers (the
    paper's (128, 128))."""
    activation: str = "relu"
    """Hidden activation: relu (default), tanh, sigmoid, elu, leaky_relu, swish, linear
    (the paper's regression study covers all of them). ``arch="convnet"`` is ReLU only."""
    optimizer: str = "sgd"
    """``"sgd"`` (``torch.optim.SGD``) or ``"adam"`` (:class:`EntrywiseAdam`, which equals
    ``torch.optim.Adam`` until continual backprop resets entries)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's betas (torch's defaults; the paper's code default ``beta_1, beta_2``)."""
    eps: float = 1e-8
    """Adam's epsilon (torch's default)."""
    arch: str = "mlp"
    """The network: ``"mlp"`` (fully connected, inputs flattened) or ``"convnet"`` (the
    paper's Continual ImageNet ConvNet, :class:`~baselines.nets.ConvNet`; needs image
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
        if self.arch == "convnet" and self.activation != "relu":
            raise InvalidConfigError(
                f"arch='convnet' is the paper's ReLU network; activation must be 'relu', "
                f"got {self.activation!r}."
            )
        if not isinstance(self.reset_head, bool):
            raise InvalidConfigError(f"reset_head must be true or false, got {self.reset_head!r}.")


PRESETS: dict[tuple[str, str], BackpropConfig] = {
    # Slowly-changing regression: 20 -> 5 -> 1 ReLU, SGD lr 0.01, batch 1 (PROTOCOLS.md).
    (REGRESSION, "*"): BackpropConfig(),
    # Online permuted MNIST: 784 -> 3 x 2000 ReLU -> 10, SGD lr 0.003 (PROTOCOLS.md).
    (PERMUTED_MNIST, "*"): BackpropConfig(lr=0.003, hidden=(2000, 2000, 2000)),
    # Its cpu and smoke tiers: the paper's narrow net, 784 -> 3 x 100 ReLU -> 10 (the width
    # study; PROTOCOLS.md: width 100 falls below 88% by about task 100), same lr 0.003.
    # Wider nets: --hp hidden=[2000,2000,2000].
    (PERMUTED_MNIST, "cpu"): BackpropConfig(lr=0.003, hidden=(100, 100, 100)),
    (PERMUTED_MNIST, "smoke"): BackpropConfig(lr=0.003, hidden=(100, 100, 100)),
    # Continual ImageNet, every tier: the paper's ConvNet (fc 512 -> 128 -> 128 -> 2), SGD
    # lr 0.01 momentum 0.9, output layer zeroed at every task (PROTOCOLS.md; public config
    # lop/imagenet/cfg/bp.json: step_size [0.01, 0.001, 0.0001], momentum 0.9, batch 100).
    # The cpu and smoke tiers shorten the stream, not the net.
    (CONTINUAL_IMAGENET, "*"): BackpropConfig(
        lr=0.01, momentum=0.9, arch="convnet", hidden=(128, 128), reset_head=True
    ),
}


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


def make_optimizer(cfg: Any, params: Any) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or :class:`EntrywiseAdam` with the config's settings."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return EntrywiseAdam(
        params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
    )


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


class BackpropAgent:
    """A network (:class:`~baselines.nets.MLP` or :class:`~baselines.nets.ConvNet`) trained
    by one optimizer step per train batch.

    Attributes: ``cfg`` (the frozen config), ``preset`` (name of the preset used),
    ``hparams`` (the config as a dict), ``net``, ``optimizer``, ``generator`` (the agent's
    own ``torch.Generator``: init, and noise or fresh units in subclasses),
    ``last_loss`` (a 0-d tensor, the loss of the last step, or ``None``).
    """

    def __init__(
        self,
        cfg: Any,
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
        # LinearConfig has neither field: it is always an MLP without a head reset.
        self._conv = getattr(cfg, "arch", "mlp") == "convnet"
        self._reset_head = bool(getattr(cfg, "reset_head", False))
        if self._conv:
            self._in_shape = tuple(int(s) for s in observation_space.shape[1:])
            if len(self._in_shape) != 3:
                raise InvalidConfigError(
                    "arch='convnet' needs image observations of shape (batch, channels, "
                    f"height, width), got {observation_space.shape}."
                )
            self.net = ConvNet(
                self._in_shape,
                out_features,
                hidden=tuple(cfg.hidden),
                generator=self.generator,
                device=self.device,
            )
        else:
            self.net = MLP(
                in_features,
                tuple(cfg.hidden),
                out_features,
                cfg.activation,
                generator=self.generator,
                device=self.device,
            )
        self.optimizer = make_optimizer(cfg, self.net.parameters())
        self.last_loss: torch.Tensor | None = None
        self._out: torch.Tensor | None = None  # the train prediction kept for learn()
        self._feats: list[torch.Tensor] = []
        self._valid: int | None = None
        self._task: Any = None  # the task the head was last reset for (reset_head only)
        if self._reset_head:  # zero from the start (diagnostics before the first act see it)
            with torch.no_grad():
                for p in self.net.layers[-1].parameters():
                    p.zero_()

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
        self.optimizer.step()
        self.last_loss = loss.detach()
        self._after_step(feats)
        if self._reset_head:
            self._new_task(info)

    def _after_step(self, feats: list[torch.Tensor]) -> None:
        """Hook run after every optimizer step, with the step's hidden activations."""

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
        """Non-parameter state tensors (none for backprop)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Network, optimizer and generator state (tensors and plain values)."""
        state = {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }
        if self._reset_head:
            state["head_task"] = self._task
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


_INCREMENTAL_CIFAR = "lop/IncrementalCIFAR100-v0"
_INCREMENTAL_VARIANTS = ("backprop", "shrink_perturb", "continual_backprop")


def build_agent(
    agent_cls: type,
    presets: dict[tuple[str, str], Any],
    name: str,
    env_spec: Any,
    observation_space: Any,
    action_space: Any,
    seed: int,
    device: str | torch.device,
    hparams: dict[str, Any],
) -> Any:
    """Pick the preset for ``env_spec``, apply ``hparams`` (checked) and build the agent.

    On class-incremental CIFAR-100 the paper's learners are ResNet-18s with a learning-rate
    schedule and early stopping: ``backprop``, ``shrink_perturb`` and ``continual_backprop``
    hand that stream to their :mod:`baselines.incremental` versions.
    """
    if getattr(env_spec, "id", None) == _INCREMENTAL_CIFAR and name in _INCREMENTAL_VARIANTS:
        from baselines import incremental

        factory = getattr(incremental, f"make_{name}_agent")
        return factory(env_spec, observation_space, action_space, seed, device, **hparams)
    preset, cfg = select_preset(presets, env_spec, name)
    cfg = replace_checked(cfg, what=f"{name} hyperparameter", **hparams)
    if is_vector_spec(env_spec):  # make_vec: one batched agent for all seeds
        if getattr(cfg, "arch", "mlp") != "mlp" or getattr(cfg, "reset_head", False):
            raise VectorizationNotSupported(
                f"{name} with arch={cfg.arch!r}, reset_head={cfg.reset_head!r} has no "
                "vectorized agent (MLPs without a head reset only); run the seeds one by one."
            )
        from baselines.vectorized import build_vectorized

        return build_vectorized(
            cfg, observation_space, action_space, vector_seeds(env_spec, seed), device, preset
        )
    return agent_cls(cfg, observation_space, action_space, seed, device, preset=preset)


def make_agent(
    env_spec: Any,
    observation_space: Any,
    action_space: Any,
    seed: int,
    device: str | torch.device = "cpu",
    **hparams: Any,
) -> BackpropAgent:
    """Backprop with its preset for the stream; ``hparams`` override :class:`BackpropConfig`."""
    return build_agent(
        BackpropAgent,
        PRESETS,
        "backprop",
        env_spec,
        observation_space,
        action_space,
        seed,
        device,
        hparams,
    )
