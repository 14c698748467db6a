"""UPGD: utility-based perturbed gradient descent (Elsayed & Mahmood, ICLR 2024).

Each weight ``w`` (every entry of every parameter) keeps a trace of its first-order utility
``u = -g * w`` (``g`` = dL/dw: the first-order Taylor estimate of the loss increase were
``w`` set to zero, the paper's Eq. 3 without its second-order term)::

    U <- beta_u * U + (1 - beta_u) * (-g * w)                  (the utility trace)
    eta = max over every entry of every parameter of U          (the global maximum)
    s = sigmoid((U / (1 - beta_u ** t)) / eta)                  (the scaled utility, in (0, 1))
    w <- (1 - lr * weight_decay) * w - lr * (g + sigma * xi) * (1 - s),   xi ~ N(0, 1)

so useful weights (``s`` near 1) are protected from both the gradient and the noise, and
useless ones (``s`` near 0) get the full step plus the perturbation. This is the paper's
protecting, global, first-order variant ("UPGD-W", Algorithm 1) as its public code runs it
(``FirstOrderGlobalUPGD`` in ``core/optim/weight_upgd/first_order.py`` of
github.com/mohmdelsayed/upgd): ``eta`` is the maximum of the *uncorrected* traces (after
this step's update), the bias correction uses the parameter's own step count ``t``, and
the weight decay shrinks every weight before the gated step. The non-protecting variant is
not implemented.

``adaptive=True`` is the Adam-style variant the paper ran with PPO on MuJoCo
(``AdaptiveUPGD`` in ``core/run/rl/adaupgd.py``): the gradient term ``g`` becomes
``m_hat / (sqrt(v_hat) + eps)`` with Adam's bias-corrected moments (betas, eps), the noise
stays unscaled: ``w <- (1 - lr wd) w - lr (m_hat (1 - s) / (sqrt(v_hat) + eps) + sigma xi (1 - s))``.

Two choices differ from the public code, both documented where they act:

- **Step size.** The code's README snippet and its RL optimizer step by ``2 * lr``
  (``alpha=-2.0 * lr``); its supervised experiments (and Algorithm 1) by ``lr``. Here the
  step is ``lr`` in both modes: a public RL ``lr`` of x is x * 2 here (with half its
  ``weight_decay``, which the code multiplies by the undoubled lr).
- **A global maximum that is not positive.** The code divides by ``eta`` whatever its
  sign: ``eta = 0`` (e.g. every gradient zero) gives 0/0 = NaN in every weight, forever,
  and ``eta < 0`` turns the gate around (the least useful weight is protected most). Here
  ``eta`` is clamped to the smallest positive normal float: equal to the code whenever
  ``eta`` is positive, and otherwise no weight is protected (``s = 0`` for a negative
  utility, ``sigmoid(0) = 1/2`` for a zero one).

Randomness: the noise comes from a ``torch.Generator`` handed in, never torch's global RNG:
one ``torch.randn`` of all the stepped entries per step (parameters in order, flattened and
concatenated), none when ``sigma == 0``. :class:`UPGD` is a ``torch.optim.Optimizer`` (its
``state_dict`` holds the traces, moments and step counts; the generator's state is its
owner's to save, as the agents save theirs). :func:`upgd_update_` is the update on plain
tensors, also with a leading seed dimension (``batched=True``: parameters of shape
``(N, ...)``, one global maximum per seed), and :func:`draw_noise_batched` draws seed
``i``'s noise from ``generators[i]`` exactly as :class:`UPGD` draws it from one generator:
seed ``i`` of a batched run equals the single run of that seed, up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lop_bench.config import check_positive, check_range
from lop_bench.errors import InvalidConfigError

__all__ = [
    "UPGD",
    "UPGDFields",
    "check_upgd_fields",
    "check_upgd_config",
    "make_upgd",
    "global_utility_max",
    "scaled_utilities",
    "upgd_update_",
    "BatchedUPGD",
    "draw_noise",
    "draw_noise_batched",
]

_TINY = torch.finfo(torch.float32).tiny


def check_upgd_fields(
    lr: float,
    weight_decay: float,
    beta_utility: float,
    sigma: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """Range checks of UPGD's hyperparameters (errors name the field)."""
    check_positive("lr", lr)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    check_range("beta_utility", beta_utility, 0.0, 1.0)
    if beta_utility >= 1.0:
        raise InvalidConfigError(
            f"beta_utility must be < 1 (the trace's bias correction divides by 1 - beta_utility**t), "
            f"got {beta_utility!r}."
        )
    check_positive("sigma", sigma, allow_zero=True)
    if len(betas) != 2:
        raise InvalidConfigError(f"betas must be two numbers, got {betas!r}.")
    for i, b in enumerate(betas):
        check_range(f"betas[{i}]", b, 0.0, 1.0)
        if b >= 1.0:
            raise InvalidConfigError(f"betas[{i}] must be < 1, got {b!r}.")
    check_positive("eps", eps)


@dataclass(frozen=True)
class UPGDFields:
    """UPGD's own fields of a config (its step size, weight decay and, for the adaptive
    variant, Adam's betas and eps are the config's optimizer fields). Defaults: the public
    code's README snippet (``beta_utility=0.999``, ``sigma=0.001``)."""

    beta_utility: float = 0.999
    """Decay of the utility trace (``beta_utility``; the paper's grid: 0.9 ... 0.9999)."""
    sigma: float = 1e-3
    """Standard deviation of the Gaussian perturbation, before the gate (``sigma``; the
    paper's grid: 0.001 ... 1)."""


def check_upgd_config(cfg: Any) -> None:
    """Checks of a config with :class:`UPGDFields` and the optimizer fields ``lr``,
    ``weight_decay``, ``betas``, ``eps`` (and ``momentum``, which UPGD has none of)."""
    check_upgd_fields(cfg.lr, cfg.weight_decay, cfg.beta_utility, cfg.sigma, cfg.betas, cfg.eps)
    if getattr(cfg, "momentum", 0.0) != 0.0:
        raise InvalidConfigError(
            f"UPGD has no momentum; set momentum=0 (got {cfg.momentum!r}), or optimizer='adam' "
            "for the adaptive (Adam-style) variant."
        )


def make_upgd(cfg: Any, params: Any, generator: torch.Generator, *, adaptive: bool) -> UPGD:
    """:class:`UPGD` with a config's settings (:func:`check_upgd_config`)."""
    return UPGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, beta_utility=cfg.beta_utility,
                sigma=cfg.sigma, generator=generator, adaptive=adaptive, betas=cfg.betas,
                eps=cfg.eps)


def global_utility_max(traces: Sequence[torch.Tensor], *, batched: bool = False) -> torch.Tensor:
    """``eta``: the maximum entry over all ``traces`` (0-d), or per seed (``(N,)``) when
    ``batched`` (each trace ``(N, ...)``), clamped below to the smallest positive normal
    float (module docstring). Stays on the traces' device: no host sync."""
    if not traces:
        raise ValueError("global_utility_max needs at least one utility trace.")
    if batched:
        eta = torch.stack([t.reshape(t.shape[0], -1).amax(1) for t in traces]).amax(0)
    else:
        eta = torch.stack([t.amax() for t in traces]).amax()
    return eta.clamp_min(_TINY)


def _trace_(trace: torch.Tensor, grad: torch.Tensor, param: torch.Tensor, beta: float) -> None:
    """``U <- beta U + (1 - beta) (-g w)`` in place (as the code: ``mul_``, then ``add_``)."""
    trace.mul_(beta).add_(grad * param, alpha=-(1.0 - beta))


def _per_seed(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` of shape (N,) viewed to broadcast against ``like`` of shape (N, ...)."""
    return value.reshape(value.shape[0], *([1] * (like.dim() - 1)))


def scaled_utilities(
    traces: Sequence[torch.Tensor],
    bias_corrections: Sequence[float],
    *,
    batched: bool = False,
) -> list[torch.Tensor]:
    """``s = sigmoid((U / bias_correction) / eta)`` for every trace ``U`` (new tensors),
    ``eta`` = :func:`global_utility_max` of the traces."""
    eta = global_utility_max(traces, batched=batched)
    out = []
    for trace, bc in zip(traces, bias_corrections, strict=True):
        e = _per_seed(eta, trace) if batched else eta
        out.append(torch.sigmoid(trace.div(bc).div_(e)))
    return out


@torch.no_grad()
def upgd_update_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    traces: Sequence[torch.Tensor],
    steps: Sequence[int],
    noises: Sequence[torch.Tensor] | None,
    *,
    lr: float,
    weight_decay: float,
    beta_utility: float,
    sigma: float,
    batched: bool = False,
    moments: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """One UPGD step, in place: update the ``traces`` with ``-grad * param``, then step the
    ``params`` (module docstring). ``steps[i]`` is parameter ``i``'s step count *including*
    this step (1 on the first). ``noises``: standard-normal tensors shaped as the params
    (scaled by ``sigma`` here), or None when ``sigma == 0``. ``moments=(exp_avgs,
    exp_avg_sqs)`` selects the adaptive (Adam-style) variant and updates them in place.
    ``batched``: every tensor has a leading seed dimension and ``eta`` is per seed."""
    if noises is None and sigma != 0.0:
        raise ValueError("upgd_update_ needs noises when sigma > 0.")
    for p, g, u in zip(params, grads, traces, strict=True):
        _trace_(u, g, p, beta_utility)
    eta = global_utility_max(traces, batched=batched)
    _gated_step(params, grads, traces, steps, noises, eta, lr=lr, weight_decay=weight_decay,
                beta_utility=beta_utility, sigma=sigma, moments=moments, betas=betas, eps=eps,
                batched=batched)


def draw_noise(
    shapes: Sequence[torch.Size | tuple[int, ...]],
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Standard-normal tensors of ``shapes`` from one ``torch.randn`` of their total size
    (on the generator's device), split in order."""
    sizes = [math.prod(s) for s in shapes]
    flat = torch.randn(sum(sizes), generator=generator, device=generator.device, dtype=dtype)
    return [part.view(s) for part, s in zip(flat.split(sizes), shapes, strict=True)]


def draw_noise_batched(
    shapes: Sequence[torch.Size | tuple[int, ...]],
    generators: Sequence[torch.Generator],
    *,
    out: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Per-seed noise: tensors ``(N, *shape)`` whose row ``i`` is :func:`draw_noise` of
    ``shapes`` from ``generators[i]`` (the same numbers). ``out``: an ``(N, total)`` buffer
    to refill in place (no allocation per step)."""
    sizes = [math.prod(s) for s in shapes]
    total, n = sum(sizes), len(generators)
    if out is None:
        out = torch.empty(n, total, device=generators[0].device, dtype=dtype)
    elif out.shape != (n, total):
        raise ValueError(f"out must have shape ({n}, {total}), got {tuple(out.shape)}.")
    for row, g in zip(out, generators, strict=True):
        torch.randn(total, generator=g, device=g.device, dtype=out.dtype, out=row)
    return [
        part.view(n, *s) for part, s in zip(out.split(sizes, dim=1), shapes, strict=True)
    ]


class BatchedUPGD:
    """UPGD for the parameters of N seeds at once (tensors ``(N, ...)``, updated in place),
    seed ``i``'s noise from ``generators[i]``: seed ``i`` follows :class:`UPGD` on its own
    slices with ``generators[i]`` (up to the rounding of its gradients).

    The step works on all parameters flattened side by side, ``(N, total)``: a handful of
    operations per step whatever the layer count (a 20-5-1 net of 10 seeds: about 4x
    fewer than one pass per parameter), the same arithmetic as :func:`upgd_update_` with
    ``batched=True`` (so bit for bit its result). State: the traces (``traces[i]`` views
    one flat buffer) and the step count; the noise is drawn fresh each step into one buffer.
    """

    def __init__(self, params: Sequence[torch.Tensor], generators: Sequence[torch.Generator],
                 *, lr: float, weight_decay: float, beta_utility: float, sigma: float) -> None:
        check_upgd_fields(lr, weight_decay, beta_utility, sigma)
        n = len(generators)
        if not params or any(p.shape[0] != n for p in params):
            raise ValueError(f"every parameter needs a leading dimension of {n} seeds (one "
                             "generator each).")
        self.generators = list(generators)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.beta_utility, self.sigma = float(beta_utility), float(sigma)
        self._shapes = [tuple(p.shape) for p in params]
        self._sizes = [math.prod(s[1:]) for s in self._shapes]
        p0 = params[0]
        self._trace = torch.zeros(n, sum(self._sizes), device=p0.device, dtype=p0.dtype)
        self.traces = [part.view(shape) for part, shape in
                       zip(self._trace.split(self._sizes, dim=1), self._shapes, strict=True)]
        self.step_count = 0
        self._noise = torch.empty_like(self._trace) if self.sigma != 0.0 else None

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
        """One UPGD step of every seed (``grads`` shaped as ``params``)."""
        self.step_count += 1
        n, beta = self._trace.shape[0], self.beta_utility
        g = torch.cat([x.reshape(n, -1) for x in grads], 1)
        w = torch.cat([x.reshape(n, -1) for x in params], 1)
        _trace_(self._trace, g, w, beta)
        eta = self._trace.amax(1, keepdim=True).clamp_min_(_TINY)
        bc = 1.0 - beta**self.step_count
        gate = torch.sigmoid(self._trace.div(bc).div_(eta)).neg_().add_(1.0)  # 1 - s
        if self._noise is not None:
            for row, gen in zip(self._noise, self.generators, strict=True):
                torch.randn(row.shape[0], generator=gen, device=gen.device, dtype=row.dtype,
                            out=row)
            g.add_(self._noise, alpha=self.sigma)
        direction = g.mul_(gate)
        decay = 1.0 - self.lr * self.weight_decay
        for x, part in zip(params, direction.split(self._sizes, dim=1), strict=True):
            if decay != 1.0:
                x.mul_(decay)
            x.add_(part.view(x.shape), alpha=-self.lr)

    def buffers(self) -> list[torch.Tensor]:
        """The utility traces, ``(N, ...)`` per parameter."""
        return list(self.traces)

    def state_dict(self) -> dict[str, Any]:
        """The step count and the traces."""
        return {"step": self.step_count, "traces": [t.clone() for t in self.traces]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.step_count = int(state["step"])
        for dst, src in zip(self.traces, state["traces"], strict=True):
            dst.copy_(torch.as_tensor(src))


class UPGD(torch.optim.Optimizer):
    """UPGD (module docstring) as a ``torch.optim.Optimizer``; noise from ``generator``.

    Defaults are the public code's README snippet (lr aside): ``weight_decay=1e-3``,
    ``beta_utility=0.999``, ``sigma=1e-3``. Per parameter, ``state`` holds ``step`` (an
    int), ``utility`` (the trace) and, with ``adaptive=True``, ``exp_avg`` and
    ``exp_avg_sq``. Parameters without a gradient are skipped (neither traced, decayed nor
    perturbed, and not in the global maximum). The global maximum spans every group.

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> opt = UPGD([w], lr=0.1, sigma=0.0, weight_decay=0.0, beta_utility=0.0,
    ...            generator=torch.Generator().manual_seed(0))
    >>> w.grad = torch.tensor([-1.0, -1.0]); opt.step()   # u = (1, -2), eta = 1
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        weight_decay: float = 1e-3,
        beta_utility: float = 0.999,
        sigma: float = 1e-3,
        *,
        generator: torch.Generator,
        adaptive: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        check_upgd_fields(lr, weight_decay, beta_utility, sigma, betas, eps)
        if not isinstance(generator, torch.Generator):
            raise InvalidConfigError(
                f"UPGD needs a torch.Generator for its noise (generator=...), got {generator!r}."
            )
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            beta_utility=beta_utility,
            sigma=sigma,
            adaptive=bool(adaptive),
            betas=tuple(betas),
            eps=eps,
        )
        super().__init__(params, defaults)
        self.generator = generator

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One UPGD step of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["utility"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if group["adaptive"]:
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state["exp_avg_sq"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
                state["step"] += 1
            groups.append((group, params))
        if not groups:
            return loss
        # Noise for every stepped entry from one draw (parameters in order), then the traces
        # of all groups are updated before any weight moves (the maximum spans the groups).
        noisy = [p for group, params in groups if group["sigma"] != 0.0 for p in params]
        noise = iter(draw_noise([p.shape for p in noisy], self.generator, dtype=noisy[0].dtype)
                     if noisy else [])
        for group, params in groups:
            beta = group["beta_utility"]
            for p in params:
                _trace_(self.state[p]["utility"], p.grad, p, beta)
        eta = global_utility_max(
            [self.state[p]["utility"] for _, params in groups for p in params]
        )
        for group, params in groups:
            sigma = group["sigma"]
            noises = [next(noise) for _ in params] if sigma != 0.0 else None
            states = [self.state[p] for p in params]
            adaptive = group["adaptive"]
            _gated_step(
                params,
                [p.grad for p in params],
                [s["utility"] for s in states],
                [s["step"] for s in states],
                noises,
                eta,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                beta_utility=group["beta_utility"],
                sigma=sigma,
                moments=([s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states])
                if adaptive
                else None,
                betas=group["betas"],
                eps=group["eps"],
            )
        return loss


def _gated_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    traces: Sequence[torch.Tensor],
    steps: Sequence[int],
    noises: Sequence[torch.Tensor] | None,
    eta: torch.Tensor,
    *,
    lr: float,
    weight_decay: float,
    beta_utility: float,
    sigma: float,
    moments: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None,
    betas: tuple[float, float],
    eps: float,
    batched: bool = False,
) -> None:
    """The weight step of :func:`upgd_update_` given the updated traces and ``eta`` (0-d,
    or (N,) when ``batched``)."""
    decay = 1.0 - lr * weight_decay
    for i, (p, g, u, t) in enumerate(zip(params, grads, traces, steps, strict=True)):
        e = _per_seed(eta, u) if batched else eta
        gate = torch.sigmoid(u.div(1.0 - beta_utility**t).div_(e)).neg_().add_(1.0)  # 1 - s
        if moments is None:
            direction = g if noises is None else g.add(noises[i], alpha=sigma)
            direction = direction * gate
        else:
            m, v = moments[0][i], moments[1][i]
            b1, b2 = betas
            m.mul_(b1).add_(g, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (v / (1.0 - b2**t)).sqrt_().add_(eps)
            direction = (m / (1.0 - b1**t)).mul_(gate).div_(denom)
            if noises is not None:
                direction.addcmul_(noises[i], gate, value=sigma)
        if decay != 1.0:
            p.mul_(decay)
        p.add_(direction, alpha=-lr)
