"""Reference agents of lop-bench (Dohare et al., Nature 2024), in three layers:

- ``baselines.core``: leaves (they import nothing else from ``baselines``): the networks
  (:mod:`~baselines.core.nets`: MLP, ConvNet, ResNet-18), the optimizers
  (:mod:`~baselines.core.optim`: EntrywiseAdam, optimizer fields, state reset) and
  generate-and-test (:mod:`~baselines.core.gnt`, one implementation with a seed dimension);
- ``baselines.agents``: the agent classes, each with its typed config (the supervised
  stepwise learner, the many-seeds MLP learner, the incremental-CIFAR ResNet learner, PPO);
- one file per algorithm (``linear``, ``backprop``, ``l2``, ``shrink_perturb``,
  ``continual_backprop``, ``head_reset``, ``from_scratch``): its table of presets, for each
  (stream, tier) the agent class and its config (:mod:`baselines.presets`).

Adding an algorithm: write ``baselines/<name>.py`` with ``ALGORITHM = Algorithm("<name>",
{(stream id, tier): Preset(AgentClass, Config(...)), ...})`` and ``make_agent =
ALGORITHM.factory()``; if it needs new behaviour, add a config field (or a config
subclass) and its use to the agent class (a leaf in ``core`` for the algorithmic part);
register ``<name> = "baselines.<name>:make_agent"`` in ``pyproject.toml``'s
``lop_bench.agents`` entry points and reinstall (``pip install -e .``). ``lop_bench``
never imports this package: it finds the agents through those entry points.

The import name ``baselines`` is also used by an old, unrelated package (OpenAI
baselines): do not install both in one environment.
"""
