"""A small fake of the Continual ImageNet stream for the ConvNet agents' tests.

It follows the stream's protocol (DESIGN.md section 4, PROTOCOLS.md "Continual ImageNet")
at a tiny size: per task, ``epochs`` passes of ``train_batches`` shuffled batches of two
classes, then ``test_batches`` test batches (no target, reward 0); the last test step has
``task_end`` and ``task_metrics`` and its context is the next task's first train batch.
The agents are tested on it without the real stream or its dataset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.spaces import Box, MultiDiscrete

from . import spec

IMAGENET = "lop/ContinualImageNet-v0"


def imagenet_spaces(batch: int = 10) -> tuple[Box, MultiDiscrete]:
    """The stream's spaces at batch size ``batch``."""
    return Box(0.0, 255.0, (batch, 3, 32, 32), np.float32), MultiDiscrete([2] * batch)


def make_imagenet_agent(module, tier: str = "cpu", seed: int = 0, batch: int = 10, **hparams):
    """``module.make_agent`` for the (fake) Continual ImageNet stream."""
    obs_space, act_space = imagenet_spaces(batch)
    return module.make_agent(spec(IMAGENET, tier), obs_space, act_space, seed, "cpu", **hparams)


def images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float images (n, 3, 32, 32) in 0..255 of two classes (a bright and a dark
    template plus noise) and their labels."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(2, 3, 32, 32)).astype(np.float32)
    templates[1] *= 0.4
    labels = rng.integers(0, 2, size=n)
    x = 0.7 * templates[labels] + 0.3 * rng.integers(0, 256, size=(n, 3, 32, 32))
    return x.astype(np.float32), labels.astype(np.int64)


class FakeImageNetStream:
    """The protocol of ``lop/ContinualImageNet-v0`` on random two-class images."""

    def __init__(
        self,
        num_tasks: int = 2,
        epochs: int = 2,
        train_batches: int = 3,
        test_batches: int = 2,
        batch: int = 10,
    ) -> None:
        self.num_tasks, self.epochs, self.batch = num_tasks, epochs, batch
        self.train_batches, self.test_batches = train_batches, test_batches

    def reset(self, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
        self._rng = np.random.default_rng(seed)
        self._task, self._done = 0, False
        self._start_task()
        return self._obs(), self._context()

    def _start_task(self) -> None:
        n, b = self.train_batches * self.batch, self.batch
        x, y = images(n + self.test_batches * b, seed=int(self._rng.integers(2**31)))
        self._train, self._test = (x[:n], y[:n]), (x[n:], y[n:])
        self._epoch, self._i, self._phase, self._correct = 0, 0, "train", 0
        self._order = self._rng.permutation(n)

    def _batch(self) -> tuple[np.ndarray, np.ndarray]:
        b, i = self.batch, self._i
        if self._phase == "train":
            idx = self._order[i * b : (i + 1) * b]
            return self._train[0][idx], self._train[1][idx]
        return self._test[0][i * b : (i + 1) * b], self._test[1][i * b : (i + 1) * b]

    def _obs(self) -> np.ndarray:
        return self._batch()[0]

    def _context(self) -> dict[str, Any]:
        return {
            "task": self._task,
            "phase": self._phase,
            "epoch": self._epoch,
            "valid": self.batch,
            "stream_done": self._done,
        }

    def step(self, action: Any):
        action = action.cpu().numpy() if torch.is_tensor(action) else np.asarray(action)
        _, y = self._batch()
        info: dict[str, Any] = {"task_end": False}
        reward = 0.0
        if self._phase == "train":
            info["target"] = y
            reward = float(np.mean(action == y))
            self._i += 1
            if self._i == self.train_batches:
                self._i, self._epoch = 0, self._epoch + 1
                self._order = self._rng.permutation(self.train_batches * self.batch)
                if self._epoch == self.epochs:
                    self._phase = "test"
        else:
            self._correct += int(np.sum(action == y))
            self._i += 1
            if self._i == self.test_batches:
                info["task_end"] = True
                info["task_metrics"] = {
                    "accuracy": self._correct / (self.test_batches * self.batch)
                }
                if self._task + 1 < self.num_tasks:
                    self._task += 1
                    self._start_task()
                else:
                    self._done = True
                    self._i -= 1
        return self._obs(), reward, False, False, {**info, **self._context()}


def state_tensors(agent) -> list[torch.Tensor]:
    """Copies of the agent's parameters and buffers (what the runner checks in eval phases)."""
    return [t.detach().clone() for t in (*agent.parameters(), *agent.buffers())]


def run_protocol(agent, env: FakeImageNetStream, seed: int = 0) -> dict[str, Any]:
    """The runner's loop on ``env``: ``act``, ``step``, ``learn``, with its eval-phase
    check (a snapshot after the ``learn`` announcing a test phase must equal the state
    after the phase's last ``act``). Returns the test-phase checks done, the task scores
    and, per ``act`` call, the task and whether the head was zero at that prediction."""
    obs, info = env.reset(seed=seed)
    head = agent.net.layers[-1]
    checks, scores, acts = 0, [], []
    snapshot = None
    while True:
        acts.append((info["task"], info["phase"], bool((head.weight == 0).all())))
        action = agent.act(obs, info)
        obs_next, reward, terminated, truncated, info = env.step(action)
        if snapshot is not None and (info["phase"] != "test" or info["stream_done"]):
            now = state_tensors(agent)
            assert len(now) == len(snapshot)
            assert all(torch.equal(a, b) for a, b in zip(now, snapshot, strict=True))
            checks += 1
            snapshot = None
        agent.learn(obs, action, reward, obs_next, terminated, truncated, info)
        if info["task_end"]:
            scores.append(info["task_metrics"]["accuracy"])
        if info["stream_done"]:
            break
        if snapshot is None and info["phase"] == "test":
            snapshot = state_tensors(agent)
        obs = obs_next
    return {"checks": checks, "scores": scores, "acts": acts}
