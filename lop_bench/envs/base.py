"""What every lop-bench stream shares: tiers, custom overrides, protocol hash, seeding."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lop_bench.config import config_to_dict, protocol_hash, replace_checked
from lop_bench.errors import (
    InvalidActionError,
    InvalidConfigError,
    StreamFinishedError,
    UnknownTierError,
    did_you_mean,
)
from lop_bench.seeding import check_seed

if TYPE_CHECKING:
    from lop_bench.data._common import LoadedData

__all__ = ["ContinualStream", "ContinualVectorStream"]


class ContinualStream(gymnasium.Env):
    """Base class of the lop-bench streams.

    Subclasses set ``ENV_ID``, ``STREAM_REVISION`` (bumped on any change of the data a
    seed produces), ``TIERS`` (name -> frozen config dataclass with ``num_seeds``,
    ``num_tasks`` and ``num_steps``), ``METRIC`` and ``HIGHER_IS_BETTER``; their module
    declares the stream with a :class:`~lop_bench.streams.StreamSpec`.

    Attributes available to runners and agents: ``config`` (the frozen tier config after
    overrides), ``tier``, ``custom`` (overrides changed the tier: results are unranked),
    ``protocol_hash``, ``dataset_fingerprint``, ``num_tasks``, ``total_steps``.
    """

    ENV_ID: ClassVar[str]
    STREAM_REVISION: ClassVar[int] = 1
    TIERS: ClassVar[dict[str, Any]]
    METRIC: ClassVar[str]
    HIGHER_IS_BETTER: ClassVar[bool]
    DIAGNOSTICS_DEFINITION: ClassVar[str] = "supervised"
    """How diagnostics count dormant units (:func:`lop_bench.diagnostics.measure`):
    ``"supervised"``, or ``"rl"`` for streams probed with the agent's own states."""
    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, tier: str = "cpu", **overrides: Any) -> None:
        if tier not in self.TIERS:
            raise UnknownTierError(
                f"unknown tier {tier!r} for {self.ENV_ID}.{did_you_mean(tier, self.TIERS)} "
                f"Tiers: {', '.join(self.TIERS)}."
            )
        self.tier = tier
        base = self.TIERS[tier]
        self.config = replace_checked(base, what=f"{self.ENV_ID} config", **overrides)
        self.custom = self.config != base
        self.dataset: LoadedData | None = None
        """The dataset the stream reads (streams of a dataset set it), None if synthetic."""
        self.dataset_fingerprint: str | None = None
        self.stream_seed: int | None = None
        self._stream_started = False

    # -- identity -------------------------------------------------------------------
    @property
    def protocol_hash(self) -> str:
        """sha256 of the protocol fields, env id, stream revision and dataset fingerprint."""
        return protocol_hash(self.ENV_ID, self.STREAM_REVISION, self.config, self.dataset_fingerprint)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The tier's fixed seed set, ``0 .. num_seeds - 1``."""
        return tuple(range(self.config.num_seeds))

    def describe(self) -> dict[str, Any]:
        """The stream's identity as recorded in a result file."""
        return {
            "env_id": self.ENV_ID,
            "tier": self.tier,
            "custom": self.custom,
            "config": config_to_dict(self.config),
            "protocol_hash": self.protocol_hash,
            "stream_revision": self.STREAM_REVISION,
            "dataset_fingerprint": self.dataset_fingerprint,
            "metric": self.METRIC,
            "higher_is_better": self.HIGHER_IS_BETTER,
        }

    # -- seeding --------------------------------------------------------------------
    def _resolve_seed(self, seed: int | None) -> int | None:
        """The seed to restart the stream with, or None to keep the stream's position."""
        if seed is not None:
            return check_seed(seed)
        if not self._stream_started:
            # Never seeded: draw one (like gymnasium), recorded in ``stream_seed``.
            return int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
        return None

    # -- checkpoints ----------------------------------------------------------------
    @property
    def supports_checkpoints(self) -> bool:
        """Whether this stream implements :meth:`state_dict` / :meth:`load_state_dict`."""
        return type(self).state_dict is not ContinualStream.state_dict

    def state_dict(self) -> dict[str, Any]:
        """The stream's position and generator states, taken between two steps.

        A fresh env of the same id, tier and overrides continues bit for bit after
        ``reset(seed=s)`` and :meth:`load_state_dict`. Values are tensors, numpy arrays
        and plain Python values (:mod:`lop_bench.checkpoint` saves them)."""
        from lop_bench.errors import CheckpointError

        raise CheckpointError(f"{self.ENV_ID} does not support checkpoints yet.")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the stream restarts from its seed first)."""
        from lop_bench.errors import CheckpointError

        raise CheckpointError(f"{self.ENV_ID} does not support checkpoints yet.")

    def _identity_state(self) -> dict[str, Any]:
        """The part of a state dict that :meth:`_check_identity_state` compares."""
        if not self._stream_started:
            raise StreamFinishedError(f"{self.ENV_ID}: call reset(seed=...) before state_dict().")
        return {"env_id": self.ENV_ID, "protocol_hash": self.protocol_hash,
                "seed": int(self.stream_seed)}

    def _check_identity_state(self, state: dict[str, Any]) -> None:
        """Check that ``state`` is this stream's and restart the stream from its seed."""
        from lop_bench.errors import CheckpointError

        if not isinstance(state, dict) or state.get("env_id") != self.ENV_ID:
            got = state.get("env_id") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"this state is not of {self.ENV_ID} (it is of {got!r}).")
        if state.get("protocol_hash") != self.protocol_hash:
            raise CheckpointError(
                f"this {self.ENV_ID} state has another protocol (tier or overrides) than this env."
            )
        self.reset(seed=state["seed"])

    # -- validation helpers ---------------------------------------------------------
    def _probe_count(self, n: Any, available: int) -> int:
        """The number of inputs of a diagnostics probe: ``n`` (default: the tier's
        ``probe_size``), at most ``available``; ``n`` must be a positive integer."""
        n = self.config.probe_size if n is None else n
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidConfigError(
                f"{self.ENV_ID}: the probe size must be a positive integer, got {n!r}."
            )
        return min(int(n), available)

    def _float_action(self, action: Any, shape: tuple[int, ...]) -> np.ndarray:
        """Check a real-valued prediction: a float array of ``shape`` with finite values."""
        if not isinstance(action, np.ndarray):
            if hasattr(action, "detach") and hasattr(action, "cpu"):  # a torch tensor
                action = action.detach().cpu().numpy()
            else:
                raise InvalidActionError(
                    f"{self.ENV_ID}: the action must be a numpy float array of shape {shape}, "
                    f"got {type(action).__name__}."
                )
        if action.shape != shape:
            raise InvalidActionError(
                f"{self.ENV_ID}: the action must have shape {shape} (batch, outputs), "
                f"got {action.shape}."
            )
        if action.dtype.kind != "f":
            raise InvalidActionError(
                f"{self.ENV_ID}: the action must be a float array (float32), got dtype {action.dtype}."
            )
        return action

    def _non_finite(self, where: str) -> InvalidActionError:
        return InvalidActionError(
            f"{self.ENV_ID}: the action holds a non-finite value (nan or inf) {where}; "
            "the agent's prediction diverged."
        )

    @classmethod
    def tier_config(cls, tier: str) -> Any:
        """The frozen config of a named tier."""
        if tier not in cls.TIERS:
            raise UnknownTierError(
                f"unknown tier {tier!r} for {cls.ENV_ID}.{did_you_mean(tier, cls.TIERS)}"
            )
        return cls.TIERS[tier]

    @classmethod
    def step_bounds(cls, config: Any) -> tuple[int, int]:
        """The fewest and the most env steps a run of the tier ``config`` takes (what the
        runner records as ``steps``): ``config.num_steps`` for a stream of fixed length."""
        return config.num_steps, config.num_steps

    @classmethod
    def config_fields(cls) -> list[str]:
        """Names of the overridable config fields."""
        return [f.name for f in dataclasses.fields(next(iter(cls.TIERS.values())))]


class ContinualVectorStream(VectorEnv):
    """Base class of the vector streams (``make_vec``): N seeds of one stream, stepped together.

    A subclass sets ``SINGLE`` (the single env class) and implements ``reset`` (calling
    :meth:`_reset_seeds` first) and ``step``. A template single env, built with the same
    tier and keyword arguments, validates them and describes the stream (config, protocol
    hash, dataset fingerprint), so every sub-env's result names the same protocol.
    ``reset(seed=s)`` with an int gives sub-env ``i`` the seed ``s + i`` (gymnasium's rule);
    a list gives the seeds themselves; ``None`` uses the ``seeds`` given at construction
    (default ``0 .. N-1``).
    """

    SINGLE: ClassVar[type[ContinualStream]]
    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.DISABLED, "render_modes": []}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        single = cls.__dict__.get("SINGLE")
        if single is not None:
            cls.ENV_ID, cls.METRIC = single.ENV_ID, single.METRIC
            cls.HIGHER_IS_BETTER = single.HIGHER_IS_BETTER
            cls.DIAGNOSTICS_DEFINITION = single.DIAGNOSTICS_DEFINITION

    def __init__(self, num_envs: int = 1, tier: str = "cpu", seeds: Any = None,
                 render_mode: str | None = None, **kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise InvalidConfigError(f"num_envs must be an integer >= 1, got {num_envs!r}.")
        self._template = t = self.SINGLE(tier, render_mode, **kwargs)
        self.num_envs = n = num_envs
        self.default_seeds = self._check_seeds(range(n) if seeds is None else seeds)
        self.config, self.tier, self.custom = t.config, t.tier, t.custom
        self.dataset = t.dataset  # shared by every sub-env
        self.num_tasks, self.total_steps = t.num_tasks, t.total_steps
        self.single_observation_space = t.observation_space
        self.single_action_space = t.action_space
        self.observation_space = batch_space(t.observation_space, n)
        self.action_space = batch_space(t.action_space, n)
        self.seeds: tuple[int, ...] | None = None
        self._started = False
        # Constant info arrays, shared by every step (read-only).
        self._false = np.zeros(n, dtype=bool)
        self._true = np.ones(n, dtype=bool)
        self._zeros_i = np.zeros(n, dtype=np.int64)
        self._phase = np.full(n, "train", dtype=object)
        for a in (self._false, self._true, self._zeros_i, self._phase):
            a.flags.writeable = False

    def _check_seeds(self, seeds: Any) -> tuple[int, ...]:
        seeds = tuple(check_seed(s) for s in seeds)
        if len(seeds) != self.num_envs:
            raise InvalidConfigError(
                f"{len(seeds)} seeds given for num_envs={self.num_envs}; give one per sub-env."
            )
        return seeds

    def _reset_seeds(self, seed: Any) -> tuple[int, ...]:
        """The sub-envs' seeds for ``reset(seed=...)``; records them in ``self.seeds``."""
        if seed is None:
            seeds = self.default_seeds
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = self._check_seeds(range(check_seed(seed), check_seed(seed) + self.num_envs))
        else:
            seeds = self._check_seeds(seed)
        super().reset(seed=int(seeds[0]))
        self.seeds = seeds
        return seeds

    # identity, as the single env reports it
    protocol_hash = property(lambda self: self._template.protocol_hash)
    dataset_fingerprint = property(lambda self: self._template.dataset_fingerprint)

    def describe(self) -> dict[str, Any]:
        """The stream's identity as recorded in each sub-env's result file."""
        return self._template.describe()

    # -- checkpoints ----------------------------------------------------------------
    @property
    def supports_checkpoints(self) -> bool:
        """Whether this vector stream implements :meth:`state_dict` / :meth:`load_state_dict`."""
        return type(self).state_dict is not ContinualVectorStream.state_dict

    def state_dict(self) -> dict[str, Any]:
        """Every sub-env's position and generator states, taken between two steps: a fresh
        vector env of the same id, tier, overrides and number of seeds continues bit for bit
        after :meth:`load_state_dict` (checkpoints of ``run_vectorized``)."""
        from lop_bench.errors import CheckpointError

        raise CheckpointError(f"{self.ENV_ID}'s vector env does not support checkpoints yet.")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (every sub-env restarts from its seed first)."""
        from lop_bench.errors import CheckpointError

        raise CheckpointError(f"{self.ENV_ID}'s vector env does not support checkpoints yet.")

    def _identity_state(self) -> dict[str, Any]:
        """The part of a state dict that :meth:`_check_identity_state` compares."""
        if not self._started:
            raise StreamFinishedError(f"{self.ENV_ID}: call reset() before state_dict().")
        return {"env_id": self.ENV_ID, "protocol_hash": self.protocol_hash,
                "seeds": [int(s) for s in self.seeds]}

    def _check_identity_state(self, state: dict[str, Any]) -> None:
        """Check that ``state`` is of this stream and as many seeds, and restart every
        sub-env from its seed."""
        from lop_bench.errors import CheckpointError

        if not isinstance(state, dict) or state.get("env_id") != self.ENV_ID:
            got = state.get("env_id") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"this state is not of {self.ENV_ID} (it is of {got!r}).")
        if state.get("protocol_hash") != self.protocol_hash:
            raise CheckpointError(
                f"this {self.ENV_ID} state has another protocol (tier or overrides) than this env."
            )
        seeds = state.get("seeds")
        if not isinstance(seeds, list) or len(seeds) != self.num_envs:
            raise CheckpointError(
                f"this {self.ENV_ID} state is not of {self.num_envs} seeds (it holds {seeds!r})."
            )
        self.reset(seed=seeds)

    def _advance(self, infos: dict[str, Any], task_score: Any) -> Any:
        """Move every sub-env past the step just scored; returns the next observations.

        Fills ``task_end`` (and, at a task's end, ``task_metrics = {METRIC: task_score()}``)
        and the context keys into ``infos``. Subclasses provide ``_T`` (steps per task),
        ``_obs(i)`` and ``_start_task()`` (draws the current task for every seed).
        """
        t = self._true
        i = self._i + 1
        if i < self._T:
            self._i = i
            obs = self._obs(i)
            infos["task_end"] = self._false
        else:
            infos["task_end"] = self._true
            infos["task_metrics"] = {self.METRIC: task_score()}
            infos["_task_metrics"] = t
            if self._task + 1 < self.num_tasks:
                self._task += 1
                for stream in self._streams:
                    stream.next_task()
                self._start_task()
                obs = self._obs(0)
            else:
                self._done = True
                obs = self._obs(i - 1)
        infos["_task_end"] = t
        infos.update(self._context())
        return obs

    def _context(self) -> dict[str, Any]:
        """The context keys of the next observations (all sub-envs share the task clock;
        subclasses keep ``_task_arr`` and ``_done``)."""
        t = self._true
        return {
            "task": self._task_arr, "_task": t, "phase": self._phase, "_phase": t,
            "epoch": self._zeros_i, "_epoch": t,
            "stream_done": self._true if self._done else self._false, "_stream_done": t,
        }


def check_labels(
    action: Any,
    shape: tuple[int, ...],
    num_classes: int,
    env_id: str,
    *,
    padded: bool = False,
    where: str = "",
) -> np.ndarray:
    """Check predicted labels: a numpy integer array (or a torch tensor, on any device) of
    ``shape`` with values in ``0 .. num_classes - 1``; raise
    :class:`~lop_bench.errors.InvalidActionError` naming what is wrong otherwise. Returns
    the numpy array. ``padded``: the batch may carry padded rows (they need labels too)."""
    if not isinstance(action, np.ndarray):
        if hasattr(action, "detach") and hasattr(action, "cpu"):  # a torch tensor
            action = action.detach().cpu().numpy()
        else:
            raise InvalidActionError(
                f"{env_id}: the action must be a numpy integer array (or torch tensor) of "
                f"shape {shape} (the predicted labels), got {type(action).__name__}."
            )
    if action.shape != shape:
        rows = "one label per image of the batch" + (", padded rows included" if padded else "")
        raise InvalidActionError(
            f"{env_id}: the action must have shape {shape} ({rows}), got {action.shape}."
        )
    if action.dtype.kind not in "iu":
        raise InvalidActionError(
            f"{env_id}: the action must be an integer array of labels (int64, as "
            f"action_space.sample()), got dtype {action.dtype}."
        )
    if action.size == 1:  # the online streams' one-image steps: skip the array reductions
        bad = not 0 <= int(action.flat[0]) < num_classes
    else:
        bad = bool((action < 0).any() or (action >= num_classes).any())
    if bad:
        raise InvalidActionError(
            f"{env_id}: labels must be in 0..{num_classes - 1}, got values from "
            f"{int(action.min())} to {int(action.max())}{where}."
        )
    return action
