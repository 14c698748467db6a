"""Network diagnostics of plasticity: dormant units, feature ranks and weight magnitude.

Definitions follow PROTOCOLS.md ("Diagnostics definitions") and the paper's analysis code:

- dormant unit (supervised streams): active (``> 0``) on fewer than 1% of the probe inputs;
  for a conv layer (``N, C, H, W``) a unit is a channel and its activity is averaged over the
  batch and the spatial positions. Dead unit: active on none of them.
- dormant unit (RL, as the public code's ``lop/rl/run_ppo.py`` and ``plots/fig4b.py``
  compute it for the Ant): active (``> 0``) on at most 1% of the agent's recent states
  (:func:`rl_dormant_fraction`). It is the supervised rule with ``<=`` for ``<``; it is a
  rule on how *often* a unit is active, never on how large its activation is, so a unit
  with small but positive activations is not dormant.
- ReDo's tau-dormant score, a different measure under its own name
  (:func:`tau_dormant_fraction`).
- effective rank ``exp(H)``, stable rank (99% of the sum of singular values) and approximate
  rank (99% of the sum of squared singular values) of a feature matrix.
- weight magnitude: mean absolute value over all entries of all parameters.

An agent with more than one network (PPO's policy and value networks) reports each as a
named :class:`Network`; :func:`measure` takes the first as the headline (the paper's Ant
figures are the policy's) and reports the others under their name.

Activations are ``(N, units)`` or ``(N, C, ...)`` (axis 1 is the unit axis, every other axis
is averaged over). They may be torch tensors or numpy arrays (or anything ``np.asarray``
accepts). Per-unit reductions of torch tensors run on the tensor's own device in float64 or
exact integer counts, so large conv activations are never copied whole to the host;
singular values are computed by numpy in float64 on the CPU. Results are deterministic for a
given input and device. Every function raises ``ValueError`` on an empty input, a wrong
shape, or NaN / inf values (a diverged network), and returns Python floats and ints.

torch is never imported by this module itself: a torch tensor's own module is used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DORMANT_THRESHOLD",
    "RANK_THRESHOLD",
    "dormant_fraction",
    "dead_fraction",
    "rl_dormant_fraction",
    "tau_dormant_fraction",
    "effective_rank",
    "stable_rank",
    "approximate_rank",
    "singular_values",
    "weight_magnitude",
    "feature_norm",
    "Network",
    "measure",
]

DORMANT_THRESHOLD = 0.01
"""A unit active on fewer than this fraction of the probe inputs is dormant (paper: 1%)."""

RANK_THRESHOLD = 0.99
"""Share of the singular-value mass that stable and approximate rank must reach (paper: 99%)."""


# ---------------------------------------------------------------------------------------
# input handling


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _activations(acts: Any, what: str = "acts") -> Any:
    """Validate an activation array (torch tensor kept as is, anything else as float64)."""
    if _is_torch(acts):
        a = acts.detach()
        shape = tuple(a.shape)
    else:
        try:
            a = np.asarray(acts, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} must be an array of numbers: {exc}") from None
        shape = a.shape
    if len(shape) < 2:
        raise ValueError(
            f"{what} must be (N, units) or (N, C, H, W) with N probe inputs, got shape {shape}."
        )
    if 0 in shape:
        raise ValueError(f"{what} is empty (shape {shape}): at least one input and unit needed.")
    if _is_torch(a):
        import torch

        finite = bool(torch.isfinite(a).all().item()) if a.is_floating_point() else True
    else:
        finite = bool(np.all(np.isfinite(a)))
    if not finite:
        raise ValueError(
            f"{what} of shape {shape} contains NaN or inf values (has the network diverged?)."
        )
    return a


def _unit_stats(a: Any) -> dict[str, np.ndarray]:
    """Per-unit statistics over inputs (and spatial positions): float64 numpy vectors.

    ``a`` has passed :func:`_activations`. ``active``: fraction of (input, position) pairs
    with activation > 0 (exact counts); ``any``: active at least once; ``abs_mean``: mean
    |activation|.
    """
    dims = tuple(d for d in range(a.ndim) if d != 1)
    count = math.prod(a.shape[d] for d in dims)
    if _is_torch(a):
        import torch

        positive = (a > 0).sum(dim=dims, dtype=torch.int64).cpu().numpy()
        abs_mean = a.to(torch.float64).abs().mean(dim=dims).cpu().numpy()
    else:
        positive = np.count_nonzero(a > 0, axis=dims)
        abs_mean = np.abs(a).mean(axis=dims)
    positive = np.asarray(positive, dtype=np.int64)
    return {
        "active": positive / float(count),
        "any": positive > 0,
        "abs_mean": np.asarray(abs_mean, dtype=np.float64),
    }


def _check_threshold(value: float, name: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return v


def _matrix(matrix: Any) -> np.ndarray:
    """A finite, non-empty 2-D float64 numpy array on the CPU."""
    if _is_torch(matrix):
        import torch

        m = matrix.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            m = np.asarray(matrix, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"matrix must be an array of numbers: {exc}") from None
    if m.ndim != 2:
        raise ValueError(
            f"matrix must be 2-D (inputs x features), got shape {m.shape}; flatten conv "
            f"activations first, e.g. acts.reshape(len(acts), -1)."
        )
    if m.size == 0:
        raise ValueError(f"matrix is empty (shape {m.shape}).")
    if not np.all(np.isfinite(m)):
        raise ValueError(
            f"matrix of shape {m.shape} contains NaN or inf values (has the network diverged?)."
        )
    return m


def _rank_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold!r}.")
    return t


# ---------------------------------------------------------------------------------------
# dormant units


def dormant_fraction(acts: Any, threshold: float = DORMANT_THRESHOLD) -> float:
    """Fraction of dormant units: active (``> 0``) on fewer than ``threshold`` of the inputs.

    For ``(N, units)`` the activity of a unit is the fraction of the ``N`` probe inputs on
    which it is positive; for conv activations ``(N, C, H, W)`` a unit is a channel and the
    fraction is taken over all inputs and spatial positions. With the default 1%, a unit
    active on 2 of 200 inputs is not dormant, one active on 1 of 200 is.
    """
    t = _check_threshold(threshold, "threshold")
    active = _unit_stats(_activations(acts))["active"]
    return float(np.count_nonzero(active < t) / active.size)


def dead_fraction(acts: Any) -> float:
    """Fraction of dead units: active (``> 0``) on none of the inputs (nor positions)."""
    seen = _unit_stats(_activations(acts))["any"]
    return float(np.count_nonzero(~seen) / seen.size)


def rl_dormant_fraction(acts: Any, threshold: float = DORMANT_THRESHOLD) -> float:
    """Fraction of dormant units by the RL definition: active (``> 0``) on at most
    ``threshold`` of the states.

    The paper's Ant analysis (``lop/rl/run_ppo.py``: ``(activity > 0).float().mean(dim=0)``
    over the last 1,000 states; ``plots/fig4b.py``: ``<= 0.01``). With the default 1%, a
    unit active on 10 of 1,000 states is dormant and one active on 11 is not, however small
    its activations; conv channels count (input, position) pairs.
    """
    t = _check_threshold(threshold, "threshold")
    active = _unit_stats(_activations(acts))["active"]
    return float(np.count_nonzero(active <= t) / active.size)


def tau_dormant_fraction(acts: Any, tau: float = 0.0) -> float:
    """Fraction of ReDo's tau-dormant units (Sokar et al., 2023), a measure of its own.

    Score of unit ``i``: ``s_i = mean|a_i| / mean_j(mean|a_j|)`` (means over inputs and, for
    conv layers, positions; the denominator over the layer's units); the unit is dormant
    when ``s_i <= tau``. When the whole layer is zero every score is 0 (all dormant).
    With ``tau = 0`` this counts units whose activation is exactly zero everywhere.
    """
    t = _check_threshold(tau, "tau")
    abs_mean = _unit_stats(_activations(acts))["abs_mean"]
    denom = float(abs_mean.mean())
    scores = abs_mean / denom if denom > 0 else np.zeros_like(abs_mean)
    return float(np.count_nonzero(scores <= t) / scores.size)


# ---------------------------------------------------------------------------------------
# ranks of a feature matrix


def singular_values(matrix: Any) -> np.ndarray:
    """Singular values of a 2-D matrix, in float64, largest first (numpy on the CPU)."""
    m = _matrix(matrix)
    return np.linalg.svd(m, compute_uv=False)


def _effective_rank(sv: np.ndarray) -> float:
    total = float(sv.sum())
    if total <= 0.0:
        return 0.0
    p = sv / total
    p = p[p > 0.0]
    return float(np.exp(-np.sum(p * np.log(p))))


def _mass_rank(values: np.ndarray, threshold: float) -> int:
    """Fewest of the largest ``values`` whose sum reaches ``threshold`` of the total."""
    total = float(values.sum())
    if total <= 0.0:
        return 0
    cum = np.cumsum(np.sort(values)[::-1]) / total
    # "reaches": cum >= threshold, with room for the rounding of the cumulative sum.
    k = int(np.searchsorted(cum, threshold - 1e-12, side="left")) + 1
    return min(k, values.size)


def effective_rank(matrix: Any) -> float:
    """Effective rank ``exp(H)`` of a 2-D matrix (Roy & Vetterli, 2007).

    ``H = -sum_k p_k log p_k`` with ``p_k = sigma_k / sum_j sigma_j`` the normalized singular
    values (``0 log 0 = 0``). The identity ``I_n`` has effective rank ``n``, a rank-1 matrix 1,
    an all-zero matrix 0.0. Only 2-D input: flatten conv activations first.
    """
    return _effective_rank(singular_values(matrix))


def stable_rank(matrix: Any, threshold: float = RANK_THRESHOLD) -> int:
    """Number of largest singular values whose cumulative sum first reaches ``threshold``
    (99%) of the sum of all singular values, as the paper's code computes "stable rank".

    An all-zero matrix has stable rank 0.
    """
    t = _rank_threshold(threshold)
    return _mass_rank(singular_values(matrix), t)


def approximate_rank(matrix: Any, threshold: float = RANK_THRESHOLD) -> int:
    """Number of largest singular values holding ``threshold`` (99%) of the sum of squared
    singular values (the squared Frobenius norm). An all-zero matrix has rank 0."""
    t = _rank_threshold(threshold)
    return _mass_rank(singular_values(matrix) ** 2, t)


# ---------------------------------------------------------------------------------------
# weights and feature norms


def weight_magnitude(params: Iterable[Any]) -> float:
    """Mean absolute value over every entry of ``params`` (weights and biases together).

    The mean is over all entries pooled (``sum |w| / count``), not a mean of per-tensor
    means. Accepts torch tensors (reduced on their device in float64) and arrays.

    Raises:
        ValueError: no parameters / no entries, or NaN or inf among them.
    """
    total = 0.0
    count = 0
    for p in params:
        if _is_torch(p):
            import torch

            t = p.detach()
            if t.numel() == 0:
                continue
            t = t.to(torch.float64)
            if not bool(torch.isfinite(t).all().item()):
                raise ValueError(
                    f"a parameter of shape {tuple(t.shape)} contains NaN or inf values."
                )
            total += float(t.abs().sum().item())
            count += int(t.numel())
        else:
            a = np.asarray(p, dtype=np.float64)
            if a.size == 0:
                continue
            if not np.all(np.isfinite(a)):
                raise ValueError(f"a parameter of shape {a.shape} contains NaN or inf values.")
            total += float(np.abs(a).sum())
            count += int(a.size)
    if count == 0:
        raise ValueError("params holds no entries: pass the agent's weights and biases.")
    return total / count


def feature_norm(acts: Any) -> float:
    """Mean over inputs of the L2 norm of each input's feature vector.

    Conv activations ``(N, C, H, W)`` are flattened per input to ``C * H * W`` features.
    """
    return _feature_norm(_activations(acts))


def _feature_norm(a: Any) -> float:
    if _is_torch(a):
        import torch

        norms = a.reshape(a.shape[0], -1).to(torch.float64).norm(dim=1)
        return float(norms.mean().item())
    return float(np.linalg.norm(a.reshape(a.shape[0], -1), axis=1).mean())


# ---------------------------------------------------------------------------------------
# the runner's per-probe summary


_DORMANT_RULES = {
    # definition -> is a unit of activity fraction `active` dormant at threshold `t`?
    "supervised": lambda active, t: active < t,
    "rl": lambda active, t: active <= t,
}

_NAME = re.compile(r"[a-z][a-z0-9_]*")

_SCALARS = ("dormant_fraction", "dead_fraction", "effective_rank", "stable_rank",
            "approximate_rank", "feature_norm", "weight_magnitude", "num_units")
"""The scalar entries of :func:`measure` (a non-headline network's carry its name as prefix)."""


@dataclass(frozen=True)
class Network:
    """One named network of an agent, for diagnostics: its hidden activations on the probe
    (``layers``, first hidden layer first, as ``agent.features`` returns them) and, to
    measure its own weight magnitude, its parameters (``params``, or ``None``).

    An agent with several networks returns a list of these from ``features(x)``, the
    headline network first: PPO returns ``[Network("policy", ...), Network("value", ...)]``.
    ``name`` is lower-case letters, digits and ``_``, starting with a letter.
    """

    name: str
    layers: Sequence[Any]
    params: Iterable[Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"a network's name must be lower-case letters, digits and '_', starting with "
                f"a letter, got {self.name!r}."
            )


def _layer_measures(
    acts: Any,
    threshold: float,
    definition: str,
    ranks: bool,
) -> tuple[dict[str, Any], int, int]:
    a = _activations(acts)
    stats = _unit_stats(a)
    units = int(stats["active"].size)
    dormant = int(np.count_nonzero(_DORMANT_RULES[definition](stats["active"], threshold)))
    dead = int(np.count_nonzero(~stats["any"]))
    out: dict[str, Any] = {
        "shape": [int(s) for s in a.shape],
        "num_units": units,
        "dormant_fraction": dormant / units,
        "dead_fraction": dead / units,
        "effective_rank": None,
        "stable_rank": None,
        "approximate_rank": None,
        "feature_norm": _feature_norm(a),
    }
    if ranks:
        sv = singular_values(a.reshape(a.shape[0], -1))
        out["effective_rank"] = _effective_rank(sv)
        out["stable_rank"] = _mass_rank(sv, RANK_THRESHOLD)
        out["approximate_rank"] = _mass_rank(sv**2, RANK_THRESHOLD)
    return out, dormant, dead


def _network_measures(
    features: Any,
    params: Iterable[Any] | None,
    threshold: float,
    definition: str,
    layer_ranks: bool,
    where: str,
) -> dict[str, Any]:
    """:func:`measure`'s dict for one network's layers (``where`` names them in errors)."""
    if _is_torch(features) or isinstance(features, np.ndarray):
        raise ValueError(f"{where} must be a list of per-layer activations, not one array.")
    layers_in = list(features)
    if not layers_in:
        raise ValueError(f"{where} is empty: pass the activations of at least one layer.")
    layers: list[dict[str, Any]] = []
    units = dormant = dead = 0
    last = len(layers_in) - 1
    for i, acts in enumerate(layers_in):
        try:
            info, d, z = _layer_measures(acts, threshold, definition, layer_ranks or i == last)
        except ValueError as exc:
            raise ValueError(f"{where}[{i}]: {exc}") from None
        layers.append(info)
        units += info["num_units"]
        dormant += d
        dead += z
    top = layers[-1]
    return {
        "dormant_fraction": dormant / units,
        "dead_fraction": dead / units,
        "effective_rank": top["effective_rank"],
        "stable_rank": top["stable_rank"],
        "approximate_rank": top["approximate_rank"],
        "feature_norm": top["feature_norm"],
        "weight_magnitude": None if params is None else weight_magnitude(params),
        "num_units": units,
        "layers": layers,
    }


def measure(
    features: Sequence[Any],
    params: Iterable[Any] | None = None,
    *,
    threshold: float = DORMANT_THRESHOLD,
    definition: str = "supervised",
    layer_ranks: bool = True,
) -> dict[str, Any]:
    """The per-probe diagnostics the runner records.

    Args:
        features: hidden activations of each hidden layer on the probe batch, first layer
            first (``agent.features(x)``): ``(N, units)`` or conv ``(N, C, H, W)`` each. Or,
            for an agent with several networks, a list of :class:`Network`, the headline
            network first.
        params: the agent's parameters (``agent.parameters()``), or ``None``. With
            :class:`Network` entries, the headline's weight magnitude is of its own
            ``params`` when it has them, else of these.
        threshold: the dormant threshold, a fraction of the probe inputs (1%).
        definition: ``"supervised"`` (active on fewer than ``threshold`` of the inputs:
            :func:`dormant_fraction`, the paper's supervised streams) or ``"rl"`` (active on
            at most ``threshold``: :func:`rl_dormant_fraction`, the paper's Ant analysis).
        layer_ranks: also compute the ranks of every layer, not only the last (singular
            values of large flattened conv layers are costly; when ``False`` the per-layer
            rank entries are ``None`` except for the last layer).

    Returns:
        A JSON-ready dict, of the headline network when there are several:

        - ``dormant_fraction`` / ``dead_fraction``: over all hidden units of all layers
          pooled (a conv channel is one unit);
        - ``effective_rank`` (float), ``stable_rank`` and ``approximate_rank`` (ints), and
          ``feature_norm``: of the last hidden layer's feature matrix (a conv last layer is
          flattened to ``(N, C * H * W)``);
        - ``weight_magnitude``: :func:`weight_magnitude` of ``params``, ``None`` without them;
        - ``num_units``: hidden units in all;
        - ``layers``: per layer, ``shape``, ``num_units``, ``dormant_fraction``,
          ``dead_fraction``, ``effective_rank``, ``stable_rank``, ``approximate_rank``,
          ``feature_norm``.

        With :class:`Network` entries, also ``network`` (the headline's name), every other
        network's scalar entries prefixed with its name (``value_dormant_fraction``,
        ``value_effective_rank``, ...; its ``weight_magnitude`` is ``None`` without its
        own ``params``), and ``networks``: each network's whole dict by name.

    Raises:
        ValueError: no layers, a layer of a wrong shape, empty, or NaN / inf values; a mix
            of :class:`Network` entries and plain activations, or two networks of one name.
    """
    if definition not in _DORMANT_RULES:
        raise ValueError(f"definition must be 'supervised' or 'rl', got {definition!r}.")
    t = _check_threshold(threshold, "threshold")
    if _is_torch(features) or isinstance(features, np.ndarray):
        raise ValueError("features must be a list of per-layer activations, not one array.")
    items = list(features)
    networks = [f for f in items if isinstance(f, Network)]
    if not networks:
        return _network_measures(items, params, t, definition, layer_ranks, "features")
    if len(networks) != len(items):
        raise ValueError("features mixes Network entries and plain activations: pass one kind.")
    names = [n.name for n in networks]
    if len(set(names)) != len(names):
        raise ValueError(f"two networks share a name: {names}.")
    per_network = {}
    for k, net in enumerate(networks):
        own = net.params if net.params is not None else (params if k == 0 else None)
        per_network[net.name] = _network_measures(
            net.layers, own, t, definition, layer_ranks, f"features[{k}] ({net.name!r})"
        )
    headline = networks[0].name
    out = dict(per_network[headline])
    out["network"] = headline
    for name in names[1:]:
        out.update({f"{name}_{key}": per_network[name][key] for key in _SCALARS})
    out["networks"] = per_network
    return out
