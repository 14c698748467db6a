"""Checkpoints: the file format (weights_only, atomic, refuses forged files) and resume.

A run killed after a checkpoint and resumed gives the same result file, apart from the
fields the schema declares non-deterministic, as the run that was never interrupted."""

import json
import pickle

import numpy as np
import pytest
import torch

import lop_bench
from lop_bench.checkpoint import (
    checkpoint_path,
    decode,
    encode,
    load_checkpoint,
    map_location,
    save_checkpoint,
)
from lop_bench.errors import CheckpointError, IdentityMismatchError, LopBenchError
from lop_bench.registration import env_class
from lop_bench.results import deterministic_part

REG = "lop/SlowlyChangingRegression-v0"
MNIST = "lop/PermutedMNIST-v0"


class _Killed(Exception):
    pass


def _kill_after(monkeypatch, env_id, n_steps):
    """Make the stream's step() raise after ``n_steps`` calls, like a killed process."""
    cls = env_class(env_id)
    real = cls.step
    count = {"n": 0}

    def step(self, action):
        count["n"] += 1
        if count["n"] > n_steps:
            raise _Killed
        return real(self, action)

    monkeypatch.setattr(cls, "step", step)
    return lambda: monkeypatch.setattr(cls, "step", real)


def _result_json(path):
    return deterministic_part(json.loads(path.read_text()))


# -- file format ------------------------------------------------------------------------
def test_encode_decode_round_trip_keeps_dtypes_and_generator_states(tmp_path):
    rng = np.random.default_rng(7)
    rng.random(3)
    g = torch.Generator().manual_seed(3)
    state = {
        "u8": np.arange(5, dtype=np.uint8), "f32": np.ones((2, 3), np.float32),
        "i64": np.array([-1, 2**40]), "bool": np.array([True, False]),
        "scalar": np.float64(0.25), "int": np.int64(3), "rng": rng.bit_generator.state,
        "tgen": g.get_state(), "nested": [(1, "a", None), {"x": np.zeros(2)}],
        "tensor": torch.arange(4.0),
    }
    path = save_checkpoint(tmp_path / "a.ckpt.pt", state)
    # The file loads with weights_only=True, without lop-bench.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "lop-bench-checkpoint"
    back = load_checkpoint(path)
    for k in ("u8", "f32", "i64", "bool"):
        assert back[k].dtype == state[k].dtype and np.array_equal(back[k], state[k])
    assert back["scalar"] == 0.25 and type(back["scalar"]) is float
    assert back["int"] == 3 and type(back["int"]) is int
    again = np.random.default_rng()
    again.bit_generator.state = back["rng"]
    assert np.array_equal(again.random(4), rng.random(4))
    assert torch.equal(back["tgen"], g.get_state())
    assert back["nested"][0] == (1, "a", None)
    assert np.array_equal(back["nested"][1]["x"], np.zeros(2))
    assert decode(encode({"a": [1, 2]})) == {"a": [1, 2]}


def test_encode_refuses_objects_with_their_path():
    with pytest.raises(CheckpointError, match=r"state\['agent'\]\['opt'\].*object"):
        encode({"agent": {"opt": object()}})
    with pytest.raises(CheckpointError, match="get_state"):
        encode({"g": torch.Generator()})


def test_load_refuses_missing_truncated_forged_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.ckpt.pt")
    good = save_checkpoint(tmp_path / "good.ckpt.pt", {"x": np.arange(100)})
    cut = tmp_path / "cut.ckpt.pt"
    cut.write_bytes(good.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="not a readable lop-bench checkpoint"):
        load_checkpoint(cut)
    # A pickle that would run code on load: weights_only refuses it.
    forged = tmp_path / "forged.ckpt.pt"
    torch.save({"format": "lop-bench-checkpoint", "version": 1, "x": _Evil()}, forged)
    with pytest.raises(CheckpointError, match=r"holds more than tensors.*asks for print.*Delete it") as e:
        load_checkpoint(forged)
    # torch's own message advises weights_only=False, which would run the payload: never repeated.
    assert "weights_only" not in str(e.value) and "safe_globals" not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__
    plain = tmp_path / "plain.pt"
    for payload in ({"weights": torch.zeros(2)}, ["lop-bench-checkpoint", 1], 3):
        torch.save(payload, plain)
        with pytest.raises(CheckpointError, match="not a lop-bench checkpoint"):
            load_checkpoint(plain)
    future = tmp_path / "future.pt"
    torch.save({"format": "lop-bench-checkpoint", "version": 99}, future)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(future)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "r.ckpt.pt", {"step": 1})
    with pytest.raises(CheckpointError):
        save_checkpoint(path, {"step": 2, "bad": object()})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["r.ckpt.pt"]  # no temporary left behind


def test_checkpoint_path_sits_beside_the_result():
    assert checkpoint_path("out/a__cpu__bp__seed0.json").name == "a__cpu__bp__seed0.ckpt.pt"


# -- env state --------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", [REG, MNIST])
def test_env_state_continues_bit_for_bit(env_id):
    env = lop_bench.make(env_id, tier="smoke").unwrapped
    space = env.action_space
    space.seed(0)
    env.reset(seed=3)
    for _ in range(150):
        env.step(space.sample())
    state = env.state_dict()
    actions = [space.sample() for _ in range(300)]
    want = [env.step(a) for a in actions]
    fresh = lop_bench.make(env_id, tier="smoke").unwrapped
    fresh.reset(seed=0)  # another seed: load_state_dict restarts from the state's seed
    fresh.load_state_dict(decode(encode(state)))
    got = [fresh.step(a) for a in actions]
    for (o1, r1, *_, i1), (o2, r2, *_, i2) in zip(want, got):
        assert np.array_equal(o1, o2) and r1 == r2
        assert i1.keys() == i2.keys()
        assert all(np.array_equal(np.asarray(i1[k]), np.asarray(i2[k])) for k in i1 if k != "task_metrics")
        assert i1.get("task_metrics") == i2.get("task_metrics")


def test_env_state_of_another_stream_or_tier_is_refused():
    env = lop_bench.make(REG, tier="smoke").unwrapped
    env.reset(seed=0)
    state = env.state_dict()
    other = lop_bench.make(REG, tier="cpu").unwrapped
    with pytest.raises(CheckpointError, match="another protocol"):
        other.load_state_dict(state)
    mnist = lop_bench.make(MNIST, tier="smoke").unwrapped
    with pytest.raises(CheckpointError, match="not of lop/PermutedMNIST-v0"):
        mnist.load_state_dict(state)


# -- resume -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env_id,agent",
    [(REG, "backprop"), (REG, "continual_backprop"), (REG, "shrink_perturb"), (REG, "linear"),
     (MNIST, "continual_backprop"), (MNIST, "l2"),
     ("lop/ContinualImageNet-v0", "continual_backprop"), ("lop/ContinualImageNet-v0", "l2")],
)
def test_killed_and_resumed_run_gives_the_same_result(tmp_path, monkeypatch, env_id, agent):
    a, b = tmp_path / "a", tmp_path / "b"
    lop_bench.run(env_id, agent, tier="smoke", seed=1, progress=False, out=a)
    env = lop_bench.make(env_id, tier="smoke").unwrapped
    steps_per_task = env.total_steps // env.num_tasks
    restore = _kill_after(monkeypatch, env_id, int(steps_per_task * 2.5))
    with pytest.raises(_Killed):
        lop_bench.run(env_id, agent, tier="smoke", seed=1, progress=False, out=b,
                      checkpoint_every=1)
    ckpt = next(b.glob("*.ckpt.pt"))
    assert load_checkpoint(ckpt)["loop"]["steps"] == 2 * steps_per_task  # after task 2
    assert not list(b.glob("*.json"))
    restore()
    result = lop_bench.run(env_id, agent, tier="smoke", seed=1, progress=False, out=b,
                           checkpoint_every=1, resume=True)
    assert result.data["run_info"]["resumed_at_step"] == 2 * steps_per_task
    (fa,), (fb,) = a.glob("*.json"), b.glob("*.json")
    assert fa.name == fb.name
    assert _result_json(fa) == _result_json(fb)
    assert not list(b.glob("*.ckpt.pt"))  # a finished run leaves no checkpoint


def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path):
    r = lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False, out=tmp_path,
                      resume=True)
    assert "resumed_at_step" not in r.data["run_info"]
    assert len(r.per_task) == 10


def test_resume_refuses_the_checkpoint_of_another_run(tmp_path, monkeypatch):
    restore = _kill_after(monkeypatch, REG, 450)
    with pytest.raises(_Killed):
        lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False, out=tmp_path,
                      checkpoint_every=2)
    restore()
    ckpt = next(tmp_path.glob("*.ckpt.pt"))
    with pytest.raises(IdentityMismatchError, match=r"hparams\.lr: 0\.01 there, 0\.02 here"):
        lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False,
                      checkpoint=ckpt, resume=True, agent_kwargs={"lr": 0.02})
    with pytest.raises(IdentityMismatchError, match="checkpoint of another run.*diagnostics_every"):
        lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False, checkpoint=ckpt,
                      resume=True, diagnostics=False)
    # With out=, another setting has its own result name, so its own checkpoint name too.
    other = lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False, out=tmp_path,
                          resume=True, agent_kwargs={"lr": 0.02})
    assert "resumed_at_step" not in other.data["run_info"] and ckpt.exists()
    ckpt.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="delete it"):
        lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False, out=tmp_path,
                      resume=True)


def test_checkpoint_arguments_are_checked(tmp_path):
    with pytest.raises(LopBenchError, match="checkpoint_every"):
        lop_bench.run(REG, "backprop", tier="smoke", progress=False, out=tmp_path,
                      checkpoint_every=0)
    with pytest.raises(LopBenchError, match="checkpoint path"):
        lop_bench.run(REG, "backprop", tier="smoke", progress=False, checkpoint_every=1)


def test_streams_without_state_and_agents_without_state_dict_fail_fast(tmp_path):
    class NoState:
        def act(self, obs, info):
            return np.zeros((1, 1), np.float32)

        def learn(self, *args):
            pass

    with pytest.raises(CheckpointError, match="state_dict"):
        lop_bench.run(REG, lambda *a, **k: NoState(), tier="smoke", progress=False,
                      out=tmp_path, checkpoint_every=1)
    assert not list(tmp_path.iterdir())
    # A stream without checkpoint support says so before running.
    from tests.helpers import FakePhasesEnv

    assert not FakePhasesEnv.supports_checkpoints.fget(FakePhasesEnv.__new__(FakePhasesEnv))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_forged_pickle_never_executes(tmp_path, capsys):
    forged = tmp_path / "x.ckpt.pt"
    with open(forged, "wb") as f:
        pickle.dump(_Evil(), f)
    with pytest.raises(CheckpointError):
        load_checkpoint(forged)
    assert "pwned" not in capsys.readouterr().out


def _save_as_if_on_a_gpu(path, state):
    """Write ``state`` the way ``torch.save`` does on a GPU host: every storage tagged
    ``cuda:0`` (torch's own tagger mechanism, ``register_package``), so that loading it where
    there is no GPU needs a ``map_location``."""
    import torch.serialization as ser

    registry = list(ser._package_registry)
    ser.register_package(1, lambda storage: "cuda:0", lambda storage, location: None)
    try:
        return save_checkpoint(path, state)
    finally:
        ser._package_registry[:] = registry


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host without a GPU")
def test_a_checkpoint_saved_on_a_gpu_resumes_on_a_cpu(tmp_path, monkeypatch):
    """A killed GPU run, resumed on a CPU host, gives the uninterrupted run's result."""
    a, b = tmp_path / "a", tmp_path / "b"
    lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False, out=a)
    restore = _kill_after(monkeypatch, REG, 650)
    with pytest.raises(_Killed):
        lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False, out=b,
                      checkpoint_every=1)
    restore()
    (ckpt,) = b.glob("*.ckpt.pt")
    _save_as_if_on_a_gpu(ckpt, load_checkpoint(ckpt))
    with pytest.raises(RuntimeError, match="CUDA"):  # what torch.load does without map_location
        torch.load(ckpt, weights_only=True)
    result = lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False, out=b,
                           resume=True)
    assert result.data["run_info"]["resumed_at_step"] == 600
    (fa,), (fb,) = a.glob("*.json"), b.glob("*.json")
    assert _result_json(fa) == _result_json(fb)


def test_map_location_keeps_cpu_tensors_and_moves_accelerator_ones():
    assert map_location("cpu") == "cpu"
    place = map_location("cuda:0")  # a callable; building it needs no GPU
    storage = torch.zeros(2).untyped_storage()
    assert place(storage, "cpu") is storage  # generator states stay on the CPU


def _checkpoint_of_a_killed_run(tmp_path, monkeypatch):
    restore = _kill_after(monkeypatch, REG, 450)
    with pytest.raises(_Killed):
        lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False, out=tmp_path,
                      checkpoint_every=1)
    restore()
    (ckpt,) = tmp_path.glob("*.ckpt.pt")
    return ckpt, load_checkpoint(ckpt)


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize("damage, message", [
    (lambda s: _without(s, "loop"), "the checkpoint has no 'loop'"),
    (lambda s: {**s, "agent": [1, 2]}, r"the checkpoint\['agent'\] is a list"),
    (lambda s: {**s, "loop": _without(s["loop"], "steps")}, "loop has no 'steps'"),
    (lambda s: {**s, "loop": {**s["loop"], "steps": "400"}}, r"loop\['steps'\] is a str"),
    (lambda s: {**s, "loop": {**s["loop"], "per_task": [1.0, "x"]}}, "other than numbers"),
    (lambda s: {**s, "loop": {**s["loop"], "info": {}}}, "has no task"),
    (lambda s: {**s, "agent": _without(s["agent"], "optimizer")},
     r"does not restore the agent \(KeyError"),
    (lambda s: {**s, "agent": {**s["agent"], "net": {"w": torch.zeros(3)}}},
     "does not restore the agent"),
])
def test_a_malformed_checkpoint_is_refused_with_checkpoint_error(tmp_path, monkeypatch, damage,
                                                                 message):
    ckpt, state = _checkpoint_of_a_killed_run(tmp_path, monkeypatch)
    save_checkpoint(ckpt, _without(damage(state), "format"))
    with pytest.raises(CheckpointError, match=message) as e:
        lop_bench.run(REG, "backprop", tier="smoke", seed=0, progress=False, out=tmp_path,
                      resume=True)
    assert str(ckpt) in str(e.value) and "delete it" in str(e.value).lower()


def test_cli_checkpoint_every_and_resume(tmp_path, monkeypatch, capsys):
    from lop_bench.cli import main

    base = ["run", REG, "--agent", "continual_backprop", "--tier", "smoke", "--jobs", "1"]
    assert main([*base, "--seeds", "0", "--out", str(tmp_path / "a")]) == 0
    cls = env_class(REG)
    real, count = cls.step, {"n": 0}

    def step(self, action):  # Ctrl-C in the middle of task 7 of seed 1
        count["n"] += 1
        if count["n"] > 2000 + 1300:
            raise KeyboardInterrupt
        return real(self, action)

    monkeypatch.setattr(cls, "step", step)
    out = tmp_path / "b"
    assert main([*base, "--seeds", "0,1", "--out", str(out), "--checkpoint-every", "3"]) == 130
    monkeypatch.setattr(cls, "step", real)
    (seed0,) = out.glob("SlowlyChangingRegression-v0__smoke__continual_backprop__*__seed0.json")
    (ckpt,) = out.glob("SlowlyChangingRegression-v0__smoke__continual_backprop__*__seed1.ckpt.pt")
    assert load_checkpoint(ckpt)["loop"]["steps"] == 1200  # after task 6
    before = seed0.read_bytes()
    capsys.readouterr()
    assert main([*base, "--seeds", "0,1", "--out", str(out), "--resume"]) == 0
    assert seed0.read_bytes() == before  # finished seeds are not run again
    assert "seed 0:" in capsys.readouterr().out
    assert _result_json(seed0) == _result_json(next((tmp_path / "a").glob("*.json")))
    r1 = json.loads((out / seed0.name.replace("seed0", "seed1")).read_text())
    assert r1["run_info"]["resumed_at_step"] == 1200 and len(r1["per_task"]) == 10
    assert not ckpt.exists()
    # --vectorized checkpoints one group of seeds and resumes it; its finished results are
    # skipped like the single-seed ones
    vec = tmp_path / "vec"
    assert main([*base, "--seeds", "0,1", "--out", str(vec), "--vectorized",
                 "--checkpoint-every", "3"]) == 0
    finished = {p.name: p.read_bytes() for p in vec.glob("*.json")}
    assert len(finished) == 2 and not list(vec.glob("*.ckpt.pt"))
    assert main([*base, "--seeds", "0,1", "--out", str(vec), "--vectorized", "--resume"]) == 0
    assert {p.name: p.read_bytes() for p in vec.glob("*.json")} == finished


def test_ant_state_continues_bit_for_bit_across_episodes():
    pytest.importorskip("mujoco")
    ant = "lop/ChangingFrictionAnt-v0"
    acts = np.random.default_rng(0).uniform(-1, 1, (1400, 8)).astype(np.float32)

    def play(env, actions):
        out = []
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            out.append((obs, r, term, trunc, info["task"], info["friction"], info["task_end"]))
            if info["stream_done"]:
                break
            if term or trunc:
                out.append(("reset", *env.reset()))
        return out

    env = lop_bench.make(ant, tier="smoke").unwrapped
    env.reset(seed=4)
    play(env, acts[:900])  # inside task 0's fourth episode
    state = decode(encode(env.state_dict()))
    want = play(env, acts[900:])
    fresh = lop_bench.make(ant, tier="smoke").unwrapped
    fresh.reset(seed=0)
    fresh.load_state_dict(state)
    got = play(fresh, acts[900:])
    assert len(got) == len(want) and any(w[0] == "reset" for w in want if isinstance(w[0], str))
    for w, g in zip(want, got):
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(w, g))
    assert max(w[4] for w in want if not isinstance(w[0], str)) >= 1  # crossed a task change


@pytest.mark.parametrize("agent", ["ppo", "ppo_cbp"])
def test_killed_and_resumed_ant_run_gives_the_same_result(tmp_path, monkeypatch, agent):
    pytest.importorskip("mujoco")
    ant = "lop/ChangingFrictionAnt-v0"
    a, b = tmp_path / "a", tmp_path / "b"
    lop_bench.run(ant, agent, tier="smoke", seed=0, progress=False, out=a)
    restore = _kill_after(monkeypatch, ant, 2300)  # task 2, after the first PPO update
    with pytest.raises(_Killed):
        lop_bench.run(ant, agent, tier="smoke", seed=0, progress=False, out=b, checkpoint_every=1)
    restore()
    r = lop_bench.run(ant, agent, tier="smoke", seed=0, progress=False, out=b, resume=True)
    assert 2000 < r.data["run_info"]["resumed_at_step"] < 2300
    (fa,), (fb,) = a.glob("*.json"), b.glob("*.json")
    assert _result_json(fa) == _result_json(fb)
