import dataclasses

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import lop_bench
from lop_bench.envs.regression import LTUTarget, SlowlyChangingRegressionEnv
from lop_bench.errors import (
    InvalidActionError,
    InvalidConfigError,
    StreamFinishedError,
    UnknownEnvError,
    UnknownTierError,
)

REG = "lop/SlowlyChangingRegression-v0"
ZERO = np.zeros((1, 1), np.float32)


def rollout(env, seed, predict=lambda obs: ZERO):
    """Run a whole stream; return stacked obs, targets and the per-task scores."""
    obs, info = env.reset(seed=seed)
    xs, ys, scores, tasks = [], [], [], []
    while True:
        xs.append(obs.copy())
        tasks.append(info["task"])
        obs, reward, term, trunc, info = env.step(predict(obs))
        ys.append(info["target"].copy())
        if info["task_end"]:
            scores.append(info["task_metrics"]["mse"])
        if info["stream_done"]:
            break
    return np.concatenate(xs), np.concatenate(ys), scores, np.array(tasks)


def test_check_env_passes_wrapped_and_unwrapped():
    env = lop_bench.make(REG, tier="smoke")
    check_env(env.unwrapped, skip_render_check=True)
    check_env(SlowlyChangingRegressionEnv(tier="smoke"), skip_render_check=True)


def test_gymnasium_make_and_spec_carry_the_tier():
    import gymnasium

    env = gymnasium.make(REG, tier="smoke")
    assert env.spec.kwargs["tier"] == "smoke"
    assert env.unwrapped.tier == "smoke"
    assert lop_bench.make(REG).unwrapped.tier == "cpu"  # the default tier


def test_same_seed_same_stream_and_different_seeds_differ():
    a = rollout(SlowlyChangingRegressionEnv(tier="smoke"), 3)
    b = rollout(SlowlyChangingRegressionEnv(tier="smoke"), 3)
    c = rollout(SlowlyChangingRegressionEnv(tier="smoke"), 4)
    for u, v in zip(a[:2], b[:2]):
        assert np.array_equal(u, v)
    assert a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_reset_with_seed_restarts_and_without_seed_keeps_position():
    env = SlowlyChangingRegressionEnv(tier="smoke")
    first, _ = env.reset(seed=5)
    for _ in range(250):  # into task 1 (change_period 200)
        obs, *_, info = env.step(ZERO)
    kept, info2 = env.reset()
    assert np.array_equal(kept, obs) and info2["task"] == info["task"] == 1
    again, info3 = env.reset(seed=5)
    assert np.array_equal(again, first) and info3["task"] == 0


def test_stream_structure_flip_one():
    env = SlowlyChangingRegressionEnv(tier="smoke")
    x, y, scores, tasks = rollout(env, 0)
    cfg = env.config
    T = cfg.change_period
    assert len(x) == cfg.num_steps and len(scores) == cfg.num_tasks
    assert set(np.unique(x)) <= {0.0, 1.0}
    slow = x[:, : cfg.num_slow_bits].reshape(cfg.num_tasks, T, -1)
    # slow bits fixed within a task, exactly one flips between tasks
    assert (slow == slow[:, :1]).all()
    flips = np.abs(np.diff(slow[:, 0], axis=0)).sum(axis=1)
    assert (flips == 1).all()
    # random bits vary within a task, roughly half ones
    rnd = x[:, cfg.num_slow_bits :]
    assert 0.4 < rnd.mean() < 0.6
    # targets are the target network's outputs and task indices follow the schedule
    assert np.array_equal(y[:, 0], env.target_net(x))
    assert np.array_equal(tasks, np.repeat(np.arange(cfg.num_tasks), T))


def test_redraw_all_variant_is_a_named_tier():
    env = SlowlyChangingRegressionEnv(tier="paper_redraw_all")
    assert env.config.change == "redraw_all" and env.config.num_steps == 1_000_000
    small = SlowlyChangingRegressionEnv(tier="smoke", change="redraw_all", num_tasks=30)
    x, *_ = rollout(small, 1)
    slow = x[:, :15].reshape(30, 200, 15)[:, 0]
    assert np.abs(np.diff(slow, axis=0)).sum(axis=1).max() > 1  # several bits change at once


def test_paper_tier_matches_protocols():
    cfg = SlowlyChangingRegressionEnv.TIERS["paper"]
    assert (cfg.num_slow_bits, cfg.num_random_bits, cfg.target_hidden) == (15, 5, 100)
    assert cfg.beta == 0.7 and cfg.change_period == 10_000 and cfg.change == "flip_one"
    assert cfg.num_steps == 3_000_000 and cfg.num_seeds == 100


def test_ltu_threshold_follows_the_paper_definition():
    rng = np.random.default_rng(0)
    net = LTUTarget(20, 100, 0.7, rng)
    assert set(np.unique(net.w1)) == {-1, 1} and set(np.unique(net.b1)) == {-1, 1}
    for i in range(100):
        s = sum(1 for w in net.w1[i] if w < 0) + (net.b1[i] < 0)  # bias counted as a weight
        assert net.tau[i] == pytest.approx(0.7 * 21 - s)
    x = rng.integers(0, 2, size=(64, 20))
    h = net.hidden(x)
    for n in range(64):
        for i in range(0, 100, 7):
            pre = sum(int(net.w1[i, j]) * int(x[n, j]) for j in range(20)) + int(net.b1[i])
            assert h[n, i] == (1 if pre > net.tau[i] else 0)
    y = net(x)
    assert np.array_equal(y, (h @ net.w2 + net.b2).astype(np.float32))


def test_public_code_thresholds_count_the_bias_with_the_wrong_sign():
    """lop/nets/fix_ltu_net.py: S = (m - sum(w) + b) / 2, tau = beta * (m + 1) - S."""
    paper = LTUTarget(20, 100, 0.7, np.random.default_rng(0))
    public = LTUTarget(20, 100, 0.7, np.random.default_rng(0), threshold="public_code")
    assert np.array_equal(public.w1, paper.w1) and np.array_equal(public.b1, paper.b1)
    for i in range(100):
        s = (20 - int(public.w1[i].sum()) + int(public.b1[i])) / 2
        assert public.tau[i] == pytest.approx(0.7 * 21 - s)
        assert public.tau[i] - paper.tau[i] == pytest.approx(-0.5 if public.b1[i] > 0 else 1.5)
    x = np.random.default_rng(1).integers(0, 2, size=(4096, 20))
    assert not np.array_equal(public(x), paper(x))
    with pytest.raises(InvalidConfigError, match="threshold"):
        LTUTarget(20, 100, 0.7, np.random.default_rng(0), threshold="code")


def test_paper_public_code_tier_is_the_paper_tier_with_the_public_thresholds():
    tiers = SlowlyChangingRegressionEnv.TIERS
    public, paper = tiers["paper_public_code"], tiers["paper"]
    assert public.ltu_threshold == "public_code" and paper.ltu_threshold == "paper"
    assert dataclasses.replace(public, ltu_threshold="paper") == paper
    assert all(t.ltu_threshold == "paper" for name, t in tiers.items() if name != "paper_public_code")
    a = SlowlyChangingRegressionEnv(tier="paper_public_code")
    b = SlowlyChangingRegressionEnv(tier="paper")
    assert not a.custom and a.protocol_hash != b.protocol_hash
    small = SlowlyChangingRegressionEnv(tier="smoke", ltu_threshold="public_code")
    assert small.custom
    x1, y1, *_ = rollout(small, 3)
    x2, y2, *_ = rollout(SlowlyChangingRegressionEnv(tier="smoke"), 3)
    assert np.array_equal(x1, x2) and not np.array_equal(y1, y2)  # same inputs, other targets
    t = small.target_net
    h = (x1 @ t.w1.T + t.b1 > t.tau).astype(np.float32)
    assert np.array_equal(y1.reshape(-1), h @ t.w2 + t.b2)
    with pytest.raises(InvalidConfigError, match="ltu_threshold"):
        SlowlyChangingRegressionEnv(tier="smoke", ltu_threshold="public")


def test_task_metrics_are_the_mse_over_the_task_and_reward_is_minus_squared_error():
    env = SlowlyChangingRegressionEnv(tier="smoke")
    obs, info = env.reset(seed=2)
    pred = np.full((1, 1), 0.5, np.float32)
    errs = []
    while True:
        obs, reward, term, trunc, info = env.step(pred)
        assert term is False and trunc is False
        e = (0.5 - float(info["target"][0, 0])) ** 2
        assert reward == pytest.approx(-e)
        errs.append(e)
        if info["task_end"]:
            assert info["task_metrics"]["mse"] == pytest.approx(np.mean(errs), rel=1e-12)
            errs = []
        else:
            assert "task_metrics" not in info
        if info["stream_done"]:
            break
    with pytest.raises(StreamFinishedError, match="reset"):
        env.step(pred)


def test_info_keys_transition_vs_context():
    env = SlowlyChangingRegressionEnv(tier="smoke")
    obs, info = env.reset(seed=0)
    assert set(info) == {"task", "phase", "epoch", "stream_done"}  # no transition keys at reset
    for _ in range(200):
        obs, _, _, _, info = env.step(ZERO)
    # the 200th action ended task 0: task_end is about that action, task about the next obs
    assert info["task_end"] and info["task"] == 1 and "task_metrics" in info
    assert info["target"].shape == (1, 1) and info["phase"] == "train"


@pytest.mark.parametrize(
    "action, match",
    [
        (np.zeros((1, 2), np.float32), "shape"),
        (np.zeros((1,), np.float32), "shape"),
        (np.zeros((1, 1), np.int64), "dtype"),
        (np.full((1, 1), np.nan, np.float32), "non-finite"),
        (np.full((1, 1), np.inf, np.float32), "non-finite"),
        ([[0.0]], "numpy"),
    ],
)
def test_bad_actions_are_named(action, match):
    env = SlowlyChangingRegressionEnv(tier="smoke")
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        env.step(action)


def test_torch_tensor_actions_are_accepted():
    import torch

    env = SlowlyChangingRegressionEnv(tier="smoke")
    env.reset(seed=0)
    env.step(torch.zeros(1, 1))


def test_unknown_id_tier_and_config_are_named():
    with pytest.raises(UnknownEnvError, match="SlowlyChangingRegression-v0"):
        lop_bench.make("lop/SlowlyChangingRegresion-v0")
    with pytest.raises(UnknownTierError, match="smoke"):
        lop_bench.make(REG, tier="smok")
    with pytest.raises(InvalidConfigError, match="change_period"):
        lop_bench.make(REG, change_periode=5)
    with pytest.raises(InvalidConfigError, match="beta"):
        lop_bench.make(REG, beta=1.5)
    with pytest.raises(InvalidConfigError, match="num_tasks"):
        lop_bench.make(REG, num_tasks=0)
    with pytest.raises(InvalidConfigError, match="integer"):
        lop_bench.make(REG, num_tasks="many")
    with pytest.raises(InvalidConfigError, match="flip_one"):
        lop_bench.make(REG, change="flip_two")


def test_overrides_make_the_stream_custom_and_change_the_hash():
    base = lop_bench.make(REG, tier="cpu").unwrapped
    same = lop_bench.make(REG, tier="cpu", num_tasks=150).unwrapped
    other = lop_bench.make(REG, tier="cpu", num_tasks=151).unwrapped
    cadence = lop_bench.make(REG, tier="cpu", probe_size=10).unwrapped
    assert not base.custom and not same.custom and other.custom and cadence.custom
    assert base.protocol_hash == same.protocol_hash != other.protocol_hash
    assert cadence.protocol_hash == base.protocol_hash  # probe size is not protocol
    hashes = {SlowlyChangingRegressionEnv(tier=t).protocol_hash for t in SlowlyChangingRegressionEnv.TIERS}
    assert len(hashes) == len(SlowlyChangingRegressionEnv.TIERS)


def test_probe_is_per_task_and_does_not_change_the_stream():
    a = SlowlyChangingRegressionEnv(tier="smoke")
    b = SlowlyChangingRegressionEnv(tier="smoke")
    a.reset(seed=1)
    b.reset(seed=1)
    p1 = a.probe()
    assert p1.shape == (200, 20)
    assert np.array_equal(p1, a.probe())  # same task, same probe
    assert (p1[:, :15] == a._X[0, 0, :15]).all()  # the current task's slow bits
    for _ in range(300):
        a.probe()
        oa = a.step(ZERO)[0]
        ob = b.step(ZERO)[0]
        assert np.array_equal(oa, ob)
    assert not np.array_equal(a.probe(), p1)  # task 1 has its own probe


def test_import_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, lop_bench; lop_bench.make('lop/SlowlyChangingRegression-v0');"
        "heavy = [m for m in ('torch', 'mujoco', 'ray', 'datasets', 'baselines', 'torchvision')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
