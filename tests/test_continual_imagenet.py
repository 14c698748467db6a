"""lop/ContinualImageNet-v0 on a small fixture in the per-class layout (6 classes of 30)."""

import io

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import lop_bench
from lop_bench.envs.continual_imagenet import TIERS, ContinualImageNetConfig, ContinualImageNetEnv
from lop_bench.errors import (
    DatasetNotFoundError,
    InvalidActionError,
    InvalidConfigError,
    PhaseViolationError,
    StreamFinishedError,
)
from lop_bench.seeding import spawn_generators, task_generator
from tests.imagenet_fixtures import fake_imagenet, write_layout_root

CIN = "lop/ContinualImageNet-v0"
K, N = 6, 30
A = fake_imagenet(K, N, seed=3)
CONTEXT = {"task", "phase", "epoch", "valid", "stream_done"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_layout_root(tmp_path_factory.mktemp("imagenet"), A)


def env_of(root, tier="smoke", **kw):
    return ContinualImageNetEnv(tier, root=root, **kw)


def expected_stream(seed, cfg):
    """The stream as the protocol defines it, from the seed's per-purpose generators: one
    dict per step with the observation, its labels and its context."""
    rng = spawn_generators(seed, ("class_order", "shuffle", "test_order"))
    P, B = cfg.num_classes // 2, cfg.batch_size
    tr, te = cfg.train_per_class, cfg.test_per_class
    steps, order = [], None
    for t in range(cfg.num_tasks):
        if t % P == 0 and (cfg.class_order == "fresh" or t == 0):
            order = rng["class_order"].permutation(cfg.num_classes)
        a, b = int(order[2 * (t % P)]), int(order[2 * (t % P) + 1])
        test_perm = rng["test_order"].permutation(2 * te)
        xtr, ytr = np.concatenate([A[a, :tr], A[b, :tr]]), np.repeat([0, 1], tr)
        xte, yte = np.concatenate([A[a, N - te:], A[b, N - te:]]), np.repeat([0, 1], te)

        def add(x, y, idx, phase, epoch, pair=(a, b), t=t):
            obs = np.zeros((B, 3, 32, 32), np.float32)
            obs[:len(idx)] = x[idx]
            lab = np.zeros(B, np.int64)
            lab[:len(idx)] = y[idx]
            steps.append({"obs": obs, "labels": lab, "task": t, "phase": phase, "epoch": epoch,
                          "valid": len(idx), "pair": pair})

        for e in range(cfg.epochs):
            perm = rng["shuffle"].permutation(2 * tr)
            for s in range(0, 2 * tr, B):
                add(xtr, ytr, perm[s:s + B], "train", e)
        for s in range(0, 2 * te, B):
            add(xte, yte, test_perm[s:s + B], "test", cfg.epochs - 1)
    return steps


def rollout(env, seed, policy=None):
    """Run the whole stream; returns per step (obs, context info, action, reward, info)."""
    policy = policy or (lambda k, obs, info: np.zeros(obs.shape[0], np.int64))
    obs, info = env.reset(seed=seed)
    out, k = [], 0
    while True:
        action = policy(k, obs, info)
        nxt, reward, term, trunc, step_info = env.step(action)
        assert term is False and trunc is False
        out.append((obs, info, action, reward, step_info))
        obs, info, k = nxt, step_info, k + 1
        if info["stream_done"]:
            return out


# -- API ---------------------------------------------------------------------------------
def test_check_env_passes_wrapped_and_unwrapped(root):
    check_env(env_of(root), skip_render_check=True)
    env = lop_bench.make(CIN, tier="smoke", root=root)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.spec.kwargs["tier"] == "smoke" and env.unwrapped.tier == "smoke"
    assert gymnasium.make(CIN, tier="smoke", root=root).unwrapped.num_tasks == 3


def test_spaces_tiers_and_paper_protocol(root):
    env = env_of(root)
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (16, 3, 32, 32), np.float32)
    assert env.action_space == gymnasium.spaces.MultiDiscrete([2] * 16)
    assert env.METRIC == "accuracy" and env.HIGHER_IS_BETTER
    assert lop_bench.registration.stream_spec(CIN).dataset_fingerprint is None
    assert env.total_steps == 3 * (2 * 3 + 2) and env.num_tasks == 3
    paper = TIERS["paper"]
    assert (paper.num_classes, paper.train_per_class, paper.test_per_class) == (1000, 600, 100)
    assert (paper.num_tasks, paper.epochs, paper.batch_size, paper.num_seeds) == (5000, 250, 100, 30)
    assert paper.class_order == "fresh" and paper.steps_per_task == 250 * 12 + 2
    cpu = TIERS["cpu"]
    assert cpu.num_seeds == 5 and cpu.num_classes == 1000 and cpu.num_steps == 20 * (2 * 12 + 2)
    assert set(TIERS) == {"smoke", "cpu", "paper"}
    assert env.dataset_fingerprint == env.dataset.fingerprint and env.dataset_fingerprint.startswith("sha256:")


def test_the_stream_is_the_protocol(root):
    """Pairs from a per-block class permutation, a fresh shuffle per epoch, padded batches."""
    env = env_of(root, num_classes=6, num_tasks=5)  # 3 tasks per block: task 3 starts block 1
    exp = expected_stream(11, env.config)
    seen_pairs = []
    got = rollout(env, 11, lambda k, obs, info: seen_pairs.append(env.pair) or np.zeros(16, np.int64))
    assert seen_pairs == [e["pair"] for e in exp]
    assert len(got) == len(exp) == env.total_steps
    for k, ((obs, info, _, reward, step_info), e) in enumerate(zip(got, exp)):
        assert obs.dtype == np.float32 and np.array_equal(obs, e["obs"]), k
        assert {key: info[key] for key in ("task", "phase", "epoch", "valid")} == \
            {key: e[key] for key in ("task", "phase", "epoch", "valid")}, k
        if e["phase"] == "train":
            assert step_info["target"].dtype == np.int64
            assert np.array_equal(step_info["target"], e["labels"]), k
            assert reward == np.mean(e["labels"][:e["valid"]] == 0)  # the action was all 0
        else:
            assert reward == 0.0 and "target" not in step_info
    pairs = [e["pair"] for e in exp[::env.config.steps_per_task]]
    # a block pairs up all the classes, each class once
    assert sorted(c for p in pairs[:3] for c in p) == list(range(6))


def test_same_seed_same_stream_and_other_seed_other_stream(root):
    def summary(seed):
        return [(o.tobytes(), i["task"], s.get("target", np.zeros(0)).tobytes())
                for o, i, _, _, s in rollout(env_of(root, num_classes=6), seed)]

    a, b, c = summary(3), summary(3), summary(4)
    assert a == b and a != c
    pairs = {s: [e["pair"] for e in expected_stream(s, env_of(root, num_classes=6).config)[::8]]
             for s in range(6)}
    assert len({tuple(p) for p in pairs.values()}) > 1  # seeds order the classes differently


def test_fresh_order_each_block_and_the_repeat_option(root):
    def pairs(env, seed):
        env.reset(seed=seed)
        out = []
        for _ in range(env.num_tasks):
            out.append(env.pair)
            for _ in range(env.config.steps_per_task):
                env.step(np.zeros(16, np.int64))
        return out

    fresh = env_of(root, num_tasks=8)  # 4 classes: 2 tasks per block, 4 blocks
    repeat = env_of(root, num_tasks=8, class_order="repeat")
    assert repeat.custom and repeat.protocol_hash != fresh.protocol_hash
    differs = False
    for seed in range(4):
        f, r = pairs(fresh, seed), pairs(repeat, seed)
        assert f[:2] == r[:2]  # the first block's order is drawn the same way
        assert r[2:] == r[:2] * 3  # repeat: pair t recurs every 2 tasks
        for blk in range(4):
            assert sorted(c for p in f[2 * blk:2 * blk + 2] for c in p) == [0, 1, 2, 3]
        differs |= f[2:] != f[:2] * 3
    assert differs  # fresh: later blocks draw new orders


def test_padded_batches_valid_and_scoring(root):
    env = env_of(root)
    exp = expected_stream(5, env.config)
    valid = [e["valid"] for e in exp[:8]]
    assert valid == [16, 16, 8, 16, 16, 8, 16, 4]
    # right on every real row, wrong on every padded row: full reward and accuracy 1
    def oracle(k, obs, info):
        a = 1 - exp[k]["labels"]
        a[:exp[k]["valid"]] = exp[k]["labels"][:exp[k]["valid"]]
        return a

    got = rollout(env, 5, oracle)
    for (obs, _, _, reward, s), e in zip(got, exp):
        assert np.all(obs[e["valid"]:] == 0)
        if e["phase"] == "train":
            assert reward == 1.0 and np.all(s["target"][e["valid"]:] == 0)
        else:
            assert reward == 0.0
    scores = [s["task_metrics"]["accuracy"] for *_, s in got if s["task_end"]]
    assert scores == [1.0, 1.0, 1.0]
    # all zeros: half the test images (balanced pairs), and the train reward is the fraction
    got = rollout(env, 5)
    assert [s["task_metrics"]["accuracy"] for *_, s in got if s["task_end"]] == [0.5] * 3
    for (_, _, _, reward, _), e in zip(got, exp):
        if e["phase"] == "train":
            assert reward == np.mean(e["labels"][:e["valid"]] == 0)


def test_test_phases_never_expose_labels(root):
    env = env_of(root, num_classes=6, num_tasks=4)
    exp = expected_stream(2, env.config)
    got = rollout(env, 2)
    seen_mixed = False
    for k, ((obs, info, _, reward, s), e) in enumerate(zip(got, exp)):
        assert CONTEXT <= set(info) and (k > 0 or set(info) == CONTEXT)
        if e["phase"] != "test":
            continue
        # the scored step reveals nothing but the clock; the score only at the task's end
        keys = {"task_end", *CONTEXT} | ({"task_metrics"} if s["task_end"] else set())
        assert set(s) == keys and reward == 0.0
        # the observation holds test images only (the last rows of each class), no labels
        a, b = e["pair"]
        test_rows = {r.tobytes() for c in (a, b) for r in A[c, N - 10:].astype(np.float32)}
        train_rows = {r.tobytes() for c in (a, b) for r in A[c, :20].astype(np.float32)}
        real = [r.tobytes() for r in obs[:info["valid"]]]
        assert all(r in test_rows for r in real) and not any(r in train_rows for r in real)
        lab = e["labels"][:info["valid"]]
        seen_mixed |= 0 < lab.sum() < len(lab)  # the test order is shuffled, not by class
    assert seen_mixed


def test_reset_keeps_or_restarts_the_position(root):
    env = env_of(root)
    first, info0 = env.reset(seed=4)
    for _ in range(10):  # 8 steps per task: task 1's third batch (8 real rows) is next
        obs, *_, info = env.step(np.zeros(16, np.int64))
    again, info = env.reset()
    assert np.array_equal(again, obs) and info["task"] == 1 and info["valid"] == 8
    restarted, info = env.reset(seed=4)
    assert np.array_equal(restarted, first) and info == info0


# -- checkpoints -------------------------------------------------------------------------
def _through_torch_save(state):
    """What the runner does: numpy -> torch, torch.save, torch.load(weights_only=True)."""
    def conv(x):
        if isinstance(x, np.ndarray):
            return torch.from_numpy(x)
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x

    buf = io.BytesIO()
    torch.save(conv(state), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("split", [1, 3, 7, 8, 13, 22])  # mid-epoch, epoch end, test, task end
def test_state_dict_resume_is_bit_identical(root, split):
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, (100, 16))
    a = env_of(root, num_classes=4, num_tasks=4)
    a.reset(seed=9)
    for k in range(split):
        a.step(actions[k])
    state = _through_torch_save(a.state_dict())
    b = env_of(root, num_classes=4, num_tasks=4)
    b.reset(seed=123)  # any seed: the state replaces it
    b.load_state_dict(state)
    assert b.stream_seed == 9 and b.pair == a.pair
    assert np.array_equal(b.probe(), a.probe())  # the probe's classes are restored too
    k = split
    while True:
        ra, rb = a.step(actions[k]), b.step(actions[k])
        assert np.array_equal(ra[0], rb[0]) and ra[1] == rb[1]
        assert ra[4].keys() == rb[4].keys()
        for key in ra[4]:
            assert np.array_equal(np.asarray(ra[4][key], dtype=object), np.asarray(rb[4][key], dtype=object))
        k += 1
        if ra[4]["stream_done"]:
            break
    assert k == a.total_steps


def test_state_dict_is_plain_values(root):
    env = env_of(root)
    env.reset(seed=0)
    state = env.state_dict()

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, np.ndarray):
            return x.dtype == np.int64
        return type(x) in (int, float, bool, str, type(None))

    assert plain(state)
    with pytest.raises(InvalidConfigError, match="another tier"):
        env_of(root, num_classes=6).load_state_dict(state)
    with pytest.raises(InvalidConfigError, match="lacks"):
        env.load_state_dict({"seed": 0})
    with pytest.raises(InvalidConfigError, match="another tier"):  # a class out of range
        env.load_state_dict({**state, "probe_pair": np.array([0, 4], np.int64)})


# -- probe, device -----------------------------------------------------------------------
def test_probe_is_the_previous_tasks_training_images_shuffled_and_changes_nothing(root):
    """Task 0: its own training images; task t: task t - 1's (trained on); in the order of
    the seed's probe generator for the task (child 3, ``task_generator``), never a test
    image. Probing at every step leaves the stream as it is."""
    a, b = env_of(root, num_classes=6, num_tasks=4), env_of(root, num_classes=6, num_tasks=4)
    a.reset(seed=1)
    b.reset(seed=1)
    trained = a.pair
    for task in range(4):
        images = np.concatenate([A[trained[0], :20], A[trained[1], :20]]).astype(np.float32)
        p = a.probe()
        assert p.shape == (40, 3, 32, 32) and p.dtype == np.float32  # probe_size 1000: all
        assert np.array_equal(p, images[task_generator(1, 3, task).permutation(40)])
        assert np.array_equal(a.probe(5), p[:5])
        trained = a.pair
        for _ in range(a.config.steps_per_task):
            ra, rb = a.step(np.zeros(16, np.int64)), b.step(np.zeros(16, np.int64))
            a.probe()
            assert np.array_equal(ra[0], rb[0]) and ra[4].keys() == rb[4].keys()
    assert ra[4]["stream_done"]
    with pytest.raises(InvalidConfigError, match="probe size must be a positive integer"):
        a.probe(0)
    with pytest.raises(StreamFinishedError, match="before probe"):
        env_of(root).probe()


def test_device_keeps_the_data_on_the_device_and_the_same_stream(root):
    cpu = env_of(root, num_classes=6, num_tasks=4)
    dev = env_of(root, num_classes=6, num_tasks=4, device="cpu")
    assert dev._dev_data.dtype == torch.uint8 and tuple(dev._dev_data.shape) == (6, 30, 3, 32, 32)
    o1, _ = cpu.reset(seed=2)
    o2, _ = dev.reset(seed=2)
    assert isinstance(o2, torch.Tensor) and o2.dtype == torch.float32
    assert np.array_equal(o1, o2.numpy())
    assert np.array_equal(cpu.probe(), dev.probe().numpy())
    for k in range(cpu.total_steps):
        action = np.full(16, k % 2, np.int64)
        r1 = cpu.step(action)
        r2 = dev.step(torch.as_tensor(action))
        assert np.array_equal(r1[0], r2[0].numpy()) and r1[1] == r2[1]
        if "target" in r1[4]:
            assert isinstance(r2[4]["target"], torch.Tensor)
            assert np.array_equal(r1[4]["target"], r2[4]["target"].numpy())
        if r1[4]["task_end"]:  # the next task's probe: the task just ended's training images
            assert np.array_equal(cpu.probe(), dev.probe().numpy())
    with pytest.raises(InvalidConfigError, match="device"):
        env_of(root, device="no-such-device")


# -- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "action, match",
    [
        (np.zeros((16,), np.float32), "dtype"),
        (np.zeros((16, 1), np.int64), "shape"),
        (np.zeros((15,), np.int64), "shape"),
        (np.full(16, 2), "0..1"),
        (np.full(16, -1), "0..1"),
        ([0] * 16, "numpy integer array"),
    ],
)
def test_bad_actions_are_named(root, action, match):
    env = env_of(root)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=match):
        env.step(action)


def test_config_and_data_errors(root, tmp_path):
    with pytest.raises(InvalidConfigError, match="uses 8 classes but the dataset .* has 6"):
        env_of(root, num_classes=8)
    with pytest.raises(InvalidConfigError, match="needs 25 training \\+ 10 test images"):
        env_of(root, train_per_class=25)
    with pytest.raises(InvalidConfigError, match="even"):
        ContinualImageNetConfig(num_classes=5)
    with pytest.raises(InvalidConfigError, match="class_order"):
        env_of(root, class_order="shuffled")
    with pytest.raises(InvalidConfigError, match="num_tasks must be > 0"):
        env_of(root, num_tasks=0)
    with pytest.raises(DatasetNotFoundError, match="lop-bench data prepare imagenet32 --from DIR"):
        env_of(tmp_path)


def test_the_end_of_the_stream(root):
    env = env_of(root)
    with pytest.raises(StreamFinishedError, match="reset"):
        env.step(np.zeros(16, np.int64))
    rollout(env, 0)
    with pytest.raises(StreamFinishedError, match="reset"):
        env.step(np.zeros(16, np.int64))
    with pytest.raises(StreamFinishedError):
        env.reset()
    env.reset(seed=0)


# -- end to end --------------------------------------------------------------------------
class PixelPerceptron:
    """Predicts from the mean of each colour channel; a perceptron update on the real rows of
    train batches only."""

    def __init__(self, cheat=False):
        self.w = torch.zeros(4)
        self.cheat = cheat
        self.hparams, self.preset = {}, None

    def _x(self, obs):
        x = torch.as_tensor(obs).mean(dim=(2, 3)) / 255.0
        return torch.cat([x, torch.ones(len(x), 1)], dim=1)

    def act(self, obs, info):
        self.valid = info["valid"]
        return (self._x(obs) @ self.w > 0).long().numpy()

    def learn(self, obs, action, reward, next_obs, terminated, truncated, info):
        if "target" in info:
            v = self.valid
            err = (torch.as_tensor(info["target"])[:v] - torch.as_tensor(action)[:v]).float()
            self.w += 0.1 * err @ self._x(obs)[:v]
        elif self.cheat:  # learns on a test batch: the runner must catch it
            self.w += 0.01

    def parameters(self):
        return [self.w]


def test_run_end_to_end_on_the_smoke_tier():
    result = lop_bench.run(CIN, lambda *a, **k: PixelPerceptron(), tier="smoke", seed=0,
                           progress=False)
    assert result.env_id == CIN and result.tier == "smoke" and len(result.per_task) == 3
    assert all(0.0 <= s <= 1.0 for s in result.per_task)
    assert result.data["dataset_fingerprint"].startswith("sha256:")
    with pytest.raises(PhaseViolationError, match="test"):
        lop_bench.run(CIN, lambda *a, **k: PixelPerceptron(cheat=True), tier="smoke", seed=0,
                      progress=False)


# -- the reference ConvNet agents through the real runner ---------------------------------
AGENTS = ("backprop", "l2", "shrink_perturb", "continual_backprop")
PAPER_HPARAMS = {
    "backprop": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
    "l2": {"lr": 0.03, "momentum": 0.9, "weight_decay": 3e-6},
    "shrink_perturb": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-5, "noise_std": 1e-5},
    "continual_backprop": {"lr": 0.01, "momentum": 0.9, "replacement_rate": 3e-4,
                           "maturity_threshold": 100},
}


def test_reference_agents_run_under_the_runners_test_phase_check(root):
    """Each reference agent through ``lop_bench.run``, which fails a run whose agent changes a
    parameter or buffer inside a test phase: all pass, with the paper's hyperparameters."""
    for name in AGENTS:
        r = lop_bench.run(CIN, name, tier="smoke", seed=1, progress=False,
                          env_kwargs={"root": str(root)})
        d = r.data
        assert len(r.per_task) == 3 and all(0.0 <= a <= 1.0 for a in r.per_task)
        assert d["agent"]["preset"] == f"{name}/{CIN}/*"
        hp = d["agent"]["hparams"]
        assert {k: hp[k] for k in PAPER_HPARAMS[name]} == PAPER_HPARAMS[name]
        assert hp["arch"] == "convnet" and hp["reset_head"] is True
        assert d["diagnostics"]["tasks"] == [0, 1, 2]


def test_a_convnet_agent_that_learns_in_a_test_phase_fails_the_run(root):
    """The same check catches the ConvNet agent when a test batch moves its weights (an SGD
    step on the test batch with made-up labels) or only its buffers (continual backprop's
    utilities)."""
    from baselines import backprop, continual_backprop

    def cheating(module, what):
        def factory(*args, **kwargs):
            agent = module.make_agent(*args, **kwargs)
            learn = agent.learn

            def learn_also_on_test(obs, action, reward, next_obs, terminated, truncated, info):
                if "target" not in info and info["phase"] == "test" and not info["task_end"]:
                    if what == "weights":
                        info = {**info, "target": np.zeros(len(action), np.int64)}
                        agent._out, agent._feats = agent.net.forward_with_features(agent._input(obs))
                    else:
                        with torch.no_grad():
                            agent.gnt.utility[0].add_(1.0)
                learn(obs, action, reward, next_obs, terminated, truncated, info)

            agent.learn = learn_also_on_test
            return agent
        return factory

    for module, what in ((backprop, "weights"), (continual_backprop, "buffers")):
        with pytest.raises(PhaseViolationError, match="'test' phase of task 0"):
            lop_bench.run(CIN, cheating(module, what), tier="smoke", seed=0, progress=False,
                          env_kwargs={"root": str(root)})


def test_a_reference_run_is_bit_identical_on_cpu(root):
    from lop_bench.results import deterministic_part

    def once():
        return deterministic_part(lop_bench.run(
            CIN, "continual_backprop", tier="smoke", seed=2, progress=False,
            env_kwargs={"root": str(root)},
            agent_kwargs={"replacement_rate": 0.05, "maturity_threshold": 2}).data)

    a, b = once(), once()
    assert a == b and a["agent"]["hparams"]["replacement_rate"] == 0.05
