"""The algorithm tables (baselines/presets.py and baselines/<algorithm>.py): one name per
algorithm on every stream, the right agent class for each stream, aliases, ``lop-bench list``."""

from __future__ import annotations

import importlib.metadata
import types

import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.spaces import Box, MultiDiscrete

import lop_bench
from baselines import backprop, continual_backprop, l2, linear, shrink_perturb
from baselines.agents.incremental import IncrementalAgent
from baselines.agents.ppo import PPOAgent
from baselines.agents.supervised import (
    BackpropConfig,
    ContinualBackpropConfig,
    LinearAgent,
    SupervisedAgent,
)
from baselines.agents.vectorized import VectorMLPAgent
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
from lop_bench.errors import InvalidConfigError, VectorizationNotSupported

# The single spaces of each stream's smoke tier (no data needed).
SPACES = {
    REGRESSION: (Box(-np.inf, np.inf, (1, 20), np.float32), Box(-np.inf, np.inf, (1, 1), np.float32)),
    PERMUTED_MNIST: (Box(0, 1, (1, 784), np.float32), MultiDiscrete([10])),
    CONTINUAL_IMAGENET: (Box(0, 255, (100, 3, 32, 32), np.float32), MultiDiscrete([2] * 100)),
    INCREMENTAL_CIFAR: (Box(0, 1, (90, 3, 32, 32), np.float32), MultiDiscrete([100] * 90)),
    ANT: (Box(-np.inf, np.inf, (27,), np.float64), Box(-1, 1, (8,), np.float32)),
}
CLASSES = {REGRESSION: SupervisedAgent, PERMUTED_MNIST: SupervisedAgent,
           CONTINUAL_IMAGENET: SupervisedAgent, INCREMENTAL_CIFAR: IncrementalAgent, ANT: PPOAgent}


def _env(env_id, tier="smoke", **kwargs):
    """What make_agent reads of an env: its spec and spaces."""
    obs, act = SPACES[env_id]
    return types.SimpleNamespace(spec=EnvSpec(env_id, entry_point="x:y", kwargs={"tier": tier, **kwargs}),
                                 observation_space=obs, action_space=act)


@pytest.mark.parametrize("env_id", sorted(SPACES))
@pytest.mark.parametrize("name", ["backprop", "shrink_perturb", "continual_backprop"])
def test_one_name_runs_the_right_learner_on_every_stream(name, env_id):
    agent = lop_bench.make_agent(name, _env(env_id), seed=0)
    assert type(agent) is CLASSES[env_id]
    assert agent.preset.startswith(f"{name}/{env_id}/")
    gnt = agent.gnt  # generate-and-test: on for continual backprop only, on every network
    on = gnt is not None and gnt != []
    assert on == (name == "continual_backprop")


@pytest.mark.parametrize("env_id", [REGRESSION, PERMUTED_MNIST, CONTINUAL_IMAGENET, ANT])
def test_l2_on_its_streams_and_a_clear_error_elsewhere(env_id):
    agent = lop_bench.make_agent("l2", _env(env_id), seed=0)
    assert agent.cfg.weight_decay > 0
    with pytest.raises(InvalidConfigError, match="l2.*no preset.*IncrementalCIFAR100.*It has presets for"):
        lop_bench.make_agent("l2", _env(INCREMENTAL_CIFAR), seed=0)


def test_the_ppo_names_are_aliases_of_the_ant_rows():
    env = _env(ANT)
    for alias, algorithm in (("ppo", backprop), ("ppo_l2", l2), ("ppo_cbp", continual_backprop),
                             ("ppo_shrink_perturb", shrink_perturb)):
        a = lop_bench.make_agent(alias, env, seed=3)
        b = lop_bench.make_agent(algorithm.ALGORITHM.name, env, seed=3)
        assert a.hparams == b.hparams and a.cfg == b.cfg
        assert a.preset == f"{alias}/{ANT}/*" and b.preset == f"{algorithm.ALGORITHM.name}/{ANT}/*"
        assert all(np.array_equal(p.detach(), q.detach())
                   for p, q in zip(a.parameters(), b.parameters(), strict=True))
        # an alias names the Ant's rows only
        with pytest.raises(InvalidConfigError, match=f"{alias}.*no preset.*ChangingFrictionAnt"):
            lop_bench.make_agent(alias, _env(REGRESSION), seed=0)
    assert lop_bench.make_agent("ppo_proper_adam", env, seed=0).cfg.betas == (0.99, 0.99)


def test_entry_points_name_the_tables():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="lop_bench.agents")}
    if not eps:
        pytest.skip("lop-bench is not pip-installed (pip install -e .)")
    for name in ("linear", "backprop", "l2", "shrink_perturb", "continual_backprop",
                 "head_reset", "from_scratch"):
        assert eps[name] == f"baselines.{name}:make_agent"
    assert eps["ppo_cbp"] == "baselines.continual_backprop:make_ppo_cbp_agent"
    factory = continual_backprop.make_ppo_cbp_agent
    assert factory.agent_name == "ppo_cbp" and factory.algorithm is continual_backprop.ALGORITHM
    assert factory.preset_keys() == [(ANT, "*")]
    assert lop_bench.agents.agent_presets("continual_backprop") == sorted(
        continual_backprop.ALGORITHM.presets)


def test_vectorized_agents_where_the_stream_has_them():
    for env_id in (REGRESSION, PERMUTED_MNIST):
        for name in ("linear", "backprop", "l2", "shrink_perturb", "continual_backprop"):
            env = _env(env_id, vectorization_mode="vector_entry_point", num_envs=3)
            agent = lop_bench.make_agent(name, env, seed=(4, 5, 6))
            assert type(agent) is VectorMLPAgent and agent.seeds == (4, 5, 6)
            assert (agent.gnt is not None) == (name == "continual_backprop")
    for env_id in (CONTINUAL_IMAGENET, INCREMENTAL_CIFAR, ANT):
        env = _env(env_id, vectorization_mode="vector_entry_point", num_envs=2)
        with pytest.raises(VectorizationNotSupported, match="no vectorized agent"):
            lop_bench.make_agent("continual_backprop", env, seed=0)


def test_linear_is_the_linear_agent():
    agent = lop_bench.make_agent("linear", _env(REGRESSION), seed=0)
    assert type(agent) is LinearAgent and agent.features is None
    assert linear.ALGORITHM.preset_keys() == [(PERMUTED_MNIST, "*"), (REGRESSION, "*")]


def test_an_algorithm_table_is_checked():
    with pytest.raises(TypeError, match="must be a Preset"):
        Algorithm("x", {(REGRESSION, "*"): BackpropConfig()})
    with pytest.raises(ValueError, match="alias 'y' must name streams of the table"):
        Algorithm("x", {(REGRESSION, "*"): mlp(BackpropConfig())}, aliases={"y": (ANT,)})
    alg = Algorithm("x", {(REGRESSION, "*"): mlp(ContinualBackpropConfig()),
                          (ANT, "cpu"): Preset(SupervisedAgent, BackpropConfig())})
    with pytest.raises(InvalidConfigError, match="'z' is not a name of 'x'"):
        alg.factory("z")
    with pytest.raises(InvalidConfigError, match="unknown x hyperparameter"):
        alg.build(_env(REGRESSION).spec, *SPACES[REGRESSION], 0, hparams={"noise": 1})
    with pytest.raises(InvalidConfigError, match="no preset for 'lop/ChangingFrictionAnt-v0' \\(tier 'smoke'\\)"):
        alg.build(_env(ANT).spec, *SPACES[ANT], 0)


def test_list_shows_which_algorithm_has_a_preset_where(capsys):
    from lop_bench.cli import main

    if not list(importlib.metadata.entry_points(group="lop_bench.agents")):
        pytest.skip("lop-bench is not pip-installed (pip install -e .)")
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line.split() for line in lines if line.split()[:1] == ["agent"])
    rows = {line.split()[0]: dict(zip(header[1:], line.split()[1:], strict=True))
            for line in lines[lines.index(next(x for x in lines if x.split()[:1] == ["agent"])) + 1:]
            if line.startswith("  ") and len(line.split()) == len(header)}
    streams = [e.split("/")[-1] for e in SPACES]
    assert all(rows["continual_backprop"][s] == "all" for s in streams)
    assert rows["ppo_cbp"]["ChangingFrictionAnt-v0"] == "all"
    assert rows["ppo_cbp"]["SlowlyChangingRegression-v0"] == "-"
    assert rows["head_reset"]["IncrementalCIFAR100-v0"] == "all"
    assert rows["l2"]["IncrementalCIFAR100-v0"] == "-"


def test_list_survives_an_agent_that_fails_to_load():
    from lop_bench.cli import _preset_table

    def presets_of(name):
        if name == "stale":
            raise AttributeError("module 'x' has no attribute 'make_agent'")
        return None if name == "plain" else [(REGRESSION, "*"), (ANT, "cpu")]

    table = _preset_table(["good", "plain", "stale"], [REGRESSION, ANT], presets_of)
    rows = [line.split() for line in table.splitlines()]
    assert rows == [["agent", "SlowlyChangingRegression-v0", "ChangingFrictionAnt-v0"],
                    ["good", "all", "cpu"], ["plain", "?", "?"], ["stale", "?", "?"]]
