"""A linear learner: the inputs mapped straight to the outputs, trained by SGD.

The reference level below which a network has learned nothing beyond a linear function
of its inputs (Dohare et al., Nature 2024: in slowly-changing regression backprop ends
worse than a linear learner, about 0.87-0.9 error). Init as the paper's code
(``lop/nets/linear.py``): Kaiming-uniform with gain 1, zero bias. It has no hidden layers,
so it offers no ``features`` (the runner then skips the feature diagnostics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from baselines.backprop import (
    PERMUTED_MNIST,
    REGRESSION,
    BackpropAgent,
    build_agent,
    check_optimizer_fields,
)

__all__ = ["LinearConfig", "PRESETS", "LinearAgent", "make_agent"]


@dataclass(frozen=True)
class LinearConfig:
    """Hyperparameters of the linear learner (defaults: slowly-changing regression)."""

    hidden: ClassVar[tuple[int, ...]] = ()  # no hidden layers (not a hyperparameter)
    activation: ClassVar[str] = "linear"

    lr: float = 0.01
    """Step size. The public config (cfg/flip_one/linear.json) sweeps 0.03 ... 0.0003;
    0.01 is backprop's step size, so the two are compared at the same lr."""
    momentum: float = 0.0
    """SGD momentum (plain SGD in the paper)."""
    weight_decay: float = 0.0
    """Coupled L2 penalty of the optimizer."""
    optimizer: str = "sgd"
    """``"sgd"`` or ``"adam"`` (see :func:`baselines.backprop.make_optimizer`)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's betas."""
    eps: float = 1e-8
    """Adam's epsilon."""

    def __post_init__(self) -> None:
        check_optimizer_fields(self)


PRESETS: dict[tuple[str, str], LinearConfig] = {
    (REGRESSION, "*"): LinearConfig(),
    # Online permuted MNIST: 784 -> 10 (softmax regression on the pixels) at backprop's lr
    # 0.003, every tier: the level of a learner without hidden features, relearned from its
    # current weights on each task (the paper sets deep nets against it on Continual
    # ImageNet; on MNIST it is a reference line, not a paper result).
    (PERMUTED_MNIST, "*"): LinearConfig(lr=0.003),
}


class LinearAgent(BackpropAgent):
    """:class:`~baselines.backprop.BackpropAgent` with no hidden layer."""

    features = None  # no hidden layers: nothing for the feature diagnostics


def make_agent(
    env_spec: Any,
    observation_space: Any,
    action_space: Any,
    seed: int,
    device: str | torch.device = "cpu",
    **hparams: Any,
) -> LinearAgent:
    """The linear learner with its preset for the stream; ``hparams`` override
    :class:`LinearConfig`."""
    return build_agent(
        LinearAgent,
        PRESETS,
        "linear",
        env_spec,
        observation_space,
        action_space,
        seed,
        device,
        hparams,
    )
