"""What every lop-bench stream shares: tiers, custom overrides, protocol hash, seeding."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import gymnasium
import numpy as np

from lop_bench.config import config_to_dict, protocol_hash, replace_checked
from lop_bench.errors import InvalidActionError, UnknownTierError, did_you_mean
from lop_bench.seeding import check_seed

__all__ = ["ContinualStream"]


class ContinualStream(gymnasium.Env):
    """Base class of the lop-bench streams.

    Subclasses set ``ENV_ID``, ``STREAM_REVISION`` (bumped on any change of the data a
    seed produces), ``TIERS`` (name -> frozen config dataclass), ``METRIC`` and
    ``HIGHER_IS_BETTER``, and implement ``_start_stream(seed)``.

    Attributes available to runners and agents: ``config`` (the frozen tier config after
    overrides), ``tier``, ``custom`` (overrides changed the tier: results are unranked),
    ``protocol_hash``, ``dataset_fingerprint``, ``num_tasks``, ``total_steps``.
    """

    ENV_ID: ClassVar[str]
    STREAM_REVISION: ClassVar[int] = 1
    TIERS: ClassVar[dict[str, Any]]
    METRIC: ClassVar[str]
    HIGHER_IS_BETTER: ClassVar[bool]
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

    # -- validation helpers ---------------------------------------------------------
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
    def config_fields(cls) -> list[str]:
        """Names of the overridable config fields."""
        return [f.name for f in dataclasses.fields(next(iter(cls.TIERS.values())))]
