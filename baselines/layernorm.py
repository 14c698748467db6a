"""Layer normalization: backprop whose networks normalize every hidden layer's
pre-activations (Lyle et al., 2024), an architectural variant of backprop.

Between each hidden layer's linear map (or convolution) and its activation, a
normalization with a learned scale and shift (Lyle et al.'s placement, before the
nonlinearity): ``nn.LayerNorm`` over a dense layer's units; ``nn.GroupNorm(1, C)`` over a
conv layer's (C, H, W) (the same statistics as a LayerNorm over (C, H, W), with one
scale and shift per channel, the conv layer's unit, rather than one per pixel, so it does
not depend on the image size). The output layer is not normalized. Everything else is
backprop's preset on each stream; generate-and-test is not combined with it.

Lyle et al. found layer normalization strongest together with weight decay; that
combination is ``--hp weight_decay=...`` on these presets. Alone, on slowly-changing
regression's 5-unit layer, it does not keep plasticity: ``lop-bench reproduce
lop/SlowlyChangingRegression-v0 --tier cpu`` (10 seeds; mean +- 95% CI half-width) gave a
final error of 1.99 +- 0.27 (initial 0.99) against backprop's 1.64 +- 0.34 (initial 1.03),
its units dormant and its effective rank near 0 by task 100.
"""

from __future__ import annotations

from baselines.agents.ppo import PPOAgent, PPOLayerNormConfig
from baselines.agents.supervised import LayerNormConfig, SupervisedAgent
from baselines.presets import (
    ANT,
    CONTINUAL_IMAGENET,
    PERMUTED_MNIST,
    REGRESSION,
    Algorithm,
    Preset,
    mlp,
)

__all__ = ["ALGORITHM", "make_agent"]

ALGORITHM = Algorithm("layernorm", {
    # Every row: backprop's preset (baselines/backprop.py, with its sources) with the
    # normalizations (no hyperparameter of its own).
    # Slowly-changing regression: 20 -> LayerNorm(5) ReLU -> 1, SGD lr 0.01.
    (REGRESSION, "*"): mlp(LayerNormConfig()),
    # Online permuted MNIST: 784 -> 3 x 2000 -> 10 (cpu and smoke: 3 x 100), SGD lr 0.003.
    (PERMUTED_MNIST, "*"): mlp(LayerNormConfig(
        lr=0.003, hidden=(2000, 2000, 2000))),
    (PERMUTED_MNIST, "cpu"): mlp(LayerNormConfig(
        lr=0.003, hidden=(100, 100, 100))),
    (PERMUTED_MNIST, "smoke"): mlp(LayerNormConfig(
        lr=0.003, hidden=(100, 100, 100))),
    # Continual ImageNet: the paper's ConvNet with GroupNorm(1, C) after each conv and
    # LayerNorm after each hidden fc layer, SGD lr 0.01 momentum 0.9, head zeroed per task.
    (CONTINUAL_IMAGENET, "*"): Preset(SupervisedAgent, LayerNormConfig(
        lr=0.01, momentum=0.9, arch="convnet", hidden=(128, 128), reset_head=True)),
    # Class-incremental CIFAR-100: no preset (its ResNet-18 already normalizes, with batch
    # norm, before every ReLU).
    # The Ant: standard PPO (Adam, betas 0.9, 0.999, lr 1e-4), both networks normalized.
    (ANT, "*"): Preset(PPOAgent, PPOLayerNormConfig(input_fan_in=111)),
})

make_agent = ALGORITHM.factory()
