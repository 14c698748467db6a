"""The leaves of ``baselines``: networks (:mod:`~baselines.core.nets`), optimizers
(:mod:`~baselines.core.optim`) and generate-and-test (:mod:`~baselines.core.gnt`), and
the per-step methods the agents use. They import torch, numpy, gymnasium and ``lop_bench``
only, and each other without a cycle; nothing from ``baselines`` outside ``core``."""
