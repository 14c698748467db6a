"""Backprop: a network trained online by SGD (or Adam), the reference learner of Dohare et
al. (Nature 2024) and the base of the other algorithms (each adds one thing to it).

On the supervised streams a :class:`~baselines.agents.supervised.SupervisedAgent` (an MLP,
the ConvNet on Continual ImageNet), on class-incremental CIFAR-100 the ResNet-18 learner
(:class:`~baselines.agents.incremental.IncrementalAgent`), on the Ant standard PPO
(:class:`~baselines.agents.ppo.PPOAgent`, alias ``ppo``). ``ppo_proper_adam`` is a named
variant on the Ant: PPO with the paper's "proper" Adam betas (0.99, 0.99).
"""

from __future__ import annotations

from baselines.agents.incremental import CPU_WIDTH, IncrementalAgent, IncrementalConfig
from baselines.agents.ppo import PROPER_BETAS, PPOAgent, PPOConfig
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

__all__ = ["ALGORITHM", "PROPER_ADAM", "make_agent", "make_ppo_agent", "make_proper_adam_agent"]

ALGORITHM = Algorithm("backprop", {
    # Slowly-changing regression: 20 -> 5 -> 1 ReLU, SGD lr 0.01, batch 1 (PROTOCOLS.md).
    (REGRESSION, "*"): mlp(BackpropConfig()),
    # Online permuted MNIST: 784 -> 3 x 2000 ReLU -> 10, SGD lr 0.003 (PROTOCOLS.md).
    (PERMUTED_MNIST, "*"): mlp(BackpropConfig(lr=0.003, hidden=(2000, 2000, 2000))),
    # Its cpu and smoke tiers: the paper's narrow net, 784 -> 3 x 100 ReLU -> 10 (the width
    # study; PROTOCOLS.md: width 100 falls below 88% by about task 100), same lr 0.003.
    # Wider nets: --hp hidden=[2000,2000,2000].
    (PERMUTED_MNIST, "cpu"): mlp(BackpropConfig(lr=0.003, hidden=(100, 100, 100))),
    (PERMUTED_MNIST, "smoke"): mlp(BackpropConfig(lr=0.003, hidden=(100, 100, 100))),
    # Continual ImageNet, every tier: the paper's ConvNet (fc 512 -> 128 -> 128 -> 2), SGD
    # lr 0.01 momentum 0.9, output layer zeroed at every task (PROTOCOLS.md; public config
    # lop/imagenet/cfg/bp.json: step_size [0.01, 0.001, 0.0001], momentum 0.9, batch 100).
    # The cpu and smoke tiers shorten the stream, not the net.
    (CONTINUAL_IMAGENET, "*"): Preset(SupervisedAgent, BackpropConfig(
        lr=0.01, momentum=0.9, arch="convnet", hidden=(128, 128), reset_head=True)),
    # Class-incremental CIFAR-100: ResNet-18, SGD lr 0.1 (x0.2 at 30%, 60%, 80% of a block),
    # momentum 0.9, weight decay 5e-4, early stopping (base_deep_learning_system.json). The
    # cpu and smoke tiers: a ResNet-18 of 1/8 width (CPU_WIDTH).
    (INCREMENTAL_CIFAR, "*"): Preset(IncrementalAgent, IncrementalConfig()),
    (INCREMENTAL_CIFAR, "cpu"): Preset(IncrementalAgent, IncrementalConfig(width=CPU_WIDTH)),
    (INCREMENTAL_CIFAR, "smoke"): Preset(IncrementalAgent, IncrementalConfig(width=CPU_WIDTH)),
    # The Ant: standard PPO, Adam with torch's betas (0.9, 0.999) (cfg/ant/std.yml;
    # PROTOCOLS.md). Every Ant preset (here and in the other algorithms): the first layers'
    # init as on the paper's 111-dim Ant-v3 observation (input_fan_in 111); the env gets the
    # raw Gaussian sample (clip_actions False), as in the paper's code.
    (ANT, "*"): Preset(PPOAgent, PPOConfig(input_fan_in=111)),
}, aliases={"ppo": (ANT,)})

PROPER_ADAM = Algorithm("ppo_proper_adam", {
    # "Proper" Adam: equal betas (0.99, 0.99) (cfg/ant/ns.yml, "NS Adam"; PROTOCOLS.md).
    (ANT, "*"): Preset(PPOAgent, PPOConfig(input_fan_in=111, betas=PROPER_BETAS)),
})

make_agent = ALGORITHM.factory()
make_ppo_agent = ALGORITHM.factory("ppo")
make_proper_adam_agent = PROPER_ADAM.factory()
