"""lop/IncrementalCIFAR100-v0 on a small fixture in torchvision's pickle layout (100 classes,
10 training and 5 test images each)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env

import lop_bench
from lop_bench.checkpoint import decode, encode
from lop_bench.envs.cifar_images import (
    MEAN,
    STD,
    augment_images,
    crop_images,
    flip_images,
    normalize_images,
    rotate_images,
)
from lop_bench.envs.incremental_cifar import TIERS, IncrementalCIFAR100Env
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
SMOKE_STEPS = 36
PADDED = {"num_blocks": 3}
"""A custom tier whose val/test phases end with a padded batch: 3 blocks of 2 classes, so
every val and test phase shows the 18 images of the tier's 6 classes in 5 batches of 4, the
last with 2 real rows (81 steps)."""
PADDED_STEPS = 81
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


def pixels(obs, valid):
    """The uint8 pixels of the first ``valid`` rows of un-augmented observations (the
    normalization inverted by nearest table value)."""
    lut = np.stack([(np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(m)) / np.float32(s)
                    for m, s in zip(MEAN, STD)])
    obs = np.asarray(obs)
    return [np.stack([np.abs(lut[c][None, None, :] - obs[r, c][..., None]).argmin(-1)
                      for c in range(3)]).astype(np.uint8) for r in range(valid)]


def true_labels(obs, valid):
    """Labels of un-augmented observations, found by looking their pixels up (an oracle that
    never reads the env's internals)."""
    out = np.zeros(len(obs), np.int64)
    for r, pix in enumerate(pixels(obs, valid)):
        out[r] = _KEY[pix.tobytes()]
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
    # the paper's block: 25 training steps per 5 classes; every val/test phase shows the
    # images of all 100 classes (5,000 / 10,000, padded to whole batches of 90)
    assert p.tier_classes == 100 and TIERS["cpu"].tier_classes == 20
    assert p.block_steps(0) == (25, 56, 112) and p.block_steps(19) == (500, 56, 112)
    assert p.num_steps == 200 * (25 * 210 + 20 * 56) + 20 * 112 == 1_276_240
    assert TIERS["cpu"].num_steps == 4 * (5 * 10 + 4 * 3) + 4 * 5 == 268
    assert TIERS["smoke"].num_steps == SMOKE_STEPS
    assert env.STREAM_REVISION == 3
    assert set(TIERS) == {"smoke", "cpu", "paper"}
    assert lop_bench.registration.stream_spec(CIFAR).reference_agents == (
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
    # block 0: 2 epochs of (3 train, 3 val), then 3 test; block 1: 2 x (6 train, 3 val), 3
    # test (every val/test phase shows the images of the tier's 4 classes: 12 rows)
    assert phases == "tttvvvtttvvvttt" + "ttttttvvvttttttvvvttt"
    for phase, _obs, info, _reward, after in trace:
        task = info["task"]
        assert np.array_equal(info["active_classes"], order[: 2 * (task + 1)])
        assert info["active_classes"].dtype == np.int64
        assert set(info) <= ALLOWED_KEYS and set(after) <= ALLOWED_KEYS
        if phase == "train":
            assert info["valid"] == 4 and after["target"].dtype == np.int64
            assert set(after["target"]) <= set(info["active_classes"])
    epochs = [(info["task"], info["epoch"], phase) for phase, _, info, *_ in trace]
    assert epochs[:15] == [(0, 0, "train")] * 3 + [(0, 0, "val")] * 3 + [(0, 1, "train")] * 3 + \
        [(0, 1, "val")] * 3 + [(0, 1, "test")] * 3
    # val_metrics once per epoch, task_metrics once per block, at the phases' last steps
    val_at = [i for i, t in enumerate(trace) if "val_metrics" in t[4]]
    end_at = [i for i, t in enumerate(trace) if t[4]["task_end"]]
    assert val_at == [5, 11, 23, 32] and end_at == [14, 35]
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
    tier = trace[-1][2]["active_classes"]  # the last block's: all the tier's 4 classes
    assert np.array_equal(tier, spawn_generators(1, ("class_order",))["class_order"].permutation(100)[:4])
    by_phase = {}
    for phase, obs, info, _reward, _after in trace:
        by_phase.setdefault((info["task"], phase, info["epoch"]), []).append(obs[: info["valid"]])
    # val and test: the images of all the tier's classes, block 0's (2 of the 4 classes
    # active) as block 1's (class by class in the seed's class order, then file order), in
    # the order drawn for the phase: purpose 3 keyed (block, epoch, phase 1 = val / 2 = test),
    # never grouped by class
    want_val = np.concatenate([norm(XTR[val_idx[c]]) for c in tier])
    want_test = np.concatenate([norm(XTE[TEST[c]]) for c in tier])
    for block in (0, 1):
        val = np.concatenate(by_phase[(block, "val", 0)])
        test = np.concatenate(by_phase[(block, "test", 1)])
        np.testing.assert_allclose(val, want_val[seeded_order(1, len(want_val), 3, block, 0, 1)],
                                   atol=1e-5)
        np.testing.assert_allclose(test, want_test[seeded_order(1, len(want_test), 3, block, 1, 2)],
                                   atol=1e-5)
        assert same_rows(val, want_val) and not np.allclose(val, want_val)
    # train: each epoch a fresh shuffle of exactly the active classes' training images
    active = trace[-1][2]["active_classes"]
    ep0, ep1 = (np.concatenate(by_phase[(1, "train", e)]) for e in (0, 1))
    want = np.concatenate([norm(XTR[TRAIN[c]]) for c in active])
    assert same_rows(ep0, want) and same_rows(ep1, want)
    assert not np.allclose(ep0, ep1)  # another order
    block0 = np.concatenate(by_phase[(0, "train", 0)])  # block 0: its 2 classes only
    assert same_rows(block0, np.concatenate([norm(XTR[TRAIN[c]]) for c in active[:2]]))


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
    # every pass (both blocks: all the tier's classes) shows the same images, un-augmented,
    # in another order
    passes = [np.concatenate([o[:v] for o, v in val[key]]) for key in sorted(val)]
    assert len(passes) == 4
    for i, first in enumerate(passes):
        for second in passes[i + 1:]:
            assert same_rows(first, second) and not np.array_equal(first, second)
    again = rollout(env_of(root), seed=2)
    for x, y in zip(trace, again):
        if x[0] != "train":
            assert np.array_equal(x[1], y[1])


def oracle(obs, info):
    """The true labels on val/test steps (anything on padded rows), zeros on train steps."""
    if info["phase"] == "train":
        return np.zeros(len(obs), np.int64)
    y = true_labels(obs, info["valid"])
    y[info["valid"]:] = 99 - y[0]  # padded rows: anything
    return y


def fixed_guess(pixels):
    """A predictor that is a deterministic function of an image (uint8 pixels): its true
    class when the pixel sum is not a multiple of 3, else the next class (active or not)."""
    c = _KEY[pixels.tobytes()]
    return c if int(pixels.astype(np.int64).sum()) % 3 else (c + 1) % 100


def fixed_predictor(obs, info):
    """:func:`fixed_guess` of each real row (its pixels recovered from the observation)."""
    y = np.zeros(len(obs), np.int64)
    if info["phase"] != "train":
        y[: info["valid"]] = [fixed_guess(pix) for pix in pixels(obs, info["valid"])]
    return y


def expected_accuracy(active, phase, val_per_class=3):
    """The accuracy of :func:`fixed_guess` over the active classes' validation or test images,
    by hand from the files: the score of a phase that showed only those images."""
    images = XTR if phase == "val" else XTE
    idx = first_per_class(YTR, 0, val_per_class) if phase == "val" else TEST
    hits = [fixed_guess(images[i]) == c for c in active for i in idx[c]]
    return sum(hits) / len(hits)


@pytest.mark.parametrize("overrides", [{}, PADDED], ids=["smoke", "padded"])
def test_scores_are_the_active_classes_rows_only(root, overrides):
    """Each phase shows every tier class's images; its score is what the same predictions
    get on the active classes' images alone (the score of stream revision 2)."""
    env = env_of(root, **overrides)
    trace = rollout(env, 3, fixed_predictor)
    phases = [(t[2], t[4]) for t in trace if "val_metrics" in t[4] or t[4]["task_end"]]
    assert len(phases) == 3 * env.num_tasks
    guessed = {"val": set(), "test": set()}
    for info, after in phases:
        phase = "val" if "val_metrics" in after else "test"
        score = after["val_metrics" if phase == "val" else "task_metrics"]["accuracy"]
        want = expected_accuracy(info["active_classes"], phase)
        assert score == pytest.approx(want, abs=1e-12), (info["task"], phase)
        guessed[phase].add(round(want, 9))
    assert any(0 < w < 1 for w in guessed["val"] | guessed["test"])  # neither all nor none
    # Scored rows only: right on every row scores 1 (the tier's other classes' rows, answered
    # right as well, count neither way), and an inactive class on every row scores 0.
    trace = rollout(env, 3, oracle)
    assert [t[4]["val_metrics"]["accuracy"] for t in trace if "val_metrics" in t[4]] == \
        [1.0] * 2 * env.num_tasks
    assert [t[4]["task_metrics"]["accuracy"] for t in trace if t[4]["task_end"]] == \
        [1.0] * env.num_tasks

    def inactive(obs, info):
        others = np.setdiff1d(np.arange(100), info["active_classes"])
        return np.resize(others, len(obs)).astype(np.int64)

    trace = rollout(env, 3, inactive)
    assert all(t[4]["val_metrics"]["accuracy"] == 0.0 for t in trace if "val_metrics" in t[4])
    assert all(t[4]["task_metrics"]["accuracy"] == 0.0 for t in trace if t[4]["task_end"])


def test_the_padded_rows_are_zeros_and_never_scored(root):
    env = env_of(root, **PADDED)
    assert env.total_steps == PADDED_STEPS

    def wrong_on_padding(obs, info):  # right on the real rows, an active class on the padding
        y = oracle(obs, info)
        y[info["valid"]:] = info["active_classes"][0]
        return y

    trace = rollout(env, 3, wrong_on_padding)
    assert len(trace) == PADDED_STEPS
    padded = [t for t in trace if t[0] != "train" and t[2]["valid"] < 4]
    # every val phase (3 blocks x 2 epochs) and test phase (3): 18 images in 5 batches, the
    # last with 2 real rows and 2 rows of zeros
    assert len(padded) == 9 and all(t[2]["valid"] == 2 for t in padded)
    assert all(not t[1][2:].any() and t[1][:2].any() for t in padded)
    assert all(t[2]["valid"] == 4 for t in trace if t[0] == "train")
    assert {t[4]["val_metrics"]["accuracy"] for t in trace if "val_metrics" in t[4]} == {1.0}
    assert {t[4]["task_metrics"]["accuracy"] for t in trace if t[4]["task_end"]} == {1.0}


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
@pytest.mark.parametrize("overrides", [{}, PADDED], ids=["smoke", "padded"])
def test_device_returns_tensors_equal_to_the_numpy_stream(root, overrides):
    a = env_of(root, device="cpu", **overrides)
    b = env_of(root, **overrides)
    oa, ia = a.reset(seed=3)
    ob, ib = b.reset(seed=3)
    assert isinstance(oa, torch.Tensor) and oa.dtype == torch.float32 and isinstance(ob, np.ndarray)
    scores = []
    for _ in range(b.total_steps):
        assert np.array_equal(oa.numpy(), ob)
        act = fixed_predictor(ob, ib)  # right on about 2 rows in 3: scores between 0 and 1
        oa, ra, *_, ia = a.step(torch.from_numpy(act))
        ob, rb, *_, ib = b.step(act)
        assert ra == rb and ia.keys() == ib.keys()
        # the same scores of the (shuffled) val/test phases, the same probes
        assert ia.get("val_metrics") == ib.get("val_metrics")
        assert ia.get("task_metrics") == ib.get("task_metrics")
        scores += [m["accuracy"] for m in (ib.get("val_metrics"), ib.get("task_metrics")) if m]
        assert np.array_equal(a.probe().numpy(), b.probe())
        if "target" in ia:
            assert isinstance(ia["target"], torch.Tensor) and np.array_equal(ia["target"].numpy(), ib["target"])
        if ib["stream_done"]:
            break
    assert ib["stream_done"] and len(scores) == 3 * b.num_tasks and any(0 < v < 1 for v in scores)
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


@pytest.mark.parametrize(("overrides", "cut"), [
    *(({}, cut) for cut in (2, 3, 4, 6, 12, 13, 14, 15, 22, 34)),
    # the padded tier: block 0 is 3 train, 5 val, 3 train, 5 val, 5 test steps
    *((PADDED, cut) for cut in (7, 8, 15, 16, 20, 21, 78, 80)),
], ids=lambda v: ("padded" if v else "smoke") if isinstance(v, dict) else str(v))
def test_state_dict_resumes_bit_for_bit(root, overrides, cut):
    """Cut inside a train, val and test phase (at a padded batch or not), and at phase and
    task changes."""
    env = env_of(root, **overrides)
    obs, info = env.reset(seed=11)
    for _ in range(cut):  # right on about 2 val/test rows in 3: the running count matters
        obs, *_, info = env.step(fixed_predictor(obs, info))
    # what a checkpoint file holds: numpy arrays as tagged tensors, through torch.save
    state = decode(encode(env.state_dict()))
    probe = env.probe()
    want = finish(env, obs, info)
    fresh = env_of(root, **overrides)
    fresh.reset(seed=0)
    fresh.load_state_dict(state)
    assert np.array_equal(fresh.probe(), probe)
    got = finish(fresh, obs, info)
    assert len(got) == len(want) == env.total_steps - cut
    assert any(0 < i.get("val_metrics", i.get("task_metrics", {})).get("accuracy", 0) < 1
               for *_, i in want)
    for (o1, r1, *_, i1), (o2, r2, *_, i2) in zip(want, got):
        assert np.array_equal(o1, o2) and r1 == r2 and i1.keys() == i2.keys()
        for k in i1:
            if isinstance(i1[k], dict):
                assert i1[k] == i2[k]
            else:
                assert np.array_equal(i1[k], i2[k])


def finish(env, obs, info):
    """Step to the stream's end with :func:`fixed_predictor` from ``(obs, info)``; the
    transitions."""
    out = []
    while True:
        out.append(env.step(fixed_predictor(obs, info)))
        obs, *_, info = out[-1]
        if info["stream_done"]:
            return out


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
    assert d["env_id"] == CIFAR and d["steps"] == SMOKE_STEPS == TIERS["smoke"].num_steps and len(d["per_task"]) == 2
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
