"""lop/IncrementalCIFAR100-v0 on a small fixture in torchvision's pickle layout (100 classes,
10 training and 5 test images each)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env

import lop_bench
from lop_bench.checkpoint import decode, encode
from lop_bench.envs.incremental_cifar import (
    MEAN,
    STD,
    TIERS,
    IncrementalCIFAR100Env,
    augment_images,
    crop_images,
    flip_images,
    normalize_images,
    rotate_images,
)
from lop_bench.errors import (
    CheckpointError,
    InvalidActionError,
    InvalidConfigError,
    PhaseViolationError,
    StreamFinishedError,
)
from lop_bench.seeding import spawn_generators
from tests.cifar_fixtures import fake_splits, write_torchvision

CIFAR = "lop/IncrementalCIFAR100-v0"
(XTR, YTR), (XTE, YTE) = fake_splits(10, 5)
SMOKE_STEPS = 33
ALLOWED_KEYS = {"target", "task_end", "task_metrics", "val_metrics",
                "task", "phase", "epoch", "active_classes", "valid", "stream_done"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_torchvision(tmp_path_factory.mktemp("cifar"), (XTR, YTR), (XTE, YTE))


def env_of(root, tier="smoke", **kw):
    return IncrementalCIFAR100Env(tier, root=root, **kw)


def norm(x):
    """The reference normalization: (x / 255 - mean) / std per channel, in float64."""
    x = x.astype(np.float64) / 255.0
    return (x - np.array(MEAN).reshape(3, 1, 1)) / np.array(STD).reshape(3, 1, 1)


def first_per_class(labels, start, count):
    """Indices of images start..start+count-1 of each class, in file order: {class: [...]}."""
    return {c: np.flatnonzero(labels == c)[start:start + count] for c in range(100)}


VAL = first_per_class(YTR, 0, 3)
TRAIN = first_per_class(YTR, 3, 6)
TEST = first_per_class(YTE, 0, 3)
_KEY = {XTR[i].tobytes(): int(YTR[i]) for i in range(len(YTR))}
_KEY.update({XTE[i].tobytes(): int(YTE[i]) for i in range(len(YTE))})


def true_labels(obs, valid):
    """Labels of un-augmented observations, found by looking their pixels up (an oracle that
    never reads the env's internals)."""
    lut = np.stack([(np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(m)) / np.float32(s)
                    for m, s in zip(MEAN, STD)])
    out = np.zeros(len(obs), np.int64)
    for r in range(valid):
        pix = np.stack([np.abs(lut[c][None, None, :] - obs[r, c][..., None]).argmin(-1) for c in range(3)])
        out[r] = _KEY[pix.astype(np.uint8).tobytes()]
    return out


def seeded_order(seed, n, *key):
    """The protocol's permutation of ``n`` rows for a position: purpose ``key[0]`` of the
    seed (1: shuffle, 3: val/test order, 4: probe), keyed by the rest of ``key``."""
    ss = np.random.SeedSequence(seed, spawn_key=key)
    return np.random.Generator(np.random.PCG64(ss)).permutation(n)


def same_rows(a, b, atol=1e-5):
    """Whether ``a`` and ``b`` hold the same images (within atol), in any order."""
    if a.shape != b.shape:
        return False
    dist = np.abs(a.reshape(len(a), 1, -1) - b.reshape(1, len(b), -1)).max(-1)
    match = dist.argmin(1)
    return bool((dist.min(1) < atol).all() and len(set(match.tolist())) == len(b))


def rollout(env, seed, predict=None):
    """Run the whole stream: a list of (phase, obs, context info) before each step and
    (reward, info) after it."""
    predict = predict or (lambda obs, info: np.zeros(len(obs), np.int64))
    obs, info = env.reset(seed=seed)
    trace = []
    while True:
        action = predict(obs, info)
        before = (info["phase"], np.array(obs, copy=True), info)
        obs, reward, term, trunc, info = env.step(action)
        assert term is False and trunc is False
        trace.append((*before, reward, info))
        if info["stream_done"]:
            return trace


# -- API ---------------------------------------------------------------------------------
def test_check_env_passes_wrapped_and_unwrapped(root):
    check_env(env_of(root), skip_render_check=True)
    env = lop_bench.make(CIFAR, tier="smoke", root=root)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.spec.kwargs["tier"] == "smoke" and env.unwrapped.tier == "smoke"


def test_spaces_tiers_and_paper_protocol(root):
    env = env_of(root)
    assert env.observation_space.shape == (4, 3, 32, 32) and env.observation_space.dtype == np.float32
    assert env.observation_space.low.min() == pytest.approx(-0.4865 / 0.2564, abs=1e-5)
    assert env.observation_space.high.max() == pytest.approx((1 - 0.4409) / 0.2762, abs=1e-5)
    assert np.array_equal(env.action_space.nvec, [100] * 4)
    assert env.METRIC == "accuracy" and env.HIGHER_IS_BETTER
    assert env.num_tasks == 2 and env.total_steps == SMOKE_STEPS
    p = TIERS["paper"]
    assert (p.classes_per_block, p.num_blocks, p.epochs_per_block) == (5, 20, 200)
    assert (p.train_per_class, p.val_per_class, p.test_per_class, p.batch_size) == (450, 50, 100, 90)
    assert p.held_out_per_class == 50
    # the smaller tiers' images are a subset of the paper's split: validation among the
    # first 50 of each class, training after them
    c = TIERS["cpu"]
    assert c.held_out_per_class == 50 and c.val_per_class <= 50
    assert p.augment and p.num_seeds == 15 and TIERS["cpu"].num_seeds == 5
    # the paper's block: 25 training steps per 5 classes, validation padded to whole batches
    assert p.block_steps(0) == (25, 3, 6) and p.block_steps(19) == (500, 56, 112)
    assert set(TIERS) == {"smoke", "cpu", "paper"}
    assert lop_bench.registration.REFERENCE_AGENTS[CIFAR] == (
        "backprop", "shrink_perturb", "continual_backprop", "head_reset", "from_scratch")


def test_config_errors_are_named(root):
    with pytest.raises(InvalidConfigError, match="must divide classes_per_block x train_per_class"):
        env_of(root, batch_size=5)
    with pytest.raises(InvalidConfigError, match="105 classes"):
        env_of(root, classes_per_block=21, num_blocks=5)
    with pytest.raises(InvalidConfigError, match="unknown .* field 'epochs'"):
        env_of(root, epochs=3)
    # the data must hold what the tier needs
    with pytest.raises(InvalidConfigError, match="needs 140 training images of every class, but class"):
        env_of(root, "cpu")  # 50 held out + 90 for training
    with pytest.raises(InvalidConfigError, match="val_per_class .4. must be at most held_out_per_class .3."):
        env_of(root, val_per_class=4)
    with pytest.raises(InvalidConfigError, match="needs 6 test images"):
        env_of(root, test_per_class=6)
    with pytest.raises(InvalidConfigError, match="device 'nope'"):
        env_of(root, device="nope")


# -- the stream's structure ----------------------------------------------------------------
def test_phases_epochs_tasks_and_active_classes(root):
    env = env_of(root)
    trace = rollout(env, seed=4)
    assert len(trace) == SMOKE_STEPS == env.total_steps
    order = spawn_generators(4, ("class_order",))["class_order"].permutation(100)
    phases = "".join(p[0] for p, *_ in trace)
    # block 0: 2 epochs of (3 train, 2 val), then 2 test; block 1: 2 x (6 train, 3 val), 3 test
    assert phases == "tttvvtttvvtt" + "ttttttvvvttttttvvvttt"
    for phase, _obs, info, _reward, after in trace:
        task = info["task"]
        assert np.array_equal(info["active_classes"], order[: 2 * (task + 1)])
        assert info["active_classes"].dtype == np.int64
        assert set(info) <= ALLOWED_KEYS and set(after) <= ALLOWED_KEYS
        if phase == "train":
            assert info["valid"] == 4 and after["target"].dtype == np.int64
            assert set(after["target"]) <= set(info["active_classes"])
    epochs = [(info["task"], info["epoch"], phase) for phase, _, info, *_ in trace]
    assert epochs[:12] == [(0, 0, "train")] * 3 + [(0, 0, "val")] * 2 + [(0, 1, "train")] * 3 + \
        [(0, 1, "val")] * 2 + [(0, 1, "test")] * 2
    # val_metrics once per epoch, task_metrics once per block, at the phases' last steps
    val_at = [i for i, t in enumerate(trace) if "val_metrics" in t[4]]
    end_at = [i for i, t in enumerate(trace) if t[4]["task_end"]]
    assert val_at == [4, 9, 20, 29] and end_at == [11, 32]
    assert all("task_metrics" in trace[i][4] for i in end_at)
    assert trace[-1][4]["stream_done"] and not any(t[4]["stream_done"] for t in trace[:-1])
    with pytest.raises(StreamFinishedError, match="has ended"):
        env.step(np.zeros(4, np.int64))


def test_class_order_is_the_seeds_and_the_stream_is_deterministic(root):
    a, b, c = (rollout(env_of(root), s) for s in (7, 7, 8))
    for x, y in zip(a, b):
        assert np.array_equal(x[1], y[1]) and x[3] == y[3]
        assert np.array_equal(x[2]["active_classes"], y[2]["active_classes"])
    assert not np.array_equal(a[-1][2]["active_classes"], c[-1][2]["active_classes"])


@pytest.mark.parametrize("val_per_class", [3, 2])
def test_the_split_is_the_first_images_of_each_class_in_file_order(root, val_per_class):
    env = env_of(root, augment=False, val_per_class=val_per_class)  # 3 held out
    val_idx = first_per_class(YTR, 0, val_per_class)  # with 2, image 2 of a class is in neither
    trace = rollout(env, seed=1)
    active = trace[-1][2]["active_classes"]
    by_phase = {}
    for phase, obs, info, _reward, _after in trace:
        if info["task"] == 1:
            by_phase.setdefault((phase, info["epoch"]), []).append(obs[: info["valid"]])
    val = np.concatenate(by_phase[("val", 0)])
    test = np.concatenate(by_phase[("test", 1)])
    # val and test: the active classes' images (class by class in order of introduction,
    # then file order) in the order drawn for the phase: purpose 3 keyed (block, epoch,
    # phase 1 = val / 2 = test), never grouped by class
    want_val = np.concatenate([norm(XTR[val_idx[c]]) for c in active])
    want_test = np.concatenate([norm(XTE[TEST[c]]) for c in active])
    np.testing.assert_allclose(val, want_val[seeded_order(1, len(want_val), 3, 1, 0, 1)], atol=1e-5)
    np.testing.assert_allclose(test, want_test[seeded_order(1, len(want_test), 3, 1, 1, 2)], atol=1e-5)
    assert same_rows(val, want_val) and not np.allclose(val, want_val)
    # train: each epoch a fresh shuffle of exactly the active classes' training images
    ep0, ep1 = (np.concatenate(by_phase[("train", e)]) for e in (0, 1))
    want = np.concatenate([norm(XTR[TRAIN[c]]) for c in active])
    assert same_rows(ep0, want) and same_rows(ep1, want)
    assert not np.allclose(ep0, ep1)  # another order


def test_val_and_test_are_never_augmented_reshuffled_every_pass_and_unlabelled(root):
    env = env_of(root)
    trace = rollout(env, seed=2)
    val = {}
    for phase, obs, info, reward, after in trace:
        if phase in ("val", "test"):
            assert "target" not in after and reward == 0
            assert set(after) <= ALLOWED_KEYS - {"target"}
            # no key of the step's info reveals a label (only scores and context)
            assert all(np.ndim(v) == 0 or k == "active_classes" for k, v in after.items()
                       if k not in ("task_metrics", "val_metrics"))
            if phase == "val":
                val.setdefault((info["task"], info["epoch"]), []).append((obs, info["valid"]))
    for task in (0, 1):  # the same images (un-augmented), in another order every pass
        first, second = (np.concatenate([o[:v] for o, v in val[(task, e)]]) for e in (0, 1))
        assert same_rows(first, second) and not np.array_equal(first, second)
    again = rollout(env_of(root), seed=2)
    for x, y in zip(trace, again):
        if x[0] != "train":
            assert np.array_equal(x[1], y[1])


def test_scores_count_real_rows_only_and_inactive_classes_are_wrong(root):
    env = env_of(root)

    def oracle(obs, info):
        if info["phase"] == "train":
            return np.zeros(4, np.int64)
        y = true_labels(obs, info["valid"])
        y[info["valid"]:] = 99 - y[0]  # padded rows: anything
        return y

    trace = rollout(env, 3, oracle)
    scores = [t[4]["val_metrics"]["accuracy"] for t in trace if "val_metrics" in t[4]]
    assert scores == [1.0] * 4
    assert [t[4]["task_metrics"]["accuracy"] for t in trace if t[4]["task_end"]] == [1.0, 1.0]
    padded = [t for t in trace if t[0] != "train" and t[2]["valid"] < 4]
    # block 0: 6 val and 6 test images in batches of 4: two padded val steps, one test step
    assert len(padded) == 3 and all(not t[1][t[2]["valid"]:].any() for t in padded)  # zero rows

    def wrong_on_inactive(obs, info):
        """Right on the first row of each batch, an inactive class on the others."""
        y = oracle(obs, info)
        inactive = np.setdiff1d(np.arange(100), info["active_classes"])
        y[1:] = inactive[: len(y) - 1]
        return y

    trace = rollout(env, 3, wrong_on_inactive)
    # block 0: 6 val images in batches of 4 + 2 -> 2 right; 6 test images, 2 right
    assert trace[4][4]["val_metrics"]["accuracy"] == pytest.approx(2 / 6)
    assert trace[11][4]["task_metrics"]["accuracy"] == pytest.approx(2 / 6)
    # block 1: 12 val images in 3 batches, 12 test images in 3 batches: 3 right each
    assert trace[20][4]["val_metrics"]["accuracy"] == pytest.approx(3 / 12)
    assert trace[32][4]["task_metrics"]["accuracy"] == pytest.approx(3 / 12)


def test_train_reward_is_the_fraction_correct_and_targets_are_the_labels(root):
    env = env_of(root, augment=False)

    def half_right(obs, info):
        if info["phase"] != "train":
            return np.zeros(4, np.int64)
        y = true_labels(obs, 4)
        y[:2] = (y[:2] + 1) % 100
        return y

    trace = rollout(env, 5, half_right)
    for phase, obs, _info, reward, after in trace:
        if phase == "train":
            assert reward == 0.5
            assert np.array_equal(after["target"], true_labels(obs, 4))


def test_invalid_actions_are_named(root):
    env = env_of(root)
    env.reset(seed=0)
    for bad, match in [
        (np.zeros(3, np.int64), r"shape \(4,\)"),
        (np.zeros(4, np.float32), "integer array"),
        (np.array([0, 1, 2, 100]), r"0\.\.99, got values from 0 to 100"),
        (np.array([-1, 1, 2, 3]), "0..99"),
        ([0, 1, 2, 3], "numpy integer array"),
    ]:
        with pytest.raises(InvalidActionError, match=match):
            env.step(bad)
    env.step(torch.tensor([0, 1, 2, 3]))  # a tensor of labels is fine


def test_reset_without_seed_keeps_the_position(root):
    env = env_of(root)
    first, _ = env.reset(seed=5)
    for _ in range(6):
        obs, *_, info = env.step(np.zeros(4, np.int64))
    again, info2 = env.reset()
    assert np.array_equal(again, obs) and info2["phase"] == info["phase"] == "train"
    assert info2["epoch"] == 1
    restarted, info = env.reset(seed=5)
    assert np.array_equal(restarted, first) and info["task"] == 0 and info["epoch"] == 0


# -- augmentation ----------------------------------------------------------------------------
def test_augmentation_is_deterministic_per_seed_and_differs_between_epochs(root):
    a, b, c = (rollout(env_of(root), s) for s in (6, 6, 9))
    plain = rollout(env_of(root, augment=False), 6)
    train = [i for i, t in enumerate(a) if t[0] == "train"]
    assert all(np.array_equal(a[i][1], b[i][1]) for i in train)
    assert not all(np.array_equal(a[i][1], plain[i][1]) for i in train)
    # the same images (augment=False shows them) come back augmented differently each epoch
    ep = {e: np.concatenate([t[1] for t in a if t[0] == "train" and t[2]["task"] == 0
                             and t[2]["epoch"] == e]) for e in (0, 1)}
    assert not same_rows(ep[0], ep[1])
    # every augmented value is a normalized pixel value or 0 (nearest-neighbour, zero fill)
    lut = normalize_images(torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256))
    for i in train:
        x = torch.from_numpy(a[i][1])
        for ch in range(3):
            vals = torch.unique(x[:, ch])
            assert torch.isin(vals, torch.cat([lut[0, ch, 0], torch.zeros(1)])).all()


def test_flip_mirrors_the_images_whose_mask_is_set():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    out = flip_images(x, torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    assert out[0, 1, 5, 0] == x[0, 1, 5, 31]


def test_crop_cuts_windows_of_the_reflect_padded_image():
    x = torch.randn(3, 3, 32, 32)
    out = crop_images(x, torch.tensor([4, 0, 8]), torch.tensor([4, 0, 8]))
    assert torch.equal(out[0], x[0])  # offset (4, 4): the image itself
    assert torch.equal(out[1, :, 4:, 4:], x[1, :, :28, :28])  # (0, 0): shifted down-right
    assert torch.equal(out[1, :, 0, 4:], x[1, :, 4, :28])  # reflect: padded row 0 = row 4
    assert torch.equal(out[1, :, 4:, 0], x[1, :, :28, 4])
    assert torch.equal(out[2, :, :28, :28], x[2, :, 4:, 4:])
    # random offsets: every crop is a window of the padded image, offsets in 0..8
    gen = torch.Generator().manual_seed(0)
    top, left = torch.randint(0, 9, (50,), generator=gen), torch.randint(0, 9, (50,), generator=gen)
    xs = torch.randn(50, 3, 32, 32, generator=gen)
    out = crop_images(xs, top, left)
    padded = F.pad(xs, (4, 4, 4, 4), mode="reflect")
    for i in range(50):
        t, l_ = int(top[i]), int(left[i])
        assert torch.equal(out[i], padded[i, :, t:t + 32, l_:l_ + 32])


def test_rotation_is_torchvisions_rotate_for_a_batch_of_angles():
    TF = pytest.importorskip("torchvision.transforms.functional")
    from torchvision.transforms import InterpolationMode

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 32, 32, generator=gen)
    angles = torch.cat([torch.tensor([0.0, 15.0, 90.0]), torch.rand(9, generator=gen) * 15])
    out = rotate_images(x, angles)
    assert torch.equal(out[0], x[0])  # 0 degrees: the identity
    assert torch.equal(out[2], torch.rot90(x[2], 1, (-2, -1)))  # counter-clockwise
    for i, a in enumerate(angles.tolist()):
        ref = TF.rotate(x[i:i + 1], a, interpolation=InterpolationMode.NEAREST, fill=0)
        assert torch.equal(out[i:i + 1], ref)


def test_augment_draws_flips_offsets_then_angles_from_the_generator():
    x = normalize_images(torch.from_numpy(XTR[:16]))
    out = augment_images(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    flip = torch.rand(16, generator=g) < 0.5
    top, left = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    angle = torch.empty(16).uniform_(0, 15, generator=g)
    assert torch.equal(out, rotate_images(crop_images(flip_images(x, flip), top, left), angle))
    assert torch.equal(augment_images(x, torch.Generator().manual_seed(3)), out)
    assert not torch.equal(augment_images(x, torch.Generator().manual_seed(4)), out)


def test_normalization_is_the_papers_mean_and_std():
    x = torch.from_numpy(XTR[:5])
    np.testing.assert_allclose(normalize_images(x).numpy(), norm(XTR[:5]), atol=1e-6)


# -- device, probe, checkpoints --------------------------------------------------------------
def test_device_returns_tensors_equal_to_the_numpy_stream(root):
    a = env_of(root, device="cpu")
    b = env_of(root)
    oa, ia = a.reset(seed=3)
    ob, ib = b.reset(seed=3)
    assert isinstance(oa, torch.Tensor) and oa.dtype == torch.float32 and isinstance(ob, np.ndarray)
    for _ in range(SMOKE_STEPS):
        assert np.array_equal(oa.numpy(), ob)
        act = np.arange(4, dtype=np.int64)
        oa, ra, *_, ia = a.step(torch.from_numpy(act))
        ob, rb, *_, ib = b.step(act)
        assert ra == rb and ia.keys() == ib.keys()
        # the same scores of the (shuffled) val/test phases, the same probes
        assert ia.get("val_metrics") == ib.get("val_metrics")
        assert ia.get("task_metrics") == ib.get("task_metrics")
        assert np.array_equal(a.probe().numpy(), b.probe())
        if "target" in ia:
            assert isinstance(ia["target"], torch.Tensor) and np.array_equal(ia["target"].numpy(), ib["target"])
        if ib["stream_done"]:
            break
    assert isinstance(a.probe(), torch.Tensor)


def test_probe_is_training_images_already_trained_on_shuffled_and_draws_nothing(root):
    """Block 0: its own classes' training images; block k: those of the classes active in
    block k - 1; ``probe_size`` of them (8 in smoke), drawn by purpose 4 keyed by the block,
    un-augmented; never a validation or test image."""
    env = env_of(root)
    _, info = env.reset(seed=0)
    trained = info["active_classes"]
    held_out = np.concatenate([norm(XTR[VAL[c]]) for c in range(100)] +
                              [norm(XTE[TEST[c]]) for c in range(100)])
    for block in (0, 1):
        train = np.concatenate([norm(XTR[TRAIN[c]]) for c in trained])
        p = env.probe()
        assert p.shape == (8, 3, 32, 32) and p.dtype == np.float32
        np.testing.assert_allclose(p, train[seeded_order(0, len(train), 4, block)[:8]], atol=1e-5)
        assert np.array_equal(env.probe(3), p[:3])
        assert np.abs(p[:, None] - held_out[None]).reshape(8, len(held_out), -1).max(-1).min() > 1e-3
        trained = info["active_classes"]
        while info["task"] == block and not info["stream_done"]:
            *_, info = env.step(np.zeros(4, np.int64))
    with pytest.raises(InvalidConfigError, match="probe size must be a positive integer"):
        env.probe(-1)
    quiet = rollout(env_of(root), 0)
    probing = env_of(root)  # probed before every step of its own stream
    probed = rollout(probing, 0, lambda obs, info: (probing.probe(), np.zeros(4, np.int64))[1])
    assert len(quiet) == len(probed)
    assert all(np.array_equal(x[1], y[1]) and x[3] == y[3] for x, y in zip(quiet, probed))


@pytest.mark.parametrize("cut", [2, 3, 4, 5, 10, 11, 12, 20, 30])
def test_state_dict_resumes_bit_for_bit(root, cut):
    """Cut inside a train, val (padded or not) and test phase, and at phase/task changes."""
    rng = np.random.default_rng(cut)
    actions = [rng.integers(0, 100, 4) for _ in range(SMOKE_STEPS)]
    env = env_of(root)
    env.reset(seed=11)
    for a in actions[:cut]:
        env.step(a)
    # what a checkpoint file holds: numpy arrays as tagged tensors, through torch.save
    state = decode(encode(env.state_dict()))
    probe = env.probe()
    want = [env.step(a) for a in actions[cut:]]
    fresh = env_of(root)
    fresh.reset(seed=0)
    fresh.load_state_dict(state)
    assert np.array_equal(fresh.probe(), probe)
    got = [fresh.step(a) for a in actions[cut:]]
    for (o1, r1, *_, i1), (o2, r2, *_, i2) in zip(want, got):
        assert np.array_equal(o1, o2) and r1 == r2 and i1.keys() == i2.keys()
        for k in i1:
            if isinstance(i1[k], dict):
                assert i1[k] == i2[k]
            else:
                assert np.array_equal(i1[k], i2[k])


def test_a_foreign_state_is_refused(root):
    env = env_of(root)
    env.reset(seed=1)
    state = env.state_dict()
    with pytest.raises(CheckpointError, match="not a state"):
        env.load_state_dict({"seed": 1})
    with pytest.raises(CheckpointError, match="outside this tier"):
        env.load_state_dict({**state, "block": 5})
    with pytest.raises(CheckpointError, match="class order"):
        env.load_state_dict({**state, "class_order": state["class_order"][::-1].copy()})


# -- end to end ----------------------------------------------------------------------------
class TinyAgent:
    """A linear classifier on 4x4-pooled pixels, restricted to the active classes; learns
    on train steps only (eval phases: no update, so the runner's check passes)."""

    def __init__(self, seed, lr=0.1):
        gen = torch.Generator().manual_seed(seed)
        self.w = (torch.randn(3 * 8 * 8, 100, generator=gen) * 0.01).requires_grad_()
        self.b = torch.zeros(100, requires_grad=True)
        self.lr = lr
        self.hparams, self.preset = {"lr": lr}, None

    def _logits(self, obs, active):
        x = F.avg_pool2d(torch.as_tensor(obs), 4).flatten(1)
        mask = torch.full((100,), float("-inf"))
        mask[torch.as_tensor(active)] = 0
        return x @ self.w + self.b + mask

    def act(self, obs, info):
        with torch.no_grad():
            return self._logits(obs, info["active_classes"]).argmax(1).numpy()

    def learn(self, obs, action, reward, next_obs, terminated, truncated, info):
        if "target" not in info:
            return
        loss = F.cross_entropy(self._logits(obs, np.unique(info["target"])), torch.as_tensor(info["target"]))
        gw, gb = torch.autograd.grad(loss, [self.w, self.b])
        with torch.no_grad():
            self.w -= self.lr * gw
            self.b -= self.lr * gb

    def parameters(self):
        return [self.w, self.b]

    def features(self, x):
        return [F.avg_pool2d(torch.as_tensor(x), 4).flatten(1)]


class CheatingTinyAgent(TinyAgent):
    """Also learns on val/test steps (from the rewardless phase): the runner must fail it."""

    def learn(self, obs, action, reward, next_obs, terminated, truncated, info):
        with torch.no_grad():
            self.b += 0.01


def make_tiny(env_spec, observation_space, action_space, seed, device, lr=0.1):
    return TinyAgent(seed, lr)


def make_cheater(env_spec, observation_space, action_space, seed, device):
    return CheatingTinyAgent(seed)


def test_run_end_to_end_on_the_smoke_tier():
    r = lop_bench.run(CIFAR, make_tiny, tier="smoke", seed=1, progress=False)
    again = lop_bench.run(CIFAR, make_tiny, tier="smoke", seed=1, progress=False)
    d = r.data
    assert d["env_id"] == CIFAR and d["steps"] == SMOKE_STEPS and len(d["per_task"]) == 2
    assert all(0.0 <= v <= 1.0 for v in d["per_task"])
    assert d["per_task"] == again.data["per_task"] and d["val_metrics"] == again.data["val_metrics"]
    assert len(d["val_metrics"]) == 4 and [v["task"] for v in d["val_metrics"]] == [0, 0, 1, 1]
    assert d["dataset_fingerprint"].startswith("sha256:")
    assert d["diagnostics"]["tasks"] == [0, 1]
    # a hand-written loop with the same agent gives the same curve
    env = lop_bench.make(CIFAR, tier="smoke").unwrapped
    agent = TinyAgent(1)
    obs, info = env.reset(seed=1)
    curve = []
    while True:
        action = agent.act(obs, info)
        nxt, reward, term, trunc, info = env.step(action)
        agent.learn(obs, action, reward, nxt, term, trunc, info)
        if info["task_end"]:
            curve.append(info["task_metrics"]["accuracy"])
        if info["stream_done"]:
            break
        obs = nxt
    assert curve == d["per_task"]


def test_an_agent_that_updates_during_val_or_test_fails_the_run():
    with pytest.raises(PhaseViolationError, match="'val' phase of task 0"):
        lop_bench.run(CIFAR, make_cheater, tier="smoke", seed=0, progress=False)
