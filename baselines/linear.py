"""A linear learner: the inputs mapped straight to the outputs, trained by SGD.

The reference level below which a network has learned nothing beyond a linear function
of its inputs (Dohare et al., Nature 2024: in slowly-changing regression backprop ends
worse than a linear learner, about 0.87-0.9 error). Init as the paper's code
(``lop/nets/linear.py``): Kaiming-uniform with gain 1, zero bias. It has no hidden layers,
so it offers no ``features`` (the runner then skips the feature diagnostics).
"""

from __future__ import annotations

from baselines.agents.supervised import LinearConfig
from baselines.presets import PERMUTED_MNIST, REGRESSION, Algorithm, linear

__all__ = ["ALGORITHM", "make_agent"]

ALGORITHM = Algorithm("linear", {
    (REGRESSION, "*"): linear(LinearConfig()),
    # Online permuted MNIST: 784 -> 10 (softmax regression on the pixels) at backprop's lr
    # 0.003, every tier: the level of a learner without hidden features, relearned from its
    # current weights on each task (the paper sets deep nets against it on Continual
    # ImageNet; on MNIST it is a reference line, not a paper result).
    (PERMUTED_MNIST, "*"): linear(LinearConfig(lr=0.003)),
})

make_agent = ALGORITHM.factory()
