"""CReLU: backprop whose hidden activation is the concatenated ReLU (Abbas et al., CoLLAs 2023).

``[relu(z), relu(-z)]`` (:mod:`baselines.core.activations`): a hidden layer of ``k`` units
gives ``2 k`` features, so for ``z != 0`` one of each pair is active and a unit cannot die
as a ReLU unit does. Everything else is backprop's preset on each stream (CReLU has no
hyperparameter of its own).

Width: the presets keep backprop's layer widths (units), so the next layer's fan-in
doubles and the networks have more parameters than backprop's: 116 vs 111 on regression
(20 -> 5 -> 1), 120,710 vs 99,710 on permuted MNIST's cpu tier (784 -> 3 x 100 -> 10),
351,554 vs 177,218 for the Continual ImageNet ConvNet, 142,600 vs 75,016 for the Ant's
policy (27 -> 2 x 256 -> 8), 280,772 vs 182,852 for the cpu tier's ResNet-18 (CReLU only
inside each residual block, so only each block's second conv doubles its fan-in). Why: the unit count is what the dormant-unit and rank
diagnostics compare, and a parameter-matched width is not one number (halving the
widths halves an MLP's first layer but matches only its middle layers). For a
parameter-matched comparison pass ``--hp hidden=[...]``: ``[86,86,86]`` on MNIST's cpu
tier has 98,996 parameters (regression's 116 are already within 5% of 111).

Diagnostics see the features after the CReLU: ``2 k`` per hidden layer.
"""

from __future__ import annotations

from baselines.agents.incremental import CPU_WIDTH, IncrementalAgent, IncrementalCReLUConfig
from baselines.agents.ppo import PPOAgent, PPOConfig
from baselines.agents.supervised import BackpropConfig, SupervisedAgent
from baselines.presets import (
    ANT,
    CONTINUAL_IMAGENET,
    INCREMENTAL_CIFAR,
    PERMUTED_MNIST,
    REGRESSION,
    Algorithm,
    Preset,
    mlp,
)

__all__ = ["ALGORITHM", "make_agent"]

ALGORITHM = Algorithm("crelu", {
    # Every row: backprop's preset (baselines/backprop.py, with its sources) and
    # activation="crelu". Abbas et al. ran CReLU in place of ReLU with the base agent's
    # settings (their streams are Atari games), as here.
    # Slowly-changing regression: 20 -> 5 units (10 features) -> 1, SGD lr 0.01.
    (REGRESSION, "*"): mlp(BackpropConfig(activation="crelu")),
    # Online permuted MNIST: 784 -> 3 x 2000 -> 10 (cpu and smoke: 3 x 100), SGD lr 0.003.
    (PERMUTED_MNIST, "*"): mlp(BackpropConfig(
        lr=0.003, hidden=(2000, 2000, 2000), activation="crelu")),
    (PERMUTED_MNIST, "cpu"): mlp(BackpropConfig(
        lr=0.003, hidden=(100, 100, 100), activation="crelu")),
    (PERMUTED_MNIST, "smoke"): mlp(BackpropConfig(
        lr=0.003, hidden=(100, 100, 100), activation="crelu")),
    # Continual ImageNet: the paper's ConvNet with CReLU after every conv and fc layer (each
    # conv's channels doubled before the max-pool), SGD lr 0.01 momentum 0.9, head zeroed
    # at every task.
    (CONTINUAL_IMAGENET, "*"): Preset(SupervisedAgent, BackpropConfig(
        lr=0.01, momentum=0.9, arch="convnet", hidden=(128, 128), reset_head=True,
        activation="crelu")),
    # Class-incremental CIFAR-100: backprop's ResNet-18 learner (SGD lr 0.1, momentum 0.9,
    # weight decay 5e-4, the lr schedule, early stopping) with CReLU as the inner activation
    # of every residual block only (after its first conv and batch norm; its second conv
    # reads 2 C channels); the stem's ReLU and each block's output ReLU after the residual
    # sum stay (a CReLU there would double the residual stream and every shortcut).
    # Backprop's widths: 280,772 vs 182,852 parameters at the cpu tier's width 1/8
    # (17,491,812 vs 11,224,932 at width 1). Not with continual backprop or ReDo. Not tuned.
    (INCREMENTAL_CIFAR, "*"): Preset(IncrementalAgent, IncrementalCReLUConfig()),
    (INCREMENTAL_CIFAR, "cpu"): Preset(IncrementalAgent, IncrementalCReLUConfig(width=CPU_WIDTH)),
    (INCREMENTAL_CIFAR, "smoke"): Preset(IncrementalAgent, IncrementalCReLUConfig(
        width=CPU_WIDTH)),
    # The Ant: standard PPO (Adam, betas 0.9, 0.999, lr 1e-4) with CReLU in both networks.
    (ANT, "*"): Preset(PPOAgent, PPOConfig(input_fan_in=111, activation="crelu")),
})

make_agent = ALGORITHM.factory()
