from dataclasses import dataclass, field

import pytest

from lop_bench.config import canonical_json, protocol_fields, protocol_hash, replace_checked
from lop_bench.errors import InvalidConfigError


@dataclass(frozen=True)
class Cfg:
    lr: float = 0.01
    steps: int = 10
    mode: str = "a"
    flag: bool = False
    seeds: int = field(default=5, metadata={"protocol": False})


def test_replace_checked_validates_names_and_types():
    c = Cfg()
    assert replace_checked(c, lr=1).lr == 1.0  # int accepted for a float field
    assert replace_checked(c, steps=20.0).steps == 20
    with pytest.raises(InvalidConfigError, match="'lrr'.*Did you mean 'lr'"):
        replace_checked(c, lrr=0.1)
    with pytest.raises(InvalidConfigError, match="integer"):
        replace_checked(c, steps=2.5)
    with pytest.raises(InvalidConfigError, match="number"):
        replace_checked(c, lr="fast")
    with pytest.raises(InvalidConfigError, match="finite"):
        replace_checked(c, lr=float("nan"))
    with pytest.raises(InvalidConfigError, match="true or false"):
        replace_checked(c, flag=1)


def test_protocol_hash_covers_protocol_fields_only():
    a = protocol_hash("lop/X-v0", 1, Cfg(), None)
    assert a == protocol_hash("lop/X-v0", 1, Cfg(seeds=7), None)
    assert a != protocol_hash("lop/X-v0", 1, Cfg(lr=0.02), None)
    assert a != protocol_hash("lop/X-v0", 2, Cfg(), None)
    assert a != protocol_hash("lop/X-v1", 1, Cfg(), None)
    assert a != protocol_hash("lop/X-v0", 1, Cfg(), "sha256:abc")
    assert "seeds" not in protocol_fields(Cfg())
    assert canonical_json({"b": 1, "a": [1.5]}) == '{"a":[1.5],"b":1}'


def test_env_choice_reads_a_switch_and_names_its_values(monkeypatch):
    from lop_bench.config import env_choice

    monkeypatch.delenv("LOP_BENCH_TEST_SWITCH", raising=False)
    assert env_choice("LOP_BENCH_TEST_SWITCH", ("1", "0"), "1") == "1"
    monkeypatch.setenv("LOP_BENCH_TEST_SWITCH", "")
    assert env_choice("LOP_BENCH_TEST_SWITCH", ("1", "0"), "1") == "1"
    monkeypatch.setenv("LOP_BENCH_TEST_SWITCH", "0")
    assert env_choice("LOP_BENCH_TEST_SWITCH", ("1", "0"), "1") == "0"
    monkeypatch.setenv("LOP_BENCH_TEST_SWITCH", "false")
    with pytest.raises(InvalidConfigError, match=r"\$LOP_BENCH_TEST_SWITCH must be one of 1, 0 "
                                                 r"\(unset: 1\), got 'false'"):
        env_choice("LOP_BENCH_TEST_SWITCH", ("1", "0"), "1")
