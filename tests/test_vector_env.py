import gymnasium
import numpy as np
import pytest

import lop_bench
from lop_bench.envs.regression import SlowlyChangingRegressionVectorEnv
from lop_bench.errors import InvalidActionError, InvalidConfigError, StreamFinishedError

REG = "lop/SlowlyChangingRegression-v0"


def test_make_vec_and_gymnasium_make_vec_give_the_vector_env():
    a = lop_bench.make_vec(REG, num_envs=3, tier="smoke")
    b = gymnasium.make_vec(REG, num_envs=3, vectorization_mode="vector_entry_point", tier="smoke")
    for v in (a, b):
        assert isinstance(v.unwrapped, SlowlyChangingRegressionVectorEnv)
        assert v.num_envs == 3 and v.observation_space.shape == (3, 1, 20)
        assert v.single_action_space.shape == (1, 1)
        assert v.spec.kwargs["tier"] == "smoke"
        assert v.unwrapped.protocol_hash == lop_bench.make(REG, tier="smoke").unwrapped.protocol_hash


@pytest.mark.parametrize("chunk", [None, 3 * 20 * 37])
def test_sub_env_i_is_the_single_env_of_seed_i(chunk):
    seeds = [5, 7, 9]
    v = lop_bench.make_vec(REG, tier="smoke", seeds=seeds).unwrapped
    if chunk:
        v._CHUNK_ELEMENTS = chunk  # inputs built in odd-sized chunks of steps
    obs, infos = v.reset()
    singles = [lop_bench.make(REG, tier="smoke").unwrapped for _ in seeds]
    sobs = [s.reset(seed=sd)[0] for s, sd in zip(singles, seeds)]
    rng = np.random.default_rng(0)
    while True:
        for i in range(3):
            assert np.array_equal(obs[i], sobs[i])
        action = rng.normal(size=(3, 1, 1)).astype(np.float32)
        obs, r, term, trunc, infos = v.step(action)
        outs = [s.step(action[i]) for i, s in enumerate(singles)]
        sobs = [o[0] for o in outs]
        assert np.array_equal(r, [o[1] for o in outs])  # bit for bit
        for i in range(3):
            assert np.array_equal(infos["target"][i], outs[i][4]["target"])
            assert infos["task"][i] == outs[i][4]["task"]
        assert infos["_target"].all() and not term.any() and not trunc.any()
        if outs[0][4]["task_end"]:
            assert infos["task_end"].all()
            assert np.array_equal(infos["task_metrics"]["mse"],
                                  [o[4]["task_metrics"]["mse"] for o in outs])
        if infos["stream_done"][0]:
            assert all(o[4]["stream_done"] for o in outs)
            break
    with pytest.raises(StreamFinishedError):
        v.step(action)


def test_reset_seed_rules_and_probes():
    v = lop_bench.make_vec(REG, num_envs=2, tier="smoke").unwrapped
    v.reset(seed=10)
    assert v.seeds == (10, 11)  # gymnasium's rule: seed + i
    v.reset(seed=[3, 4])
    assert v.seeds == (3, 4)
    single = lop_bench.make(REG, tier="smoke").unwrapped
    single.reset(seed=4)
    assert np.array_equal(v.probe()[1], single.probe())
    with pytest.raises(InvalidConfigError, match="one per sub-env"):
        v.reset(seed=[1, 2, 3])
    with pytest.raises(InvalidConfigError, match="num_envs"):
        lop_bench.make_vec(REG, num_envs=0, tier="smoke")


def test_bad_vector_actions_are_named():
    v = lop_bench.make_vec(REG, num_envs=2, tier="smoke").unwrapped
    v.reset()
    with pytest.raises(InvalidActionError, match="shape"):
        v.step(np.zeros((2, 1), np.float32))
    with pytest.raises(InvalidActionError, match="dtype"):
        v.step(np.zeros((2, 1, 1), np.int32))
    bad = np.zeros((2, 1, 1), np.float32)
    bad[1] = np.nan
    with pytest.raises(InvalidActionError, match=r"sub-envs \[1\]"):
        v.step(bad)


def test_memory_stays_small_for_many_seeds():
    v = lop_bench.make_vec(REG, num_envs=500, tier="cpu").unwrapped
    obs, _ = v.reset()
    # the inputs live in a chunk of steps, not the whole task: O(N * chunk)
    assert v._Xc.nbytes <= 4 * v._CHUNK_ELEMENTS
    assert obs.shape == (500, 1, 20)
