"""Reference agents of class-incremental CIFAR-100: ResNet-18 trained by SGD with early stopping.

The learner of Dohare et al. (Nature 2024), "Incremental CIFAR-100", after the public code
``lop/incremental_cifar/incremental_cifar_experiment.py`` (cited as *the code* below) and
its configs ``lop/incremental_cifar/cfg/*.json``. One agent class, :class:`IncrementalAgent`,
and one config, :class:`IncrementalConfig`; the five algorithms on this stream are presets
of it (in ``baselines/<algorithm>.py``):

- ``backprop``: the base (``base_deep_learning_system.json``);
- ``shrink_perturb``: noise 1e-5 after every step (``shrink_and_perturb.json``);
- ``continual_backprop``: generate-and-test over the channels of every conv outside the
  downsample shortcuts (``continual_backpropagation.json``);
- ``head_reset``: the head re-initialized at every new block (``head_resetting.json``);
- ``from_scratch``: network and optimizer re-initialized at every block
  (``retrained_network.json``);
- ``l2_init`` (beyond the paper, :class:`IncrementalL2InitConfig`): the gradient gets
  ``l2_init_strength * (theta - theta0)`` before each step, theta0 the network as built
  (:mod:`baselines.core.regularizers`);
- ``upgd`` (beyond the paper, :class:`IncrementalUPGDConfig`): UPGD
  (:mod:`baselines.core.upgd`) instead of SGD, its ``lr`` following the same schedule,
  ``weight_decay`` its own shrink, its noise from the ``noise`` generator;
- ``redo`` (beyond the paper, :class:`IncrementalReDoConfig`): every ``redo_period``
  updates, the dormant channels of each block's first conv (the ``first_convs`` layout of
  generate-and-test) are reset as generate-and-test resets a channel
  (:mod:`baselines.core.redo` scores, :class:`~baselines.core.gnt.ResidualUnits` resets).

Protocol (DESIGN.md section 4; the stream ``lop/IncrementalCIFAR100-v0``):

- ``act`` predicts; on a train batch it keeps the forward pass (batch norm in train mode,
  on the ``valid`` rows only, so padded rows never enter the batch statistics) and
  ``learn`` takes one SGD step on it against ``info["target"]``. On val/test batches the
  network is in eval mode under ``no_grad``: no graph, no batch-norm statistic updates.
- Logits of classes outside ``info["active_classes"]`` are dropped for the loss and the
  prediction (the code indexes the logits by the classes seen so far).
- The learning rate follows the block's epoch (``info["epoch"]`` of the predicted batch):
  ``lr * 0.2 ** k`` after ``k`` of the milestones, which are epochs 60, 120, 160 of a
  200-epoch block in the paper, kept as the fractions 0.3, 0.6, 0.8 of the stream's
  epochs per block (``round(fraction * epochs)``) for the shorter tiers. It restarts at
  ``lr`` at epoch 0 of every block, as the code's ``set_lr`` does.
- Early stopping (the code's ``early_stopping: true``): the agent keeps a copy of its
  weights and batch-norm buffers whenever a block's validation accuracy
  (``info["val_metrics"]["accuracy"]``) beats the block's best so far, and restores the
  best copy in the ``learn`` call whose ``info`` announces the test phase. The next block
  continues from the restored weights, as in the code (``extend_classes`` loads the best
  parameters, then adds classes). The SGD momentum is *not* restored or reset between
  blocks: the code keeps one optimizer for the whole run.
- Head reset and retraining from scratch happen in the ``learn`` call whose ``info``
  announces the new block (``info["task"]`` changes), after the restore.
- The restore covers the network only (parameters and batch-norm buffers): continual
  backprop's utilities, ages and counters go on from their current values, as in the code
  (its ``ResGnT`` is not part of the saved parameters). A unit replaced after the best
  epoch is thus restored to its old weights but keeps its young age for a while.

Differences from the code, and why:

- The first validation accuracy of a block is always kept (the code needs it to be
  ``> 0``, and fails to restore when every epoch scored 0).
- The learning-rate values are ``lr * 0.2 ** k`` (the code rounds to 5 decimals: 0.02,
  0.004, 0.0008 for lr 0.1; the same up to float rounding).
- Head reset also resets the head's momentum, and retraining from scratch builds a fresh
  optimizer (the code keeps the stale momentum of the old weights in both cases) and
  resets the batch norms' running statistics too (the code re-initializes the weights and
  the batch norms' affine pairs only, so its fresh network starts with the old network's
  running means and variances; they matter in eval mode until training has replaced them).
- Continual backprop replaces the channels of the code's layers (the stem and both convs
  of every block, ``cbp_layers="all_convs"``), scoring every layer before replacing; see
  :mod:`baselines.core.gnt` (:class:`~baselines.core.gnt.ResidualUnits`) for how the channels that feed the
  residual stream are handled and for its differences (the code never resets the
  momentum of replaced units, drops their mean contribution, counts the units due over
  all channels, not the eligible ones).
- Shrink and perturb's noise comes from the agent's own generator (the code uses torch's
  global RNG); the shrink is the SGD weight decay 5e-4, as in the code (no extra factor).

All randomness comes from the seed: torch generators for the purposes ``init`` (initial
weights, head resets, retraining), ``gnt`` (fresh units) and ``noise`` (shrink and
perturb, UPGD), spawned with :func:`lop_bench.seeding.spawn_generators`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from baselines.core.gnt import (
    GnTFields,
    ResidualUnits,
    SingleSeed,
    check_gnt_fields,
    resnet_units,
)
from baselines.core.nets import COVERAGES, ResNet18, stage_channels
from baselines.core.optim import OptimizerEntries
from baselines.core.redo import (
    ReDoFields,
    check_redo_fields,
    dormant_mask,
    dormant_scores,
    unit_activity,
)
from baselines.core.regularizers import L2Init, L2InitFields, check_l2_init_fields
from baselines.core.upgd import UPGD, UPGDFields, check_upgd_fields
from lop_bench.agents import tier_of
from lop_bench.config import check_choice, check_positive, check_range, config_to_dict
from lop_bench.errors import InvalidActionError, InvalidConfigError
from lop_bench.seeding import check_seed, spawn_generators

__all__ = [
    "GENERATOR_PURPOSES",
    "CPU_WIDTH",
    "IncrementalConfig",
    "IncrementalL2InitConfig",
    "IncrementalUPGDConfig",
    "IncrementalReDoConfig",
    "IncrementalCReLUConfig",
    "learning_rate",
    "lr_milestone_epochs",
    "resolve_memory_format",
    "IncrementalAgent",
]

GENERATOR_PURPOSES = ("init", "gnt", "noise")
"""The agent's torch generators, in spawn order (new purposes are only ever appended)."""

_EPOCH_FIELD = "epochs_per_block"  # the stream's tier-config field (IncrementalCIFAR100Config)


@dataclass(frozen=True)
class IncrementalConfig(GnTFields):
    """Hyperparameters of the incremental CIFAR-100 agents (defaults: the paper's base)."""

    lr: float = 0.1
    """Initial SGD step size of every block (the code's ``stepsize``: 0.1 in every config)."""
    momentum: float = 0.9
    """SGD momentum (``momentum: 0.9`` in every config)."""
    weight_decay: float = 5e-4
    """Coupled L2 weight decay of SGD (``weight_decay: 0.0005``); also shrink and perturb's
    shrink (the code has no other shrink factor)."""
    lr_decay: float = 0.2
    """Factor applied at each milestone (the code's ``set_lr``: x0.2 at 60, 120, 160)."""
    lr_milestones: tuple[float, ...] = (0.3, 0.6, 0.8)
    """Milestones as fractions of the block's epochs: 60, 120, 160 of 200 (PROTOCOLS.md).
    The milestone epoch is ``round(fraction * epochs_per_block)``."""
    epochs_per_block: int = 0
    """Epochs of one block (200 in the paper, the code's ``class_increase_frequency``).
    0: read from the stream's tier config when the agent is built."""
    width: float = 1.0
    """Channel factor of the ResNet-18 (1: the paper's 64/128/256/512 channels)."""
    early_stopping: bool = True
    """Restore the best-validation weights of each block before its test phase
    (``early_stopping: true`` in every config of the paper)."""
    noise_std: float = 0.0
    """Shrink and perturb: std of the Gaussian noise added to every parameter after each
    step (``noise_std``: 0.0, or 1e-5 in ``shrink_and_perturb.json``)."""
    continual_backprop: bool = False
    """Generate-and-test over the ResNet's conv channels (``use_cbp``; which convs:
    ``cbp_layers``)."""
    cbp_layers: str = "all_convs"
    """The convs whose channels generate-and-test replaces
    (:meth:`~baselines.core.nets.ResNet18.channel_layers`). ``"all_convs"``: the code's
    (``lop/algos/res_gnt.py``, ``get_weight_layers``): the stem and both convs of every
    block, outside the downsample shortcuts, each next conv (or the head) taking the
    outgoing weights. ``"first_convs"``: each block's first conv only, whose channels only
    the block's second conv reads (a fresh channel is then hidden from the output, which
    a fresh stem or block-output channel, also read by the next shortcut, is not)."""
    # Generate-and-test's fields (GnTFields): the count accumulates, as the code's ResGnT
    # (accumulate True); decay 0.99 (ResGnT(decay_rate=0.99)).
    replacement_rate: float = 1e-5
    """Continual backprop's replacement rate (``continual_backpropagation.json``: 1e-5)."""
    maturity_threshold: int = 1000
    """Steps before a unit may be replaced (``continual_backpropagation.json``: 1000)."""
    utility: str = "contribution"
    """Continual backprop's utility (``utility_function: "contribution"``)."""
    reset_head: bool = False
    """Kaiming re-initialization of the head at every new block (``head_resetting.json``)."""
    reset_network: bool = False
    """A fresh network and optimizer at every new block (``retrained_network.json``): every
    weight re-drawn, and the batch norms' running means and variances reset to 0 and 1 as
    well (the code's ``net.apply(kaiming_init_resnet_module)`` resets the weights and the
    batch norms' affine pairs, but keeps the old running statistics and momentum)."""
    channels_last: bool | None = None
    """Memory layout of the conv weights and inputs (lop-bench's choice; the same network
    either way, results differ by float rounding only). ``None``: torch's ``channels_last``
    on CUDA, where it is faster, and the default contiguous layout on every other device;
    ``False``: contiguous everywhere; ``True``: channels-last, accepted on CUDA only. On CPU
    the channels-last convolution backward of oneDNN (torch's CPU convolutions) corrupts the
    heap on AVX2 CPUs at narrow widths (an abort at width 1/16 on one thread), so it is
    never used there (:func:`resolve_memory_format`)."""

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        check_range("momentum", self.momentum, 0.0, 1.0)
        if self.momentum >= 1.0:
            raise InvalidConfigError(f"momentum must be < 1, got {self.momentum!r}.")
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_range("lr_decay", self.lr_decay, 0.0, 1.0)
        if self.lr_decay <= 0.0:
            raise InvalidConfigError(f"lr_decay must be > 0, got {self.lr_decay!r}.")
        ms = tuple(self.lr_milestones)
        if any(not isinstance(m, (int, float)) or not 0.0 < m <= 1.0 for m in ms) or list(
            ms
        ) != sorted(ms):
            raise InvalidConfigError(
                "lr_milestones must be increasing fractions of a block in (0, 1], "
                f"got {self.lr_milestones!r}."
            )
        if (
            not isinstance(self.epochs_per_block, int)
            or isinstance(self.epochs_per_block, bool)
            or self.epochs_per_block < 0
        ):
            raise InvalidConfigError(
                f"epochs_per_block must be an integer >= 0 (0: the stream's), got "
                f"{self.epochs_per_block!r}."
            )
        stage_channels(self.width)  # raises InvalidConfigError on a bad width
        check_positive("noise_std", self.noise_std, allow_zero=True)
        check_gnt_fields(self)
        check_choice("cbp_layers", self.cbp_layers, COVERAGES)
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise InvalidConfigError(
                f"channels_last must be true, false or null (channels-last on CUDA only), got "
                f"{self.channels_last!r}."
            )


@dataclass(frozen=True)
class IncrementalL2InitConfig(IncrementalConfig, L2InitFields):
    """The incremental agent's hyperparameters plus L2 Init's strength
    (:class:`~baselines.core.regularizers.L2InitFields`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_l2_init_fields(self)


@dataclass(frozen=True)
class IncrementalUPGDConfig(IncrementalConfig, UPGDFields):
    """The incremental agent's hyperparameters with UPGD (:class:`~baselines.core.upgd.UPGD`,
    plain variant) as the optimizer instead of SGD: ``lr`` is its step size, scheduled as
    SGD's (:func:`learning_rate`, set on the optimizer's groups); ``weight_decay`` its own
    shrink ``w <- (1 - lr * weight_decay) w`` (not SGD's coupled L2); ``beta_utility`` and
    ``sigma`` (:class:`~baselines.core.upgd.UPGDFields`) its own. UPGD has no momentum
    (``momentum`` must be 0, its default here). Its noise comes from the agent's ``noise``
    generator."""

    momentum: float = 0.0
    """UPGD has no momentum: must be 0."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_upgd_fields(self.lr, self.weight_decay, self.beta_utility, self.sigma)
        if self.momentum != 0.0:
            raise InvalidConfigError(
                f"UPGD has no momentum; set momentum=0 (got {self.momentum!r})."
            )


@dataclass(frozen=True)
class IncrementalReDoConfig(IncrementalConfig, ReDoFields):
    """The incremental agent's hyperparameters with ReDo (:class:`~baselines.core.redo.ReDoFields`)
    on the channels of each residual block's first conv (``cbp_layers="first_convs"``'s
    layout: read only by the block's second conv, through its batch norm). Every
    ``redo_period`` SGD updates, a channel is dormant when ``mean |h|`` after its ReLU over
    the update's batch, divided by its layer's mean, is ``<= redo_threshold``; a dormant
    channel gets a fresh conv filter (the net's Kaiming-normal init, from the ``gnt``
    generator), bias 0, a fresh batch norm (weight 1, bias 0, running mean 0, variance 1),
    zero outgoing kernels in the second conv, and zero SGD momentum at all these entries.
    Scored on the update's batch only (``redo_score_over="batch"``); not with continual
    backprop (both draw from the ``gnt`` generator)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_redo_fields(self)
        if self.redo_score_over != "batch":
            raise InvalidConfigError(
                f"the incremental learner's ReDo scores the update's batch only "
                f"(redo_score_over='batch'), got {self.redo_score_over!r}."
            )
        if self.continual_backprop:
            raise InvalidConfigError("ReDo and continual_backprop cannot be combined here.")


@dataclass(frozen=True)
class IncrementalCReLUConfig(IncrementalConfig):
    """The incremental agent's hyperparameters with a CReLU inside every residual block
    (the ``crelu`` agent): ``block_activation="crelu"`` replaces the ReLU after each block's
    first conv and batch norm, so its second conv reads twice the channels; the stem's ReLU
    and each block's output ReLU (after the residual sum) stay, so the residual stream and
    the shortcuts keep their widths. ``"relu"``: :class:`IncrementalConfig`'s network bit
    for bit. Not with continual backprop or ReDo (their channel resets map channel ``c`` to
    the next conv's input ``c`` only)."""

    block_activation: str = "crelu"
    """The inner activation of each residual block: ``"crelu"`` or ``"relu"``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("block_activation", self.block_activation, ("relu", "crelu"))
        if self.block_activation == "crelu" and self.continual_backprop:
            raise InvalidConfigError(
                "continual_backprop is not defined with block_activation='crelu': "
                "generate-and-test's ResidualUnits map a first-conv channel c to the second "
                "conv's input channel c, but after the CReLU the second conv reads 2 C "
                "features (c and C + c); use block_activation='relu'."
            )


def resolve_memory_format(channels_last: bool | None, device: torch.device) -> torch.memory_format:
    """The memory layout of the network's conv weights and inputs on ``device``.

    ``None`` picks ``torch.channels_last`` on CUDA and ``torch.contiguous_format`` elsewhere;
    ``False`` always the contiguous layout. ``True`` is refused off CUDA with
    :class:`~lop_bench.errors.InvalidConfigError`: on CPU, oneDNN's channels-last
    convolution backward (``brgemm`` 1x1 kernels chosen on AVX2 CPUs) corrupts the heap at
    the narrow widths of the tests (width 1/16: 4 stem channels), which aborts the process
    or, worse, silently corrupts a run. The contiguous layout takes other kernels and is
    what the CPU path runs everywhere (``tests/test_native_safety.py`` checks it under
    every x86 instruction-set level in a child process).
    """
    if channels_last is None:
        channels_last = device.type == "cuda"
    elif channels_last and device.type != "cuda":
        raise InvalidConfigError(
            f"channels_last=True is accepted on CUDA only, not on {device.type!r}: oneDNN's "
            "channels-last CPU convolutions corrupt the heap on AVX2 CPUs. Leave channels_last "
            "unset (channels-last on CUDA, contiguous elsewhere) or set it to false."
        )
    return torch.channels_last if channels_last else torch.contiguous_format


CPU_WIDTH = 0.125
"""The width of the ResNet-18 of the cpu and smoke presets: 1/8 (8/16/32/64 channels, 0.18M
parameters): about 60 ms per training batch of 90 on one CPU thread (width 1/4: about 130
ms; benchmarks/cifar_speed.py), so a cpu-tier run (200 training and 46 eval batches) takes
about 26 CPU-seconds on average over the five agents, and `lop-bench reproduce ... --tier
cpu --jobs 2` (25 runs) about 6 minutes on 2 idle cores (the measurement is in the stream's
cpu tier, lop_bench/envs/incremental_cifar.py)."""


def lr_milestone_epochs(cfg: IncrementalConfig, epochs_per_block: int | None = None) -> tuple[int, ...]:
    """The epochs (within a block) at which the step size is multiplied by ``lr_decay``."""
    epochs = cfg.epochs_per_block if epochs_per_block is None else epochs_per_block
    if epochs <= 0:
        raise InvalidConfigError("epochs_per_block is not set (0): the stream's was not resolved.")
    return tuple(int(round(f * epochs)) for f in cfg.lr_milestones)


def learning_rate(cfg: IncrementalConfig, epoch: int, epochs_per_block: int | None = None) -> float:
    """The step size at ``epoch`` of a block: ``lr * lr_decay ** (milestones passed)``.

    >>> learning_rate(IncrementalConfig(epochs_per_block=200), 60)   # 0.1 * 0.2
    0.020000000000000004
    """
    passed = sum(epoch >= m for m in lr_milestone_epochs(cfg, epochs_per_block))
    return cfg.lr * cfg.lr_decay**passed


def _torch_generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """One torch generator per purpose, seeded from numpy generators spawned from ``seed``."""
    out = {}
    for purpose, g in spawn_generators(seed, GENERATOR_PURPOSES).items():
        t = torch.Generator(device=device)
        t.manual_seed(int(g.integers(2**63)))
        out[purpose] = t
    return out


def _check_spaces(observation_space: Any, action_space: Any) -> tuple[int, int, int]:
    """``(batch, channels, num_classes)`` from the stream's spaces."""
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 4:
        raise InvalidConfigError(
            "the observation space must be a Box of images (batch, channels, height, width), "
            f"got {observation_space!r}."
        )
    batch, channels = observation_space.shape[:2]
    ok = isinstance(action_space, spaces.MultiDiscrete)
    if ok:
        nvec, start = np.asarray(action_space.nvec), np.asarray(action_space.start)
        ok = nvec.shape == (batch,) and bool((nvec == nvec[0]).all()) and not start.any()
    if not ok:
        raise InvalidConfigError(
            f"the action space must be MultiDiscrete([num_classes] * {batch}), got {action_space!r}."
        )
    return int(batch), int(channels), int(nvec[0])


class IncrementalAgent:
    """A ResNet-18 trained by SGD on class-incremental CIFAR-100, with early stopping.

    Attributes: ``cfg`` (the frozen :class:`IncrementalConfig`, ``epochs_per_block``
    resolved), ``preset``, ``hparams`` (the config as a dict), ``net``
    (:class:`~baselines.core.nets.ResNet18`), ``memory_format`` (its layout on the agent's
    device, :func:`resolve_memory_format`), ``optimizer`` (``torch.optim.SGD``, or
    :class:`~baselines.core.upgd.UPGD` with :class:`IncrementalUPGDConfig`), ``generators``
    (purpose -> ``torch.Generator``), ``gnt`` (generate-and-test over the conv channels, a :class:`~baselines.core.gnt.SingleSeed`, or ``None``), ``best_accuracy``
    (the block's best validation accuracy so far, or ``None``), ``last_loss``.
    """

    @classmethod
    def for_stream(cls, cfg: IncrementalConfig, env_spec: Any, observation_space: Any,
                   action_space: Any, seed: int, device: str | torch.device,
                   preset: str | None) -> IncrementalAgent:
        """The agent for a stream: ``epochs_per_block`` 0 is read from the stream (an
        override in the spec's kwargs, else its tier's)."""
        if cfg.epochs_per_block == 0:
            epochs = _stream_epochs(env_spec)
            if epochs is None:
                raise InvalidConfigError(
                    f"cannot read the epochs per block of {getattr(env_spec, 'id', env_spec)!r}: "
                    "pass epochs_per_block=... as a hyperparameter."
                )
            cfg = dataclasses.replace(cfg, epochs_per_block=epochs)
        return cls(cfg, observation_space, action_space, seed, device, preset=preset)

    def __init__(
        self,
        cfg: IncrementalConfig,
        observation_space: Any,
        action_space: Any,
        seed: int,
        device: str | torch.device = "cpu",
        preset: str | None = None,
    ) -> None:
        if cfg.epochs_per_block <= 0:
            raise InvalidConfigError(
                "epochs_per_block must be set (> 0) to build the agent; the factories read "
                "it from the stream."
            )
        self.cfg = cfg
        self.preset = preset
        self.hparams = config_to_dict(cfg)
        self.device = torch.device(device)
        self.memory_format = resolve_memory_format(cfg.channels_last, self.device)
        self._batch, channels, num_classes = _check_spaces(observation_space, action_space)
        self.generators = _torch_generators(check_seed(seed), self.device)
        self.net = ResNet18(
            num_classes, cfg.width, generator=self.generators["init"], device=self.device,
            in_channels=channels, block_activation=getattr(cfg, "block_activation", "relu"),
        )
        if self.memory_format is torch.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self._milestones = lr_milestone_epochs(cfg)
        self.optimizer = self._make_optimizer()
        self.gnt: SingleSeed | None = None
        if cfg.continual_backprop:
            self.gnt = self._make_gnt()
        # A train step keeps all 17 hidden activations only when generate-and-test reads them.
        self._all_features = self.gnt is not None and cfg.cbp_layers == "all_convs"
        self._params = list(self.net.parameters())
        self._num_params = sum(p.numel() for p in self._params)
        self.l2_init: L2Init | None = None
        if isinstance(cfg, L2InitFields):
            self.l2_init = L2Init(self._params, cfg.l2_init_strength)
        self.redo: dict[str, Any] | None = None  # ReDo's counters: steps, num_reset
        if isinstance(cfg, ReDoFields):
            self.redo = {"steps": 0, "num_reset": [0] * len(self.net.channel_layers("first_convs"))}
        self.best_accuracy: float | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self.last_loss: torch.Tensor | None = None
        self._task: int | None = None  # block of the last context seen
        self._phase: str | None = None  # phase of the last context seen
        self._lr_epoch: int | None = None  # epoch the optimizer's lr was set for
        # Per-step state (not part of a checkpoint: taken between steps).
        self._out: torch.Tensor | None = None
        self._mids: list[torch.Tensor] = []
        self._valid = self._batch
        self._epoch = 0
        self._active_np: np.ndarray | None = None
        self._active: torch.Tensor | None = None
        self._position: torch.Tensor | None = None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        if isinstance(cfg, UPGDFields):
            return UPGD(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                        beta_utility=cfg.beta_utility, sigma=cfg.sigma,
                        generator=self.generators["noise"])
        return torch.optim.SGD(
            self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )

    def _make_gnt(self) -> SingleSeed:
        cfg = self.cfg
        return SingleSeed.of(resnet_units(self.net.channel_layers(cfg.cbp_layers)),
                             self.generators["gnt"], OptimizerEntries(self.optimizer), cfg)

    # -- the online protocol -------------------------------------------------------------
    def _set_active(self, active: Any) -> None:
        """Cache the active classes as device tensors (they change once per block)."""
        if torch.is_tensor(active):
            active = active.detach().cpu().numpy()
        a = np.asarray(active, dtype=np.int64).reshape(-1)
        if self._active_np is not None and np.array_equal(a, self._active_np):
            return
        n = self.net.num_classes
        if a.size == 0 or a.min() < 0 or a.max() >= n:
            raise InvalidActionError(f"active_classes must be class ids in [0, {n}), got {a!r}.")
        self._active_np = a.copy()
        self._active = torch.as_tensor(a, device=self.device)
        position = torch.full((n,), -1, dtype=torch.long)
        position[torch.as_tensor(a)] = torch.arange(a.size)
        self._position = position.to(self.device)

    def _input(self, obs: Any) -> torch.Tensor:
        x = torch.as_tensor(obs, device=self.device)
        if x.dtype != torch.float32:
            x = x.float()
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def act(self, obs: Any, info: dict) -> np.ndarray:
        """Predict a class among ``info["active_classes"]`` for every image of ``obs``."""
        phase = info.get("phase", "train")
        if self._task is None:
            self._task = int(info.get("task", 0))
        self._phase = phase
        active = info.get("active_classes")
        if active is None:
            active = np.arange(self.net.num_classes)
        self._set_active(active)
        valid = info.get("valid")
        n = self._batch if valid is None else int(valid)
        x = self._input(obs)
        if n < x.shape[0]:
            x = x[:n]
        if phase == "train":
            self.net.train()
            # The activations generate-and-test reads (channel_layers' order).
            logits, self._mids = self.net.forward_with_features(x, all_features=self._all_features)
            logits = logits.index_select(1, self._active)
            self._out, self._valid = logits, n
            self._epoch = int(info.get("epoch", 0))
            pred = logits.detach().argmax(dim=1)
        else:
            self._out, self._mids = None, []
            self.net.eval()
            with torch.no_grad():
                pred = self.net(x).index_select(1, self._active).argmax(dim=1)
        labels = self._active.index_select(0, pred).cpu().numpy()
        if n < self._batch:  # padded rows are never scored
            labels = np.concatenate([labels, np.full(self._batch - n, self._active_np[0])])
        return labels

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
        """One SGD step on a train batch; then early stopping and block changes from ``info``."""
        target = info.get("target")
        out, self._out = self._out, None
        if target is not None and out is not None:
            self._train_step(out, target)
        if not info.get("stream_done", False):
            self._on_context(info)

    def _train_step(self, out: torch.Tensor, target: Any) -> None:
        t = torch.as_tensor(target, device=self.device).reshape(-1)[: self._valid].long()
        t = self._position.index_select(0, t)
        if bool((t < 0).any()):
            raise InvalidActionError("a train target is not among info['active_classes'].")
        if self._lr_epoch != self._epoch:
            lr = learning_rate(self.cfg, self._epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._lr_epoch = self._epoch
        loss = F.cross_entropy(out, t)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.l2_init is not None:
            self.l2_init.add_to_grad()
        self.optimizer.step()
        self.last_loss = loss.detach()
        if self.gnt is not None:
            self.gnt.step(self._mids)
        if self.redo is not None:
            self._redo_step(self._mids)
        self._mids = []
        if self.cfg.noise_std > 0.0:
            self._perturb()

    @torch.no_grad()
    def _redo_step(self, mids: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """Count one update; at every ``redo_period``-th, reset the dormant first-conv
        channels (scored on ``mids``, this update's eight first-conv activations, all layers
        scored before any reset). Returns the masks of the channels reset, else None."""
        redo = self.redo
        redo["steps"] += 1
        if redo["steps"] < self.cfg.redo_period:
            return None
        redo["steps"] = 0
        layers = self.net.channel_layers("first_convs")
        masks = [dormant_mask(dormant_scores(unit_activity(h.unsqueeze(0))),
                              self.cfg.redo_threshold)[0] for h in mids]
        if len(masks) != len(layers):
            raise ValueError(f"{len(masks)} activations for {len(layers)} first convs.")
        reset_state = OptimizerEntries(self.optimizer)
        for i, (layer, mask) in enumerate(zip(layers, masks, strict=True)):
            index = torch.nonzero(mask).flatten()
            if index.numel() == 0:
                continue
            w = layer.conv.weight
            zero = torch.zeros(index.numel(), device=w.device, dtype=w.dtype)
            ResidualUnits(layer).replace(0, index, zero, self.generators["gnt"], reset_state)
            redo["num_reset"][i] += int(index.numel())
        return masks

    @torch.no_grad()
    def _perturb(self) -> None:
        p0 = self._params[0]
        noise = torch.randn(
            self._num_params, generator=self.generators["noise"], device=p0.device, dtype=p0.dtype
        )
        offset = 0
        for p in self._params:
            k = p.numel()
            p.add_(noise[offset : offset + k].view_as(p), alpha=self.cfg.noise_std)
            offset += k

    def _on_context(self, info: dict) -> None:
        """Early stopping and block changes, from the info of the step just taken."""
        val = info.get("val_metrics")
        if val is not None and self.cfg.early_stopping:
            acc = float(val["accuracy"])
            if self.best_accuracy is None or acc > self.best_accuracy:
                self.best_accuracy = acc
                self._best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        phase = info.get("phase", "train")
        if phase == "test" and self._phase != "test" and self._best_state is not None:
            self.net.load_state_dict(self._best_state)
        task = info.get("task")
        if task is not None and self._task is not None and int(task) != self._task:
            self._new_block()
        if task is not None:
            self._task = int(task)
        self._phase = phase

    def _new_block(self) -> None:
        """Forget the block's best copy; re-initialize the head or the network as configured."""
        self.best_accuracy, self._best_state = None, None
        if self.cfg.reset_network:
            self.net.reset_parameters(self.generators["init"])
            self.optimizer = self._make_optimizer()
            self._lr_epoch = None
            if self.gnt is not None:
                self.gnt = self._make_gnt()
        elif self.cfg.reset_head:
            self.net.reset_head(self.generators["init"])
            for p in (self.net.fc.weight, self.net.fc.bias):
                self.optimizer.state.pop(p, None)

    # -- diagnostics and checkpoints -------------------------------------------------------
    def features(self, x: Any) -> list[torch.Tensor]:
        """Hidden activations (17 tensors, see :class:`~baselines.core.nets.ResNet18`) in eval mode."""
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                xs = self._input(x)
                chunks = [self.net.forward_with_features(c)[1] for c in xs.split(500)]
        finally:
            self.net.train(was_training)
        return [torch.cat(parts) for parts in zip(*chunks, strict=True)]

    def parameters(self) -> Any:
        """The network's parameters."""
        return self.net.parameters()

    def buffers(self) -> list[torch.Tensor]:
        """Batch-norm statistics and generate-and-test's utilities, means and ages."""
        out = list(self.net.buffers())
        if self.gnt is not None:
            out.extend(self.gnt.buffers())
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically (copies: tensors and plain values)."""
        return {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "best_accuracy": self.best_accuracy,
            "best_state": None
            if self._best_state is None
            else {k: v.clone() for k, v in self._best_state.items()},
            "task": self._task,
            "phase": self._phase,
            "lr_epoch": self._lr_epoch,
            "gnt": None if self.gnt is None else self.gnt.state_dict(),
            **({"l2_init": self.l2_init.state_dict()} if self.l2_init is not None else {}),
            **({"redo": copy.deepcopy(self.redo)} if self.redo is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (into an agent built the same way)."""
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])
        best = state["best_accuracy"]
        self.best_accuracy = None if best is None else float(best)
        bs = state["best_state"]
        self._best_state = None if bs is None else {k: v.clone() for k, v in bs.items()}
        self._task = None if state["task"] is None else int(state["task"])
        self._phase = state["phase"]
        self._lr_epoch = None if state["lr_epoch"] is None else int(state["lr_epoch"])
        if self.gnt is not None:
            self.gnt.load_state_dict(state["gnt"])
        if self.l2_init is not None:
            self.l2_init.load_state_dict(state["l2_init"])
        if self.redo is not None:
            self.redo = {"steps": int(state["redo"]["steps"]),
                         "num_reset": [int(n) for n in state["redo"]["num_reset"]]}
        self._out, self._mids = None, []


# -- the stream's epochs ------------------------------------------------------------------
def _stream_epochs(env_spec: Any) -> int | None:
    """The stream's ``epochs_per_block``: an override in the spec's kwargs, else the tier's."""
    kwargs = getattr(env_spec, "kwargs", None) or {}
    if isinstance(kwargs.get(_EPOCH_FIELD), int):
        return int(kwargs[_EPOCH_FIELD])
    try:
        from lop_bench.registration import env_class

        tier_cfg = env_class(getattr(env_spec, "id", None)).TIERS.get(tier_of(env_spec))
    except Exception:  # not a registered lop-bench stream (e.g. a user's own env)
        return None
    value = getattr(tier_cfg, _EPOCH_FIELD, None)
    return int(value) if isinstance(value, int) else None
