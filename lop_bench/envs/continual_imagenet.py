"""Continual ImageNet (Dohare et al. 2024; PROTOCOLS.md, "Continual ImageNet")."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from lop_bench.config import check_choice, check_positive
from lop_bench.data.imagenet import (
    HF_ID,
    IMAGE_SHAPE,
    IMAGENET32_FINGERPRINT,
    PREPARE_COMMAND,
    ImageNet32Data,
    load_imagenet32,
)
from lop_bench.envs.base import ContinualStream, check_labels
from lop_bench.errors import InvalidConfigError, StreamFinishedError
from lop_bench.seeding import spawn_generators, task_generator
from lop_bench.streams import Finding, StreamSpec

__all__ = [
    "ContinualImageNetConfig",
    "ContinualImageNetEnv",
    "TIERS",
    "CLASS_ORDERS",
    "check_labels",
    "SPEC",
]

CLASS_ORDERS = ("fresh", "repeat")
"""``"fresh"``: a new class permutation for every block of ``num_classes // 2`` tasks (the
default); ``"repeat"``: one permutation for the whole stream (the public code)."""

_PURPOSES = ("class_order", "shuffle", "test_order")
"""The stream's generators (child ``i`` of the seed's ``SeedSequence``; saved in
:meth:`ContinualImageNetEnv.state_dict`)."""
_PROBE = len(_PURPOSES)
"""Child 3 of the seed's ``SeedSequence``: one probe generator per task
(:func:`~lop_bench.seeding.task_generator`), apart from the stream's."""


@dataclass(frozen=True)
class ContinualImageNetConfig:
    """A tier of the Continual ImageNet stream.

    Protocol fields (hashed into results): every field but ``num_seeds`` and
    ``probe_size``. Where the images come from (``root``, ``source``) and the ``device`` are
    not part of the config: the dataset enters the protocol hash through its fingerprint
    instead.
    """

    num_classes: int = 1000
    """Classes in use: classes ``0 .. num_classes - 1`` of the dataset (sorted wnid order).
    Each block of ``num_classes // 2`` tasks pairs them all up (PROTOCOLS: 1,000). Even."""
    train_per_class: int = 600
    """Training images per class: rows ``0 .. train_per_class - 1`` of its array (PROTOCOLS:
    600)."""
    test_per_class: int = 100
    """Test images per class: the **last** ``test_per_class`` rows of its array (PROTOCOLS:
    100, rows 600..699 of the 700)."""
    num_tasks: int = 5000
    """Tasks (class pairs) in the stream (PROTOCOLS: 5,000; the paper's BP curve stops at
    2,000)."""
    epochs: int = 250
    """Passes over the task's training images, each in a fresh random order (PROTOCOLS: 250)."""
    batch_size: int = 100
    """Images per step, in training and test (PROTOCOLS: 100). A phase's last batch is padded
    when the phase's size is not a multiple of it (``info["valid"]``)."""
    class_order: str = "fresh"
    """``"fresh"`` (a new class permutation for every block of ``num_classes // 2`` tasks) or
    ``"repeat"`` (the public code: one permutation, so task ``t`` recurs every
    ``num_classes // 2`` tasks)."""
    num_seeds: int = field(default=30, metadata={"protocol": False})
    """The tier's seed set is ``0 .. num_seeds - 1`` (not hashed; PROTOCOLS: 30 runs)."""
    probe_size: int = field(default=1000, metadata={"protocol": False})
    """Diagnostics probe: at most this many of the previous task's training images, drawn at
    random (:meth:`ContinualImageNetEnv.probe`; not hashed; lop-bench's choice, as for
    incremental CIFAR-100: the paper does not state it)."""

    def __post_init__(self) -> None:
        check_positive("num_classes", self.num_classes)
        if self.num_classes < 2 or self.num_classes % 2:
            raise InvalidConfigError(
                f"num_classes must be even and >= 2 (tasks pair the classes up), got "
                f"{self.num_classes!r}."
            )
        for name in ("train_per_class", "test_per_class", "num_tasks", "epochs", "batch_size",
                     "num_seeds", "probe_size"):
            check_positive(name, getattr(self, name))
        check_choice("class_order", self.class_order, CLASS_ORDERS)

    @property
    def tasks_per_block(self) -> int:
        return self.num_classes // 2

    @property
    def train_batches(self) -> int:
        """Steps per epoch: ``ceil(2 * train_per_class / batch_size)``."""
        return math.ceil(2 * self.train_per_class / self.batch_size)

    @property
    def test_batches(self) -> int:
        return math.ceil(2 * self.test_per_class / self.batch_size)

    @property
    def steps_per_task(self) -> int:
        return self.epochs * self.train_batches + self.test_batches

    @property
    def num_steps(self) -> int:
        return self.num_tasks * self.steps_per_task


TIERS: dict[str, ContinualImageNetConfig] = {
    # Seconds: for tests and CI. 4 classes of 20 training and 10 test images, 3 tasks (task
    # 2 starts a new block with a fresh class order), 2 epochs in batches of 16, so both
    # phases end with a padded batch (40 = 16 + 16 + 8 valid, 20 = 16 + 4 valid): 8 steps
    # per task. Runs on any copy with at least 4 classes of 30 images (the test fixtures).
    "smoke": ContinualImageNetConfig(num_classes=4, train_per_class=20, test_per_class=10,
                                     num_tasks=3, epochs=2, batch_size=16, num_seeds=2),
    # A functional check on a laptop, far too short to show loss of plasticity (the paper
    # needs hundreds of tasks of 250 epochs): 1,000 classes, 20 tasks x (2 epochs x 12
    # batches + 2 test batches) = 520 steps per run, 5 seeds. Sized to `lop-bench
    # reproduce` (4 agents x 5 seeds on 2 CPU cores in 15 minutes or less). Measured on a
    # 2-core VM (torch 2.14.1 CPU, synthetic data in the real per-class layout, fingerprint
    # already cached): `lop-bench reproduce lop/ContinualImageNet-v0 --tier cpu --jobs 2`
    # took 5 min 53 s wall (11 min 13 s of CPU), and 12 min 51 s while another two-process
    # job shared the same two cores. Hashing the 2.2 GB for the fingerprint (first load
    # only; `prepare` writes it) took 4 s from the page cache.
    "cpu": ContinualImageNetConfig(num_tasks=20, epochs=2, num_seeds=5),
    # PROTOCOLS.md: 1,000 classes of 600 + 100 images, 5,000 tasks of 250 epochs, batch
    # 100, 30 runs.
    "paper": ContinualImageNetConfig(),
}


def _load(root: Any, source: str, hf_id: str) -> ImageNet32Data:
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise InvalidConfigError(f"root must be a path or None, got {root!r}.")
    return load_imagenet32(root, source, hf_id=hf_id)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class ContinualImageNetEnv(ContinualStream):
    """Continual ImageNet: a long sequence of two-class tasks on downsampled ImageNet.

    **Data.** ImageNet 32x32, ``num_classes`` classes (the paper: 1,000) of
    ``train_per_class`` training and ``test_per_class`` test images (600 and 100: the
    per-class files' rows 0..599 and 600..699; see :mod:`lop_bench.data.imagenet`). Class
    ``c`` is the ``c``-th wnid in sorted order. Each seed draws a random permutation of the
    classes for every block of ``num_classes // 2`` tasks (``class_order="fresh"``; with
    ``"repeat"``, the public code's choice, one permutation serves every block). Task ``t``
    (position ``j = t mod num_classes // 2`` in its block) is the pair ``(order[2j],
    order[2j + 1])``: label 0 is the first class, label 1 the second. A task is ``epochs``
    passes over its ``2 * train_per_class`` training images, each pass in a fresh random
    order, then one pass over its ``2 * test_per_class`` test images (in a fresh random
    order too).
    Inputs are the raw pixel values as float32 (0..255), not normalized.

    **Spaces.** Observation ``Box(0, 255, (B, 3, 32, 32), float32)``: a batch of
    ``batch_size`` images (the protocol: B = 100). Action ``MultiDiscrete([2] * B)``: the
    predicted labels, an integer array of shape ``(B,)`` (int64, as ``action_space.sample()``),
    one for every row including padded ones.

    **Phases.** ``"train"`` steps reveal ``info["target"]`` (int64, shape ``(B,)``) after the
    prediction; reward = the fraction of the batch's real rows predicted correctly.
    ``"test"`` steps reveal nothing and give reward 0: the env counts the correct
    predictions itself. The task's score is its test accuracy, ``task_metrics["accuracy"]``
    (correct / ``2 * test_per_class``), at the task's last (test) step, where
    ``task_end=True``. Higher is better.

    **Test order carries no label.** Every test phase shows the task's test images in a
    fresh random order drawn from the seed (the ``test_order`` generator, one permutation
    per task), never grouped by class. Its number of steps, ``valid`` and padding depend
    only on ``test_per_class``, and its ``info`` holds only the context (and the score at
    its last step): nothing but the images tells an agent what a row's label is.

    **Known limitation: test images come back (the paper's protocol).** A class's test
    images are the same ``test_per_class`` images in every task the class is in, so each
    class's test images are shown again every time the class appears in a later task. With
    ``class_order="fresh"`` (the default) a class gets a new partner in each block of
    ``num_classes // 2`` tasks: from the second block on (task 500 of the paper tier, whose
    5,000 tasks show each class 10 times) every test image has been shown before, in a
    task that shares exactly one class with the current one. An agent that memorizes test
    images across tasks can infer that shared class (and its label now, by matching the two
    tasks' labelled training images), so it answers those rows right with no learning
    (``tests/test_adversarial.py``: a strict ``xfail``). Showing a disjoint share of each
    class's test images at each appearance would close the leak, but lop-bench keeps the
    paper's per-task test set (the pair's ``2 * test_per_class`` images: 200) for fidelity
    to the paper's numbers. Such an agent is caught only by code review: the leaderboard
    asks every submission for ``agent.source``. (The cpu tier's 20 tasks never show a
    class twice; with ``class_order="repeat"`` a class always has the same partner.)

    **Padding.** When a phase's size is not a multiple of B (never at the paper's or cpu
    tier's sizes; the smoke tier does it on purpose), the phase's last batch is padded with
    zero images (target 0); ``info["valid"]`` says how many leading rows are real. Padded
    rows are never scored. An agent learns only from the first ``valid`` rows, where
    ``valid`` is the one of the observation it predicted on (the ``info`` of ``act``).

    **Info.** About the action just taken: ``target`` (train steps only), ``task_end``,
    ``task_metrics`` (at a task's end). About the returned observation: ``task``,
    ``phase`` (``"train"`` or ``"test"``), ``epoch`` (0-based; in the test phase the last
    epoch, ``epochs - 1``), ``valid`` (int). And ``stream_done``. ``reset(seed=s)`` restarts
    the stream; ``reset()`` keeps its position. The episode never terminates; the stream
    ends with ``info["stream_done"]``.

    **Tiers.** ``smoke`` (4 classes, 3 short tasks: seconds, runs on a small fixture),
    ``cpu`` (1,000 classes, 20 tasks of 2 epochs, 5 seeds: a functional check of `lop-bench
    reproduce` within 15 minutes on 2 cores, too short to show loss of plasticity),
    ``paper`` (5,000 tasks of 250 epochs, 30 seeds). See :data:`TIERS`.

    **Data source** (keyword arguments of ``make``, not part of the protocol): ``root``
    (default: ``$LOP_BENCH_DATA`` or ``~/.cache/lop_bench``), ``source`` (``"auto"``,
    ``"npy"``, ``"imagenet32"`` or ``"hf"``), ``hf_id``; see
    :func:`lop_bench.data.load_imagenet32`. A missing dataset raises
    :class:`~lop_bench.errors.DatasetNotFoundError` naming ``lop-bench data prepare
    imagenet32 --from DIR``. The dataset's fingerprint is ``dataset_fingerprint`` and enters
    the protocol hash.

    **Device.** ``device=None`` (default): numpy observations and targets, images read from
    the memory-mapped per-class files. ``device="cuda"`` (any torch device): the classes in
    use are copied once to that device as uint8 (1,000 x 700 images: 2.2 GB) and
    observations (float32), targets (int64) and the probe are torch tensors there; the
    stream is the same (all randomness is drawn on the host).

    **Diagnostics probe** (:meth:`probe`, measured by the runner at each task's start):
    ``probe_size`` of the previous task's training images, which the agent has been
    trained on (task 0: its own training images, about to be trained on), drawn at random.
    Never a test image, which would hand the agent unlabelled test data to memorize; the
    same for every agent at the same seed and task.

    **Randomness.** Per-purpose generators spawned from the seed: class orders, training
    shuffles (one per epoch), test orders (one per task). The probe draws from a generator
    of its own for each task (child 3 of the seed, keyed by the task:
    :func:`~lop_bench.seeding.task_generator`), never from the stream's: probing never
    changes the stream.

    **Memory.** A task is a pair of class indices and index permutations; a batch is
    gathered from the class arrays (memory maps) and converted to float32, nothing else is
    copied.

    **Checkpoints.** :meth:`state_dict` / :meth:`load_state_dict` hold the position (task,
    step), the class order, the probe's classes, the current shuffles, the test count and
    the generators' states: a fresh env, after ``reset(seed=s)`` and ``load_state_dict``,
    continues bit for bit (probes included).
    """

    ENV_ID = "lop/ContinualImageNet-v0"
    STREAM_REVISION = 2
    """Revision 2: the diagnostics probe is the previous task's training images, shuffled
    (revision 1: the task's test images, grouped by class). The observations are unchanged."""
    TIERS = TIERS
    METRIC = "accuracy"
    HIGHER_IS_BETTER = True

    def __init__(
        self,
        tier: str = "cpu",
        render_mode: str | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        source: str = "auto",
        hf_id: str = HF_ID,
        device: Any = None,
        **overrides: Any,
    ) -> None:
        super().__init__(tier, **overrides)
        if render_mode is not None:
            raise InvalidConfigError(f"{self.ENV_ID} has no render modes, got {render_mode!r}.")
        cfg = self.config
        self.dataset = data = _load(root, source, hf_id)
        fix = (f"use the full per-class layout (`{PREPARE_COMMAND}`), or a smaller value (a "
               "custom, unranked run).")
        if cfg.num_classes > data.num_classes:
            raise InvalidConfigError(
                f"{self.ENV_ID} [{tier}] uses {cfg.num_classes} classes but the dataset at "
                f"{data.location} has {data.num_classes}: {fix}"
            )
        if cfg.train_per_class + cfg.test_per_class > data.images_per_class:
            raise InvalidConfigError(
                f"{self.ENV_ID} [{tier}] needs {cfg.train_per_class} training + "
                f"{cfg.test_per_class} test images per class but the dataset at "
                f"{data.location} has {data.images_per_class} per class: {fix}"
            )
        self.dataset_fingerprint = data.fingerprint
        self._B = B = cfg.batch_size
        self._tr, self._te = cfg.train_per_class, cfg.test_per_class
        self._test_row0 = data.images_per_class - cfg.test_per_class  # numpy: the last rows
        self._nb_train = cfg.train_batches
        self._train_steps = cfg.epochs * cfg.train_batches
        self._T = cfg.steps_per_task
        self.num_tasks = cfg.num_tasks
        self.total_steps = cfg.num_steps
        self.observation_space = spaces.Box(0.0, 255.0, shape=(B, *IMAGE_SHAPE), dtype=np.float32)
        self.action_space = spaces.MultiDiscrete(np.full(B, 2, dtype=np.int64))
        self.device = None if device is None else self._torch_device(device)
        self._dev_data = None if self.device is None else self._to_device()
        self._done = False

    # -- device -----------------------------------------------------------------------
    @staticmethod
    def _torch_device(device: Any) -> Any:
        import torch

        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InvalidConfigError(f"device must be a torch device, got {device!r} ({exc}).") from None

    def _to_device(self) -> Any:
        """The classes in use on the device, uint8 ``(K, train + test, 3, 32, 32)``: rows
        ``0 .. train-1`` the training images, then the test images."""
        import torch

        K, tr, te = self.config.num_classes, self._tr, self._te
        out = torch.empty((K, tr + te, *IMAGE_SHAPE), dtype=torch.uint8, device=self.device)
        for c in range(K):
            a = self.dataset.class_images(c)
            out[c, :tr] = torch.from_numpy(np.array(a[:tr])).to(self.device)
            out[c, tr:] = torch.from_numpy(np.array(a[self._test_row0:])).to(self.device)
        return out

    # -- stream ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """``reset(seed=s)`` restarts the stream from task 0; ``reset()`` keeps its position."""
        new_seed = self._resolve_seed(seed)
        super().reset(seed=new_seed)
        if new_seed is not None:
            self.stream_seed = new_seed
            self._stream_started = True
            self._rng = spawn_generators(new_seed, _PURPOSES)
            self._order = np.arange(self.config.num_classes)
            self._task = 0
            self._done = False
            self._start_task()
        elif self._done:
            raise StreamFinishedError(
                f"{self.ENV_ID}: the stream has ended; call reset(seed=...) to restart it."
            )
        return self._obs(), self._context()

    def _start_task(self) -> None:
        cfg = self.config
        j = self._task % cfg.tasks_per_block
        if j == 0 and (cfg.class_order == "fresh" or self._task == 0):
            self._order = self._rng["class_order"].permutation(cfg.num_classes)
        previous = self._pair if self._task > 0 else None
        self._set_pair()
        # The probe's classes: the previous task's, trained on (task 0: its own).
        self._probe_pair = self._pair if previous is None else previous
        self._test_perm = self._rng["test_order"].permutation(2 * self._te)
        self._epoch_perm = self._rng["shuffle"].permutation(2 * self._tr)
        self._i = 0
        self._correct = 0

    def _set_pair(self) -> None:
        j = self._task % self.config.tasks_per_block
        self._pair = (int(self._order[2 * j]), int(self._order[2 * j + 1]))
        if self.device is None:
            self._arrays = tuple(self.dataset.class_images(c) for c in self._pair)

    @property
    def pair(self) -> tuple[int, int]:
        """The current task's classes ``(label 0, label 1)`` (dataset class indices)."""
        return self._pair

    def _batch(self, i: int) -> tuple[str, int, np.ndarray, np.ndarray]:
        """``(phase, epoch, labels, rows)`` of step ``i`` of the task: the labels (0/1) and
        the rows within each class of the batch's real images."""
        B = self._B
        if i < self._train_steps:
            epoch, j = divmod(i, self._nb_train)
            idx = self._epoch_perm[j * B:(j + 1) * B]
            labels = (idx >= self._tr).astype(np.int64)
            return "train", epoch, labels, idx - labels * self._tr
        j = i - self._train_steps
        idx = self._test_perm[j * B:(j + 1) * B]
        labels = (idx >= self._te).astype(np.int64)
        return "test", self.config.epochs - 1, labels, idx - labels * self._te

    def _images(self, phase: str, labels: np.ndarray, rows: np.ndarray, size: int,
                pair: tuple[int, int] | None = None) -> Any:
        """Float32 images ``(size, 3, 32, 32)``: image ``rows[i]`` of the ``phase``'s
        (training or test) images of class ``pair[labels[i]]`` (default: the current task's
        pair), then zero rows."""
        v = len(labels)
        pair = self._pair if pair is None else pair
        if self.device is None:
            x = np.zeros((size, *IMAGE_SHAPE), dtype=np.float32)
            offset = 0 if phase == "train" else self._test_row0
            arrays = (self._arrays if pair == self._pair
                      else tuple(self.dataset.class_images(c) for c in pair))
            for lab in (0, 1):
                m = labels == lab
                if m.any():
                    x[:v][m] = arrays[lab][rows[m] + offset]
            return x
        import torch

        offset = 0 if phase == "train" else self._tr
        cls = torch.as_tensor(np.asarray(pair)[labels], device=self.device)
        r = torch.as_tensor(rows + offset, device=self.device)
        x = torch.zeros((size, *IMAGE_SHAPE), dtype=torch.float32, device=self.device)
        x[:v] = self._dev_data[cls, r]
        return x

    def _obs(self) -> Any:
        phase, _, labels, rows = self._batch(self._i)
        return self._images(phase, labels, rows, self._B)

    def probe(self, n: int | None = None) -> Any:
        """The diagnostics probe of the current task: ``n`` (default ``probe_size``; all of
        them when there are fewer) of the previous task's ``2 * train_per_class`` training
        images, which the agent has been trained on (task 0: its own training images, which
        it is about to be trained on), drawn at random without replacement; never a test
        image. Float32 ``(n, 3, 32, 32)`` (numpy, or a tensor on the env's device).

        The draw comes from a generator of its own, keyed by the seed and the task: the same
        probe for every agent and at every call, and probing never changes the stream.
        ``probe(m)`` is the first ``m`` rows of ``probe(n)`` for ``m < n``."""
        self._check_started("probe()")
        n = self._probe_count(n, 2 * self._tr)
        idx = task_generator(self.stream_seed, _PROBE, self._task).permutation(2 * self._tr)[:n]
        labels = (idx >= self._tr).astype(np.int64)
        return self._images("train", labels, idx - labels * self._tr, n, pair=self._probe_pair)

    def _check_started(self, what: str = "step()") -> None:
        if not self._stream_started:
            raise StreamFinishedError(f"{self.ENV_ID}: call reset(seed=...) before {what}.")

    def _context(self) -> dict[str, Any]:
        phase, epoch, labels, _ = self._batch(self._i)
        return {"task": self._task, "phase": phase, "epoch": epoch, "valid": len(labels),
                "stream_done": self._done}

    def step(self, action: Any):
        """Score the predicted labels of the current batch; on a train step reveal its labels."""
        if self._done or not self._stream_started:
            self._check_started()
            raise StreamFinishedError(
                f"{self.ENV_ID}: the stream has ended; call reset(seed=...) to restart it."
            )
        pred = check_labels(action, (self._B,), 2, self.ENV_ID, padded=True)
        phase, _, labels, _ = self._batch(self._i)
        v = len(labels)
        correct = int(np.count_nonzero(pred[:v] == labels))
        info: dict[str, Any] = {}
        if phase == "train":
            target = np.zeros(self._B, dtype=np.int64)
            target[:v] = labels
            if self.device is not None:
                import torch

                target = torch.as_tensor(target, device=self.device)
            info["target"] = target
            reward = correct / v
        else:
            self._correct += correct
            reward = 0.0
        info["task_end"] = False
        i = self._i + 1
        if i == self._T:
            info["task_end"] = True
            info["task_metrics"] = {self.METRIC: self._correct / (2 * self._te)}
            if self._task + 1 < self.num_tasks:
                self._task += 1
                self._start_task()
            else:
                self._done = True  # the last observation is returned again
        else:
            if i < self._train_steps and i % self._nb_train == 0:  # a new epoch
                self._epoch_perm = self._rng["shuffle"].permutation(2 * self._tr)
            self._i = i
        info.update(self._context())
        return self._obs(), float(reward), False, False, info

    # -- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The stream's position and generators: plain values and int64 arrays only."""
        self._check_started()
        return {
            "seed": int(self.stream_seed),
            "task": int(self._task),
            "step": int(self._i),
            "done": bool(self._done),
            "correct": int(self._correct),
            "order": self._order.astype(np.int64),
            "probe_pair": np.asarray(self._probe_pair, dtype=np.int64),
            "epoch_perm": self._epoch_perm.astype(np.int64),
            "test_perm": self._test_perm.astype(np.int64),
            "rng": {p: self._rng[p].bit_generator.state for p in _PURPOSES},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (of an env of the same id, tier and kwargs)."""
        missing = {"seed", "task", "step", "done", "correct", "order", "probe_pair",
                   "epoch_perm", "test_perm", "rng"} - set(state)
        if missing:
            raise InvalidConfigError(f"{self.ENV_ID}: the state lacks {sorted(missing)}.")
        cfg = self.config
        order = _as_numpy(state["order"]).astype(np.int64)
        epoch_perm = _as_numpy(state["epoch_perm"]).astype(np.int64)
        test_perm = _as_numpy(state["test_perm"]).astype(np.int64)
        probe_pair = _as_numpy(state["probe_pair"]).astype(np.int64)
        if (order.shape != (cfg.num_classes,) or epoch_perm.shape != (2 * self._tr,)
                or probe_pair.shape != (2,) or probe_pair.min() < 0
                or probe_pair.max() >= cfg.num_classes
                or test_perm.shape != (2 * self._te,) or not 0 <= int(state["step"]) < self._T
                or not 0 <= int(state["task"]) < self.num_tasks):
            raise InvalidConfigError(
                f"{self.ENV_ID}: the state was saved by an env of another tier or config."
            )
        rng = spawn_generators(int(state["seed"]), _PURPOSES)
        for p in _PURPOSES:
            rng[p].bit_generator.state = state["rng"][p]
        self.stream_seed = int(state["seed"])
        self._stream_started = True
        self._rng = rng
        self._task, self._i = int(state["task"]), int(state["step"])
        self._done, self._correct = bool(state["done"]), int(state["correct"])
        self._order, self._epoch_perm, self._test_perm = order, epoch_perm, test_perm
        self._set_pair()
        self._probe_pair = (int(probe_pair[0]), int(probe_pair[1]))


SPEC = StreamSpec(
    env=ContinualImageNetEnv,
    label="test accuracy",
    bin_size=50,  # as the paper plots it
    reference_agents=("backprop", "l2", "shrink_perturb", "continual_backprop"),
    more_agents=("redo", "l2_init", "upgd", "crelu", "layernorm"),
    findings=(
        Finding("backprop loses plasticity: its final accuracy is below its initial accuracy",
                ("backprop", "final"), "<", ("backprop", "initial")),
        Finding("continual backprop keeps plasticity: its final accuracy is above backprop's",
                ("continual_backprop", "final"), ">", ("backprop", "final")),
    ),
    functional_tiers={"cpu": "20 tasks"},
    # The official per-class files' fingerprint is unknown here: the leaderboard refuses
    # every result of this stream until it is recorded.
    dataset_fingerprint=IMAGENET32_FINGERPRINT,
)
"""The stream's declaration (:mod:`lop_bench.streams`)."""
