"""L2: backprop with weight decay (Dohare et al., Nature 2024).

The optimizer's coupled L2 penalty (``torch.optim.SGD(weight_decay=...)``: the gradient
gets ``weight_decay * w`` added) keeps the weights small, which the paper found slows the
loss of plasticity. Everything else is :class:`~baselines.backprop.BackpropAgent`.
"""

from __future__ import annotations

from typing import Any

import torch

from baselines.backprop import (
    PERMUTED_MNIST,
    REGRESSION,
    BackpropAgent,
    BackpropConfig,
    build_agent,
)

__all__ = ["PRESETS", "make_agent"]

PRESETS: dict[tuple[str, str], BackpropConfig] = {
    # Slowly-changing regression: backprop's preset (SGD lr 0.01, 20 -> 5 -> 1 ReLU) with
    # weight decay 1e-3. The paper sweeps weight decay at lr 0.01 (public config
    # cfg/sgd/bp/relu_wd.json: 1e-6 ... 1) and gives no single value. 1e-3 won a short
    # sweep of ours on the cpu tier (30 tasks, 3 seeds, {1e-4, 1e-3, 1e-2}): at 1e-4 the
    # error still rises late as backprop's does, 1e-2 shrinks the 5-unit net so much that
    # it fits each task worse, 1e-3 keeps the error low and flat (see the lead's report).
    (REGRESSION, "*"): BackpropConfig(weight_decay=1e-3),
    # Online permuted MNIST: lr 0.003, weight decay 1e-4 (PROTOCOLS.md).
    (PERMUTED_MNIST, "*"): BackpropConfig(lr=0.003, hidden=(2000, 2000, 2000), weight_decay=1e-4),
}


def make_agent(
    env_spec: Any,
    observation_space: Any,
    action_space: Any,
    seed: int,
    device: str | torch.device = "cpu",
    **hparams: Any,
) -> BackpropAgent:
    """L2 with its preset for the stream; ``hparams`` override :class:`BackpropConfig`."""
    return build_agent(
        BackpropAgent,
        PRESETS,
        "l2",
        env_spec,
        observation_space,
        action_space,
        seed,
        device,
        hparams,
    )
