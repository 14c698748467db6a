"""The agent classes of the reference algorithms, each with its typed config; they import
:mod:`baselines.core` (and, for the many-seeds learner, the supervised configs), never an
algorithm file: :mod:`~baselines.agents.supervised` (the stepwise learner of the supervised
streams), :mod:`~baselines.agents.vectorized` (N seeds of an MLP in one process),
:mod:`~baselines.agents.incremental` (the ResNet-18 learner of class-incremental
CIFAR-100) and :mod:`~baselines.agents.ppo` (PPO on the Ant)."""
