"""From scratch: a fresh network and optimizer at every new block of classes
(class-incremental CIFAR-100, the paper's "retrained" reference, ``retrained_network.json``):
every weight re-drawn from the agent's generator, the batch norms' running statistics reset.
"""

from __future__ import annotations

from baselines.agents.incremental import CPU_WIDTH, IncrementalAgent, IncrementalConfig
from baselines.presets import INCREMENTAL_CIFAR, Algorithm, Preset

__all__ = ["ALGORITHM", "make_agent"]

ALGORITHM = Algorithm("from_scratch", {
    # Backprop's ResNet-18 learner, network and optimizer re-initialized at each block.
    (INCREMENTAL_CIFAR, "*"): Preset(IncrementalAgent, IncrementalConfig(reset_network=True)),
    (INCREMENTAL_CIFAR, "cpu"): Preset(IncrementalAgent,
                                       IncrementalConfig(reset_network=True, width=CPU_WIDTH)),
    (INCREMENTAL_CIFAR, "smoke"): Preset(IncrementalAgent,
                                         IncrementalConfig(reset_network=True, width=CPU_WIDTH)),
})

make_agent = ALGORITHM.factory()
