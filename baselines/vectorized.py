"""Vectorized reference agents: N independent MLPs learning N seeds in the same tensor ops.

``lop_bench.make_vec`` gives N seeds of a stream; the agents here hold N networks as
batched weights ``W[l]`` of shape ``(N, out, in)`` and train them with hand-written
gradients (``bmm``), one optimizer step per step for every seed at once. One seed of a
20-5-1 net is bound by per-operation overhead; N seeds cost about the same operations.

Seed ``i`` is the single-seed agent of seed ``seeds[i]``, as far as floating point lets
it be: the same initial weights (drawn from a ``torch.Generator`` seeded the same way, in
the same order), the same fresh units and noise (drawn from the same generator), the
same update rules (SGD with coupled weight decay and momentum, as ``torch.optim.SGD``;
generate-and-test as :class:`baselines.continual_backprop.GenerateAndTest`). Batched
products add in another order than autograd's, so the weights differ by rounding; the
per-task curves agree within the tolerance the equivalence tests state.

Supported: regression streams (``Box`` actions, MSE), SGD, the activations of
:mod:`baselines.nets`. The factories raise ``VectorizationNotSupported`` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from baselines.nets import kaiming_uniform_bound
from lop_bench.errors import VectorizationNotSupported
from lop_bench.seeding import check_seed

__all__ = ["VectorMLPAgent", "build_vectorized", "noise_chunk_size", "coin_flip"]

_NOISE_CHUNK_ELEMENTS = 1 << 20


def noise_chunk_size(num_params: int) -> int:
    """Steps of shrink-and-perturb noise drawn at once (same rule single and vectorized)."""
    return max(1, min(1024, _NOISE_CHUNK_ELEMENTS // max(1, num_params)))


def coin_flip(generator: torch.Generator) -> float:
    """One uniform draw in ``[0, 1)`` from ``generator`` (on its device): the coin of
    generate-and-test's ``accumulate=False`` (same rule single and vectorized)."""
    return float(torch.rand(1, generator=generator, device=generator.device))


def build_vectorized(cfg: Any, observation_space: Any, action_space: Any,
                     seeds: Sequence[int], device: Any, preset: str | None) -> VectorMLPAgent:
    """The vectorized agent for a reference agent's config: plain SGD (backprop, l2,
    linear), with noise (``noise_std``: shrink and perturb), with generate-and-test
    (``replacement_rate``: continual backprop)."""
    gnt = None
    if hasattr(cfg, "replacement_rate"):
        gnt = dict(replacement_rate=cfg.replacement_rate, decay_rate=cfg.decay_rate,
                   maturity_threshold=cfg.maturity_threshold, utility=cfg.utility,
                   accumulate=cfg.accumulate)
    return VectorMLPAgent(cfg, observation_space, action_space, seeds, device, preset,
                          noise_std=getattr(cfg, "noise_std", 0.0), gnt=gnt)


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
}


class VectorMLPAgent:
    """N MLPs (one per seed) trained online by SGD; optionally shrink-and-perturb noise
    and generate-and-test. Built by the reference agents' factories for a vector env.

    ``parameters()`` returns batched tensors with a leading seed axis; ``features(x)``
    takes ``(N, batch, in)`` and returns ``(N, batch, units)`` per hidden layer.
    """

    vectorized = True

    def __init__(
        self,
        cfg: Any,
        observation_space: Any,
        action_space: Any,
        seeds: Sequence[int],
        device: str | torch.device = "cpu",
        preset: str | None = None,
        *,
        noise_std: float = 0.0,
        gnt: dict[str, Any] | None = None,
    ) -> None:
        if getattr(cfg, "optimizer", "sgd") != "sgd":
            raise VectorizationNotSupported(
                "vectorized agents support optimizer='sgd' only; run Adam seeds one by one."
            )
        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 2:
            raise VectorizationNotSupported(
                "vectorized agents support regression streams (Box actions of shape (batch, "
                f"outputs)) only, got {action_space!r}."
            )
        if cfg.activation not in _ACTIVATIONS:
            raise VectorizationNotSupported(f"activation {cfg.activation!r} is not vectorized.")
        self.cfg = cfg
        self.preset = preset
        from lop_bench.config import config_to_dict

        self.hparams = config_to_dict(cfg)
        self.device = torch.device(device)
        self.seeds = tuple(check_seed(s) for s in seeds)
        n = self.num_envs = len(self.seeds)
        in_features = math.prod(observation_space.shape[1:])
        out_features = action_space.shape[1]
        hidden = tuple(cfg.hidden)
        sizes = (in_features, *hidden, out_features)
        self.activation = cfg.activation
        self._act = _ACTIVATIONS[cfg.activation]
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]
        gains = [cfg.activation] * len(hidden) + ["linear"]
        self.init_bounds = [kaiming_uniform_bound(a, g) for a, g in zip(sizes[:-1], gains)]
        self.W: list[torch.Tensor] = []
        self.b: list[torch.Tensor] = []
        for a, o in zip(sizes[:-1], sizes[1:]):
            self.W.append(torch.empty(n, o, a, device=self.device))
            self.b.append(torch.zeros(n, o, device=self.device))
        # The single-seed MLP fills its layers in order from its generator: so do we, per seed.
        for i, g in enumerate(self.generators):
            for W, bound in zip(self.W, self.init_bounds):
                W[i].uniform_(-bound, bound, generator=g)
        self.params = [t for pair in zip(self.W, self.b) for t in pair]
        # Views made once (they follow the in-place updates): fewer Python-level ops per step.
        self._Wt = [W.transpose(1, 2) for W in self.W]
        self._b3 = [b.unsqueeze(1) for b in self.b]
        self.lr = float(cfg.lr)
        self.weight_decay = float(cfg.weight_decay)
        self.momentum = float(cfg.momentum)
        self.momentum_buffers: list[torch.Tensor] | None = None
        self.noise_std = float(noise_std)
        if self.noise_std > 0:
            self._num_params = sum(p[0].numel() for p in self.params)
            self._noise_chunk = noise_chunk_size(self._num_params)
            self._noise: torch.Tensor | None = None
            self._noise_row = 0
        self.gnt = _VectorGnT(self, **gnt) if gnt else None
        self._cache: tuple | None = None

    # -- the online protocol ---------------------------------------------------------------
    def _input(self, obs: Any) -> torch.Tensor:
        x = torch.as_tensor(obs, device=self.device)
        if x.dtype != torch.float32:
            x = x.float()
        return x if x.dim() == 3 else x.reshape(x.shape[0], x.shape[1], -1)

    def _forward(self, x: torch.Tensor):
        # The weights never require grad: no autograd graph is built, no no_grad needed.
        zs, hs = [], [x]
        h = x
        act = self._act
        for Wt, b in zip(self._Wt[:-1], self._b3[:-1]):
            z = torch.baddbmm(b, h, Wt)
            zs.append(z)
            h = act(z)
            hs.append(h)
        return torch.baddbmm(self._b3[-1], h, self._Wt[-1]), zs, hs

    def act(self, obs: Any, infos: dict) -> np.ndarray:
        """Predictions ``(N, batch, outputs)`` for observations ``(N, batch, in)``."""
        out, zs, hs = self._cache = self._forward(self._input(obs))
        return out.numpy() if out.device.type == "cpu" else out.cpu().numpy()

    def learn(self, obs, action, reward, next_obs, terminated, truncated, infos: dict) -> None:
        """One SGD step per seed on the kept predictions against ``infos["target"]``."""
        target = infos.get("target")
        cache, self._cache = self._cache, None
        if target is None:
            return
        if cache is None:
            cache = self._forward(self._input(obs))
        out, zs, hs = cache
        y = torch.as_tensor(target, device=self.device)
        if y.shape != out.shape:
            y = y.reshape(out.shape)
        # MSE, mean over batch and outputs (as F.mse_loss): d loss / d out.
        delta = torch.sub(out, y).mul_(2.0 / (out.shape[1] * out.shape[2]))
        grads: list[torch.Tensor] = [None] * len(self.params)  # type: ignore[list-item]
        relu = self.activation == "relu"
        for k in range(len(self.W) - 1, -1, -1):
            grads[2 * k] = torch.bmm(delta.transpose(1, 2), hs[k])
            grads[2 * k + 1] = delta.sum(1)
            if k > 0:
                delta = torch.bmm(delta, self.W[k])
                if relu:  # autograd's own ReLU backward: one op
                    delta = torch.ops.aten.threshold_backward(delta, hs[k], 0)
                else:
                    delta.mul_(_derivative(self.activation, zs[k - 1], hs[k]))
        self._sgd(grads)
        if self.noise_std > 0:
            self._perturb()
        if self.gnt is not None:
            self.gnt.step(hs[1:])

    def _sgd(self, grads: list[torch.Tensor]) -> None:
        """``torch.optim.SGD``'s update (coupled weight decay, momentum, no dampening)."""
        if self.weight_decay:
            torch._foreach_add_(grads, self.params, alpha=self.weight_decay)
        if self.momentum:
            if self.momentum_buffers is None:
                self.momentum_buffers = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(self.momentum_buffers, self.momentum)
                torch._foreach_add_(self.momentum_buffers, grads)
            grads = self.momentum_buffers
        torch._foreach_add_(self.params, grads, alpha=-self.lr)

    def _perturb(self) -> None:
        """Shrink-and-perturb noise, drawn per seed in chunks of steps (the single agent's rule)."""
        if self._noise is None or self._noise_row == self._noise.shape[1]:
            self._noise = torch.stack([
                torch.randn(self._noise_chunk, self._num_params, generator=g, device=self.device)
                for g in self.generators
            ])
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
            "generators": [g.get_state() for g in self.generators],
        }
        if self.noise_std > 0:
            state["noise"], state["noise_row"] = self._noise, self._noise_row
        if self.gnt is not None:
            state["gnt"] = self.gnt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (of an agent of the same config and seeds)."""
        if len(state["W"]) != len(self.W) or len(state["generators"]) != self.num_envs:
            raise ValueError(
                f"the state holds {len(state['W'])} layers of {len(state['generators'])} seeds; "
                f"this agent has {len(self.W)} layers of {self.num_envs} seeds."
            )
        for dst, src in zip([*self.W, *self.b], [*state["W"], *state["b"]]):
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
        self._cache = None


class _VectorGnT:
    """Generate-and-test for N batched MLPs: :class:`~baselines.continual_backprop.GenerateAndTest`
    seed by seed, in batched operations: every layer is scored, then the units due are
    replaced; the count rule (``accumulate``) and the draws from each seed's generator (its
    coin flips, then its fresh units, layer by layer) are the single agent's."""

    def __init__(self, agent: VectorMLPAgent, *, replacement_rate: float, decay_rate: float,
                 maturity_threshold: int, utility: str, accumulate: bool = True) -> None:
        self.agent = agent
        self.replacement_rate = float(replacement_rate)
        self.eta = float(decay_rate)
        self.maturity = int(maturity_threshold)
        self.adaptable = utility == "adaptable_contribution"
        self.accumulate = bool(accumulate)
        n = agent.num_envs
        self.step_count = 0
        hidden = [W.shape[1] for W in agent.W[:-1]]
        dev = agent.device
        self.utility = [torch.zeros(n, h, device=dev) for h in hidden]
        self.mean_act = [torch.zeros(n, h, device=dev) for h in hidden]
        self.bias_correction = [torch.zeros(n, h, device=dev) for h in hidden]
        self.birth = [np.zeros((n, h), dtype=np.int64) for h in hidden]  # age = step - birth
        self.accumulated = [np.zeros(n, dtype=np.float64) for _ in hidden]
        self.num_replaced = [np.zeros(n, dtype=np.int64) for _ in hidden]
        # Per seed, replacement_rate * (eligible units): it changes only when a unit matures
        # or is replaced, so it is recounted then, not every step.
        self._due_rate = [np.zeros(n, dtype=np.float64) for _ in hidden]
        self._next_recount = [self.maturity + 1] * len(hidden)

    def buffers(self) -> list[torch.Tensor]:
        return [*self.utility, *self.mean_act, *self.bias_correction]

    _STATE = ("utility", "mean_act", "bias_correction", "birth", "accumulated", "num_replaced",
              "_due_rate")

    def state_dict(self) -> dict[str, Any]:
        """Step count, per-layer utilities, mean activations, ages and replacement counts."""
        return {"step_count": self.step_count, "next_recount": list(self._next_recount),
                **{k: list(getattr(self, k)) for k in self._STATE}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.step_count = int(state["step_count"])
        self._next_recount = [int(v) for v in state["next_recount"]]
        for key in self._STATE:
            for dst, src in zip(getattr(self, key), state[key], strict=True):
                if isinstance(dst, torch.Tensor):
                    dst.copy_(torch.as_tensor(src))
                else:
                    dst[...] = src

    def ages(self, layer: int) -> np.ndarray:
        return self.step_count - self.birth[layer]

    def step(self, features: list[torch.Tensor]) -> None:
        self.step_count += 1
        due = []
        for i, h in enumerate(features):
            self._update(i, h)
            if self.replacement_rate == 0.0:
                continue
            if self.step_count >= self._next_recount[i]:
                self._recount(i)
            k = self._num_due(i)
            if k is None:  # nothing due in any seed (the common case)
                continue
            mature = self.ages(i) > self.maturity
            num_mature = mature.sum(1)
            for s in np.flatnonzero(k).tolist():
                kk = min(int(k[s]), int(num_mature[s]))
                if kk:
                    due.append((i, s, self._lowest(i, s, kk, mature[s])))
        for i, s, idx in due:
            self.replace(i, s, idx)
        for i in sorted({i for i, _, _ in due}):
            self._recount(i)

    def _update(self, i: int, h: torch.Tensor) -> None:
        """Mean activations and utilities of layer ``i`` from its activations (N, batch, units)."""
        eta = self.eta
        agent = self.agent
        W_in, W_out = agent.W[i], agent.W[i + 1]
        single = h.shape[1] == 1
        h_mean = h[:, 0] if single else h.mean(1)
        bc = self.bias_correction[i].mul_(eta).add_(1.0 - eta)
        mean_act = self.mean_act[i].lerp_(h_mean, 1.0 - eta)
        out_mag = W_out.abs().mean(1)
        if self.adaptable:
            if single:
                deviation = (h_mean - mean_act / bc).abs_()
            else:
                deviation = (h - (mean_act / bc).unsqueeze(1)).abs_().mean(1)
            new_util = out_mag.mul_(deviation).div_(W_in.abs().mean(2))
        else:
            new_util = out_mag.mul_(h_mean.abs() if single else h.abs().mean(1))
        self.utility[i].lerp_(new_util, 1.0 - eta)

    def _num_due(self, i: int) -> np.ndarray | None:
        """Units due per seed in layer ``i`` (before the cap at the eligible count), or None
        when none is due in any seed: the single agent's rule, seed by seed."""
        rate = self._due_rate[i]
        if self.accumulate:
            acc = self.accumulated[i] + rate
            self.accumulated[i] = acc
            if acc.max() < 1.0:
                return None
            k = acc.astype(np.int64)
            self.accumulated[i] = acc - k
            return k
        k = rate.astype(np.int64)  # int(n) where n >= 1
        for s in np.flatnonzero((rate > 0.0) & (rate < 1.0)).tolist():
            k[s] = int(coin_flip(self.agent.generators[s]) <= rate[s])
        return k if k.any() else None

    def _recount(self, i: int) -> None:
        """Eligible units per seed of layer ``i``, and the step at which the next one matures."""
        ages = self.ages(i)
        mature = ages > self.maturity
        self._due_rate[i] = self.replacement_rate * mature.sum(1)
        young = ages[~mature]
        self._next_recount[i] = (self.step_count + self.maturity + 1 - int(young.max())
                                 if young.size else np.iinfo(np.int64).max)

    def _lowest(self, i: int, s: int, k: int, mature: np.ndarray) -> torch.Tensor:
        score = torch.nan_to_num(self.utility[i][s] / self.bias_correction[i][s], nan=0.0)
        score = score.masked_fill(~torch.from_numpy(mature).to(score.device), math.inf)
        return torch.topk(score, k, largest=False).indices

    def replace(self, i: int, s: int, indices: Any) -> None:
        """Replace units ``indices`` of hidden layer ``i`` of seed ``s`` by fresh ones."""
        agent = self.agent
        W_in, b_in, W_out, b_out = agent.W[i][s], agent.b[i][s], agent.W[i + 1][s], agent.b[i + 1][s]
        idx = torch.unique(torch.as_tensor(indices, dtype=torch.long, device=W_in.device).reshape(-1))
        k = idx.numel()
        bc = self.bias_correction[i][s][idx]
        corrected = self.mean_act[i][s][idx] / bc
        mean = torch.where(bc > 0, corrected, torch.zeros_like(corrected))
        b_out.add_(W_out[:, idx] @ mean)
        bound = agent.init_bounds[i]
        fresh = torch.empty((k, W_in.shape[1]), device=W_in.device, dtype=W_in.dtype)
        W_in[idx] = fresh.uniform_(-bound, bound, generator=agent.generators[s])
        b_in[idx] = 0.0
        W_out[:, idx] = 0.0
        if agent.momentum_buffers is not None:
            bufs = agent.momentum_buffers
            bufs[2 * i][s][idx] = 0.0
            bufs[2 * i + 1][s][idx] = 0.0
            bufs[2 * i + 2][s][:, idx] = 0.0
        self.utility[i][s][idx] = 0.0
        self.mean_act[i][s][idx] = 0.0
        self.bias_correction[i][s][idx] = 0.0
        self.birth[i][s][idx.cpu().numpy()] = self.step_count
        self.num_replaced[i][s] += k
