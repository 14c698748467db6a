"""lop/PermutedMNIST-v0 on a small fixture in torchvision's IDX layout (300 fake digits)."""

import tracemalloc

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import lop_bench
from lop_bench.data import mnist
from lop_bench.data._common import fingerprint
from lop_bench.envs.permuted_mnist import (
    TIERS,
    PermutedMNISTEnv,
    PermutedMNISTVectorEnv,
)
from lop_bench.errors import (
    DatasetNotFoundError,
    InvalidActionError,
    InvalidConfigError,
    StreamFinishedError,
    SubmissionRejected,
)
from lop_bench.seeding import spawn_generators
from tests.mnist_fixtures import fake_mnist, write_torchvision

MNIST = "lop/PermutedMNIST-v0"
N = 300
X, Y = fake_mnist(N)
AGENTS = ("linear", "backprop", "l2", "shrink_perturb", "continual_backprop")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_torchvision(tmp_path_factory.mktemp("mnist"), X, Y)


@pytest.fixture
def registered():
    """The stream's id (a built-in stream: registered when lop_bench is imported)."""
    return MNIST


def env_of(root, tier="smoke", **kw):
    return PermutedMNISTEnv(tier, root=root, **kw)


def rollout(env, seed, predict=None):
    """Run a whole stream; return stacked obs, targets, actions and the per-task scores."""
    predict = predict or (lambda obs: np.zeros(obs.shape[0], np.int64))
    obs, info = env.reset(seed=seed)
    xs, ys, acts, scores, rewards = [], [], [], [], []
    while True:
        xs.append(obs.copy())
        action = predict(obs)
        acts.append(action)
        obs, reward, term, trunc, info = env.step(action)
        ys.append(info["target"].copy())
        rewards.append(reward)
        if info["task_end"]:
            scores.append(info["task_metrics"]["accuracy"])
        if info["stream_done"]:
            break
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(acts), scores, rewards


def expected_task(seed, tasks, examples, x=X, y=Y):
    """The stream as the protocol defines it, from the seed's per-purpose generators."""
    rng = spawn_generators(seed, ("permutation", "order"))
    out_x, out_y = [], []
    for _ in range(tasks):
        perm = rng["permutation"].permutation(784)
        order = rng["order"].permutation(len(y))[:examples]
        out_x.append(x.reshape(len(x), 784)[order][:, perm].astype(np.float32) / np.float32(255))
        out_y.append(y[order].astype(np.int64))
    return np.concatenate(out_x), np.concatenate(out_y)


# -- API ---------------------------------------------------------------------------------
def test_check_env_passes_wrapped_and_unwrapped(root, registered):
    check_env(env_of(root), skip_render_check=True)
    env = lop_bench.make(MNIST, tier="smoke", root=root)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.spec.kwargs["tier"] == "smoke" and env.unwrapped.tier == "smoke"


def test_spaces_tiers_and_paper_protocol(root):
    env = env_of(root)
    assert env.observation_space == gymnasium.spaces.Box(0, 1, (1, 784), np.float32)
    assert env.action_space == gymnasium.spaces.MultiDiscrete([10])
    assert env.METRIC == "accuracy" and env.HIGHER_IS_BETTER
    assert env.total_steps == 4 * 250 and env.num_tasks == 4
    paper = TIERS["paper"]
    assert (paper.examples_per_task, paper.num_tasks, paper.batch_size) == (60_000, 800, 1)
    assert (paper.num_seeds, paper.probe_size) == (30, 2000)
    cpu = TIERS["cpu"]  # long enough for the effect on real digits (see its comment)
    assert (cpu.examples_per_task, cpu.num_tasks, cpu.num_seeds) == (5000, 100, 5)
    assert set(TIERS) == {"smoke", "cpu", "paper"}


def test_the_stream_is_the_protocol_permutation_and_order(root):
    """Task t shows images[order_t[i], perm_t] / 255, both drawn from the seed."""
    xs, ys, *_ = rollout(env_of(root), seed=7)
    ex, ey = expected_task(7, tasks=4, examples=250)
    assert xs.dtype == np.float32 and np.array_equal(xs, ex)
    assert ys.dtype == np.int64 and np.array_equal(ys, ey)
    # each task: a new permutation, a new order, no image twice
    tasks = xs.reshape(4, 250, 784)
    assert all(len({r.tobytes() for r in t}) == 250 for t in tasks)
    assert not np.array_equal(tasks[0], tasks[1])


def test_same_seed_same_stream_and_different_seeds_differ(root):
    a = rollout(env_of(root), 3)
    b = rollout(env_of(root), 3)
    c = rollout(env_of(root), 4)
    for u, v in zip(a[:4], b[:4]):
        assert np.array_equal(u, v)
    assert a[4] == b[4]
    assert not np.array_equal(a[0], c[0])


def test_reset_with_seed_restarts_and_without_seed_keeps_position(root):
    env = env_of(root)
    first, _ = env.reset(seed=5)
    for _ in range(260):
        obs, *_ = env.step(np.zeros(1, np.int64))
    again, info = env.reset()
    assert np.array_equal(again, obs) and info["task"] == 1  # the position is kept
    restarted, info = env.reset(seed=5)
    assert np.array_equal(restarted, first) and info["task"] == 0


def test_online_accuracy_is_the_fraction_correct_over_the_task(root):
    env = env_of(root)
    rng = np.random.default_rng(0)
    _, ey = expected_task(1, tasks=4, examples=250)
    # right on a known fraction of the steps, wrong on the others
    right = rng.random(1000) < 0.6
    guesses = iter(np.where(right, ey, (ey + 1) % 10))
    xs, ys, acts, scores, rewards = rollout(env, 1, lambda obs: np.array([next(guesses)]))
    assert np.array_equal(ys, ey)
    assert rewards == [float(r) for r in right]
    assert scores == [float(np.mean(right[t * 250:(t + 1) * 250])) for t in range(4)]


def test_batches_score_the_fraction_of_the_batch(root):
    env = env_of(root, batch_size=5)
    assert env.observation_space.shape == (5, 784) and env.action_space.shape == (5,)
    assert env.custom and env.total_steps == 200
    rng = np.random.default_rng(1)
    xs, ys, acts, scores, rewards = rollout(env, 2, lambda obs: rng.integers(0, 10, obs.shape[0]))
    ex, ey = expected_task(2, tasks=4, examples=250)  # the batch size does not change the stream
    assert np.array_equal(xs, ex) and np.array_equal(ys, ey)
    hits = (acts == ys).reshape(-1, 5)
    assert np.allclose(rewards, hits.mean(axis=1))
    assert scores == [float(np.mean(acts[t * 250:(t + 1) * 250] == ys[t * 250:(t + 1) * 250]))
                      for t in range(4)]
    with pytest.raises(InvalidConfigError, match="must divide examples_per_task"):
        env_of(root, batch_size=7)


def test_info_keys_transition_vs_context(root):
    env = env_of(root)
    obs, info = env.reset(seed=0)
    assert set(info) == {"task", "phase", "epoch", "stream_done"}
    for _ in range(250):
        obs, _, _, _, info = env.step(np.zeros(1, np.int64))
    assert set(info) == {"target", "task_end", "task_metrics", "task", "phase", "epoch", "stream_done"}
    assert info["task_end"] and info["task"] == 1 and info["phase"] == "train" and info["epoch"] == 0
    assert info["target"].shape == (1,) and info["target"].dtype == np.int64
    obs, _, _, _, info = env.step(np.zeros(1, np.int64))
    assert "task_metrics" not in info and not info["task_end"]


@pytest.mark.parametrize(
    "action, match",
    [
        (np.zeros((1,), np.float32), "dtype"),
        (np.zeros((1, 1), np.int64), "shape"),
        (np.zeros((2,), np.int64), "shape"),
        (np.zeros((), np.int64), "shape"),
        (np.array([10]), "0..9"),
        (np.array([-1]), "0..9"),
        (np.array([True]), "dtype"),
        ([3], "numpy integer array"),
        (3, "numpy integer array"),
    ],
)
def test_bad_actions_are_named(root, action, match):
    env = env_of(root)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        env.step(action)


def test_torch_and_other_integer_actions_are_accepted(root):
    import torch

    env = env_of(root)
    env.reset(seed=0)
    env.step(torch.zeros(1, dtype=torch.long))
    env.step(np.zeros(1, np.uint8))
    env.step(env.action_space.sample())


def test_the_end_of_the_stream(root):
    env = env_of(root)
    with pytest.raises(StreamFinishedError, match="reset"):
        env.step(np.zeros(1, np.int64))
    rollout(env, 0)
    with pytest.raises(StreamFinishedError, match="reset"):
        env.step(np.zeros(1, np.int64))
    with pytest.raises(StreamFinishedError):
        env.reset()
    env.reset(seed=0)


def test_probe_is_the_first_examples_of_the_task_and_does_not_change_the_stream(root):
    a, b = env_of(root), env_of(root)
    first_a, _ = a.reset(seed=1)
    b.reset(seed=1)
    p = a.probe()
    assert p.shape == (100, 784) and p.dtype == np.float32
    ex, _ = expected_task(1, tasks=2, examples=250)
    assert np.array_equal(p, ex[:100]) and np.array_equal(p[0], first_a[0])
    assert a.probe(1000).shape == (250, 784)  # at most the task's size
    for _ in range(300):
        a.probe()
        assert np.array_equal(a.step(np.zeros(1, np.int64))[0], b.step(np.zeros(1, np.int64))[0])
    assert np.array_equal(a.probe(), ex[250:350])  # task 1's first examples


# -- memory ------------------------------------------------------------------------------
def test_memory_stays_flat_over_many_tasks(root):
    """A task is an index into the one uint8 array, never a copy: 60 tasks cost what 10 do."""
    env = env_of(root, num_tasks=60, examples_per_task=50)
    action = np.zeros(1, np.int64)
    obs, info = env.reset(seed=0)

    def run_tasks(k):
        for _ in range(50 * k):
            env.step(action)

    run_tasks(5)
    tracemalloc.start()
    try:
        run_tasks(5)
        current1, peak1 = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        run_tasks(50)
        current2, peak2 = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert env._task == 59
    # One copy of the fixture is 235 KB: a copy per task would add 12 MB over 50 tasks.
    assert peak2 < peak1 + 50_000 and current2 < current1 + 50_000
    assert env._Xc.shape[0] <= env._CHUNK_ROWS  # observations live in a chunk of steps
    assert env.dataset is mnist.load_mnist(root)  # one shared array per process


# -- protocol identity -------------------------------------------------------------------
def test_the_dataset_fingerprint_enters_the_protocol_hash(root, tmp_path):
    env = env_of(root)
    assert env.dataset_fingerprint == fingerprint((X, Y))
    assert env.describe()["dataset_fingerprint"] == env.dataset_fingerprint
    assert "root" not in env.describe()["config"]  # where the data lies is not protocol
    assert env_of(root, source="torchvision").protocol_hash == env.protocol_hash
    subset = env_of(write_torchvision(tmp_path, X[:299], Y[:299]))
    assert subset.dataset_fingerprint != env.dataset_fingerprint
    assert subset.protocol_hash != env.protocol_hash and not subset.custom
    assert env_of(root, probe_size=10).protocol_hash == env.protocol_hash
    other = env_of(root, num_tasks=5)
    assert other.custom and other.protocol_hash != env.protocol_hash
    hashes = {PermutedMNISTEnv(t, root=root, examples_per_task=250).protocol_hash for t in TIERS}
    assert len(hashes) == len(TIERS)  # examples_per_task equal, the other fields differ


def test_too_small_a_dataset_and_bad_kwargs_are_named(root, tmp_path):
    with pytest.raises(InvalidConfigError, match="60,000 images per task but the dataset"):
        env_of(root, tier="paper")
    with pytest.raises(InvalidConfigError, match="examples_per_task"):
        env_of(root, examples_per_task=0)
    with pytest.raises(InvalidConfigError, match="source must be one of"):
        env_of(root, source="huggingface")
    with pytest.raises(InvalidConfigError, match="root must be a path"):
        env_of(3)
    with pytest.raises(DatasetNotFoundError, match="lop-bench data download mnist"):
        env_of(tmp_path / "empty")


def test_missing_data_through_make_names_the_command(registered, tmp_path, monkeypatch):
    monkeypatch.setenv("LOP_BENCH_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="`lop-bench data download mnist`"):
        lop_bench.make(MNIST, tier="smoke")
    write_torchvision(tmp_path, X, Y)  # the default root, $LOP_BENCH_DATA
    assert lop_bench.make(MNIST, tier="smoke").unwrapped.dataset_fingerprint == fingerprint((X, Y))


# -- end to end with the reference agents --------------------------------------------------
def test_reference_agents_run_end_to_end(root, registered):
    for name in AGENTS:
        r = lop_bench.run(MNIST, name, tier="smoke", seed=0, progress=False,
                          env_kwargs={"root": str(root)})
        d = r.data
        assert len(r.per_task) == 4 and all(0.0 <= a <= 1.0 for a in r.per_task)
        assert d["steps"] == 1000 and d["metric"] == "accuracy" and not d["custom"]
        assert d["dataset_fingerprint"] == fingerprint((X, Y))
        assert d["agent"]["preset"] == f"{name}/{MNIST}/{'*' if name == 'linear' else 'smoke'}"
        if name != "linear":
            assert d["agent"]["hparams"]["hidden"] == [100, 100, 100]
            assert d["agent"]["hparams"]["lr"] == 0.003
            assert d["diagnostics"]["tasks"] == [0, 1, 2, 3]
    # the fake digits are learnable: backprop ends well above chance
    assert r.summary["final"] > 0.5


def test_paper_and_cpu_presets(root, registered):
    for tier, hidden in (("cpu", (100, 100, 100)), ("paper", (2000, 2000, 2000))):
        spec = gymnasium.envs.registration.EnvSpec(MNIST, kwargs={"tier": tier})
        from baselines import backprop, continual_backprop, l2, linear, shrink_perturb

        for mod in (backprop, l2, shrink_perturb, continual_backprop):
            cfg = mod.ALGORITHM.config(spec)
            assert cfg.hidden == hidden and cfg.lr == 0.003
        # The paper's rate at width 2000; at width 100 the rate the cpu tier's sweep chose.
        cbp = continual_backprop.ALGORITHM.config(spec)
        assert cbp.replacement_rate == {"cpu": 1e-4, "paper": 1e-6}[tier]
        cfg = linear.ALGORITHM.config(spec)
        assert cfg.lr == 0.003


def test_the_leaderboard_refuses_results_until_the_official_fingerprint_is_known(root, registered):
    from lop_bench.leaderboard import check_result
    from tests.leaderboard_fixtures import TIER, ranked_mini_tier

    with ranked_mini_tier(MNIST):  # the smoke tier under a ranked name (smoke is never ranked)
        r = lop_bench.run(MNIST, "linear", tier=TIER, seed=0, progress=False,
                          env_kwargs={"root": str(root)})
        with pytest.raises(SubmissionRejected, match="dataset_fingerprint"):
            check_result(r)


# -- vector env --------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [None, 3 * 784 * 37])
def test_sub_env_i_is_the_single_env_of_seed_i(root, registered, chunk):
    seeds = [5, 7, 9]
    v = lop_bench.make_vec(MNIST, tier="smoke", seeds=seeds, root=root, batch_size=2).unwrapped
    assert isinstance(v, PermutedMNISTVectorEnv)
    if chunk:
        v._CHUNK_ELEMENTS = chunk  # observations built in odd-sized chunks of steps
    assert v.observation_space.shape == (3, 2, 784) and v.action_space.shape == (3, 2)
    obs, infos = v.reset()
    singles = [env_of(root, batch_size=2) for _ in seeds]
    sobs = [s.reset(seed=sd)[0] for s, sd in zip(singles, seeds)]
    assert np.array_equal(v.probe()[1], singles[1].probe())
    rng = np.random.default_rng(0)
    while True:
        for i in range(3):
            assert np.array_equal(obs[i], sobs[i])
        action = rng.integers(0, 10, size=(3, 2))
        obs, r, term, trunc, infos = v.step(action)
        outs = [s.step(action[i]) for i, s in enumerate(singles)]
        sobs = [o[0] for o in outs]
        assert np.array_equal(r, [o[1] for o in outs])
        for i in range(3):
            assert np.array_equal(infos["target"][i], outs[i][4]["target"])
            assert infos["task"][i] == outs[i][4]["task"]
        if outs[0][4]["task_end"]:
            assert infos["task_end"].all()
            assert np.array_equal(infos["task_metrics"]["accuracy"],
                                  [o[4]["task_metrics"]["accuracy"] for o in outs])
        if infos["stream_done"][0]:
            assert all(o[4]["stream_done"] for o in outs)
            break
    with pytest.raises(StreamFinishedError):
        v.step(action)
    with pytest.raises(InvalidActionError, match="shape"):
        v.reset()
        v.step(np.zeros((3,), np.int64))
    assert v.protocol_hash == singles[0].protocol_hash
