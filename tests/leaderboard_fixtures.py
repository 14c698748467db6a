"""Leaderboard test material: a ranked copy of the smoke tier, an agent with diagnostics, and
helpers that run, copy and edit entries (used by the leaderboard's tests, browser test too)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lop_bench
from lop_bench.registration import env_class
from tests.helpers import MeanAgent

REG = "lop/SlowlyChangingRegression-v0"
TIER = "mini"
"""A ranked tier for tests: the smoke tier's config under another name (smoke is never
ranked), so that a board fills in seconds."""
SCRIPT = "<script>alert(1)</script>"


@contextmanager
def ranked_mini_tier(*env_ids: str) -> Iterator[None]:
    """Give each stream (default: regression) the tier :data:`TIER`, a copy of its smoke tier."""
    with pytest.MonkeyPatch.context() as mp:
        for env_id in env_ids or (REG,):
            cls = env_class(env_id)
            mp.setitem(cls.TIERS, TIER, cls.TIERS["smoke"])
        yield


class FeatureMeanAgent(MeanAgent):
    """The mean agent with ``features(x)`` (a fixed random ReLU layer on the input), so that
    the runner records its diagnostics as it does for real agents."""

    def __init__(self, action_space: Any, obs_dim: int, seed: int, lr: float) -> None:
        super().__init__(action_space, lr=lr)
        self.w = torch.randn(obs_dim, 8, generator=torch.Generator().manual_seed(seed))

    def features(self, x: Any) -> list[torch.Tensor]:
        x = torch.as_tensor(x, dtype=torch.float32).reshape(len(x), -1)
        return [torch.relu(x @ self.w)]

    def parameters(self) -> list[torch.Tensor]:
        return [self.mean, self.w]


def make_feature_agent(env_spec, observation_space, action_space, seed, device, lr=0.01):
    return FeatureMeanAgent(action_space, int(np.prod(observation_space.shape[1:])), seed, lr)


def make_entry(out: Path, tier: str = TIER, seeds=None, **run_kwargs) -> Path:
    """Run the feature agent on every seed of ``tier`` (or ``seeds``) and save into ``out``."""
    cls = lop_bench.make(REG, tier=tier).unwrapped
    for s in range(cls.config.num_seeds) if seeds is None else seeds:
        lop_bench.run(REG, make_feature_agent, tier=tier, seed=s, progress=False, out=out,
                      **run_kwargs)
    return out


def copy_entry(src: Path, dst: Path, edit: Callable[[dict, int], None] | None = None,
               only=None) -> Path:
    """Copy an entry's files, applying ``edit(data, seed)`` and keeping seeds in ``only``."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.json")):
        data = json.loads(f.read_text())
        if only is not None and data["seed"] not in only:
            continue
        if edit is not None:
            edit(data, data["seed"])
        (dst / f.name).write_text(json.dumps(data, indent=1, sort_keys=True))
    return dst


def rename(name: str) -> Callable[[dict, int], None]:
    def edit(data, seed):
        data["agent"]["name"] = name
    return edit
