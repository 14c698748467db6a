"""The ResNet-18 agents of class-incremental CIFAR-100 (baselines/agents/incremental.py and the tables of baselines/<algorithm>.py).

They run here against a small stand-in of ``lop/IncrementalCIFAR100-v0`` that follows the
stream's protocol (phases, context keys, val_metrics, task_end, padding), with tiny images
and a narrow network so that the whole file runs in seconds.
"""

import dataclasses
import io
import types

import numpy as np
import pytest
import torch
from gymnasium import spaces

from baselines import backprop, continual_backprop, from_scratch, head_reset, shrink_perturb
from baselines.agents.incremental import IncrementalConfig, learning_rate, lr_milestone_epochs
from baselines.presets import INCREMENTAL_CIFAR
from lop_bench.errors import (
    InvalidActionError,
    InvalidConfigError,
    PhaseViolationError,
    VectorizationNotSupported,
)

FACTORIES = {
    "backprop": backprop.make_agent,
    "shrink_perturb": shrink_perturb.make_agent,
    "continual_backprop": continual_backprop.make_agent,
    "head_reset": head_reset.make_agent,
    "from_scratch": from_scratch.make_agent,
}
SMALL = {"width": 1 / 16}


class FakeIncrementalStream:
    """The protocol of lop/IncrementalCIFAR100-v0 on random 8x8 images.

    Per block: ``epochs`` x (``train_batches`` train steps, ``val_batches`` val steps), then
    ``test_batches`` test steps. ``val_accuracies`` (one per epoch, in order) replaces the
    measured validation accuracy. With ``pad=True`` each epoch's last train batch and the
    val/test phases' last batches have ``valid = batch - 2``.
    """

    def __init__(self, *, batch=6, size=8, blocks=2, classes_per_block=2, epochs=3,
                 train_batches=2, val_batches=1, test_batches=1, num_classes=10, seed=0,
                 val_accuracies=None, pad=False, tier="smoke"):
        self.batch, self.size, self.classes_per_block = batch, size, classes_per_block
        self.observation_space = spaces.Box(-np.inf, np.inf, (batch, 3, size, size), np.float32)
        self.action_space = spaces.MultiDiscrete([num_classes] * batch)
        self.spec = types.SimpleNamespace(
            id=INCREMENTAL_CIFAR, kwargs={"tier": tier, "epochs_per_block": epochs})
        rng = np.random.default_rng(seed)
        self.order = rng.permutation(num_classes)
        self.val_accuracies = list(val_accuracies or [])
        self.schedule = []
        for t in range(blocks):
            for e in range(epochs):
                for i in range(train_batches):
                    self.schedule.append(("train", t, e, pad and i == train_batches - 1))
                for i in range(val_batches):
                    self.schedule.append(("val", t, e, pad and i == val_batches - 1))
            for i in range(test_batches):
                self.schedule.append(("test", t, epochs - 1, pad and i == test_batches - 1))
        self.batches = []
        for _phase, t, _, padded in self.schedule:
            active = self.order[: (t + 1) * classes_per_block]
            labels = rng.choice(active, batch).astype(np.int64)
            images = rng.normal(size=(batch, 3, size, size)).astype(np.float32)
            images += labels[:, None, None, None].astype(np.float32) / num_classes
            valid = batch - 2 if padded else batch
            self.batches.append((images, labels, valid))

    def _context(self, k):
        phase, t, e, _ = self.schedule[k]
        return {"task": t, "phase": phase, "epoch": e,
                "active_classes": self.order[: (t + 1) * self.classes_per_block].copy(),
                "valid": self.batches[k][2], "stream_done": False}

    def reset(self):
        self.k, self._correct, self._count, self._val_epoch = 0, 0, 0, 0
        return self.batches[0][0], self._context(0)

    def step(self, action):
        phase = self.schedule[self.k][0]
        _, labels, valid = self.batches[self.k]
        correct = int((np.asarray(action)[:valid] == labels[:valid]).sum())
        info = {}
        if phase == "train":
            info["target"] = labels
        else:
            self._correct += correct
            self._count += valid
        last = self.k + 1 == len(self.schedule)
        if phase != "train" and (last or self.schedule[self.k + 1][0] != phase):
            acc = self._correct / self._count
            if phase == "val":
                if self._val_epoch < len(self.val_accuracies):
                    acc = self.val_accuracies[self._val_epoch]
                self._val_epoch += 1
                info["val_metrics"] = {"accuracy": acc}
            else:
                info["task_end"] = True
                info["task_metrics"] = {"accuracy": acc}
            self._correct, self._count = 0, 0
        info.setdefault("task_end", False)
        self.k += 1
        if last:
            info.update(self._context(self.k - 1), stream_done=True)
            return self.batches[self.k - 1][0], 0.0, False, False, info
        info.update(self._context(self.k))
        reward = correct / valid if phase == "train" else 0.0
        return self.batches[self.k][0], reward, False, False, info


def _agent(env, name="backprop", seed=0, **hp):
    return FACTORIES[name](env.spec, env.observation_space, env.action_space, seed, "cpu",
                           **{**SMALL, **hp})


def _tensors(agent):
    return [t.detach().clone() for t in [*agent.parameters(), *agent.buffers()]]


def _same(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def drive(agent, env, steps=None, start=None, on_learn=None):
    """The runner's loop with its phase check; returns (actions, (obs, info) to continue)."""
    obs, info = start if start is not None else env.reset()
    actions, snapshot, n = [], None, 0
    while steps is None or n < steps:
        action = agent.act(obs, info)
        actions.append(action)
        next_obs, reward, term, trunc, info = env.step(action)
        n += 1
        if snapshot is not None and (info["phase"] != snapshot[0] or info["stream_done"]):
            if not _same(_tensors(agent), snapshot[1]):
                raise PhaseViolationError(f"changed during {snapshot[0]}")
            snapshot = None
        if on_learn is not None:
            on_learn("before", agent, info)
        agent.learn(obs, action, reward, next_obs, term, trunc, info)
        if on_learn is not None:
            on_learn("after", agent, info)
        if info["stream_done"]:
            break
        if snapshot is None and info["phase"] in ("val", "test"):
            snapshot = (info["phase"], _tensors(agent))
        obs = next_obs
    return actions, (obs, info)


# -- config and presets ----------------------------------------------------------------------
def test_lr_schedule_values_at_given_epochs():
    cfg = IncrementalConfig(epochs_per_block=200)
    assert lr_milestone_epochs(cfg) == (60, 120, 160)
    expected = {0: 0.1, 59: 0.1, 60: 0.02, 119: 0.02, 120: 0.004, 159: 0.004, 160: 0.0008,
                199: 0.0008}
    for epoch, lr in expected.items():
        assert learning_rate(cfg, epoch) == pytest.approx(lr, rel=1e-12)
    short = dataclasses.replace(cfg, epochs_per_block=10)
    assert lr_milestone_epochs(short) == (3, 6, 8)
    assert [round(learning_rate(short, e), 10) for e in range(10)] == [
        0.1, 0.1, 0.1, 0.02, 0.02, 0.02, 0.004, 0.004, 0.0008, 0.0008]
    assert lr_milestone_epochs(cfg, 5) == (2, 3, 4)


def test_agent_uses_the_schedule_of_the_batch_epoch_and_restarts_each_block():
    env = FakeIncrementalStream(epochs=10, train_batches=1, val_batches=1, test_batches=1)
    agent = _agent(env)
    seen = []

    def record(when, a, info):
        if when == "after" and "target" in info:
            seen.append(a.optimizer.param_groups[0]["lr"])

    drive(agent, env, on_learn=record)
    block = [0.1] * 3 + [0.02] * 3 + [0.004] * 2 + [0.0008] * 2
    assert seen == pytest.approx(block * 2, rel=1e-12)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_presets_follow_the_paper(name):
    paper = FakeIncrementalStream(tier="paper")
    agent = FACTORIES[name](paper.spec, paper.observation_space, paper.action_space, 0)
    cfg = agent.cfg
    assert (cfg.lr, cfg.momentum, cfg.weight_decay) == (0.1, 0.9, 5e-4)
    assert cfg.width == 1.0 and cfg.early_stopping and cfg.epochs_per_block == 3
    assert agent.preset == f"{name}/{INCREMENTAL_CIFAR}/*"
    assert cfg.noise_std == (1e-5 if name == "shrink_perturb" else 0.0)
    assert cfg.continual_backprop == (name == "continual_backprop")
    assert (cfg.replacement_rate, cfg.maturity_threshold, cfg.utility, cfg.decay_rate) == (
        1e-5, 1000, "contribution", 0.99)
    assert cfg.reset_head == (name == "head_reset")
    assert cfg.reset_network == (name == "from_scratch")
    assert (agent.gnt is not None) == (name == "continual_backprop")
    cpu = FakeIncrementalStream(tier="cpu")
    small = FACTORIES[name](cpu.spec, cpu.observation_space, cpu.action_space, 0)
    assert small.cfg.width == 0.125 and small.net.channels == (8, 16, 32, 64)
    assert small.hparams["width"] == 0.125 and small.hparams["epochs_per_block"] == 3
    if name == "continual_backprop":  # scaled to the short tiers (see PRESETS)
        assert (small.cfg.replacement_rate, small.cfg.maturity_threshold) == (5e-3, 20)
    else:
        assert dataclasses.replace(small.cfg, width=1.0) == cfg


def test_factory_errors(monkeypatch):
    env = FakeIncrementalStream()
    with pytest.raises(InvalidConfigError, match="unknown backprop hyperparameter"):
        _agent(env, lr_schedule=1)
    with pytest.raises(InvalidConfigError, match="momentum"):
        _agent(env, momentum=1.0)
    with pytest.raises(InvalidConfigError, match="lr_milestones"):
        _agent(env, lr_milestones=[0.5, 0.2])
    with pytest.raises(InvalidConfigError, match="no preset"):
        spec = types.SimpleNamespace(id="lop/PermutedMNIST-v0", kwargs={"tier": "cpu"})
        head_reset.make_agent(spec, env.observation_space, env.action_space, 0)
    # epochs per block: the spec's override, else the registered stream's tier
    for tier, epochs in (("paper", 200), ("cpu", 4)):
        spec = types.SimpleNamespace(id=INCREMENTAL_CIFAR, kwargs={"tier": tier})
        agent = backprop.make_agent(spec, env.observation_space, env.action_space, 0,
                                        width=0.0625)
        assert agent.cfg.epochs_per_block == epochs
    agent = backprop.make_agent(spec, env.observation_space, env.action_space, 0,
                                    epochs_per_block=7, width=0.0625)
    assert agent.cfg.epochs_per_block == 7 and lr_milestone_epochs(agent.cfg) == (2, 4, 6)
    import lop_bench.registration as registration

    def unknown(env_id):
        raise KeyError(env_id)

    monkeypatch.setattr(registration, "env_class", unknown)
    with pytest.raises(InvalidConfigError, match="epochs_per_block"):
        backprop.make_agent(spec, env.observation_space, env.action_space, 0)
    vec = types.SimpleNamespace(id=INCREMENTAL_CIFAR,
                                kwargs={"tier": "cpu", "vectorization_mode": "vector_entry_point"})
    with pytest.raises(VectorizationNotSupported):
        backprop.make_agent(vec, env.observation_space, env.action_space, 0)
    with pytest.raises(InvalidConfigError, match="MultiDiscrete"):
        _agent(types.SimpleNamespace(spec=env.spec, observation_space=env.observation_space,
                                     action_space=spaces.Discrete(10)))


# -- the online protocol ---------------------------------------------------------------------
def test_inactive_classes_are_masked_for_prediction_and_loss():
    env = FakeIncrementalStream(epochs=1, train_batches=3, blocks=1)
    agent = _agent(env, weight_decay=0.0, momentum=0.0)
    obs, info = env.reset()
    active = info["active_classes"]
    inactive = np.setdiff1d(np.arange(10), active)
    with torch.no_grad():
        agent.net.fc.bias[torch.as_tensor(inactive)] = 1e6  # would win any unmasked argmax
    w_before = agent.net.fc.weight.detach().clone()
    b_before = agent.net.fc.bias.detach().clone()
    for _ in range(3):
        action = agent.act(obs, info)
        assert np.isin(action, active).all()
        obs2, r, te, tr, info2 = env.step(action)
        agent.learn(obs, action, r, obs2, te, tr, info2)
        obs, info = obs2, info2
    idx = torch.as_tensor(inactive)
    # the loss never reaches the inactive classes' head rows (no weight decay, no momentum)
    assert torch.equal(agent.net.fc.weight[idx], w_before[idx])
    assert torch.equal(agent.net.fc.bias[idx], b_before[idx])
    act_idx = torch.as_tensor(active)
    assert not torch.equal(agent.net.fc.weight[act_idx], w_before[act_idx])
    # a target outside the active classes is an error
    obs, info = env.reset()
    agent.act(obs, info)
    bad = {"target": np.full(env.batch, inactive[0]), **info}
    with pytest.raises(InvalidActionError, match="active_classes"):
        agent.learn(obs, None, 0.0, obs, False, False, bad)


def test_padded_rows_never_enter_batch_norm_statistics_or_the_loss():
    env = FakeIncrementalStream(epochs=1, train_batches=1, val_batches=1, blocks=1, pad=True)
    agent = _agent(env)
    obs, info = env.reset()
    assert info["valid"] == env.batch - 2
    twin = _agent(env)
    action = agent.act(obs, info)
    assert action.shape == (env.batch,) and np.isin(action, info["active_classes"]).all()
    _, r, te, tr, info2 = env.step(action)
    agent.learn(obs, action, r, None, te, tr, info2)
    # the same step on the valid rows alone gives the same network, buffers included
    info_valid = {**info, "valid": env.batch - 2}
    obs_valid = obs.copy()
    obs_valid[-2:] = 1e3  # garbage in the padded rows changes nothing
    twin.act(obs_valid, info_valid)
    twin.learn(obs_valid, action, r, None, te, tr, info2)
    assert _same(_tensors(agent), _tensors(twin))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_no_parameter_or_buffer_change_during_val_and_test(name):
    env = FakeIncrementalStream(blocks=2, epochs=2, train_batches=2, val_batches=2,
                                test_batches=2, pad=True)
    hp = {"replacement_rate": 0.2, "maturity_threshold": 1} if name == "continual_backprop" else {}
    agent = _agent(env, name, **hp)
    checks = []

    def on_learn(when, a, info):
        if when == "before" and info["phase"] in ("val", "test") and "target" not in info:
            # an eval act keeps no graph and leaves BN statistics alone
            checks.append(a._out is None)

    drive(agent, env, on_learn=on_learn)  # raises PhaseViolationError on any change
    assert checks and all(checks)
    if name == "continual_backprop":
        assert sum(agent.gnt.num_replaced) > 0


# -- early stopping, head reset, retraining --------------------------------------------------
def _capture_at_val_ends(store):
    def hook(when, agent, info):
        if when == "before" and "val_metrics" in info:
            store.append({k: v.clone() for k, v in agent.net.state_dict().items()})
    return hook


def _equal_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_restores_the_best_validation_weights_before_the_test_phase():
    accs = [0.2, 0.5, 0.3, 0.1, 0.4, 0.4]  # block 0 best: epoch 1; block 1: epoch 1 (first of ties)
    env = FakeIncrementalStream(blocks=2, epochs=3, val_accuracies=accs)
    agent = _agent(env)
    at_val, at_test = [], []

    phases = ["train"]

    def hook(when, a, info):
        _capture_at_val_ends(at_val)(when, a, info)
        if when == "after":
            if info["phase"] == "test" and phases[-1] != "test":  # the announcing call
                at_test.append({k: v.clone() for k, v in a.net.state_dict().items()})
            phases.append(info["phase"])

    drive(agent, env, on_learn=hook)
    assert len(at_val) == 6 and len(at_test) == 2
    assert _equal_state(at_test[0], at_val[1])  # BN buffers included
    assert _equal_state(at_test[1], at_val[4])
    assert not _equal_state(at_val[2], at_val[1])
    assert agent.best_accuracy == 0.4  # the last block's best (reset at each new block)


def test_without_early_stopping_the_last_weights_are_tested():
    env = FakeIncrementalStream(blocks=1, epochs=3, val_accuracies=[0.9, 0.1, 0.1])
    agent = _agent(env, early_stopping=False)
    at_val = []
    drive(agent, env, on_learn=_capture_at_val_ends(at_val))
    assert _equal_state(agent.net.state_dict(), at_val[-1])


def _block_change_states(name, **hp):
    """Net states around the learn call announcing block 1, and the agent."""
    env = FakeIncrementalStream(blocks=2, epochs=2, val_accuracies=[0.3, 0.6, 0.5, 0.5])
    agent = _agent(env, name, **hp)
    states = {}

    def hook(when, a, info):
        sd = {k: v.clone() for k, v in a.net.state_dict().items()}
        if when == "after":
            states.setdefault("changes", []).append(
                not _equal_state(sd, hook.before))
            if info["task"] == 1 and "block1" not in states:
                states["block1"] = sd
                states["momentum"] = {p: s.get("momentum_buffer") for p, s in a.optimizer.state.items()}
                states["step_index"] = len(states["changes"]) - 1
        else:
            hook.before = sd
            if info["task"] == 1 and "block0" not in states:
                states["block0"] = sd

    drive(agent, env, on_learn=hook)
    return agent, env, states


def test_head_reset_reinitializes_the_head_exactly_when_a_new_block_starts():
    agent, env, s = _block_change_states("head_reset")
    before, after = s["block0"], s["block1"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}
    assert torch.all(after["fc.bias"] == 0)
    std = after["fc.weight"].std().item()
    assert std == pytest.approx(1 / np.sqrt(agent.net.fc.in_features), rel=0.5)
    # the head's momentum is gone with its old weights; the body keeps its own
    fc = {agent.net.fc.weight, agent.net.fc.bias}
    assert all(p not in s["momentum"] for p in fc)
    assert sum(1 for p in s["momentum"] if p not in fc) == len(list(agent.parameters())) - 2
    # non-train learn calls change the net only at the test announcement (restore) and here
    base, _, sb = _block_change_states("backprop")
    assert _equal_state(sb["block0"], sb["block1"])  # the base agent keeps its head
    i = s["step_index"]
    assert s["changes"][i] and not sb["changes"][i]


def test_from_scratch_builds_a_fresh_network_and_optimizer_at_each_block():
    agent, env, s = _block_change_states("from_scratch")
    after = s["block1"]
    fresh = _agent(FakeIncrementalStream(), "from_scratch").net.state_dict()
    bn_names = {n for n, m in agent.net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    for k, v in after.items():
        module, _, field = k.rpartition(".")
        if module in bn_names:
            expected = {"weight": 1, "bias": 0, "running_mean": 0, "running_var": 1,
                        "num_batches_tracked": 0}[field]
            assert torch.all(v == expected), k
        elif field == "bias":
            assert torch.all(v == 0), k
        else:  # a new draw from the agent's init generator, not the first one
            assert not torch.equal(v, fresh[k]), k
            assert v.std() > 0
    assert s["momentum"] == {}


def test_same_seed_same_run_and_different_seeds_differ():
    runs = []
    for seed in (0, 0, 1):
        env = FakeIncrementalStream(blocks=2, epochs=2)
        agent = _agent(env, "shrink_perturb", seed=seed)
        actions, _ = drive(agent, env)
        runs.append((np.stack(actions), _tensors(agent)))
    assert np.array_equal(runs[0][0], runs[1][0]) and _same(runs[0][1], runs[1][1])
    assert not _same(runs[0][1], runs[2][1])


def test_features_are_eval_mode_and_change_nothing():
    env = FakeIncrementalStream(blocks=1, epochs=1)
    agent = _agent(env)
    drive(agent, env, steps=2)
    before = _tensors(agent)
    feats = agent.features(np.random.default_rng(0).normal(size=(7, 3, 8, 8)).astype(np.float32))
    assert len(feats) == 17 and feats[0].shape[0] == 7 and feats[-1].shape == (7, 32)
    assert _same(before, _tensors(agent))


# -- checkpoint and resume -------------------------------------------------------------------
def _roundtrip(state):
    """What the runner does with a state: numpy to torch, torch.save, weights-only load."""
    from lop_bench.checkpoint import decode, encode

    buf = io.BytesIO()
    torch.save(encode(state), buf)
    buf.seek(0)
    return decode(torch.load(buf, weights_only=True))


@pytest.mark.parametrize("name,split", [
    ("backprop", 9),            # mid-epoch
    ("shrink_perturb", 17),     # inside block 0's test phase (best copy held)
    ("continual_backprop", 13),
    ("head_reset", 18),         # right after the announcement of block 1
    ("from_scratch", 18),
])
def test_resume_is_bit_identical(name, split):
    hp = {"replacement_rate": 0.1, "maturity_threshold": 2} if name == "continual_backprop" else {}
    kw = dict(blocks=2, epochs=3, train_batches=2, val_batches=1, test_batches=2, pad=True,
              val_accuracies=[0.1, 0.3, 0.2, 0.5, 0.1, 0.2])
    env_a = FakeIncrementalStream(**kw)
    ref_actions, _ = drive(_agent(env_a, name, **hp), env_a)
    env_b = FakeIncrementalStream(**kw)
    agent_b = _agent(env_b, name, **hp)
    first, start = drive(agent_b, env_b, steps=split)
    state = _roundtrip(agent_b.state_dict())
    resumed = _agent(env_b, name, **hp)
    resumed.load_state_dict(state)
    rest, _ = drive(resumed, env_b, start=start)
    assert len(first) + len(rest) == len(ref_actions)
    assert all(np.array_equal(a, b) for a, b in zip(first + rest, ref_actions))
    env_c = FakeIncrementalStream(**kw)
    full = _agent(env_c, name, **hp)
    drive(full, env_c)
    assert _same(_tensors(full), _tensors(resumed))
    opt_full = full.optimizer.state_dict()
    opt_resumed = resumed.optimizer.state_dict()
    assert opt_full["param_groups"] == opt_resumed["param_groups"]
    assert opt_full["state"].keys() == opt_resumed["state"].keys()
    assert all(torch.equal(opt_full["state"][i]["momentum_buffer"],
                           opt_resumed["state"][i]["momentum_buffer"]) for i in opt_full["state"])
    if name == "continual_backprop":
        assert resumed.gnt.num_replaced == full.gnt.num_replaced and sum(full.gnt.num_replaced) > 0
    assert all(torch.equal(full.generators[k].get_state(), resumed.generators[k].get_state())
               for k in full.generators)


# -- against the real stream (smoke tier, a fixture CIFAR-100 in the real pickle layout) ------
@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    from tests.cifar_fixtures import fake_splits, write_torchvision

    return str(write_torchvision(tmp_path_factory.mktemp("cifar"), *fake_splits(10, 5)))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_runs_on_the_real_stream_with_the_phase_checks(name, cifar_root):
    import lop_bench

    results = [
        lop_bench.run(INCREMENTAL_CIFAR, FACTORIES[name], tier="smoke", seed=1,
                      env_kwargs={"root": cifar_root}, progress=False)
        for _ in range(2)
    ]
    data = [r.data for r in results]
    curves = [r.per_task for r in results]
    assert curves[0] == curves[1] and len(curves[0]) == 2  # deterministic, one score per block
    assert all(0.0 <= v <= 1.0 for v in curves[0])
    assert data[0]["agent"]["preset"] == f"{name}/{INCREMENTAL_CIFAR}/smoke"
    assert data[0]["agent"]["hparams"]["width"] == 0.125
    assert data[0]["agent"]["hparams"]["epochs_per_block"] == 2


def test_resume_on_the_real_stream_is_bit_identical(cifar_root):
    import lop_bench

    def make():
        env = lop_bench.make(INCREMENTAL_CIFAR, tier="smoke", root=cifar_root).unwrapped
        agent = lop_bench.make_agent(continual_backprop.make_agent, env, seed=3)
        return env, agent

    env, agent = make()
    start = env.reset(seed=3)
    ref, _ = drive(agent, env, start=start)
    env, agent = make()
    first, pending = drive(agent, env, steps=14, start=env.reset(seed=3))
    env_state, agent_state = env.state_dict(), _roundtrip(agent.state_dict())
    env2, agent2 = make()
    env2.reset(seed=3)
    env2.load_state_dict(env_state)
    agent2.load_state_dict(agent_state)
    rest, _ = drive(agent2, env2, start=pending)
    assert len(ref) == len(first) + len(rest) == env.total_steps
    assert all(np.array_equal(a, b) for a, b in zip(ref, first + rest))
    assert sum(agent2.gnt.num_replaced) > 0  # the smoke preset replaces units in 36 steps


# A child process that runs the smoke tier with a checkpoint after every block and SIGKILLs
# itself (no exception, no finally, no atexit: a real kill) when asked for step KILL_AT + 1.
_KILLED_RUN = """
import os, signal, sys
import lop_bench
from lop_bench.registration import env_class

import torch

agent, root, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))  # as the parent: the same float reductions
cls = env_class("lop/IncrementalCIFAR100-v0")
real, count = cls.step, [0]

def step(self, action):
    count[0] += 1
    if count[0] > kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, action)

cls.step = step
lop_bench.run("lop/IncrementalCIFAR100-v0", agent, tier="smoke", seed=2, progress=False,
              env_kwargs={"root": root}, out=out, checkpoint_every=1)
raise SystemExit("not killed")
"""
_BLOCK0_STEPS = 15
"""Smoke block 0: 2 epochs x (3 train + 3 val steps) + 3 test steps (every val/test phase
shows the 12 images of the tier's 4 classes)."""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("name", ["continual_backprop", "shrink_perturb", "from_scratch"])
def test_killed_and_resumed_run_gives_the_same_result(name, cifar_root, tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import lop_bench
    from lop_bench.results import NONDETERMINISTIC_FIELDS

    agent = f"baselines.{name}:make_agent"
    kw = dict(tier="smoke", seed=2, progress=False, env_kwargs={"root": cifar_root})
    a, b = tmp_path / "a", tmp_path / "b"
    lop_bench.run(INCREMENTAL_CIFAR, agent, out=a, **kw)  # uninterrupted

    # killed in block 1 (step 21 of 36), after block 0's checkpoint
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])}
    args = [agent, cifar_root, str(b), "20", str(torch.get_num_threads())]
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, *args],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert list(b.glob("*.json")) == []  # no result: the run died
    (ckpt,) = b.glob("*.ckpt.pt")
    raw = torch.load(ckpt, weights_only=True)  # tensors and plain values only
    assert raw["loop"]["steps"] == _BLOCK0_STEPS and raw["loop"]["info"]["task"] == 1
    smoke = lop_bench.registration.env_class(INCREMENTAL_CIFAR).TIERS["smoke"]
    train, val, test = smoke.block_steps(0)
    assert _BLOCK0_STEPS == smoke.epochs_per_block * (train + val) + test

    result = lop_bench.run(INCREMENTAL_CIFAR, agent, out=b, checkpoint_every=1, resume=True, **kw)
    assert result.data["run_info"]["resumed_at_step"] == _BLOCK0_STEPS
    assert not ckpt.exists()  # removed once the result is written
    (fa,), (fb,) = a.glob("*.json"), b.glob("*.json")
    assert fa.name == fb.name
    full, resumed = json.loads(fa.read_text()), json.loads(fb.read_text())
    assert full.keys() == resumed.keys()
    for key in full:
        if key not in NONDETERMINISTIC_FIELDS:
            assert resumed[key] == full[key], f"result field {key!r} differs after the resume"
    assert len(full["per_task"]) == 2 and len(full["val_metrics"]) == 4


def test_cpu_runs_the_contiguous_layout_and_refuses_channels_last():
    env = FakeIncrementalStream(blocks=1, epochs=1)
    for agent in (_agent(env), _agent(env, channels_last=False)):
        assert agent.memory_format == torch.contiguous_format
        assert all(p.is_contiguous() for p in agent.parameters())
        assert not agent.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert _agent(env).hparams["channels_last"] is None  # the request, not the device's choice
    with pytest.raises(InvalidConfigError, match="CUDA only.*AVX2"):
        _agent(env, channels_last=True)
    with pytest.raises(InvalidConfigError, match="channels_last must be true, false or null"):
        _agent(env, channels_last="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runs_channels_last_the_same_network(monkeypatch):
    # Full float32 convolutions: with TF32 (cuDNN's default) the two memory formats' kernels
    # round differently by about 1e-3, which would hide a real difference.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    env = FakeIncrementalStream(blocks=1, epochs=1)

    def build(**hp):
        return FACTORIES["backprop"](env.spec, env.observation_space, env.action_space, 0,
                                     "cuda", **{**SMALL, **hp})

    fast, plain = build(), build(channels_last=False)
    assert fast.memory_format == build(channels_last=True).memory_format == torch.channels_last
    assert fast.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.net.conv1.weight.is_contiguous() and plain.memory_format == torch.contiguous_format
    assert _same(_tensors(fast), [t.contiguous() for t in _tensors(plain)])  # same init
    x = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    for a, b in zip(fast.features(x), plain.features(x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
