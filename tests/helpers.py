"""Small agents and a fake stream with train/test phases, for runner and CLI tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from gymnasium import spaces

from lop_bench.envs.base import ContinualStream
from lop_bench.streams import StreamSpec


class MeanAgent:
    """Predicts the running mean of the targets seen so far (a parameter-free learner)."""

    def __init__(self, action_space, lr=0.01):
        self.mean = torch.zeros(1)
        self.lr = lr
        self.shape = action_space.shape
        self.hparams = {"lr": lr}
        self.preset = None

    def act(self, obs, info):
        return np.full(self.shape, float(self.mean[0]), np.float32)

    def learn(self, obs, action, reward, next_obs, terminated, truncated, info):
        if "target" in info:
            self.mean += self.lr * (float(np.mean(info["target"])) - self.mean)

    def parameters(self):
        return [self.mean]


def make_mean_agent(env_spec, observation_space, action_space, seed, device, lr=0.01):
    return MeanAgent(action_space, lr=lr)


@dataclass(frozen=True)
class FakeConfig:
    num_tasks: int = 3
    train_steps: int = 5
    test_steps: int = 2
    num_seeds: int = field(default=2, metadata={"protocol": False})


class FakePhasesEnv(ContinualStream):
    """Tasks of ``train_steps`` train steps then ``test_steps`` test steps (no targets)."""

    ENV_ID = "lop/FakePhases-v0"
    TIERS = {"smoke": FakeConfig(), "cpu": FakeConfig()}
    METRIC = "mse"
    HIGHER_IS_BETTER = False

    def __init__(self, tier="smoke", **kw):
        super().__init__(tier, **kw)
        self.observation_space = spaces.Box(0, 1, (1, 2), np.float32)
        self.action_space = spaces.Box(-np.inf, np.inf, (1, 1), np.float32)
        self.num_tasks = self.config.num_tasks
        self.total_steps = self.num_tasks * (self.config.train_steps + self.config.test_steps)

    def reset(self, *, seed=None, options=None):
        seed = self._resolve_seed(seed)
        super().reset(seed=seed)
        self.stream_seed = seed
        self._stream_started = True
        self._task, self._i, self._sse = 0, 0, 0.0
        return np.zeros((1, 2), np.float32), self._context()

    def _phase(self):
        return "train" if self._i < self.config.train_steps else "test"

    def _context(self):
        return {"task": self._task, "phase": self._phase(), "epoch": 0, "stream_done": False}

    def step(self, action):
        cfg = self.config
        phase = self._phase()
        info = {"task_end": False}
        target = 1.0
        if phase == "train":
            info["target"] = np.ones((1, 1), np.float32)
        else:
            self._sse += (float(action[0, 0]) - target) ** 2
        self._i += 1
        done = False
        if self._i == cfg.train_steps + cfg.test_steps:
            info["task_end"] = True
            info["task_metrics"] = {"mse": self._sse / cfg.test_steps}
            self._sse, self._i = 0.0, 0
            if self._task + 1 == cfg.num_tasks:
                done = True
            else:
                self._task += 1
        info.update(self._context())
        info["stream_done"] = done
        return np.zeros((1, 2), np.float32), 0.0, False, False, info



FAKE_PHASES = StreamSpec(env=FakePhasesEnv, label="mean squared error")
"""The fake stream's declaration (tests register it for a test and remove it after)."""

class CheatingAgent(MeanAgent):
    """Learns on test steps too (from the reward-free phase): the runner must catch it."""

    def learn(self, obs, action, reward, next_obs, terminated, truncated, info):
        self.mean += 0.1


def make_cheating_agent(env_spec, observation_space, action_space, seed, device):
    return CheatingAgent(action_space)
