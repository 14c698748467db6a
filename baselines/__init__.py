"""Reference agents of lop-bench (Dohare et al., Nature 2024), one file each.

- ``linear``: a linear learner, the level below which nothing has been learned;
- ``backprop``: a network trained by SGD (or Adam), the base the others reuse;
- ``l2``: backprop with weight decay;
- ``shrink_perturb``: weight decay plus Gaussian noise on every weight after each step;
- ``continual_backprop``: backprop plus generate-and-test (replace low-utility units).

Each file has a frozen hyperparameter dataclass, presets keyed by (env id, tier) and a
``make_agent(env_spec, observation_space, action_space, seed, device, **hparams)``
factory, registered in the ``lop_bench.agents`` entry-point group. ``nets`` holds the
paper's networks. ``lop_bench`` never imports this package.

The import name ``baselines`` is also used by an old, unrelated package (OpenAI
baselines): do not install both in one environment.
"""
