"""Head reset: backprop whose output layer is re-initialized at every new block of classes
(class-incremental CIFAR-100, the paper's ``head_resetting.json``): the head's weights
Kaiming-normal again from the agent's generator, its bias and momentum zeroed.
"""

from __future__ import annotations

from baselines.agents.incremental import CPU_WIDTH, IncrementalAgent, IncrementalConfig
from baselines.presets import INCREMENTAL_CIFAR, Algorithm, Preset

__all__ = ["ALGORITHM", "make_agent"]

ALGORITHM = Algorithm("head_reset", {
    # Backprop's ResNet-18 learner with the head re-initialized at each new block.
    (INCREMENTAL_CIFAR, "*"): Preset(IncrementalAgent, IncrementalConfig(reset_head=True)),
    (INCREMENTAL_CIFAR, "cpu"): Preset(IncrementalAgent,
                                       IncrementalConfig(reset_head=True, width=CPU_WIDTH)),
    (INCREMENTAL_CIFAR, "smoke"): Preset(IncrementalAgent,
                                         IncrementalConfig(reset_head=True, width=CPU_WIDTH)),
})

make_agent = ALGORITHM.factory()
