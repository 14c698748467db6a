"""Every registered stream through the same checks (like Gymnasium's tests/envs):
check_env, determinism, the info-key contract, reset semantics and the eval-phase rules.

Streams that need a dataset or an optional dependency that is not present here are
skipped with the reason (their own test files cover them on fixtures)."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import lop_bench
from lop_bench.errors import DatasetNotFoundError, DependencyNotInstalled
from tests.test_adversarial import STREAM_IDS as ADVERSARIAL_IDS

TRANSITION_KEYS = {"target", "task_end", "task_metrics", "val_metrics"}
CONTEXT_KEYS = {"task", "phase", "epoch", "stream_done"}
MAX_STEPS = 3000


def _make(env_id):
    try:
        return lop_bench.make(env_id, tier="smoke").unwrapped
    except (DatasetNotFoundError, DependencyNotInstalled) as exc:
        pytest.skip(f"{env_id}: {exc}")


def _rollout(env, seed, steps=MAX_STEPS):
    space = env.action_space
    space.seed(1234)
    obs, info = env.reset(seed=seed)
    trace = [(np.array(obs, copy=True), dict(info))]
    for _ in range(steps):
        obs, reward, term, trunc, info = env.step(space.sample())
        trace.append((np.array(obs, copy=True), reward, term, trunc, info))
        if info["stream_done"]:
            break
        if term or trunc:
            obs, info = env.reset()
    return trace


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("env_id", lop_bench.list_envs())
def test_check_env(env_id):
    check_env(_make(env_id), skip_render_check=True)


@pytest.mark.parametrize("env_id", lop_bench.list_envs())
def test_same_seed_same_stream_other_seed_other_stream(env_id):
    a, b, c = (_rollout(_make(env_id), s) for s in (0, 0, 1))
    assert _same(a, b)
    assert not _same(a, c)


@pytest.mark.parametrize("env_id", lop_bench.list_envs())
def test_info_contract_and_eval_phases(env_id):
    env = _make(env_id)
    trace = _rollout(env, 0)
    _, reset_info = trace[0]
    assert CONTEXT_KEYS <= set(reset_info) and not (TRANSITION_KEYS & set(reset_info))
    assert env.spec.kwargs["tier"] == "smoke"
    for *_, info in trace[1:]:
        assert CONTEXT_KEYS <= set(info) and "task_end" in info
        assert info["phase"] in ("train", "val", "test")
        if info["task_end"]:
            assert env.METRIC in info["task_metrics"]
    # An action scored in a val/test phase reveals no target and gets reward 0.
    phases = [reset_info["phase"]] + [t[4]["phase"] for t in trace[1:-1]]
    for phase, (_, reward, _, _, info) in zip(phases, trace[1:]):
        if phase in ("val", "test"):
            assert "target" not in info and reward == 0
    # A stream with val/test phases faces the cheating agents of tests/test_adversarial.py.
    if {"val", "test"} & set(phases):
        assert env_id in ADVERSARIAL_IDS, (
            f"{env_id} has val/test phases: add it to STREAMS in tests/test_adversarial.py"
        )


@pytest.mark.parametrize("env_id", lop_bench.list_envs())
def test_reset_with_the_seed_restarts_the_stream(env_id):
    env = _make(env_id)
    first = _rollout(env, 3, steps=50)
    again = _rollout(env, 3, steps=50)  # the same env object, reset with the same seed
    assert _same(first, again)


def _continue(env, actions):
    """Step through ``actions`` (resetting after episode ends), recording everything."""
    out = []
    for a in actions:
        obs, reward, term, trunc, info = env.step(a)
        out.append((np.array(obs, copy=True), reward, term, trunc, info))
        if info["stream_done"]:
            break
        if term or trunc:
            out.append(env.reset())
    return out


@pytest.mark.parametrize("env_id", lop_bench.list_envs())
def test_state_dict_continues_the_stream_bit_for_bit(env_id):
    from lop_bench.checkpoint import decode, encode

    env = _make(env_id)
    assert env.supports_checkpoints, f"{env_id} has no state_dict (resume needs one)"
    space = env.action_space
    space.seed(5)
    actions = [space.sample() for _ in range(MAX_STEPS)]
    env.reset(seed=2)
    n = sum(1 for t in _continue(env, actions) if len(t) == 5)  # steps in the rollout
    env.reset(seed=2)
    _continue(env, actions[: n // 2])
    # Through the checkpoint codec: what a checkpoint file holds, numpy arrays included.
    state = decode(encode(env.state_dict()))
    want = _continue(env, actions[n // 2:])
    fresh = _make(env_id)
    fresh.reset(seed=0)
    fresh.load_state_dict(state)
    assert _same(_continue(fresh, actions[n // 2:]), want)
