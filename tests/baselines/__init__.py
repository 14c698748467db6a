"""Tests of the reference agents in ``baselines/``, with shared helpers.

The helpers build a fake env spec and the regression stream's spaces, so the agents are
tested without the stream itself.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.spaces import Box

REG = "lop/SlowlyChangingRegression-v0"
TRAIN = {"task": 0, "phase": "train"}


def spec(env_id: str = REG, tier: str = "cpu") -> EnvSpec:
    """A fake env spec carrying ``env_id`` and ``tier``."""
    return EnvSpec(id=env_id, entry_point="x:y", kwargs={"tier": tier})


def reg_spaces(d: int = 20, k: int = 1, batch: int = 1) -> tuple[Box, Box]:
    """The regression stream's observation and action spaces."""
    return (
        Box(0.0, 1.0, (batch, d), np.float32),
        Box(-np.inf, np.inf, (batch, k), np.float32),
    )


def make(module, seed: int = 0, **hparams):
    """``module.make_agent`` for the regression stream (cpu tier)."""
    obs_space, act_space = reg_spaces()
    return module.make_agent(spec(), obs_space, act_space, seed, "cpu", **hparams)


def data(n: int, seed: int = 0, d: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 0/1 inputs (n, 1, d) and targets of a fixed linear function (n, 1, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(n, 1, d)).astype(np.float32)
    w = rng.normal(size=d).astype(np.float32)
    y = (x @ w[:, None]).astype(np.float32) - 1.0
    return x, y


def train(agent, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Run the online protocol over ``(x[i], y[i])``; return the squared errors."""
    errors = []
    for xi, yi in zip(x, y, strict=True):
        pred = agent.act(xi, TRAIN)
        errors.append(float(((pred - yi) ** 2).mean()))
        agent.learn(xi, pred, -errors[-1], xi, False, False, {"target": yi, **TRAIN})
    return errors


def params(agent) -> list[torch.Tensor]:
    """Copies of the agent's parameters."""
    return [p.detach().clone() for p in agent.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """Whether two lists of tensors are bitwise equal."""
    return len(a) == len(b) and all(torch.equal(s, t) for s, t in zip(a, b, strict=True))
