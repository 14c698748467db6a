"""A toy stream declared in one file, as a stream outside lop-bench is: its tiers, its env,
two toy agents and its declaration, :data:`SPEC` (``tests/test_toy_stream.py`` registers it
with ``lop_bench.register(SPEC)``, then runs, reports and ranks it).

Each task asks for one constant, drawn from the seed, whatever the input; a task's score is
the mean squared error of its predictions. The learner tracks the targets it is shown, the
frozen agent never learns: the stream's finding is that the learner ends below it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from lop_bench.envs.base import ContinualStream
from lop_bench.streams import Finding, StreamSpec

ENV_ID = "lop/ToyConstant-v0"
LEARNER = "tests.toy_stream:make_learner"
FROZEN = "tests.toy_stream:make_frozen"


@dataclass(frozen=True)
class ToyConfig:
    """A tier of the toy stream."""

    num_tasks: int = 4
    steps_per_task: int = 20
    num_seeds: int = field(default=3, metadata={"protocol": False})
    probe_size: int = field(default=8, metadata={"protocol": False})

    @property
    def num_steps(self) -> int:
        """Steps of the whole stream."""
        return self.num_tasks * self.steps_per_task


TIERS = {"smoke": ToyConfig(num_tasks=2, steps_per_task=4, num_seeds=2), "cpu": ToyConfig()}


class ToyConstantEnv(ContinualStream):
    """Predict the task's constant from a (1, 2) input; targets revealed after each step."""

    ENV_ID = ENV_ID
    TIERS = TIERS
    METRIC = "mse"
    HIGHER_IS_BETTER = False

    def __init__(self, tier: str = "cpu", render_mode: str | None = None, **overrides: Any):
        super().__init__(tier, **overrides)
        self.observation_space = spaces.Box(-1.0, 1.0, (1, 2), np.float32)
        self.action_space = spaces.Box(-np.inf, np.inf, (1, 1), np.float32)
        self.num_tasks = self.config.num_tasks
        self.total_steps = self.config.num_steps

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        new_seed = self._resolve_seed(seed)
        super().reset(seed=new_seed)
        if new_seed is not None:
            self.stream_seed, self._stream_started = new_seed, True
            rng = np.random.default_rng(new_seed)
            self._targets = rng.uniform(3.0, 3.5, self.config.num_tasks)
            self._inputs = rng.uniform(-1.0, 1.0, (self.config.num_steps, 1, 2)).astype(np.float32)
            self._t, self._sse = 0, 0.0
        return self._inputs[self._t], self._context(False)

    @property
    def _task(self) -> int:
        return min(self._t // self.config.steps_per_task, self.num_tasks - 1)

    def _context(self, done: bool) -> dict[str, Any]:
        return {"task": self._task, "phase": "train", "stream_done": done}

    def probe(self, n: int | None = None) -> np.ndarray:
        """The current task's inputs, for the diagnostics."""
        per_task = self.config.steps_per_task
        start = self._task * per_task
        return self._inputs[start:start + self._probe_count(n, per_task), 0]

    def step(self, action: Any):
        target = np.full((1, 1), self._targets[self._task], np.float32)
        se = float((self._float_action(action, (1, 1))[0, 0] - target[0, 0]) ** 2)
        self._sse += se
        self._t += 1
        info: dict[str, Any] = {"target": target, "task_end": False}
        if self._t % self.config.steps_per_task == 0:
            info.update(task_end=True, task_metrics={"mse": self._sse / self.config.steps_per_task})
            self._sse = 0.0
        done = self._t == self.config.num_steps
        info.update(self._context(done))
        return self._inputs[min(self._t, self.config.num_steps - 1)], -se, False, False, info


class ToyAgent:
    """Predicts a running mean of the targets (``lr`` 0: never learns); one fixed random
    ReLU layer on the input as its features, for the diagnostics."""

    def __init__(self, seed: int, lr: float) -> None:
        self.mean = torch.zeros(1)
        self.w = torch.randn(2, 4, generator=torch.Generator().manual_seed(seed))
        self.lr, self.hparams, self.preset = lr, {"lr": lr}, None

    def act(self, obs: Any, info: dict) -> np.ndarray:
        return np.full((1, 1), float(self.mean[0]), np.float32)

    def learn(self, obs, action, reward, next_obs, terminated, truncated, info) -> None:
        if "target" in info:
            self.mean += self.lr * (float(info["target"][0, 0]) - self.mean)

    def features(self, x: Any) -> list[torch.Tensor]:
        return [torch.relu(torch.as_tensor(x, dtype=torch.float32) @ self.w)]

    def parameters(self) -> list[torch.Tensor]:
        return [self.mean, self.w]


def make_learner(env_spec, observation_space, action_space, seed, device, lr=0.5) -> ToyAgent:
    """The learner: moves halfway to each target."""
    return ToyAgent(seed, lr)


def make_frozen(env_spec, observation_space, action_space, seed, device) -> ToyAgent:
    """The frozen agent: predicts 0 throughout."""
    return ToyAgent(seed, 0.0)


SPEC = StreamSpec(
    env=ToyConstantEnv,
    label="squared error",
    reference_agents=(LEARNER, FROZEN),
    findings=(
        Finding("the learner ends below the frozen agent", (LEARNER, "final"), "<",
                (FROZEN, "final")),
    ),
)
"""The toy stream's declaration."""
