"""Changing-friction Ant (Dohare et al. 2024, the "slippery Ant"; PROTOCOLS.md).

MuJoCo is an optional extra (``pip install lop-bench[mujoco]``): this module imports it only
when an env is created, so ``import lop_bench`` and ``lop-bench list`` work without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from lop_bench.config import check_positive
from lop_bench.envs.base import ContinualStream
from lop_bench.errors import (
    DependencyNotInstalled,
    InvalidActionError,
    InvalidConfigError,
    StreamFinishedError,
)
from lop_bench.seeding import spawn_generators
from lop_bench.streams import StreamSpec

__all__ = ["AntConfig", "ChangingFrictionAntEnv", "TIERS", "SPEC", "log_uniform_frictions"]

_PURPOSES = ("friction", "reset_noise")
_OBS_DIM = 27
_ACT_DIM = 8
_INSTALL = 'pip install "lop-bench[mujoco]"'


@dataclass(frozen=True)
class AntConfig:
    """A tier of the changing-friction Ant stream.

    Protocol fields (hashed into results): every field but ``num_seeds``.
    """

    num_tasks: int = 10
    """Frictions in the stream (PROTOCOLS: 20,000,000 steps / 2,000,000 per friction = 10)."""
    steps_per_task: int = 2_000_000
    """A new friction is applied at the first episode end once this many env steps have
    passed since the last change (PROTOCOLS: 2,000,000), so a task lasts this many steps
    plus the rest of the episode running at that point (at most ``max_episode_steps - 1``)."""
    friction_low: float = 0.02
    """Lower end of the log-uniform friction range (PROTOCOLS: 0.02)."""
    friction_high: float = 2.0
    """Upper end of the log-uniform friction range (PROTOCOLS: 2)."""
    constant_friction: float | None = None
    """``None``: every task draws its friction (the paper's stream). A number: every task
    uses this friction, the stationary control (the tasks are then blocks of steps only;
    the standard Ant's friction is 1.0)."""
    max_episode_steps: int = 1000
    """Time limit of an episode, reported as ``truncated`` (Ant-v5's registered limit, 1000)."""
    contact_cost_weight: float = 0.0
    """Weight of Ant-v5's contact cost. 0: the original's reward, whose Ant-v3 on mujoco-py
    2.x read the contact forces as zero (so its contact cost, weight 5e-4 as in v5, was
    always 0); 5e-4 is Ant-v5's default."""
    raw_actions: bool = True
    """True: an action outside ``[-1, 1]`` is accepted, as the original's Ant-v3 accepted the
    policy's raw Gaussian samples (``lop/rl/run_ppo.py``): MuJoCo clamps the controls to
    the actuators' range ``[-1, 1]`` for the dynamics, and the control cost (``0.5 *
    sum(action ** 2)``) is charged on the action as given. False: such an action raises
    :class:`~lop_bench.errors.InvalidActionError` (the action space is the contract)."""
    num_seeds: int = field(default=10, metadata={"protocol": False})
    """The tier's seed set is ``0 .. num_seeds - 1`` (not hashed)."""

    def __post_init__(self) -> None:
        check_positive("num_tasks", self.num_tasks)
        check_positive("steps_per_task", self.steps_per_task)
        check_positive("max_episode_steps", self.max_episode_steps)
        check_positive("friction_low", self.friction_low)
        check_positive("friction_high", self.friction_high)
        if self.friction_high < self.friction_low:
            raise InvalidConfigError(
                f"friction_high ({self.friction_high!r}) must be >= friction_low "
                f"({self.friction_low!r})."
            )
        check_positive("contact_cost_weight", self.contact_cost_weight, allow_zero=True)
        if not isinstance(self.raw_actions, bool):
            raise InvalidConfigError(f"raw_actions must be True or False, got {self.raw_actions!r}.")
        c = self.constant_friction
        if c is not None:
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
                raise InvalidConfigError(
                    f"constant_friction must be None or a number > 0, got {c!r}."
                )
            object.__setattr__(self, "constant_friction", float(c))
        check_positive("num_seeds", self.num_seeds)

    @property
    def num_steps(self) -> int:
        """Nominal length of the stream (each task also finishes its last episode)."""
        return self.num_tasks * self.steps_per_task


# Every tier keeps the original's reward conventions (contact_cost_weight 0, raw actions
# accepted: the AntConfig defaults); the tiers differ in length and seed count only.
TIERS: dict[str, AntConfig] = {
    # Seconds: for tests and CI. Short episodes (250 steps) so that a 1,000-step task holds
    # several of them; one PPO update (2,048 steps) happens on the way.
    "smoke": AntConfig(num_tasks=3, steps_per_task=1_000, max_episode_steps=250, num_seeds=2),
    # A functional check on a laptop, far too short to show the collapse (which takes
    # millions of steps): 5 frictions x 30,000 steps (about 15 PPO updates each), 5 seeds.
    # Continual backprop starts replacing units after its maturity threshold (10,000
    # minibatch updates, about 128,000 steps), so its replacements run in the last task.
    # Sized so that `lop-bench reproduce lop/ChangingFrictionAnt-v0 --tier cpu` (standard
    # PPO, L2 and continual backprop: 15 runs) stays within 15 minutes on 2 CPU cores.
    "cpu": AntConfig(num_tasks=5, steps_per_task=30_000, num_seeds=5),
    # PROTOCOLS.md: 20,000,000 steps, a new friction every 2,000,000 steps, 10 runs.
    "paper": AntConfig(num_tasks=10, steps_per_task=2_000_000, num_seeds=10),
}


def log_uniform_frictions(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """``n`` frictions drawn log-uniformly in ``[low, high]`` (float64), in task order."""
    return np.exp(rng.uniform(math.log(low), math.log(high), size=n))


def _ant_class() -> type:
    """Gymnasium's Ant-v5 class, or :class:`DependencyNotInstalled` naming the extra."""
    import gymnasium

    try:
        from gymnasium.envs.mujoco.ant_v5 import AntEnv
    except (ImportError, gymnasium.error.DependencyNotInstalled) as exc:
        raise DependencyNotInstalled(
            f"{ChangingFrictionAntEnv.ENV_ID} needs MuJoCo, which is not installed ({exc}). "
            f"Install the extra: {_INSTALL}."
        ) from exc
    return AntEnv


class ChangingFrictionAntEnv(ContinualStream):
    """Changing-friction Ant: the MuJoCo Ant whose friction is re-drawn every N steps.

    **Dynamics.** Gymnasium's ``Ant-v5`` with ``include_cfrc_ext_in_observation=False``
    (27-dim observation: the original ran Ant-v3 on mujoco-py 2.1, where the 84
    contact-force inputs are always zero). The friction coefficient of **every** geom is
    set (``model.geom_friction[:, 0]``): MuJoCo uses the larger of two touching geoms'
    frictions, so changing the floor alone would change nothing. Frictions are drawn
    log-uniformly in ``[0.02, 2]`` from the seed, the first one too. A new friction is
    applied at the first episode end once ``steps_per_task`` env steps have passed since the
    last change (so change points drift by less than one episode), at the ``reset()`` that
    starts the next episode. ``constant_friction`` fixes one friction for all tasks (the
    stationary control).

    **Spaces.** Observation ``Box(-inf, inf, (27,), float32)``: Ant-v5's float64
    observation cast to float32 (what the agents compute with; the simulation itself stays
    in float64). Action ``Box(-1, 1, (8,), float32)``: joint torques, the actuators' range.
    With ``raw_actions`` (every tier) an action outside it is accepted, as the original
    accepted its policy's raw Gaussian samples: MuJoCo clamps the controls for the
    dynamics, the control cost is charged on the action as given. Without, such an action
    raises :class:`~lop_bench.errors.InvalidActionError`; an action of another shape, a
    non-float dtype or a non-finite value always does.

    **Reward.** Ant-v5's reward: forward velocity + healthy reward (1) - control cost
    (``0.5 * sum(action ** 2)``) - contact cost, with ``contact_cost_weight`` 0 (the
    original's Ant-v3 on mujoco-py 2.x computed its contact cost, of the same weight 5e-4
    and force range, from contact forces that read as zero). The weights and the healthy-z
    range ``[0.2, 1.0]`` are those of v3; the one remaining difference of the reward is
    that v5 pays no healthy reward on the unhealthy step that terminates an episode (v3
    paid 1 on every step). An episode terminates when the Ant is unhealthy (torso height
    outside ``[0.2, 1.0]``) and is truncated after ``max_episode_steps`` (1000) steps:
    time limits are truncation, not termination (the original treated them as terminal).
    The per-task score is the mean return of the task's episodes
    (``task_metrics["return"]``; every task ends at an episode end, so all its episodes
    are complete); higher is better.

    **Info.** About the transition: ``task_end`` (the step ended the task's last episode),
    ``task_metrics`` (at a task's end), ``episode`` (at an episode's end: ``{"r": return,
    "l": length}``), and Ant-v5's own keys (``x_position``, ``x_velocity``,
    ``reward_forward``, ...). About the returned observation: ``task``, ``friction`` (the
    friction in force in the model), ``phase`` (always ``"train"``), ``epoch`` (always 0).
    And ``stream_done``. The observation returned at an episode's end is its last state
    (for bootstrapping); the next task's friction is applied by the following ``reset()``,
    whose info reports the new ``task`` and ``friction``.

    **Episodes and the stream.** ``reset(seed=s)`` restarts the stream (friction schedule
    and reset noise). ``reset()`` starts a new episode and keeps the stream's position: the
    same friction unless a change is due. ``step`` after an episode's end without
    ``reset()`` raises. A ``reset()`` in mid-episode abandons the episode (its return is not
    scored; its steps count towards the task). The stream ends (``stream_done``) with the
    last task's last episode: ``num_tasks`` per-task scores.

    **Tiers.** ``smoke`` (3 tasks of 1,000 steps, 250-step episodes), ``cpu`` (5 frictions x
    30,000 steps: a functional check that everything works, far too short to show the loss
    of plasticity, which takes millions of steps),
    ``paper`` (10 frictions x 2,000,000 steps = 20,000,000 steps, 10 seeds). See
    :data:`TIERS`.

    **Randomness.** Per-purpose generators spawned from the seed: frictions (all drawn at
    the stream's start) and the Ant's reset noise (``reset_noise_scale`` 0.1 of Ant-v5),
    never global state. Diagnostics probe the agent's own recent states (the env has no
    ``probe``).
    """

    ENV_ID = "lop/ChangingFrictionAnt-v0"
    STREAM_REVISION = 1
    TIERS = TIERS
    METRIC = "return"
    HIGHER_IS_BETTER = True
    DIAGNOSTICS_DEFINITION = "rl"
    """Dormant units by the RL definition: active (> 0) on at most 1% of the agent's probe
    (its last 1,000 states), as the paper's Ant analysis counts them."""

    @classmethod
    def step_bounds(cls, config: AntConfig) -> tuple[int, int]:
        """A task changes at the first episode end once its nominal steps have passed, so
        each task may run up to ``max_episode_steps - 1`` steps more than nominal."""
        low = config.num_steps
        return low, low + config.num_tasks * (config.max_episode_steps - 1)

    def __init__(self, tier: str = "cpu", render_mode: str | None = None, **overrides: Any):
        super().__init__(tier, **overrides)
        if render_mode is not None:
            raise InvalidConfigError(f"{self.ENV_ID} has no render modes, got {render_mode!r}.")
        cfg = self.config
        self._ant = _ant_class()(
            include_cfrc_ext_in_observation=False, contact_cost_weight=cfg.contact_cost_weight
        )
        # The Ant's own spaces are float64 observations and the float32 Box(-1, 1, (8,)).
        assert self._ant.observation_space.shape == (_OBS_DIM,)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(_OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(_ACT_DIM,), dtype=np.float32)
        self.num_tasks = cfg.num_tasks
        self.total_steps = cfg.num_steps
        self._N = cfg.steps_per_task
        self._max_steps = cfg.max_episode_steps
        self._done = False
        self._episode_over = True
        self._change_due = False

    # -- the simulation ---------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The MuJoCo model (``mujoco.MjModel``) of the Ant, with the current friction."""
        return self._ant.model

    @property
    def data(self) -> Any:
        """The MuJoCo data (``mujoco.MjData``)."""
        return self._ant.data

    @property
    def friction(self) -> float:
        """The friction in force (set on every geom)."""
        self._check_started()
        return self._friction

    def _apply_friction(self, friction: float) -> None:
        self._friction = float(friction)
        self._ant.model.geom_friction[:, 0] = self._friction

    # -- stream -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """``reset(seed=s)`` restarts the stream; ``reset()`` starts the next episode."""
        new_seed = self._resolve_seed(seed)
        super().reset(seed=new_seed)
        if new_seed is not None:
            cfg = self.config
            self.stream_seed = new_seed
            self._stream_started = True
            rng = spawn_generators(new_seed, _PURPOSES)
            if cfg.constant_friction is None:
                frictions = log_uniform_frictions(
                    rng["friction"], cfg.num_tasks, cfg.friction_low, cfg.friction_high
                )
            else:
                frictions = np.full(cfg.num_tasks, cfg.constant_friction)
            self._frictions = [float(f) for f in frictions]
            # The Ant's reset noise comes from the stream's own generator.
            self._ant.np_random = rng["reset_noise"]
            self._task = 0
            self._done = False
            self._change_due = False
            self._start_task()
        elif self._done:
            raise StreamFinishedError(
                f"{self.ENV_ID}: the stream has ended; call reset(seed=...) to restart it."
            )
        elif self._change_due:
            self._change_due = False
            self._task += 1
            self._start_task()
        obs, _ = self._ant.reset()
        self._episode_over = False
        self._episode_steps = 0
        self._episode_return = 0.0
        return obs.astype(np.float32), self._context()

    def _start_task(self) -> None:
        self._apply_friction(self._frictions[self._task])
        self._task_steps = 0
        self._task_return_sum = 0.0
        self._task_episodes = 0

    def _check_started(self) -> None:
        if not self._stream_started:
            raise StreamFinishedError(f"{self.ENV_ID}: call reset(seed=...) before step().")

    def _context(self) -> dict[str, Any]:
        return {
            "task": self._task,
            "friction": self._friction,
            "phase": "train",
            "epoch": 0,
            "stream_done": self._done,
        }

    # -- checkpoints ----------------------------------------------------------------
    _COUNTERS = (("task", int), ("done", bool), ("change_due", bool), ("episode_over", bool),
                 ("episode_steps", int), ("episode_return", float), ("task_steps", int),
                 ("task_return_sum", float), ("task_episodes", int))

    def state_dict(self) -> dict[str, Any]:
        """The simulation and the stream's position (checkpoints).

        MuJoCo's integration state (``mj_getState(..., mjSTATE_INTEGRATION)``: time,
        positions, velocities, actuator state, controls, warm start) plus the two derived
        arrays the Ant reads before its next ``mj_step`` recomputes them (``xpos`` for the
        forward reward, ``cfrc_ext`` for the contact cost), the reset-noise generator and
        the episode and task counters: enough to continue bit for bit."""
        import mujoco

        ident = self._identity_state()
        kind = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(self.model, kind))
        mujoco.mj_getState(self.model, self.data, physics, kind)
        return {
            **ident,
            **{name: getattr(self, f"_{name}") for name, _ in self._COUNTERS},
            "physics": physics, "xpos": self.data.xpos.copy(),
            "cfrc_ext": self.data.cfrc_ext.copy(),
            "reset_noise": self._ant.np_random.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s state, bit for bit."""
        import mujoco

        self._check_identity_state(state)
        for name, kind in self._COUNTERS:
            setattr(self, f"_{name}", kind(state[name]))
        self._apply_friction(self._frictions[self._task])
        mujoco.mj_setState(self.model, self.data, np.asarray(state["physics"], np.float64),
                           mujoco.mjtState.mjSTATE_INTEGRATION)
        self.data.xpos[:] = state["xpos"]
        self.data.cfrc_ext[:] = state["cfrc_ext"]
        self._ant.np_random.bit_generator.state = state["reset_noise"]

    def _check_action(self, action: Any) -> np.ndarray:
        a = self._float_action(action, (_ACT_DIM,))
        if not np.isfinite(a).all():
            raise self._non_finite(f"at step {self._task_steps} of task {self._task}")
        if not self.config.raw_actions and not (a.min() >= -1.0 and a.max() <= 1.0):
            raise InvalidActionError(
                f"{self.ENV_ID}: actions must lie in [-1, 1] (raw_actions=False), got "
                f"{a.tolist()}; clip the policy's samples (e.g. np.clip(a, -1, 1)), or make "
                "the env with raw_actions=True to pass them unclipped, as the original did."
            )
        return a

    def step(self, action: Any):
        """Apply the torques for one env step (5 MuJoCo substeps) and score the episode."""
        if self._episode_over:
            self._check_started()
            if self._done:
                raise StreamFinishedError(
                    f"{self.ENV_ID}: the stream has ended; call reset(seed=...) to restart it."
                )
            raise StreamFinishedError(
                f"{self.ENV_ID}: the episode has ended (terminated or truncated); call reset() "
                "to start the next one."
            )
        a = self._check_action(action)
        obs, reward, terminated, _, info = self._ant.step(a)
        reward = float(reward)
        terminated = bool(terminated)
        self._task_steps += 1
        steps = self._episode_steps = self._episode_steps + 1
        ret = self._episode_return = self._episode_return + reward
        truncated = steps >= self._max_steps  # as gymnasium's TimeLimit: may join terminated
        info["task_end"] = False
        if terminated or truncated:
            self._episode_over = True
            self._task_return_sum += ret
            self._task_episodes += 1
            info["episode"] = {"r": ret, "l": steps}
            if self._task_steps >= self._N:
                info["task_end"] = True
                info["task_metrics"] = {self.METRIC: self._task_return_sum / self._task_episodes}
                if self._task + 1 < self.num_tasks:
                    self._change_due = True
                else:
                    self._done = True
        info["task"] = self._task
        info["friction"] = self._friction
        info["phase"] = "train"
        info["epoch"] = 0
        info["stream_done"] = self._done
        return obs.astype(np.float32), reward, terminated, truncated, info

    def close(self) -> None:
        """Close the Ant (its renderer, if any)."""
        ant = getattr(self, "_ant", None)
        if ant is not None:
            ant.close()


SPEC = StreamSpec(
    env=ChangingFrictionAntEnv,
    label="mean episode return",
    # The paper's Ant rows that fit the cpu tier's time: standard PPO (``backprop``), L2,
    # continual backprop, all PPO here (``ppo``, ``ppo_l2``, ``ppo_cbp`` are aliases;
    # ppo_proper_adam and shrink_perturb are registered too: --agents to add them).
    reference_agents=("backprop", "l2", "continual_backprop"),
    more_agents=("redo", "l2_init", "continual_backprop_instantaneous", "upgd", "crelu",
                 "layernorm"),
    functional_tiers={"cpu": "5 frictions of 30,000 steps"},
    # Returns can be negative (all are on the cpu tier): the plasticity score is a difference
    # in units of 1,000 return, the healthy reward of a full-length episode.
    plasticity_scale=1000.0,
)
"""The stream's declaration (:mod:`lop_bench.streams`)."""
