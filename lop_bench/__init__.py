"""lop-bench: the benchmark suite for loss of plasticity in deep continual learning.

>>> import lop_bench
>>> env = lop_bench.make("lop/SlowlyChangingRegression-v0", tier="smoke")
>>> agent = lop_bench.make_agent("continual_backprop", env, seed=0)
>>> result = lop_bench.run("lop/SlowlyChangingRegression-v0", "backprop", tier="smoke", seed=0)
>>> sweep = lop_bench.sweep("sweep.toml", jobs=2)   # a grid, on worker processes or Ray
>>> lop_bench.register(my_stream.SPEC)              # a stream of your own (lop_bench.streams)
"""

from __future__ import annotations

from lop_bench.agents import Agent, list_agents, make_agent
from lop_bench.errors import LopBenchError
from lop_bench.registration import list_envs, make, make_vec, register, register_envs
from lop_bench.streams import StreamSpec

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "LopBenchError",
    "list_agents",
    "list_envs",
    "make",
    "make_agent",
    "make_vec",
    "register",
    "StreamSpec",
    "run",
    "run_vectorized",
    "sweep",
    "__version__",
]

register_envs()


def __getattr__(name: str):
    # The runner pulls in torch and tqdm: load it on first use to keep import cheap.
    if name in ("run", "run_vectorized"):
        from lop_bench import runner

        return getattr(runner, name)
    if name == "sweep":  # lop_bench.sweeps holds the machinery; its import is cheap too
        from lop_bench.sweeps import sweep

        return sweep
    raise AttributeError(f"module 'lop_bench' has no attribute {name!r}")
