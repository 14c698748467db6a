"""Vectorized reference agents: N independent MLPs learning N seeds in the same tensor ops.

``lop_bench.make_vec`` gives N seeds of a stream; the agents here hold N networks as
batched weights ``W[l]`` of shape ``(N, out, in)`` and train them with hand-written
gradients (``bmm``), one optimizer step per step for every seed at once. One seed of a
20-5-1 net is bound by per-operation overhead; N seeds cost about the same operations.

Seed ``i`` is the single-seed agent of seed ``seeds[i]``, as far as floating point lets
it be: the same initial weights (drawn from a ``torch.Generator`` seeded the same way, in
the same order), the same fresh units and noise (drawn from the same generator), the
same update rules (SGD with coupled weight decay and momentum, as ``torch.optim.SGD``;
generate-and-test: the same :class:`baselines.core.gnt.GenerateAndTest`, N seeds). Batched
products add in another order than autograd's, so the weights differ by rounding; the
per-task curves agree within the tolerance the equivalence tests state.

Supported: SGD (``momentum``, coupled ``weight_decay``), the activations of
:mod:`baselines.core.nets`, and two heads: regression (``Box`` actions of shape (batch,
outputs), the mean squared error) and classification (``MultiDiscrete([n] * batch)``
actions, the argmax; cross-entropy against the integer labels, as
:class:`~baselines.agents.supervised.SupervisedAgent`). So the reference agents run many seeds of
slowly-changing regression and of online permuted MNIST. The factories raise
``VectorizationNotSupported`` otherwise.

The SGD step of a layer with at least :data:`FUSED_MIN_WEIGHTS` weights per seed,
``W <- (1 - lr * weight_decay) * W - lr * delta h^T``, is done in place without writing
the gradient to memory: at batch size 1 as elementwise passes over ``W`` (``mul_`` for the
decay, ``addcmul_`` for the rank-one term), for larger batches as one batched product
(``baddbmm_``). That halves the memory traffic of the update, which bounds a batch-1 step
of the 784-2000-2000-2000-10 net (38 MB a seed) and of many seeds of narrower nets.
Smaller layers (every regression net's) and runs with momentum (which keeps the gradient)
take ``torch.optim.SGD``'s two steps, gradient then update: at that size the two cost the
same, and the committed regression results were computed that way. Both equal the
single-seed update up to float32 rounding.

ReDo (:class:`~baselines.agents.supervised.ReDoConfig`) runs after the step on the batched
weights (:mod:`baselines.core.redo`, fresh units from each seed's generator, momentum
entries zeroed). L2 Init (:class:`~baselines.agents.supervised.L2InitConfig`) adds
``strength * (W - W0)`` to the gradient: in the two-step update as the single agent does,
in the fused one as an extra decay ``lr * strength`` and a constant pull ``+ lr * strength *
W0`` (the biases start at 0: they only decay).

UPGD (:class:`~baselines.agents.supervised.UPGDConfig`, its plain variant) forms every
layer's gradient (no fused step) and updates with :class:`~baselines.core.upgd.BatchedUPGD`,
seed ``i``'s noise from its generator as the single agent's; its steps run eagerly (no CUDA
graph). CReLU (``activation="crelu"``) doubles each hidden layer's features (the next
layer's fan-in), its derivative :func:`~baselines.core.activations.crelu_backward`. Layer normalization
(:class:`~baselines.agents.supervised.LayerNormConfig`) normalizes each hidden layer's
pre-activations over its units (``nn.LayerNorm``'s biased variance, eps 1e-5) with a scale
and shift per seed, ``(N, units)``, trained by the same SGD (after the weights in
``parameters()``, as the single agent's); its backward pass is written out in
:meth:`VectorMLPAgent._norm_backward`, its steps run eagerly (no CUDA graph).

On a CUDA device the whole step stays there: observations that are tensors on the
device (the streams' ``device=`` mode) give predictions that stay there too (no host
sync per step), and the step is replayed from CUDA graphs (:class:`_CudaGraphStep`;
the environment variable ``LOP_BENCH_CUDA_GRAPHS=0`` turns them off). With Triton there,
plain batch-1 SGD (backprop, continual backprop) moves only the weights that matter: the
rows of nonzero error, and at the paper's width every layer's nonzero inputs, with the
weights stored input-major (:mod:`baselines.core.rowsparse`; ``LOP_BENCH_TRITON=rows``
or ``0``). Generate-and-test's test pass joins the step's graph; its count and
replacements run after it. A GPU run draws from CUDA generators: it is another sample
than the CPU run of the same seed (the same distribution), reproducible on its device.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from baselines.agents.supervised import (
    ContinualBackpropConfig,
    LayerNormConfig,
    ShrinkPerturbConfig,
    SupervisedConfig,
)
from baselines.core import rowsparse
from baselines.core.activations import crelu, crelu_backward
from baselines.core.gnt import DenseUnits, GenerateAndTest
from baselines.core.nets import feature_width, kaiming_uniform_bound
from baselines.core.optim import noise_chunk_size
from baselines.core.redo import ReDo, ReDoFields, UnitLayer
from baselines.core.regularizers import L2Init, L2InitFields
from baselines.core.rowsparse import available as rowsparse_available
from baselines.core.rowsparse import (
    input_major_available,
    prop_update,
    prop_update_input_major,
    sparse_input_linear,
)
from baselines.core.upgd import BatchedUPGD, UPGDFields
from lop_bench.agents import vector_seeds
from lop_bench.config import config_to_dict, env_choice
from lop_bench.errors import VectorizationNotSupported
from lop_bench.seeding import check_seed

__all__ = [
    "FUSED_MIN_WEIGHTS",
    "VectorMLPAgent",
]

FUSED_MIN_WEIGHTS = 256
"""Layers with at least this many weights per seed take the fused SGD step (module docstring)."""


def _derivative(activation: str, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """d activation / dz, from the pre-activation ``z`` and the activation ``h``."""
    if activation == "relu":
        return (z > 0).to(z.dtype)
    if activation == "linear":
        return torch.ones_like(z)
    if activation == "tanh":
        return 1 - h * h
    if activation == "sigmoid":
        return h * (1 - h)
    if activation == "leaky_relu":
        return torch.where(z > 0, 1.0, 0.01).to(z.dtype)
    if activation == "elu":
        return torch.where(z > 0, torch.ones_like(z), h + 1)
    if activation == "swish":
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    raise VectorizationNotSupported(f"no vectorized derivative for activation {activation!r}.")


_ACTIVATIONS = {
    "relu": torch.relu,
    "linear": lambda z: z,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": torch.nn.functional.leaky_relu,
    "elu": torch.nn.functional.elu,
    "swish": torch.nn.functional.silu,
    "crelu": lambda z: crelu(z, -1),  # backward: crelu_backward
}


def _head(observation_space: Any, action_space: Any) -> tuple[int, bool]:
    """``(outputs, classify)`` of a vector env's single spaces: a regression head for
    ``Box`` actions (batch, outputs), a classification head for ``MultiDiscrete([n] *
    batch)`` (labels from 0)."""
    batch = observation_space.shape[0] if len(observation_space.shape) >= 2 else None
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 2 \
            and action_space.shape[0] == batch:
        return int(action_space.shape[1]), False
    if isinstance(action_space, spaces.MultiDiscrete):
        nvec, start = np.asarray(action_space.nvec), np.asarray(action_space.start)
        if nvec.shape == (batch,) and (nvec == nvec[0]).all() and not start.any():
            return int(nvec[0]), True
    raise VectorizationNotSupported(
        "vectorized agents support regression streams (Box actions of shape (batch, outputs)) "
        "and classification streams (MultiDiscrete([n] * batch) actions), got "
        f"{action_space!r} for observations {observation_space!r}."
    )


class VectorMLPAgent:
    """N MLPs (one per seed) trained online by SGD, with a regression or a classification
    head; optionally shrink-and-perturb noise and generate-and-test. Built by the
    reference agents' factories for a vector env.

    ``parameters()`` returns batched tensors with a leading seed axis; ``features(x)``
    takes ``(N, batch, in)`` and returns ``(N, batch, units)`` per hidden layer.
    """

    vectorized = True

    @classmethod
    def for_stream(cls, cfg: SupervisedConfig, env_spec: Any, observation_space: Any,
                   action_space: Any, seed: int | Sequence[int], device: str | torch.device,
                   preset: str | None) -> VectorMLPAgent:
        """The agent for a vector env (``make_vec``): its sub-envs' seeds from ``seed``
        (:func:`lop_bench.agents.vector_seeds`)."""
        return cls(cfg, observation_space, action_space, vector_seeds(env_spec, seed), device,
                   preset)

    def __init__(
        self,
        cfg: SupervisedConfig,
        observation_space: Any,
        action_space: Any,
        seeds: Sequence[int],
        device: str | torch.device = "cpu",
        preset: str | None = None,
    ) -> None:
        if cfg.arch != "mlp" or cfg.reset_head:
            raise VectorizationNotSupported(
                f"arch={cfg.arch!r}, reset_head={cfg.reset_head!r} has no vectorized agent (MLPs "
                "without a head reset only); run the seeds one by one."
            )
        if cfg.activation == "crelu" and isinstance(cfg, ContinualBackpropConfig):
            raise VectorizationNotSupported(  # the single agent says why it cannot run
                "generate-and-test with CReLU has no vectorized agent."
            )
        if cfg.optimizer != "sgd":
            raise VectorizationNotSupported(
                "vectorized agents support optimizer='sgd' only; run Adam seeds one by one."
            )
        out_features, self.classify = _head(observation_space, action_space)
        if cfg.activation not in _ACTIVATIONS:
            raise VectorizationNotSupported(f"activation {cfg.activation!r} is not vectorized.")
        self.cfg = cfg
        self.preset = preset
        self.hparams = config_to_dict(cfg)
        self.device = torch.device(device)
        self.seeds = tuple(check_seed(s) for s in seeds)
        n = self.num_envs = len(self.seeds)
        in_features = math.prod(observation_space.shape[1:])
        batch = observation_space.shape[0]
        hidden = tuple(cfg.hidden)
        sizes = (in_features, *hidden, out_features)
        in_sizes = (in_features, *(feature_width(cfg.activation, h) for h in hidden))
        self.activation = cfg.activation
        self._act = _ACTIVATIONS[cfg.activation]
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]
        gains = [cfg.activation] * len(hidden) + ["linear"]
        self.init_bounds = [kaiming_uniform_bound(a, g) for a, g in zip(in_sizes, gains)]
        self.W: list[torch.Tensor] = []
        self.b: list[torch.Tensor] = []
        for a, o in zip(in_sizes, sizes[1:]):
            self.W.append(torch.empty(n, o, a, device=self.device))
            self.b.append(torch.zeros(n, o, device=self.device))
        # The single-seed MLP fills its layers in order from its generator: so do we, per seed.
        for i, g in enumerate(self.generators):
            for W, bound in zip(self.W, self.init_bounds):
                W[i].uniform_(-bound, bound, generator=g)
        # On CUDA with Triton, a batch-1 ReLU net taking plain SGD steps (no momentum, decay,
        # L2 Init, noise, normalization or UPGD) stores its weights input-major: its forward
        # pass, backward pass and update skip the zero inputs of every layer
        # (baselines.core.rowsparse). The same values up to float rounding;
        # LOP_BENCH_TRITON=rows or 0 turns it off.
        self._input_major = (
            input_major_available(self.device) and batch == 1 and cfg.activation == "relu"
            and not cfg.momentum and not cfg.weight_decay
            and not isinstance(cfg, (UPGDFields, L2InitFields, ShrinkPerturbConfig))
            and not (isinstance(cfg, LayerNormConfig) and cfg.layer_norm)
            and all(W[0].numel() >= FUSED_MIN_WEIGHTS for W in self.W)
            and max(W[0].numel() for W in self.W) >= rowsparse.INPUT_MAJOR_MIN_WEIGHTS)
        if self._input_major:
            self.W = [W.transpose(1, 2).contiguous().transpose(1, 2) for W in self.W]
        self.params = [t for pair in zip(self.W, self.b) for t in pair]
        # Layer normalization: a scale (1) and a shift (0) per seed and hidden unit, after
        # the weights in the parameter list (the single MLP's order: layers, then norms).
        self.norm_scale: list[torch.Tensor] = []
        self.norm_shift: list[torch.Tensor] = []
        if isinstance(cfg, LayerNormConfig) and cfg.layer_norm:
            self.norm_scale = [torch.ones(n, h, device=self.device) for h in hidden]
            self.norm_shift = [torch.zeros(n, h, device=self.device) for h in hidden]
            self.params += [t for pair in zip(self.norm_scale, self.norm_shift) for t in pair]
        # Views made once (they follow the in-place updates): fewer Python-level ops per step.
        self._Wt = [W.transpose(1, 2) for W in self.W]
        self._b3 = [b.unsqueeze(1) for b in self.b]
        self.lr = float(cfg.lr)
        self.weight_decay = float(cfg.weight_decay)
        self.momentum = float(cfg.momentum)
        self.momentum_buffers: list[torch.Tensor] | None = None
        # Which layers take the fused step (see the module docstring), and its constants.
        self._fused = [not self.momentum and W[0].numel() >= FUSED_MIN_WEIGHTS for W in self.W]
        # UPGD: every layer's gradient is formed (no fused step), then its batched update.
        self.upgd: BatchedUPGD | None = None
        if isinstance(cfg, UPGDFields):
            self._fused = [False] * len(self.W)
            self.upgd = BatchedUPGD(self.params, self.generators, lr=cfg.lr,
                                    weight_decay=cfg.weight_decay,
                                    beta_utility=cfg.beta_utility, sigma=cfg.sigma)
        self._decay = 1.0 - self.lr * self.weight_decay
        # L2 Init: theta0 per seed; the fused step's extra decay and pull (module docstring).
        self.l2_init: L2Init | None = None
        self._pull: list[torch.Tensor] | None = None
        if isinstance(cfg, L2InitFields):
            strength = cfg.l2_init_strength
            self.l2_init = L2Init(self.params, strength)
            self._initial = {id(p): p0 for p, p0 in zip(self.params, self.l2_init.initial)}
            self._decay = 1.0 - self.lr * (self.weight_decay + strength)
            self._pull = [W0.mul(self.lr * strength) for W0 in self.l2_init.initial[0::2]]
        self.redo: ReDo | None = ReDo.from_config(cfg) if isinstance(cfg, ReDoFields) else None
        self._ones = torch.ones(n, 1, batch, device=self.device)  # sums the batch (bias)
        if self.classify:  # d cross-entropy / d logits = softmax - one-hot: the -1 of the one-hot
            self._minus_one = torch.full((n, batch, 1), -1.0, device=self.device)
        self.noise_std = cfg.noise_std if isinstance(cfg, ShrinkPerturbConfig) else 0.0
        if self.noise_std > 0:
            self._num_params = sum(p[0].numel() for p in self.params)
            self._noise_chunk = noise_chunk_size(self._num_params)
            self._noise: torch.Tensor | None = None
            self._noise_row = 0
        self.gnt: GenerateAndTest | None = None
        if isinstance(cfg, ContinualBackpropConfig):
            units = [DenseUnits(self.W[i], self.b[i], self.W[i + 1], self.b[i + 1],
                                self.init_bounds[i], (2 * i, 2 * i + 1, 2 * i + 2), batched=True)
                     for i in range(len(hidden))]
            self.gnt = GenerateAndTest.from_config(units, self.generators, _MomentumEntries(self),
                                                   cfg)
        self._cache: tuple | None = None
        # Generate-and-test's test pass (device only) joins the step's CUDA graph; its count
        # and replacements (host) run after.
        self._measure_in_step = self.gnt is not None and self.noise_std == 0
        # On CUDA the step is replayed from CUDA graphs, unless LOP_BENCH_CUDA_GRAPHS=0 (or
        # ``agent.use_cuda_graphs = False`` before the first step) runs it eagerly.
        self.use_cuda_graphs = (self.device.type == "cuda"
                                and env_choice("LOP_BENCH_CUDA_GRAPHS", ("1", "0"), "1") == "1"
                                and self.upgd is None  # UPGD's noise draws: eager
                                and not self.norm_scale)  # the norms' backward: eager
        self._graph_steps: _CudaGraphStep | None = None
        # On CUDA with Triton, the batch-1 backward pass and update of a fused layer
        # without decay or pull read and write only the rows with a nonzero error, in one pass
        # (baselines.core.rowsparse; LOP_BENCH_TRITON=0 turns it off).
        self._rowsparse = (rowsparse_available(self.device) and batch == 1
                           and self._decay == 1.0 and self._pull is None)

    @property
    def _graphs(self) -> _CudaGraphStep | None:
        """The CUDA-graph replay of the step, made on first use (None: eager)."""
        if self._graph_steps is None and self.use_cuda_graphs:
            self._graph_steps = _CudaGraphStep(self)
        return self._graph_steps if self.use_cuda_graphs else None

    # -- the online protocol ---------------------------------------------------------------
    def _input(self, obs: Any) -> torch.Tensor:
        x = torch.as_tensor(obs, device=self.device)
        if x.dtype != torch.float32:
            x = x.float()
        return x if x.dim() == 3 else x.reshape(x.shape[0], x.shape[1], -1)

    def _forward(self, x: torch.Tensor):
        # The weights never require grad: no autograd graph is built, no no_grad needed.
        if self.norm_scale:
            return self._forward_norm(x)
        zs, hs = [], [x]
        h = x
        act = self._act
        sparse = self._input_major and x.shape[1] == 1
        for W, Wt, b in zip(self.W[:-1], self._Wt[:-1], self._b3[:-1]):
            z = sparse_input_linear(W, h, b) if sparse else torch.baddbmm(b, h, Wt)
            zs.append(z)
            h = act(z)
            hs.append(h)
        if sparse:
            return sparse_input_linear(self.W[-1], h, self._b3[-1]), zs, hs
        return torch.baddbmm(self._b3[-1], h, self._Wt[-1]), zs, hs

    def _forward_norm(self, x: torch.Tensor):
        """:meth:`_forward` with layer normalization: ``zs`` holds each hidden layer's
        normalized pre-activation ``y = x_hat * scale + shift`` (what the activation reads)
        and, in ``zs.norm``, the ``(x_hat, 1 / std)`` its backward pass needs."""
        zs, hs = _NormedPreactivations(), [x]
        h = x
        act = self._act
        for Wt, b, scale, shift in zip(self._Wt[:-1], self._b3[:-1], self.norm_scale,
                                       self.norm_shift):
            z = torch.baddbmm(b, h, Wt)
            centred = z - z.mean(-1, keepdim=True)
            inv_std = torch.rsqrt(centred.square().mean(-1, keepdim=True).add_(_NORM_EPS))
            x_hat = centred.mul_(inv_std)
            y = torch.addcmul(shift.unsqueeze(1), x_hat, scale.unsqueeze(1))
            zs.append(y)
            zs.norm.append((x_hat, inv_std))
            h = act(y)
            hs.append(h)
        return torch.baddbmm(self._b3[-1], h, self._Wt[-1]), zs, hs

    def _norm_backward(self, i: int, dy: torch.Tensor, zs: _NormedPreactivations,
                       grads: list[torch.Tensor]) -> torch.Tensor:
        """Hidden layer ``i``'s normalization backward: the scale's and shift's gradients
        into ``grads`` (summed over the batch), and dL/dz from dL/dy:
        ``dz = (dx - mean(dx) - x_hat * mean(dx * x_hat)) / std``, ``dx = dy * scale``."""
        x_hat, inv_std = zs.norm[i]
        k = 2 * len(self.W) + 2 * i
        grads[k] = (dy * x_hat).sum(1)
        grads[k + 1] = dy.sum(1)
        dx = dy * self.norm_scale[i].unsqueeze(1)
        dz = dx - dx.mean(-1, keepdim=True)
        dz.sub_(x_hat * (dx * x_hat).mean(-1, keepdim=True))
        return dz.mul_(inv_std)

    def _predict(self, x: torch.Tensor) -> tuple:
        """``(out, zs, hs, prediction)``: the forward pass and what :meth:`act` returns."""
        out, zs, hs = self._forward(x)
        return out, zs, hs, out.argmax(2) if self.classify else out

    def act(self, obs: Any, infos: dict) -> Any:
        """Predictions for observations ``(N, batch, in)``: ``(N, batch, outputs)`` floats
        (regression) or ``(N, batch)`` int64 labels (classification). A numpy array for
        numpy observations; for tensor observations a tensor on the agent's device (no
        host sync), never overwritten later."""
        x = self._input(obs)
        graphs = self._graphs
        cache = None if graphs is None else graphs.forward(x)
        if cache is None:
            cache = self._predict(x)
        else:  # the graph's outputs, which its next replay rewrites: copy the prediction
            cache = (*cache[:3], cache[3].clone())
        self._cache = cache
        pred = cache[3]
        return pred if torch.is_tensor(obs) else pred.cpu().numpy()

    def learn(self, obs, action, reward, next_obs, terminated, truncated, infos: dict) -> None:
        """One SGD step per seed on the kept predictions against ``infos["target"]``."""
        target = infos.get("target")
        cache, self._cache = self._cache, None
        if target is None:
            return
        if cache is None:
            cache = self._predict(self._input(obs))
        out, zs, hs, _ = cache
        y = self._target(target, out)
        if self._graphs is None or not self._graphs.step(out, y):
            self._device_step(out, zs, hs, y)
        if self.noise_std > 0:
            self._perturb()
        if self.gnt is not None:
            if self._measure_in_step:
                self.gnt.generate()  # its measure ran in _device_step
            else:
                self.gnt.step(hs[1:])
        if self.redo is not None:
            self.redo.step(hs[1:], self._redo_layers, self.generators)

    def _redo_layers(self) -> list[UnitLayer]:
        """ReDo's view of the hidden layers: the batched weights and momentum buffers."""
        mb = self.momentum_buffers
        return [UnitLayer(self.W[i], self.b[i], self.W[i + 1], self.init_bounds[i],
                          weight_states=() if mb is None else (mb[2 * i],),
                          bias_states=() if mb is None else (mb[2 * i + 1],),
                          next_states=() if mb is None else (mb[2 * i + 2],))
                for i in range(len(self.W) - 1)]

    def _target(self, target: Any, out: torch.Tensor) -> torch.Tensor:
        """``infos["target"]`` as a tensor on the device: ``out``'s shape (regression) or
        ``(N, batch, 1)`` int64 labels (classification)."""
        y = torch.as_tensor(target, device=self.device)
        if self.classify:
            return y.reshape(out.shape[0], out.shape[1], 1).long()
        return y if y.shape == out.shape else y.reshape(out.shape)

    def _device_step(self, out: torch.Tensor, zs: list[torch.Tensor], hs: list[torch.Tensor],
                     y: torch.Tensor) -> None:
        """What a step does on the device alone (what :class:`_CudaGraphStep` replays): the
        backward pass and SGD step, then generate-and-test's measure where nothing runs
        between the two (no shrink-and-perturb noise)."""
        self._backward_and_step(out, zs, hs, y)
        if self._measure_in_step:
            self.gnt.measure(hs[1:])

    def _backward_and_step(self, out: torch.Tensor, zs: list[torch.Tensor],
                           hs: list[torch.Tensor], y: torch.Tensor) -> None:
        """Backpropagate the loss of the predictions ``out`` against ``y`` and take one SGD
        step per seed (fused per layer where :data:`FUSED_MIN_WEIGHTS` says so)."""
        batch = out.shape[1]
        if self.classify:
            # Cross-entropy, mean over the batch (as F.cross_entropy): softmax - one-hot.
            delta = torch.softmax(out, 2).scatter_add_(2, y, self._minus_one)
            if batch > 1:
                delta.div_(batch)
        else:
            # MSE, mean over batch and outputs (as F.mse_loss): d loss / d out.
            delta = torch.sub(out, y).mul_(2.0 / (batch * out.shape[2]))
        grads: list[torch.Tensor] = [None] * len(self.params)  # type: ignore[list-item]
        relu = self.activation == "relu"
        crelu_layers = self.activation == "crelu"
        decay = self._decay
        for k in range(len(self.W) - 1, -1, -1):
            if self._rowsparse and self._fused[k]:
                # One pass over the rows of W[k] with a nonzero error: the error below
                # (from the weights before the update) and the update (module docstring).
                update = prop_update_input_major if self._input_major else prop_update
                below = update(self.W[k], delta, hs[k], self.lr, prop=k > 0)
                self._b3[k].add_(delta, alpha=-self.lr)
            elif self._fused[k]:
                # The error of the layer below, from W[k] before this step changes it.
                below = torch.bmm(delta, self.W[k]) if k > 0 else None
                W, b = self.W[k], self._b3[k]
                if batch == 1:  # a rank-1 update: elementwise passes are the fastest here
                    if decay != 1.0:
                        W.mul_(decay)
                        b.mul_(decay)
                    W.addcmul_(delta.transpose(1, 2), hs[k], value=-self.lr)
                    b.add_(delta, alpha=-self.lr)
                else:
                    W.baddbmm_(delta.transpose(1, 2), hs[k], beta=decay, alpha=-self.lr)
                    b.baddbmm_(self._ones, delta, beta=decay, alpha=-self.lr)
                if self._pull is not None:  # L2 Init's pull toward W0
                    W.add_(self._pull[k])
            else:
                below = torch.bmm(delta, self.W[k]) if k > 0 else None
                grads[2 * k] = torch.bmm(delta.transpose(1, 2), hs[k])
                grads[2 * k + 1] = delta.sum(1)
            if below is not None:
                if relu:  # autograd's own ReLU backward: one op
                    delta = torch.ops.aten.threshold_backward(below, hs[k], 0)
                elif crelu_layers:  # 2k features' errors -> the k units' errors
                    delta = crelu_backward(below, zs[k - 1])
                else:
                    delta = below.mul_(_derivative(self.activation, zs[k - 1], hs[k]))
                if self.norm_scale:  # through the normalization to the linear layer's output
                    delta = self._norm_backward(k - 1, delta, zs, grads)
        if not any(self._fused):
            self._sgd(self.params, grads)
        elif not all(self._fused) or self.norm_scale:
            self._sgd(*zip(*[(p, g) for p, g in zip(self.params, grads) if g is not None]))

    def _sgd(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
        """``torch.optim.SGD``'s update of ``params`` (coupled weight decay, momentum (of
        every parameter: no layer is fused then), no dampening)."""
        params, grads = list(params), list(grads)
        if self.upgd is not None:  # UPGD's own update instead (no layer is fused then)
            self.upgd.step(params, grads)
            return
        if self.weight_decay:
            torch._foreach_add_(grads, params, alpha=self.weight_decay)
        if self.l2_init is not None:  # coupled: strength * (theta - theta0)
            initial = [self._initial[id(p)] for p in params]
            torch._foreach_add_(grads, torch._foreach_sub(params, initial),
                                alpha=self.l2_init.strength)
        if self.momentum:
            if self.momentum_buffers is None:
                self.momentum_buffers = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(self.momentum_buffers, self.momentum)
                torch._foreach_add_(self.momentum_buffers, grads)
            grads = self.momentum_buffers
        torch._foreach_add_(params, grads, alpha=-self.lr)

    def _perturb(self) -> None:
        """Shrink-and-perturb noise, drawn per seed in chunks of steps (the single agent's rule)."""
        if self._noise is None or self._noise_row == self._noise.shape[1]:
            if self._noise is None:  # one buffer, refilled in place: no allocation per chunk
                self._noise = torch.empty(self.num_envs, self._noise_chunk, self._num_params,
                                          device=self.device)
            for noise, g in zip(self._noise, self.generators):
                torch.randn(noise.shape, generator=g, device=self.device, out=noise)
            self._noise_row = 0
        row = self._noise[:, self._noise_row]
        self._noise_row += 1
        offset = 0
        for p in self.params:
            k = p[0].numel()
            p.add_(row[:, offset:offset + k].reshape(p.shape), alpha=self.noise_std)
            offset += k

    # -- diagnostics ---------------------------------------------------------------------
    def features(self, x: Any) -> list[torch.Tensor]:
        """Hidden activations per hidden layer, each ``(N, batch, units)``."""
        return self._forward(self._input(x))[2][1:]

    def parameters(self) -> list[torch.Tensor]:
        """Batched weights and biases (leading axis: seed)."""
        return list(self.params)

    def buffers(self) -> list[torch.Tensor]:
        """Generate-and-test's batched state (utilities, mean activations, ages), if any."""
        return self.gnt.buffers() if self.gnt is not None else []

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, momentum, every seed's generator, the pending noise and generate-and-test's
        state (tensors, numpy arrays and plain values; live tensors, as torch's own)."""
        state: dict[str, Any] = {
            "W": list(self.W), "b": list(self.b), "momentum_buffers": self.momentum_buffers,
            "norms": [*self.norm_scale, *self.norm_shift],
            "generators": [g.get_state() for g in self.generators],
        }
        if self.noise_std > 0:
            state["noise"], state["noise_row"] = self._noise, self._noise_row
        if self.gnt is not None:
            state["gnt"] = self.gnt.state_dict()
        if self.upgd is not None:
            state["upgd"] = self.upgd.state_dict()
        if self.redo is not None:
            state["redo"] = self.redo.state_dict()
        if self.l2_init is not None:
            state["l2_init"] = self.l2_init.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (of an agent of the same config and seeds)."""
        if len(state["W"]) != len(self.W) or len(state["generators"]) != self.num_envs:
            raise ValueError(
                f"the state holds {len(state['W'])} layers of {len(state['generators'])} seeds; "
                f"this agent has {len(self.W)} layers of {self.num_envs} seeds."
            )
        for dst, src in zip([*self.W, *self.b, *self.norm_scale, *self.norm_shift],
                            [*state["W"], *state["b"], *state.get("norms", [])]):
            dst.copy_(torch.as_tensor(src))  # in place: the views and self.params follow
        buffers = state["momentum_buffers"]
        self.momentum_buffers = (None if buffers is None else
                                 [torch.as_tensor(m, device=self.device).clone() for m in buffers])
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(torch.as_tensor(s, device="cpu"))
        if self.noise_std > 0:
            noise = state["noise"]
            self._noise = None if noise is None else torch.as_tensor(noise, device=self.device).clone()
            self._noise_row = int(state["noise_row"])
        if self.gnt is not None:
            self.gnt.load_state_dict(state["gnt"])
        if self.upgd is not None:
            self.upgd.load_state_dict(state["upgd"])
        if self.redo is not None:
            self.redo.load_state_dict(state["redo"])
        if self.l2_init is not None:
            self.l2_init.load_state_dict(state["l2_init"])  # in place: _initial follows
            for pull, W0 in zip(self._pull, self.l2_init.initial[0::2]):
                torch.mul(W0, self.lr * self.l2_init.strength, out=pull)
        self._cache = None
        self._graph_steps = None  # its graphs hold the replaced momentum buffers: capture anew


_NORM_EPS = 1e-5  # nn.LayerNorm's default, as the single agent's


class _NormedPreactivations(list):
    """The hidden layers' normalized pre-activations, with each normalization's
    ``(x_hat, 1 / std)`` in ``norm`` (:meth:`VectorMLPAgent._forward_norm`)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm: list[tuple[torch.Tensor, torch.Tensor]] = []


class _CudaGraph:
    """One CUDA graph: ``fn``'s kernels recorded (not run) at construction, on static
    tensors; :meth:`replay` runs them and returns ``fn``'s outputs, rewritten in place."""

    def __init__(self, fn: Callable[[], Any], pool: Any = None) -> None:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = fn()
        self.pool = self.graph.pool()

    def replay(self) -> Any:
        self.graph.replay()
        return self.outputs


class _CudaGraphStep:
    """The vectorized agent's forward pass and SGD step, replayed from two CUDA graphs.

    At batch size 1 a step is a few dozen small kernels, each launched from Python for a
    few microseconds: the GPU would mostly wait. A CUDA graph launches them all at once.
    The forward pass (observations -> outputs, activations, predictions) and the step
    (targets -> backpropagation and the SGD update) are two graphs, since the stream
    reveals the targets between them. Observations and targets are copied into static
    tensors; the outputs are the graph's own tensors, rewritten by every replay.
    Generate-and-test's test pass (its utilities, on the device) is part of the step's
    graph; its count and replacements (the counts live on the host) and shrink-and-perturb's
    noise (drawn in chunks from each seed's generator) run eagerly after the replayed step,
    on the same tensors.

    The graphs are captured after ``warmup`` eager steps (which initialize cuBLAS and the
    momentum buffers) and replay the eager step's kernels, so the results equal the eager
    path's (up to float rounding, should cuBLAS pick another algorithm under capture). A
    capture that fails warns once and leaves the agent eager. ``graph`` makes a graph from
    a function (:class:`_CudaGraph`; the tests pass one that runs on the CPU).
    """

    def __init__(self, agent: VectorMLPAgent, warmup: int = 2,
                 graph: Callable[..., Any] = _CudaGraph) -> None:
        self.agent = agent
        self.warmup = warmup
        self.graph = graph
        self.eager_steps = 0
        self.failed = False
        self._forward: Any = None
        self._step: Any = None

    def forward(self, x: torch.Tensor) -> tuple | None:
        """``(out, zs, hs, prediction)`` replayed for ``x``, or None: run it eagerly."""
        if self._forward is None:
            if self.failed or self.eager_steps < self.warmup:
                return None
            self._x = x.clone()
            self._forward = self._capture(lambda: self.agent._predict(self._x))
            if self._forward is None:
                return None
        self._x.copy_(x)
        return self._forward.replay()

    def step(self, out: torch.Tensor, y: torch.Tensor) -> bool:
        """Replay the step for targets ``y`` when ``out`` is the forward graph's output;
        False when the caller must take the step eagerly."""
        if self._forward is None or out is not self._forward.outputs[0]:
            self.eager_steps += 1
            return False
        if self._step is None:
            self._y = y.clone()
            out, zs, hs, _ = self._forward.outputs
            self._step = self._capture(lambda: self.agent._device_step(out, zs, hs, self._y),
                                       pool=self._forward.pool)
            if self._step is None:
                return False
        self._y.copy_(y)
        self._step.replay()
        return True

    def _capture(self, fn: Callable[[], Any], pool: Any = None) -> Any:
        try:
            if self.graph is _CudaGraph and self.agent.device.type != "cuda":
                # A capture records CUDA kernels only: the CPU ops of an agent on another
                # device would run once, at capture, and never again at a replay.
                raise RuntimeError(f"the agent's tensors are on {self.agent.device}, not CUDA")
            return self.graph(fn, pool)
        except Exception as exc:  # an op that cannot be captured: the step stays eager
            self._forward = None
            if self.agent._measure_in_step:
                # Capture anew at the next step without generate-and-test's measure (which
                # then runs eagerly after the replayed step), before giving up on graphs.
                self.agent._measure_in_step = False
                warnings.warn(f"CUDA graph capture of the vectorized step with "
                              f"generate-and-test's measure failed ({exc}); capturing it "
                              "without.", RuntimeWarning, stacklevel=3)
                return None
            warnings.warn(f"CUDA graph capture of the vectorized step failed ({exc}); "
                          "running it eagerly.", RuntimeWarning, stacklevel=3)
            self.failed = True
            return None


class _MomentumEntries:
    """Generate-and-test's optimizer-state reset (:data:`~baselines.core.gnt.ResetState`)
    for the batched SGD: the momentum buffers' entries of a seed (``param`` is the index of
    the parameter in ``agent.params``)."""

    def __init__(self, agent: VectorMLPAgent) -> None:
        self.agent = agent

    def __call__(self, param: int, seed: int, index: torch.Tensor, dim: int) -> None:
        buffers = self.agent.momentum_buffers
        if buffers is None:
            return
        if dim == 0:
            buffers[param][seed][index] = 0.0
        else:
            buffers[param][seed][:, index] = 0.0
