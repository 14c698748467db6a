"""Fresh: backprop's network re-initialized at every task start, the reference of the
normalized plasticity score (:mod:`lop_bench.plasticity`).

Each task is learned by a newly built ``backprop`` agent of the stream's preset (PPO on the
Ant), with the run's seed, so every task starts from the same initial weights: the score a
network of that architecture reaches on the task alone. A stream names its fresh reference
in ``StreamSpec.fresh_agent``; class-incremental CIFAR-100 uses ``from_scratch`` instead
(its tasks grow, so the paper's "retrained network" is the reference there).

Any agent can be made fresh the same way: ``--agent fresh:<agent>`` or
:func:`lop_bench.fresh.fresh`.
"""

from __future__ import annotations

from baselines import backprop
from lop_bench.fresh import fresh

__all__ = ["make_agent"]

make_agent = fresh(backprop.make_agent, name="backprop")
"""The ``fresh`` entry point: :func:`lop_bench.fresh.fresh` over ``backprop``'s factory."""
