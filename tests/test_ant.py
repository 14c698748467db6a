"""lop/ChangingFrictionAnt-v0: frictions on every geom, change points, determinism, check_env,
the runner end to end, and the named error without MuJoCo."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import lop_bench
from lop_bench.envs.ant import TIERS, AntConfig, ChangingFrictionAntEnv
from lop_bench.errors import InvalidActionError, InvalidConfigError, StreamFinishedError

ANT = "lop/ChangingFrictionAnt-v0"

needs_mujoco = pytest.mark.skipif(
    importlib.util.find_spec("mujoco") is None,
    reason='MuJoCo is not installed (pip install "lop-bench[mujoco]")',
)


@pytest.fixture
def ant_id():
    """The Ant's id (a built-in stream: registered when lop_bench is imported)."""
    return ANT


def random_actions(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, 8)).astype(np.float32)


def rollout(env, seed, actions):
    """Run a whole stream with a fixed action sequence (cycled); record everything."""
    obs, info = env.reset(seed=seed)
    rec = {"obs": [obs], "rew": [], "info": [info], "events": [], "geoms": [env.model.geom_friction[:, 0].copy()]}
    i = 0
    while True:
        obs, r, term, trunc, info = env.step(actions[i % len(actions)])
        i += 1
        rec["obs"].append(obs)
        rec["rew"].append(r)
        rec["info"].append(info)
        rec["geoms"].append(env.model.geom_friction[:, 0].copy())
        rec["events"].append((term, trunc))
        if info["stream_done"]:
            return rec
        if term or trunc:
            obs, info = env.reset()
            rec["obs"].append(obs)
            rec["info"].append(info)
            rec["geoms"].append(env.model.geom_friction[:, 0].copy())
            rec["events"].append("reset")


# -- tiers and config (no MuJoCo needed) --------------------------------------------------


def test_tiers_follow_the_protocol():
    paper = TIERS["paper"]
    assert paper.num_tasks * paper.steps_per_task == 20_000_000
    assert paper.steps_per_task == 2_000_000 and paper.num_seeds == 10
    assert (paper.friction_low, paper.friction_high) == (0.02, 2.0)
    assert paper.constant_friction is None and paper.max_episode_steps == 1000
    assert TIERS["cpu"].num_seeds == 5 and TIERS["cpu"].max_episode_steps == 1000
    for cfg in TIERS.values():  # the original's reward conventions in every tier
        assert cfg.contact_cost_weight == 0.0 and cfg.raw_actions is True
    assert "too short" in ChangingFrictionAntEnv.__doc__


def test_config_checks_and_constant_friction():
    with pytest.raises(InvalidConfigError, match="constant_friction"):
        AntConfig(constant_friction=-1.0)
    with pytest.raises(InvalidConfigError, match="friction_high"):
        AntConfig(friction_low=1.0, friction_high=0.5)
    assert AntConfig(constant_friction=1).constant_friction == 1.0


# -- the stream ---------------------------------------------------------------------------


@needs_mujoco
def test_friction_is_set_on_every_geom_and_reported():
    env = ChangingFrictionAntEnv(tier="smoke")
    rec = rollout(env, 0, random_actions(500))
    for info, geoms in zip(rec["info"], rec["geoms"], strict=True):
        assert np.all(geoms == info["friction"])
    frictions = sorted({i["friction"] for i in rec["info"]})
    assert len(frictions) == TIERS["smoke"].num_tasks  # one per task, the first one drawn too
    assert all(0.02 <= f <= 2.0 for f in frictions) and 1.0 not in frictions
    assert env.model.ngeom > 1  # not just the floor


@needs_mujoco
def test_friction_changes_only_at_an_episode_end_after_the_boundary():
    env = ChangingFrictionAntEnv(tier="smoke")  # 1,000 steps per task, 250-step episodes
    N, T = env.config.steps_per_task, env.config.max_episode_steps
    rec = rollout(env, 1, random_actions(700, seed=1))
    task, since_change, task_ended, changes = 0, 0, False, 0
    for event, info in zip(rec["events"], rec["info"][1:], strict=True):
        if event == "reset":
            if info["task"] != task:  # a change: only at the reset after a task's end
                assert task_ended and info["task"] == task + 1
                task, since_change, changes = info["task"], 0, changes + 1
            else:
                assert not task_ended
            task_ended = False
            continue
        since_change += 1
        assert info["task"] == task  # never inside an episode
        term, trunc = event
        if term or trunc:
            # The first episode end once N steps have passed ends the task, no other.
            assert info["task_end"] == (since_change >= N)
            assert since_change < N + T
            task_ended = info["task_end"]
        else:
            assert not info["task_end"]
    assert changes == env.num_tasks - 1
    assert rec["info"][-1]["stream_done"] and task == env.num_tasks - 1


@needs_mujoco
def test_task_score_is_the_mean_return_of_its_episodes():
    env = ChangingFrictionAntEnv(tier="smoke")
    rec = rollout(env, 2, random_actions(300, seed=2))
    returns, scores = [], []
    for info in rec["info"][1:]:
        if "episode" in info:
            returns.append(info["episode"]["r"])
        if info.get("task_end"):
            scores.append(info["task_metrics"]["return"])
            assert info["task_metrics"]["return"] == pytest.approx(np.mean(returns))
            returns = []
    assert len(scores) == env.num_tasks


@needs_mujoco
def test_time_limit_is_truncation():
    env = ChangingFrictionAntEnv(tier="smoke")
    env.reset(seed=0)
    zero = np.zeros(8, np.float32)  # the Ant stands: it never terminates
    for i in range(env.config.max_episode_steps):
        obs, r, term, trunc, info = env.step(zero)
        assert term is False and trunc is (i == env.config.max_episode_steps - 1)
    assert info["episode"]["l"] == env.config.max_episode_steps
    with pytest.raises(StreamFinishedError, match="call reset"):
        env.step(zero)


@needs_mujoco
def test_different_frictions_give_different_trajectories():
    actions = random_actions(200, seed=3)

    def trajectory(friction):
        env = ChangingFrictionAntEnv(tier="smoke", constant_friction=friction)
        obs, _ = env.reset(seed=0)
        out = [obs]
        for a in actions:
            obs, *_, term, trunc, _ = env.step(a)
            out.append(obs)
            if term or trunc:
                break
        return np.stack(out)

    slippery, sticky, sticky2 = trajectory(0.05), trajectory(1.5), trajectory(1.5)
    assert np.array_equal(sticky, sticky2)
    n = min(len(slippery), len(sticky))
    assert np.array_equal(slippery[0], sticky[0])  # same seed: same reset noise
    assert not np.allclose(slippery[:n], sticky[:n])


@needs_mujoco
def test_same_seed_same_stream_bit_for_bit():
    actions = random_actions(400, seed=4)
    a = rollout(ChangingFrictionAntEnv(tier="smoke"), 7, actions)
    b = rollout(ChangingFrictionAntEnv(tier="smoke"), 7, actions)
    assert len(a["obs"]) == len(b["obs"])
    assert all(np.array_equal(x, y) for x, y in zip(a["obs"], b["obs"], strict=True))
    assert a["rew"] == b["rew"] and a["events"] == b["events"]
    assert [i["friction"] for i in a["info"]] == [i["friction"] for i in b["info"]]
    c = rollout(ChangingFrictionAntEnv(tier="smoke"), 8, actions)
    assert a["info"][0]["friction"] != c["info"][0]["friction"]
    assert not np.array_equal(a["obs"][0], c["obs"][0])  # reset noise from the seed


@needs_mujoco
def test_reset_keeps_the_stream_and_reset_seed_restarts_it():
    env = ChangingFrictionAntEnv(tier="smoke")
    obs0, info0 = env.reset(seed=5)
    for a in random_actions(20, seed=5):
        env.step(a)
    _, info = env.reset()  # mid-episode: a new episode, same task and friction
    assert (info["task"], info["friction"]) == (0, info0["friction"])
    obs, info = env.reset(seed=5)
    assert np.array_equal(obs, obs0) and info == info0
    assert obs.dtype == np.float32 and obs.shape == (27,)
    assert env.observation_space.contains(obs)


@needs_mujoco
def test_stream_end():
    env = ChangingFrictionAntEnv(tier="smoke", num_tasks=1, steps_per_task=10)
    env.reset(seed=0)
    zero = np.zeros(8, np.float32)
    while True:
        *_, term, trunc, info = env.step(zero)
        if term or trunc:
            break
    assert info["stream_done"] and info["task_end"]
    with pytest.raises(StreamFinishedError, match="stream has ended"):
        env.reset()
    with pytest.raises(StreamFinishedError, match="stream has ended"):
        env.step(zero)
    env.reset(seed=0)  # a seed restarts it


@needs_mujoco
@pytest.mark.parametrize(
    "action, match",
    [
        (np.zeros(7, np.float32), "shape"),
        (np.zeros((1, 8), np.float32), "shape"),
        (np.zeros(8, np.int64), "float"),
        (np.array([np.nan] + [0.0] * 7, np.float32), "non-finite"),
        ([0.0] * 8, "numpy"),
    ],
)
def test_invalid_actions_are_named(action, match):
    env = ChangingFrictionAntEnv(tier="smoke")
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        env.step(action)


@needs_mujoco
def test_out_of_range_actions_raise_only_without_raw_actions():
    strict = ChangingFrictionAntEnv(tier="smoke", raw_actions=False)
    strict.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"\[-1, 1\].*raw_actions=True"):
        strict.step(np.full(8, 1.5, np.float32))
    with pytest.raises(InvalidConfigError, match="raw_actions"):
        AntConfig(raw_actions=1)


@needs_mujoco
def test_raw_actions_move_the_ant_as_clipped_ones_and_pay_their_control_cost():
    """The original's Ant-v3 got the raw Gaussian sample: MuJoCo clamps the controls to
    [-1, 1] for the dynamics, while the control cost is of the sample as given. The
    contact cost is 0 (its contact forces read as zero on mujoco-py 2.x)."""
    raw = np.array([1.5, -2.0, 0.5, 1.0, -1.0, 3.0, 0.0, -0.25], np.float32)
    clipped = np.clip(raw, -1.0, 1.0)
    out = {}
    for name, action in (("raw", raw), ("clipped", clipped)):
        env = ChangingFrictionAntEnv(tier="smoke")
        env.reset(seed=0)
        for _ in range(5):
            obs, r, term, trunc, info = env.step(action)
        out[name] = (obs, r, info)
    (obs_r, r_r, info_r), (obs_c, r_c, info_c) = out["raw"], out["clipped"]
    assert np.array_equal(obs_r, obs_c)  # the same dynamics
    assert info_r["reward_ctrl"] == pytest.approx(-0.5 * float(np.square(raw).sum()))
    assert info_c["reward_ctrl"] == pytest.approx(-0.5 * float(np.square(clipped).sum()))
    assert r_c - r_r == pytest.approx(0.5 * float(np.square(raw).sum() - np.square(clipped).sum()))
    assert info_r["reward_contact"] == 0.0 and info_c["reward_contact"] == 0.0
    v5 = ChangingFrictionAntEnv(tier="smoke", contact_cost_weight=5e-4)
    v5.reset(seed=0)
    contact = [v5.step(clipped)[4]["reward_contact"] for _ in range(20)]
    assert v5.custom and min(contact) < 0.0  # v5's own contact cost, once the feet touch


@needs_mujoco
def test_check_env_passes():
    env = ChangingFrictionAntEnv(tier="smoke")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite Box bounds: as Ant-v5's own space
        check_env(env, skip_render_check=True)


@needs_mujoco
def test_make_by_id_custom_and_hash(ant_id):
    env = lop_bench.make(ant_id, tier="smoke")
    u = env.unwrapped
    assert isinstance(u, ChangingFrictionAntEnv) and not u.custom
    assert u.describe()["metric"] == "return" and u.HIGHER_IS_BETTER
    custom = lop_bench.make(ant_id, tier="smoke", constant_friction=1.0).unwrapped
    assert custom.custom and custom.protocol_hash != u.protocol_hash
    assert lop_bench.make(ant_id, tier="paper").unwrapped.protocol_hash != u.protocol_hash


@needs_mujoco
def test_run_end_to_end_with_ppo(ant_id):
    pytest.importorskip("baselines.agents.ppo")
    a = lop_bench.run(ant_id, "baselines.backprop:make_ppo_agent", tier="smoke", seed=0, progress=False)
    assert len(a.per_task) == TIERS["smoke"].num_tasks
    assert all(np.isfinite(a.per_task)) and a.data["steps"] >= 3_000
    assert a.data["agent"]["hparams"]["lr"] == 1e-4
    b = lop_bench.run(ant_id, "baselines.backprop:make_ppo_agent", tier="smoke", seed=0, progress=False)
    assert a.per_task == b.per_task  # same seed, same run


# -- without MuJoCo -----------------------------------------------------------------------


def test_without_mujoco_import_works_and_make_names_the_extra():
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["mujoco"] = None  # import mujoco now fails
        import lop_bench
        from lop_bench.errors import DependencyNotInstalled
        from lop_bench.envs.ant import TIERS  # the module imports without MuJoCo
        assert TIERS["paper"].num_tasks == 10
        try:
            lop_bench.make({ANT!r}, tier="smoke")
        except DependencyNotInstalled as exc:
            assert "pip install" in str(exc) and "lop-bench[mujoco]" in str(exc), exc
            print("OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"
