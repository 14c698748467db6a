"""PPO with the settings of Dohare et al. (Nature 2024) on the changing-friction Ant.

Proximal policy optimization (Schulman et al. 2017), one environment, as in the paper's
code (``lop/algos/rl/ppo.py``, configs ``lop/rl/cfg/ant/*.yml``):

- a Gaussian policy (mean from a 2 x 256 ReLU network, a state-independent log-std) and a
  value network (2 x 256 ReLU), LeCun-uniform init, zero biases;
- every ``batch_size`` (2048) steps: values of the batch's states and next states, GAE
  advantages (gamma 0.99, lambda 0.95) normalized over the batch, then 10 epochs of 16
  shuffled minibatches (128 transitions) minimizing the clipped surrogate (clip 0.2) plus
  the squared value error (no weight, no entropy bonus), with one Adam over both networks
  and the log-std. No observation or reward normalization, no gradient clipping.

As the paper's code, the env gets the raw Gaussian sample (the Ant's control cost is of
the unclipped sample; MuJoCo clamps the controls to ``[-1, 1]`` for the dynamics, and the
Ant stream accepts such actions: ``raw_actions``); ``clip_actions=True`` clips it to the
action space first (the log-prob stays that of the unclipped sample, as in CleanRL). The
first layers' LeCun bound, and continual backprop's re-initialization of them, use the
fan-in ``input_fan_in`` = 111 of the paper's Ant-v3 observation, of which lop-bench's Ant
keeps the 27 inputs that were not always zero (``sqrt(3 / 111) = 0.164``, not
``sqrt(3 / 27) = 0.333``). Continual backprop scores all layers before replacing units and
draws its count as ``gnt.py``'s default (``accumulate=False``: a coin flip when fewer than
one unit is due), as the paper's runs.

What lop-bench does differently from the paper's code: a time-limit end (``truncated``)
bootstraps from the value of the last state, while a termination does not (the code treated
both as terminal); Adam is :class:`~baselines.core.optim.EntrywiseAdam`, so continual
backprop resets a replaced unit's Adam state and step count (torch's Adam in the paper's
code was never reset), and the replaced unit's mean contribution moves into the next
layer's bias (:mod:`baselines.core.gnt`; the code's correction never happened).

The algorithms on the Ant are presets of :class:`PPOConfig` (in ``baselines/<algorithm>.py``;
the names ``ppo``, ``ppo_l2``, ... are aliases): ``backprop`` (standard PPO, Adam),
``ppo_proper_adam`` (betas 0.99, 0.99), ``l2`` (weight decay), ``continual_backprop``
(generate-and-test on both networks after every minibatch update, with that minibatch's
hidden activations) and ``shrink_perturb`` (weight decay and Gaussian noise after every
update; beyond the paper, which has no shrink-and-perturb run on the Ant). Beyond the
paper's four: ``redo`` (:class:`PPOReDoConfig`: ReDo on both networks every
``redo_period`` minibatch updates, scored on that minibatch, as ``cfg/ant/redo.yml`` with
``lop/algos/gntRedo.py``) and ``l2_init`` (:class:`PPOL2InitConfig`: L2 toward the initial
parameters, every parameter, log-std included, added to the gradient before the step).
Also beyond the paper: ``upgd`` (:class:`PPOUPGDConfig`: the adaptive UPGD of Elsayed &
Mahmood's PPO runs instead of Adam, :mod:`baselines.core.upgd`), ``crelu``
(``activation="crelu"`` in both networks) and ``layernorm`` (:class:`PPOLayerNormConfig`:
a layer normalization before every hidden activation of both networks).

Where things happen (for adding an option): the networks are built in ``__init__``
(:class:`~baselines.core.nets.MLP`, policy then value), the optimizer there too (one
:class:`~baselines.core.optim.EntrywiseAdam`); :meth:`PPOAgent._update` runs each
minibatch's ``loss.backward()``, the optimizer step, then generate-and-test and the noise.

Agent protocol: ``act`` samples from the policy with the agent's own ``torch.Generator``
and returns the sample (clipped with ``clip_actions``); ``learn`` stores the transition
and updates every ``batch_size`` steps. ``features(x)`` returns the hidden activations of
both networks (the policy's first: the headline) and ``probe()`` the agent's last
``probe_size`` (1,000) states, for the diagnostics (dormant units by the RL definition:
active on at most 1% of those states).

Speed (``benchmarks/ant_speed.py``, 2-core CPU): about 2,000 env steps/s of training with
one torch thread, half of it in the updates. Use ``torch.set_num_threads(1)`` (the CLI's
workers do): with 2 threads the small matrix products of a 128-row minibatch run at less
than half that speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from baselines.core.gnt import GnTFields, SingleSeed, check_gnt_fields, network_units
from baselines.core.nets import ACTIVATIONS, INITS, MLP
from baselines.core.optim import EntrywiseAdam, OptimizerEntries
from baselines.core.redo import ReDo, ReDoFields, check_redo_fields, module_unit_layers
from baselines.core.regularizers import L2Init, L2InitFields, check_l2_init_fields
from baselines.core.upgd import UPGDFields, check_upgd_config, make_upgd
from lop_bench.config import check_choice, check_positive, check_range, config_to_dict
from lop_bench.diagnostics import Network
from lop_bench.errors import InvalidConfigError
from lop_bench.seeding import check_seed

__all__ = [
    "PROPER_BETAS",
    "PPOConfig",
    "PPOReDoConfig",
    "PPOL2InitConfig",
    "PPOUPGDConfig",
    "PPOLayerNormConfig",
    "PPOAgent",
    "compute_gae",
    "gaussian_log_prob",
    "clipped_policy_loss",
]

PROPER_BETAS = (0.99, 0.99)
"""The paper's "proper" Adam: equal betas (``cfg/ant/ns.yml``, "NS Adam"; PROTOCOLS.md)."""
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class PPOConfig(GnTFields):
    """Hyperparameters of PPO (defaults: standard PPO on the Ant, the paper's ``std.yml``)."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the policy and of the value network (``h_dim: [256, 256]``)."""
    activation: str = "relu"
    """Hidden activation (``act_type: 'ReLU'``)."""
    init: str = "lecun"
    """Weight init: LeCun-uniform ``U(+-sqrt(3 / fan_in))``, zero biases (``run_ppo.py``'s
    default ``init: 'lecun'``)."""
    input_fan_in: int = 0
    """Fan-in of the first layers' init bound and of continual backprop's fresh units in
    them; 0: the observation's size. The Ant presets: 111, the size of the paper's Ant-v3
    observation (``o_dim`` in ``run_ppo.py``), 84 of whose inputs (the contact forces) were
    always zero and are not in lop-bench's 27-dim observation."""
    clip_actions: bool = False
    """Clip the sampled action to the action space before the env sees it. False (the
    paper's code, ``agent.py``): the env gets the raw Gaussian sample."""
    init_log_std: float = 0.0
    """Initial log-std of the Gaussian policy, a state-independent parameter (``MLPPolicy``'s
    ``log_std=0``: std 1)."""
    lr: float = 1e-4
    """Adam step size (``lr: 0.0001``; PROTOCOLS.md)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's betas: torch's default for standard PPO (``run_ppo.py``); (0.99, 0.99) for
    the paper's "proper Adam", L2 and CBP runs."""
    eps: float = 1e-8
    """Adam's epsilon (``run_ppo.py``: 1e-8)."""
    weight_decay: float = 0.0
    """Adam's coupled L2 penalty (``wd``), on every parameter, log-std included, as the
    paper's code: 0 standard, 1e-3 L2, 1e-4 CBP."""
    batch_size: int = 2048
    """Env steps per update (``bs: 2048``)."""
    num_epochs: int = 10
    """Passes over the batch per update (``n_itrs: 10``)."""
    num_minibatches: int = 16
    """Minibatches per pass (``n_slices: 16``: 128 transitions each)."""
    clip_eps: float = 0.2
    """Clip range of the probability ratio (``clip_eps: 0.2``)."""
    gamma: float = 0.99
    """Discount (``g: 0.99``)."""
    gae_lambda: float = 0.95
    """GAE's lambda (``lm: 0.95``)."""
    normalize_advantages: bool = True
    """Advantages minus their batch mean, over their batch std (``u_adv_scl: 1``)."""
    value_loss_coef: float = 1.0
    """Weight of the squared value error in the loss (the paper's code adds it unweighted)."""
    max_grad_norm: float = 0.0
    """Global gradient-norm clip, 0 for none (the paper's code clips at 1e9: never)."""
    # Generate-and-test's fields (GnTFields; decay 0.99, ``decay_rate: 0.99``):
    replacement_rate: float = 0.0
    """Continual backprop: fraction of the mature units replaced per update (``rr``: 1e-4
    for CBP, 0 otherwise: no generate-and-test)."""
    maturity_threshold: int = 10_000
    """Continual backprop: updates before a unit may be replaced (``mt: 10000``)."""
    utility: str = "contribution"
    """Continual backprop's utility (``util_type_pol``/``util_type_val: 'contribution'``)."""
    accumulate: bool = False
    """Continual backprop's count rule (:class:`~baselines.core.gnt.GnTFields`): False,
    ``gnt.py``'s default, which ``lop/algos/rl/ppo.py`` uses (a coin flip: with at most 256
    eligible units x 1e-4, fewer than one unit is due per update)."""
    noise_std: float = 0.0
    """Shrink and perturb: std of the Gaussian noise added to every weight and bias of both
    networks after every update (``perturb_scale``; 0: none)."""
    probe_size: int = 1000
    """States kept for ``probe()`` (PROTOCOLS.md: the agent's last 1,000 states)."""

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise InvalidConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}.")
        check_positive("eps", self.eps)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        if not self.hidden or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in self.hidden
        ):
            raise InvalidConfigError(
                f"hidden must be a non-empty tuple of positive layer widths, got {self.hidden!r}."
            )
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("init", self.init, INITS)
        check_positive("input_fan_in", self.input_fan_in, allow_zero=True)
        for name in ("batch_size", "num_epochs", "num_minibatches", "probe_size"):
            check_positive(name, getattr(self, name))
        if self.batch_size % self.num_minibatches:
            raise InvalidConfigError(
                f"batch_size ({self.batch_size}) must be a multiple of num_minibatches "
                f"({self.num_minibatches})."
            )
        check_positive("clip_eps", self.clip_eps)
        check_range("gamma", self.gamma, 0.0, 1.0)
        check_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_positive("value_loss_coef", self.value_loss_coef, allow_zero=True)
        check_positive("max_grad_norm", self.max_grad_norm, allow_zero=True)
        check_gnt_fields(self)
        check_positive("noise_std", self.noise_std, allow_zero=True)
        if not isinstance(self.clip_actions, bool):
            raise InvalidConfigError(f"clip_actions must be True or False, got {self.clip_actions!r}.")


@dataclass(frozen=True)
class PPOReDoConfig(PPOConfig, ReDoFields):
    """PPO plus ReDo on both networks (:class:`~baselines.core.redo.ReDoFields`; a period
    counts minibatch updates, as ``gntRedo.py``'s ``reset_period``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_redo_fields(self)


@dataclass(frozen=True)
class PPOL2InitConfig(PPOConfig, L2InitFields):
    """PPO plus L2 Init (:class:`~baselines.core.regularizers.L2InitFields`) on every
    parameter Adam trains (both networks and the log-std)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_l2_init_fields(self)


@dataclass(frozen=True)
class PPOUPGDConfig(PPOConfig, UPGDFields):
    """PPO with the adaptive UPGD (:class:`~baselines.core.upgd.UPGD`, ``adaptive=True``)
    in place of Adam, over both networks and the log-std: ``lr``, ``betas``, ``eps`` as
    Adam's, ``weight_decay`` UPGD's shrink, ``beta_utility`` and ``sigma`` its own."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_upgd_config(self)


@dataclass(frozen=True)
class PPOLayerNormConfig(PPOConfig):
    """PPO whose policy and value networks normalize every hidden layer's pre-activations
    (``nn.LayerNorm``, scale and shift trained by Adam; :mod:`baselines.core.nets`)."""

    layer_norm: bool = True
    """Normalize the hidden pre-activations (False: standard PPO's networks, exactly)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.layer_norm, bool):
            raise InvalidConfigError(f"layer_norm must be true or false, got {self.layer_norm!r}.")


# ---------------------------------------------------------------------------------------
# the pieces of PPO, as pure functions


def compute_gae(
    rewards: Any,
    values: Any,
    next_values: Any,
    terminated: Any,
    dones: Any,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimates and value targets of a batch of transitions.

    ``values[t] = V(s_t)``, ``next_values[t] = V(s_{t+1})`` (the state the step returned,
    the last state of its episode when the episode ended there). ``terminated[t]``: the
    episode terminated (no bootstrap); ``dones[t]``: it terminated or was truncated (the
    advantage recursion stops there, but a truncated step still bootstraps from its last
    state). The transition after the batch's last one is unknown: its advantage counts as 0.

    ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)``,
    ``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}``, returns ``A_t + V(s_t)``.
    Returns float64 arrays ``(advantages, returns)``.
    """
    r = np.asarray(rewards, dtype=np.float64).tolist()
    v = np.asarray(values, dtype=np.float64).tolist()
    nv = np.asarray(next_values, dtype=np.float64).tolist()
    term = np.asarray(terminated, dtype=bool).tolist()
    done = np.asarray(dones, dtype=bool).tolist()
    n = len(r)
    if not len(v) == len(nv) == len(term) == len(done) == n:
        raise ValueError("rewards, values, next_values, terminated and dones must have one length.")
    adv = [0.0] * n
    last = 0.0
    gl = gamma * lam
    for t in range(n - 1, -1, -1):
        delta = r[t] - v[t] if term[t] else r[t] + gamma * nv[t] - v[t]
        last = delta if done[t] else delta + gl * last
        adv[t] = last
    advantages = np.array(adv, dtype=np.float64)
    return advantages, advantages + np.asarray(v, dtype=np.float64)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-density of ``actions`` (batch, k) under independent Gaussians, summed over k."""
    z = (actions - mean) * torch.exp(-log_std)
    return -0.5 * z.square().sum(-1) - log_std.sum() - mean.shape[-1] * _LOG_SQRT_2PI


def clipped_policy_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> torch.Tensor:
    """PPO's clipped surrogate, negated for minimization:
    ``mean(max(-ratio * A, -clip(ratio, 1 - eps, 1 + eps) * A))``, ``ratio = exp(logp - logp_old)``."""
    ratio = torch.exp(logp - logp_old)
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    return torch.max(-ratio * advantages, -clipped * advantages).mean()


# ---------------------------------------------------------------------------------------
# the agent


def _box_dim(space: Any, what: str) -> int:
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise InvalidConfigError(f"PPO needs a 1-D Box {what} space, got {space!r}.")
    return int(space.shape[0])


class PPOAgent:
    """PPO on one environment (see the module docstring).

    Attributes: ``cfg``, ``preset``, ``hparams``, ``policy`` and ``value`` (:class:`MLP`),
    ``log_std``, ``optimizer`` (one :class:`EntrywiseAdam` over all parameters),
    ``generator`` (the agent's own ``torch.Generator``: init, action noise, minibatch
    shuffles, fresh units, perturbations), ``gnt`` (``[policy, value]`` generate-and-test,
    :class:`~baselines.core.gnt.SingleSeed`, or ``[]``), ``num_updates``, ``last_losses``
    (``{"policy": ..., "value": ...}`` of the last minibatch, floats, or ``None``).
    """

    @classmethod
    def for_stream(cls, cfg: PPOConfig, env_spec: Any, observation_space: Any,
                   action_space: Any, seed: int, device: str | torch.device,
                   preset: str | None) -> PPOAgent:
        """The agent for a stream (:class:`baselines.presets.Preset` builds it so)."""
        return cls(cfg, observation_space, action_space, seed, device, preset=preset)

    def __init__(
        self,
        cfg: PPOConfig,
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
        self.obs_dim = _box_dim(observation_space, "observation")
        self.act_dim = _box_dim(action_space, "action")
        low, high = np.asarray(action_space.low), np.asarray(action_space.high)
        if cfg.clip_actions and not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise InvalidConfigError("clip_actions needs a bounded action space.")
        self._low = low.astype(np.float32)
        self._high = high.astype(np.float32)

        # Networks, in a fixed order from the agent's generator: policy, then value.
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(check_seed(seed))
        hidden, act = tuple(cfg.hidden), cfg.activation
        kw = dict(generator=self.generator, device=self.device, init=cfg.init,
                  input_fan_in=cfg.input_fan_in or None,
                  layer_norm=isinstance(cfg, PPOLayerNormConfig) and cfg.layer_norm)
        self.policy = MLP(self.obs_dim, hidden, self.act_dim, act, **kw)
        self.value = MLP(self.obs_dim, hidden, 1, act, **kw)
        self.log_std = nn.Parameter(
            torch.full((self.act_dim,), float(cfg.init_log_std), device=self.device)
        )
        self._params = [*self.policy.parameters(), *self.value.parameters(), self.log_std]
        if isinstance(cfg, UPGDFields):  # its noise from the agent's generator
            self.optimizer = make_upgd(cfg, self._params, self.generator, adaptive=True)
        else:
            self.optimizer = EntrywiseAdam(
                self._params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                weight_decay=cfg.weight_decay
            )
        self.gnt: list[SingleSeed] = []
        if cfg.replacement_rate > 0:
            reset = OptimizerEntries(self.optimizer)
            self.gnt = [SingleSeed.of(network_units(net), self.generator, reset, cfg)
                        for net in (self.policy, self.value)]
        self._perturbed = [*self.policy.parameters(), *self.value.parameters()]
        # ReDo: one schedule per network (policy, value), stepped per minibatch update.
        self.redo: list[ReDo] = []
        if isinstance(cfg, ReDoFields):
            self.redo = [ReDo.from_config(cfg) for _ in range(2)]
        self.l2_init: L2Init | None = None
        if isinstance(cfg, L2InitFields):
            self.l2_init = L2Init(self._params, cfg.l2_init_strength)

        # The rollout: host tensors with numpy views for cheap per-step writes.
        B, n, k = cfg.batch_size, self.obs_dim, self.act_dim
        self._obs = torch.zeros(B, n)
        self._next_obs = torch.zeros(B, n)
        self._raw = torch.zeros(B, k)  # the unclipped Gaussian samples
        self._rew = torch.zeros(B, dtype=torch.float64)
        self._term = torch.zeros(B, dtype=torch.bool)
        self._done = torch.zeros(B, dtype=torch.bool)
        self._views()
        self._t = 0
        self._acted = False
        # The last `probe_size` states, a ring.
        self._probe = torch.zeros(cfg.probe_size, n)
        self._probe_np = self._probe.numpy()
        self._probe_pos = 0
        self._probe_count = 0
        # Minibatch buffers, filled once per epoch in shuffled order (slices are views).
        self._mb = {
            "obs": torch.empty(B, n, device=self.device),
            "raw": torch.empty(B, k, device=self.device),
            "logp": torch.empty(B, device=self.device),
            "adv": torch.empty(B, device=self.device),
            "ret": torch.empty(B, device=self.device),
        }
        self.num_updates = 0
        self.last_losses: dict[str, float] | None = None
        self._std = torch.exp(self.log_std.detach()).cpu()
        self._noise = self._draw_noise()

    def _views(self) -> None:
        self._obs_np = self._obs.numpy()
        self._next_obs_np = self._next_obs.numpy()
        self._raw_np = self._raw.numpy()
        self._rew_np = self._rew.numpy()
        self._term_np = self._term.numpy()
        self._done_np = self._done.numpy()

    def _draw_noise(self) -> torch.Tensor:
        """Standard normal noise for a whole rollout's actions, drawn at once."""
        return torch.randn(
            self.cfg.batch_size, self.act_dim, generator=self.generator, device=self.device
        ).cpu()

    # -- the agent protocol ----------------------------------------------------------------
    def act(self, obs: Any, info: dict) -> np.ndarray:
        """Sample an action from the policy (clipped to the action space with ``clip_actions``)."""
        t = self._t
        self._obs_np[t] = obs
        self._remember(t)
        x = self._obs[t : t + 1]
        with torch.no_grad():
            mean = self.policy(x if self.device.type == "cpu" else x.to(self.device)).cpu()
            torch.addcmul(mean[0], self._std, self._noise[t], out=self._raw[t])
        self._acted = True
        if self.cfg.clip_actions:
            return np.clip(self._raw_np[t], self._low, self._high)
        return self._raw_np[t].copy()

    def _remember(self, t: int) -> None:
        self._probe_np[self._probe_pos] = self._obs_np[t]
        self._probe_pos = (self._probe_pos + 1) % self.cfg.probe_size
        self._probe_count += 1

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
        """Store the transition; every ``batch_size`` transitions, update both networks.

        ``action`` is the action ``act`` returned; the agent learns from its own unclipped
        sample. A transition without a preceding ``act`` is stored as given.
        """
        t = self._t
        if not self._acted:
            self._obs_np[t] = obs
            self._raw_np[t] = action
            self._remember(t)
        self._acted = False
        self._rew_np[t] = reward
        self._term_np[t] = terminated
        self._done_np[t] = terminated or truncated
        self._next_obs_np[t] = next_obs
        t += 1
        if t == self.cfg.batch_size:
            self._update()
            t = 0
        self._t = t

    # -- the update ------------------------------------------------------------------------
    def _update(self) -> None:
        cfg, dev = self.cfg, self.device
        B = cfg.batch_size
        obs, next_obs, raw = (x.to(dev) for x in (self._obs, self._next_obs, self._raw))
        with torch.no_grad():
            values = self.value(torch.cat([obs, next_obs]))[:, 0].double().cpu().numpy()
            logp_old = gaussian_log_prob(self.policy(obs), self.log_std, raw)
        adv, ret = compute_gae(
            self._rew_np, values[:B], values[B:], self._term_np, self._done_np,
            cfg.gamma, cfg.gae_lambda,
        )
        adv = torch.as_tensor(adv, dtype=torch.float32, device=dev)
        ret = torch.as_tensor(ret, dtype=torch.float32, device=dev)
        if cfg.normalize_advantages:
            adv = adv - adv.mean()
            std = adv.std()
            if bool(std > 0):
                adv = adv / std

        mb = self._mb
        size = B // cfg.num_minibatches
        params, gnt = self._params, self.gnt
        for _ in range(cfg.num_epochs):
            perm = torch.randperm(B, generator=self.generator, device=dev)
            torch.index_select(obs, 0, perm, out=mb["obs"])
            torch.index_select(raw, 0, perm, out=mb["raw"])
            torch.index_select(logp_old, 0, perm, out=mb["logp"])
            torch.index_select(adv, 0, perm, out=mb["adv"])
            torch.index_select(ret, 0, perm, out=mb["ret"])
            for start in range(0, B, size):
                end = start + size
                x = mb["obs"][start:end]
                mean, feats_p = self.policy.forward_with_features(x)
                logp = gaussian_log_prob(mean, self.log_std, mb["raw"][start:end])
                p_loss = clipped_policy_loss(logp, mb["logp"][start:end], mb["adv"][start:end],
                                             cfg.clip_eps)
                v, feats_v = self.value.forward_with_features(x)
                v_loss = (mb["ret"][start:end] - v[:, 0]).square().mean()
                loss = p_loss + cfg.value_loss_coef * v_loss
                self.optimizer.zero_grad()
                loss.backward()
                if cfg.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                if self.l2_init is not None:
                    self.l2_init.add_to_grad()
                self.optimizer.step()
                if gnt:
                    gnt[0].step(feats_p)
                    gnt[1].step(feats_v)
                if self.redo:
                    for redo, net, feats in zip(self.redo, (self.policy, self.value),
                                                (feats_p, feats_v)):
                        redo.step([h.unsqueeze(0) for h in feats],
                                  lambda net=net: self._redo_layers(net), [self.generator])
                if cfg.noise_std > 0:
                    self._perturb()
        self.num_updates += 1
        self.last_losses = {"policy": float(p_loss.detach()), "value": float(v_loss.detach())}
        self._std = torch.exp(self.log_std.detach()).cpu()
        self._noise = self._draw_noise()

    def _redo_layers(self, net: MLP) -> list:
        """ReDo's view of ``net``'s hidden layers (fresh weights from its init bounds, zero
        biases, Adam's entries reset)."""
        return module_unit_layers(net.unit_pairs(), net.init_bounds[:-1], self.optimizer)

    @torch.no_grad()
    def _perturb(self) -> None:
        """Shrink and perturb's noise: every weight and bias of both networks."""
        for p in self._perturbed:
            noise = torch.randn(p.shape, generator=self.generator, device=p.device, dtype=p.dtype)
            p.add_(noise, alpha=self.cfg.noise_std)

    # -- diagnostics -----------------------------------------------------------------------
    def features(self, x: Any) -> list[Network]:
        """Hidden activations (N, units) of the policy, then of the value network, each a
        :class:`~lop_bench.diagnostics.Network` with its parameters.

        The policy comes first: its dormant units, ranks (of its last hidden layer) and
        weight magnitude are the headline, as in the paper's Ant analysis (``run_ppo.py``
        logs the policy's features and weights); the value network's are reported under
        the ``value_`` prefix.
        """
        x = torch.as_tensor(x, dtype=torch.float32, device=self.device).reshape(-1, self.obs_dim)
        with torch.no_grad():
            return [
                Network(name, net.forward_with_features(x)[1], list(net.parameters()))
                for name, net in (("policy", self.policy), ("value", self.value))
            ]

    def probe(self) -> np.ndarray:
        """The agent's last ``probe_size`` (1,000) states, oldest first: ``(n, obs_dim)``
        float32, fewer rows before that many steps (0 before the first ``act``)."""
        n = min(self._probe_count, self.cfg.probe_size)
        if n < self.cfg.probe_size:
            return self._probe_np[:n].copy()
        return np.roll(self._probe_np, -self._probe_pos, axis=0)

    def parameters(self) -> list[torch.Tensor]:
        """Policy, value network and log-std parameters."""
        return list(self._params)

    def buffers(self) -> list[torch.Tensor]:
        """Generate-and-test's utilities, mean activations and ages (none without CBP)."""
        return [b for g in self.gnt for b in g.buffers()]

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (tensors and plain values)."""
        return {
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "log_std": self.log_std.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rollout": {
                "obs": self._obs.clone(), "next_obs": self._next_obs.clone(),
                "raw": self._raw.clone(), "rew": self._rew.clone(),
                "term": self._term.clone(), "done": self._done.clone(),
                "noise": self._noise.clone(), "t": self._t, "acted": self._acted,
            },
            "probe": {"states": self._probe.clone(), "pos": self._probe_pos,
                      "count": self._probe_count},
            "gnt": [g.state_dict() for g in self.gnt],
            "num_updates": self.num_updates,
            "last_losses": None if self.last_losses is None else dict(self.last_losses),
            **({"redo": [r.state_dict() for r in self.redo]} if self.redo else {}),
            **({"l2_init": self.l2_init.state_dict()} if self.l2_init is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.policy.load_state_dict(state["policy"])
        self.value.load_state_dict(state["value"])
        with torch.no_grad():
            self.log_std.copy_(state["log_std"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        r = state["rollout"]
        for name in ("obs", "next_obs", "raw", "rew", "term", "done"):
            getattr(self, f"_{name}").copy_(r[name])
        self._noise = r["noise"].clone()
        self._t, self._acted = int(r["t"]), bool(r["acted"])
        p = state["probe"]
        self._probe.copy_(p["states"])
        self._probe_pos, self._probe_count = int(p["pos"]), int(p["count"])
        for g, s in zip(self.gnt, state["gnt"], strict=True):
            g.load_state_dict(s)
        self.num_updates = int(state["num_updates"])
        self.last_losses = state["last_losses"]
        for r, s in zip(self.redo, state.get("redo", []), strict=True):
            r.load_state_dict(s)
        if self.l2_init is not None:
            self.l2_init.load_state_dict(state["l2_init"])
        self._std = torch.exp(self.log_std.detach()).cpu()
