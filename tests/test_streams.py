"""Stream declarations (lop_bench.streams) and the registry that reads them."""

from __future__ import annotations

import dataclasses

import gymnasium
import pytest

import lop_bench
from lop_bench import registration
from lop_bench.errors import InvalidConfigError, LopBenchError, UnknownEnvError
from lop_bench.registration import register, stream_spec
from lop_bench.streams import Finding, StreamSpec

BUILTIN = {
    "lop/SlowlyChangingRegression-v0",
    "lop/PermutedMNIST-v0",
    "lop/ContinualImageNet-v0",
    "lop/IncrementalCIFAR100-v0",
    "lop/ChangingFrictionAnt-v0",
}


def test_every_builtin_stream_is_declared_beside_its_env():
    assert BUILTIN <= set(lop_bench.list_envs())
    for env_id in BUILTIN:
        spec = stream_spec(env_id)
        module = __import__(spec.env.__module__, fromlist=["SPEC"])
        assert module.SPEC is spec and spec.id == env_id == spec.env.ENV_ID
        assert (spec.metric, spec.higher_is_better) == (spec.env.METRIC, spec.env.HIGHER_IS_BETTER)
        assert spec.tiers is spec.env.TIERS and spec.bin_size >= 1 and spec.label
        assert gymnasium.registry[env_id].entry_point == spec.entry_point
        for f in spec.findings:  # findings compare reference agents only
            assert {f.left[0], f.right[0]} <= set(spec.reference_agents), f.text


def test_what_the_streams_declare():
    reg = stream_spec("lop/SlowlyChangingRegression-v0")
    assert (reg.metric, reg.higher_is_better, reg.label, reg.bin_size) == (
        "mse", False, "mean squared error", 2)
    assert reg.vector_env is not None and reg.rank_by == "final" and len(reg.findings) == 3
    assert stream_spec("lop/ContinualImageNet-v0").bin_size == 50
    assert stream_spec("lop/ChangingFrictionAnt-v0").metric == "return"
    cifar = stream_spec("lop/IncrementalCIFAR100-v0")
    assert (cifar.rank_by, cifar.gap_to) == ("last", "from_scratch")
    assert cifar.functional_tiers == {"cpu": "4 blocks of 4 epochs"}
    assert cifar.reference_agents[-1] == "from_scratch"
    # the plasticity score's reference and its form (lop_bench.plasticity)
    assert (cifar.fresh_agent, cifar.plasticity_scale) == ("from_scratch", None)
    assert (reg.fresh_agent, reg.plasticity_scale) == ("fresh", None)
    assert stream_spec("lop/ChangingFrictionAnt-v0").plasticity_scale == 1000.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        reg.bin_size = 3  # type: ignore[misc]


def test_lookup_by_id():
    spec = stream_spec("lop/PermutedMNIST-v0")
    assert stream_spec("lop_bench:lop/PermutedMNIST-v0") is spec  # gymnasium's module prefix
    assert registration.env_class("lop/PermutedMNIST-v0") is spec.env
    with pytest.raises(UnknownEnvError, match="PermutedMNIST-v0") as exc:
        stream_spec("lop/PermutedMnist-v0")
    assert isinstance(exc.value, LopBenchError)


def test_a_declaration_is_checked():
    env = stream_spec("lop/SlowlyChangingRegression-v0").env
    ok = StreamSpec(env=env, label="error")
    assert ok.rank_by == "final" and ok.reference_agents == () and ok.dataset_fingerprint is None
    assert StreamSpec(env=env, label="x", plasticity_scale=5).plasticity_scale == 5.0
    for bad, match in [
        (dict(label=""), "label"),
        (dict(label="x", bin_size=0), "bin_size"),
        (dict(label="x", rank_by="best"), "rank_by"),
        (dict(label="x", rank_by="last"), "gap_to"),
        (dict(label="x", gap_to="backprop"), "gap_to"),
        (dict(label="x", functional_tiers={"huge": "1 task"}), "huge"),
        (dict(label="x", vector_env=stream_spec("lop/PermutedMNIST-v0").vector_env), "not of it"),
        (dict(label="x", fresh_agent=""), "fresh_agent"),
        (dict(label="x", plasticity_scale=0.0), "plasticity_scale"),
        (dict(label="x", plasticity_scale=float("inf")), "plasticity_scale"),
        (dict(label="x", plasticity_scale=True), "plasticity_scale"),
    ]:
        with pytest.raises(InvalidConfigError, match=match):
            StreamSpec(env=env, **bad)
    with pytest.raises(InvalidConfigError, match="ContinualStream class"):
        StreamSpec(env=object, label="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match="lop/Name-vN"):
        StreamSpec(env=type("Bad", (env,), {"ENV_ID": "bad id"}), label="x")
    with pytest.raises(InvalidConfigError, match="op"):
        Finding("x", ("a", "final"), "<=", ("b", "final"))
    with pytest.raises(InvalidConfigError, match="summary statistic"):
        Finding("x", ("a", "best"), "<", ("b", "final"))


def test_registering_keeps_one_declaration_per_id():
    spec = stream_spec("lop/SlowlyChangingRegression-v0")
    assert register(spec) is spec  # again: nothing changes
    other = dataclasses.replace(spec, bin_size=5)
    with pytest.raises(InvalidConfigError, match="new version"):
        register(other)
    assert stream_spec(spec.id) is spec
    with pytest.raises(InvalidConfigError, match="StreamSpec"):
        register(spec.env)  # type: ignore[arg-type]
