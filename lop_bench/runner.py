"""``lop_bench.run``: the stepwise loop plus metrics, diagnostics, progress and a result file.

The loop is exactly the one in DESIGN.md section 4 (an author may write it by hand and
get the same per-task scores, which the env computes itself). On top of it the runner

- records ``info["task_metrics"]`` at each task's end (the per-task curve);
- measures diagnostics at task starts, every ``diagnostics_every`` tasks, on the env's
  probe batch (supervised streams; drawn from a generator of its own, so the curve is the
  same with diagnostics off) or the agent's own recent states (``agent.probe()``, RL),
  through ``agent.features`` / ``agent.parameters`` under ``no_grad``;
- checks that the agent's state (its whole ``state_dict()`` when it has one, else its
  parameters and buffers) does not change inside ``val``/``test`` phases
  (:class:`~lop_bench.errors.PhaseViolationError`);
- shows a progress bar and writes the result atomically, under a name that carries the
  run's identity (:mod:`lop_bench.identity`), never over the result of another run;
- writes a checkpoint every k tasks and resumes from it (``checkpoint_every``, ``resume``).

The phase check guards against mistakes (a forgotten ``eval()``, a ``learn`` that ignores
``info["phase"]``), not against a determined cheat: an agent can keep what it sees outside
its ``state_dict()``. That is what the label-free order of val/test rows, probes drawn from
training data, and the code review of a submission are for.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lop_bench.agents import AgentFactory, make_agent, resolve_factory
from lop_bench.errors import (
    CheckpointError,
    InvalidConfigError,
    InvalidResultError,
    LopBenchError,
    PhaseViolationError,
)
from lop_bench.identity import (
    agent_record,
    check_identity,
    result_identity,
    result_path,
    run_identity,
)
from lop_bench.registration import make
from lop_bench.results import Result, load, save

__all__ = [
    "MAX_SEED",
    "run",
    "run_vectorized",
    "vector_checkpoint_path",
    "check_run_seed",
    "check_device",
    "check_writable",
    "check_existing_result",
]

MAX_SEED = 2**32 - 1
"""The largest seed: seeds are 0..2**32-1, which numpy's ``SeedSequence``, torch's
``manual_seed`` and every stream accept alike."""

_PROGRESS_EVERY = 2048
_EVAL_PHASES = ("val", "test")
_DIAG_KEYS = ("dormant_fraction", "dead_fraction", "effective_rank", "stable_rank",
              "approximate_rank", "feature_norm", "weight_magnitude")


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("lop-bench", "torch", "numpy", "gymnasium", "mujoco"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:  # not installed (mujoco is an optional extra)
            if pkg != "mujoco":
                out[pkg] = "unknown"
    return out


def check_run_seed(seed: Any) -> int:
    """``seed`` as an int, or :class:`~lop_bench.errors.InvalidConfigError` unless it is an
    integer in ``0..MAX_SEED``."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
            or not 0 <= seed <= MAX_SEED:
        raise InvalidConfigError(
            f"seed must be an integer from 0 to {MAX_SEED} (2**32 - 1), got {seed!r}."
        )
    return int(seed)


def check_device(device: Any) -> str:
    """``device`` as a string, after checking that torch knows it and this machine has it
    (``bogus``, ``cuda`` without a GPU and ``cuda:9`` on a 1-GPU host are refused with
    :class:`~lop_bench.errors.InvalidConfigError`)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidConfigError(
            f"unknown device {device!r}: use a torch device such as cpu, cuda, cuda:1 or mps."
        ) from None
    if dev.type == "cpu":
        return str(device)
    backend = getattr(torch, dev.type, None) if dev.type != "mps" else torch.backends.mps
    available = getattr(backend, "is_available", None)
    if not callable(available) or not available():
        raise InvalidConfigError(
            f"device {device!r}: this machine has no {dev.type} device that torch can use. "
            "Run on --device cpu (device='cpu'), or on a machine with one."
        )
    count = getattr(backend, "device_count", None)
    if dev.index is not None and callable(count) and dev.index >= count():
        n = count()
        names = f"{dev.type}:0" if n == 1 else f"{dev.type}:0 to {dev.type}:{n - 1}"
        raise InvalidConfigError(
            f"device {device!r}: this machine has {n} {dev.type} device{'s' if n != 1 else ''} "
            f"({names}); pick one of them."
        )
    return str(device)


def check_writable(directory: str | os.PathLike[str], option: str = "out=") -> Path:
    """Create ``directory`` if needed and check that a file can be written there; raise
    :class:`~lop_bench.errors.LopBenchError` naming it (and the ``option`` to change)
    otherwise. Returns it as a Path."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise LopBenchError(
            f"cannot write to {directory} ({exc.strerror or exc}): choose another {option}."
        ) from None
    return directory


def check_existing_result(path: str | os.PathLike[str], identity: Mapping[str, Any], *,
                          resume: bool) -> Result | None:
    """What to do with the file where the result of the run ``identity`` goes.

    Returns None when there is none (run) or when it is this run's and ``resume`` is false
    (run again and replace it); returns the loaded result when it is this run's and
    ``resume`` is true (skip the run). Raises
    :class:`~lop_bench.errors.IdentityMismatchError` when it holds another run's result,
    and :class:`~lop_bench.errors.InvalidResultError` when it is not a readable result:
    neither is ever overwritten.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    try:
        existing = load(path)
    except InvalidResultError as exc:
        raise InvalidResultError(
            f"{exc} This run's result would go there: choose another --out (out=), or delete "
            f"{path} if it is not needed (with --resume, the seeds already finished are kept)."
        ) from None
    check_identity(path, result_identity(existing.data), identity)
    return existing if resume else None


def _agent_state(agent: Any) -> tuple[str, Any]:
    """``(what, state)``: the agent's whole ``state_dict()`` when it has one, else the
    tensors of its ``parameters()`` and ``buffers()`` (live objects, not copies)."""
    state_dict = getattr(agent, "state_dict", None)
    if callable(state_dict):
        return "state_dict()", state_dict()
    tensors = []
    for attr in ("parameters", "buffers"):
        fn = getattr(agent, attr, None)
        if callable(fn):
            tensors.extend(t for t in fn() if hasattr(t, "detach"))
    return "parameters() and buffers()", tensors


def _copy_state(obj: Any, where: str) -> Any:
    """A deep copy of a state (a ``state_dict()`` may alias the live tensors)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, Mapping):
        return {k: _copy_state(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_copy_state(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    try:
        return copy.deepcopy(obj)
    except Exception as exc:
        raise LopBenchError(
            f"the agent's {where} is a {type(obj).__name__}, which cannot be copied ({exc}): "
            "state_dict() must hold only tensors, numpy arrays, plain values and lists / "
            "dicts of them (DESIGN.md section 5)."
        ) from None


def _same_tensor(a: Any, b: Any) -> bool:
    import torch

    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if torch.equal(a, b):
        return True
    # A diverged network holds NaNs, which equal nothing: compare NaN positions too.
    if a.is_floating_point() or a.is_complex():
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        return torch.equal(nan_a, nan_b) and torch.equal(a[~nan_a], b[~nan_b])
    return False


def _first_change(before: Any, now: Any, where: str) -> str | None:
    """Where ``now`` first differs from the snapshot ``before`` (NaNs equal NaNs), or None."""
    import torch

    if isinstance(before, torch.Tensor):
        return None if isinstance(now, torch.Tensor) and _same_tensor(before, now) else where
    if isinstance(before, np.ndarray):
        same = (isinstance(now, np.ndarray) and before.shape == now.shape
                and before.dtype == now.dtype
                and np.array_equal(before, now, equal_nan=before.dtype.kind in "fc"))
        return None if same else where
    if isinstance(before, Mapping):
        if not isinstance(now, Mapping) or before.keys() != now.keys():
            return where
        for k, v in before.items():
            found = _first_change(v, now[k], f"{where}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(before, (list, tuple)):
        if not isinstance(now, (list, tuple)) or len(before) != len(now):
            return where
        for i, (v, w) in enumerate(zip(before, now)):
            found = _first_change(v, w, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(before, float) and isinstance(now, float) and math.isnan(before) \
            and math.isnan(now):
        return None
    try:
        return None if bool(before == now) else where
    except Exception:  # an object whose == does not give a truth value
        return where


def _snapshot(agent: Any) -> tuple[str, Any]:
    """A copy of the state the phase check compares (:func:`_agent_state`)."""
    what, state = _agent_state(agent)
    return what, _copy_state(state, what)


def _check_unchanged(agent: Any, snap: tuple[str, Any], phase: str, task: int) -> None:
    """Raise :class:`~lop_bench.errors.PhaseViolationError` naming the first change when the
    agent's state differs from the snapshot taken when the ``phase`` began."""
    what, before = snap
    now_what, now = _agent_state(agent)
    where = what if now_what != what else _first_change(before, now, what)
    if where is not None:
        raise PhaseViolationError(
            f"the agent changed its state during the {phase!r} phase of task {task} (first "
            f"change: {where}). Agents must not learn (or update batch-norm statistics, "
            "optimizer state or counters) on val/test batches: check info['phase'] and "
            "info.get('target') in learn(), and use eval mode."
        )


def _measure(agent: Any, env: Any) -> dict[str, Any] | None:
    features = getattr(agent, "features", None)
    # Supervised streams probe with inputs of the task; RL streams have no probe of their
    # own: the agent supplies its recent states (PROTOCOLS.md, "Diagnostics definitions").
    probe = getattr(env, "probe", None)
    if not callable(probe):
        probe = getattr(agent, "probe", None)
    if not callable(features) or not callable(probe):
        return None
    import torch

    from lop_bench.diagnostics import measure

    x = probe()
    if x is None or len(x) == 0:  # an RL agent that has seen no state yet (task 0)
        return None
    x = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    definition = getattr(env, "DIAGNOSTICS_DEFINITION", "supervised")
    with torch.no_grad():
        feats = features(x)
        params = getattr(agent, "parameters", None)
        try:
            return measure(list(feats), list(params()) if callable(params) else None,
                           definition=definition, layer_ranks=False)
        except ValueError:
            # Non-finite activations or weights (a diverged agent): the run goes on and
            # this task's diagnostics are recorded as missing.
            return dict.fromkeys(_DIAG_KEYS)


def run(
    env_id: str,
    agent: str | AgentFactory,
    tier: str = "cpu",
    seed: int = 0,
    *,
    env_kwargs: dict[str, Any] | None = None,
    agent_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
    diagnostics: bool = True,
    diagnostics_every: int = 1,
    progress: bool | Callable[[int], None] = True,
    out: str | Path | None = None,
    checkpoint_every: int | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> Result:
    """Run one agent on one stream for one seed and return its :class:`Result`.

    Args:
        env_id: a stream id, e.g. ``"lop/SlowlyChangingRegression-v0"``.
        agent: a registered agent name (``"backprop"``), ``"module:function"``, or a factory.
        tier: ``"smoke"``, ``"cpu"`` or ``"paper"`` (or a stream's named variant).
        seed: the stream and agent seed (the tier's seed set is ``0..num_seeds-1``).
        env_kwargs: tier field overrides (the result is then *custom*, unranked).
        agent_kwargs: hyperparameter overrides of the agent's preset.
        device: torch device for the agent and, for streams that take a ``device``
            argument (the image streams), for the data (unless ``env_kwargs`` sets one).
        diagnostics: measure dormant units, ranks and weight magnitude at task starts.
        diagnostics_every: measure every k-th task (task 0 always).
        progress: show a progress bar (True), none (False), or a callback given the number
            of steps done since its last call (used by the CLI's parallel workers).
        out: write the result there: a ``.json`` path, or a directory, where the file is
            named after the run's identity (:func:`lop_bench.identity.result_filename`). A
            file there that holds another run's result, or no result, is never overwritten
            (:class:`~lop_bench.errors.IdentityMismatchError`,
            :class:`~lop_bench.errors.InvalidResultError`); this run's own is replaced,
            or with ``resume`` returned without running again.
        checkpoint_every: write a checkpoint after every k-th task (env, agent and loop
            state; :mod:`lop_bench.checkpoint`). The stream and the agent must implement
            ``state_dict`` / ``load_state_dict``.
        checkpoint: the checkpoint file (default: ``<result name>.ckpt.pt`` beside the
            result in ``out``). It is deleted once the result is written.
        resume: return the result in ``out`` when it is this run's; else continue from
            ``checkpoint`` when it exists (else start from the beginning), writing further
            checkpoints every ``checkpoint_every`` tasks (default: the interrupted run's
            cadence). A checkpoint saved on a GPU resumes on a CPU (tensors are loaded on
            ``device``).
            The resumed run's result equals the uninterrupted one's, bit for bit, apart
            from ``run_info``.

    Example::

        result = lop_bench.run("lop/SlowlyChangingRegression-v0", "backprop", tier="smoke")
        print(result.summary)
    """
    _check_cadences(diagnostics_every, checkpoint_every)
    seed = check_run_seed(seed)
    device = check_device(device)
    name, factory = resolve_factory(agent)
    wrapped = make(env_id, tier=tier, **_with_data_device(env_id, env_kwargs, device))
    env = wrapped.unwrapped
    obs, info = env.reset(seed=seed)
    agent_obj = make_agent(factory, wrapped, seed=seed, device=device, **(agent_kwargs or {}))
    identity = run_identity(env, name, agent_obj, agent_kwargs, seed=seed,
                            diagnostics=diagnostics, diagnostics_every=diagnostics_every)
    path = None if out is None else result_path(out, identity, env.custom)
    if path is not None:
        finished = check_existing_result(path, identity, resume=resume)
        if finished is not None:
            return finished
        check_writable(path.parent)
    ckpt_path = _checkpoint_file(path, checkpoint, checkpoint_every, resume)
    if ckpt_path is not None:
        _check_checkpointable(env, agent_obj, name)

    metric = env.METRIC
    per_task: list[float] = []
    val_metrics: list[dict[str, Any]] = []
    diag_tasks: list[int] = []
    diag_rows: list[dict[str, Any]] = []

    def diagnose(task: int) -> None:
        if diagnostics and task % diagnostics_every == 0:
            row = _measure(agent_obj, env)
            if row is not None:
                diag_tasks.append(task)
                diag_rows.append(row)

    steps = 0
    elapsed = 0.0
    resumed_at = None
    task = info["task"]
    if resume and ckpt_path is not None and ckpt_path.exists():
        loop = _load_checkpoint(ckpt_path, device, identity, env, agent_obj)
        obs, info, steps, elapsed = loop["obs"], loop["info"], loop["steps"], loop["elapsed"]
        per_task, val_metrics = list(loop["per_task"]), list(loop["val_metrics"])
        diag_tasks, diag_rows = list(loop["diag_tasks"]), list(loop["diag_rows"])
        task = info["task"]
        resumed_at = steps
        if checkpoint_every is None:  # keep the killed run's cadence
            checkpoint_every = loop["checkpoint_every"]
    else:
        diagnose(task)

    bar, report = _progress(progress, env.total_steps, f"{name} seed {seed}", "step",
                            initial=steps)
    if report is not None and bar is None and steps:
        report(steps)  # a resumed run's callback counts the steps done before the checkpoint
    snapshot = None
    eval_phase = None
    countdown = _PROGRESS_EVERY
    start = time.perf_counter()
    act, learn, step = agent_obj.act, agent_obj.learn, env.step
    try:
        while True:
            context = info  # of the observation acted on (its epoch labels val_metrics)
            action = act(obs, info)
            next_obs, reward, terminated, truncated, info = step(action)
            steps += 1
            if snapshot is not None and (info["phase"] != eval_phase or info["stream_done"]):
                _check_unchanged(agent_obj, snapshot, eval_phase, task)
                snapshot = None
            learn(obs, action, reward, next_obs, terminated, truncated, info)
            if info["task_end"]:
                per_task.append(float(info["task_metrics"][metric]))
            if "val_metrics" in info:
                val_metrics.append({"task": task, "epoch": context.get("epoch", 0),
                                    **info["val_metrics"]})
            if info["stream_done"]:
                break
            if snapshot is None and info["phase"] in _EVAL_PHASES:
                eval_phase = info["phase"]
                snapshot = _snapshot(agent_obj)
            new_task = info["task"] != task
            if new_task:
                task = info["task"]
                diagnose(task)
            if terminated or truncated:
                next_obs, info = env.reset()
            obs = next_obs
            if (new_task and checkpoint_every is not None and snapshot is None
                    and len(per_task) % checkpoint_every == 0):
                _save_checkpoint(ckpt_path, identity, env, agent_obj, {
                    "obs": obs, "info": info, "steps": steps,
                    "elapsed": elapsed + time.perf_counter() - start,
                    "per_task": per_task, "val_metrics": val_metrics,
                    "diag_tasks": diag_tasks, "diag_rows": diag_rows,
                    "checkpoint_every": checkpoint_every,
                })
            countdown -= 1
            if countdown == 0:
                countdown = _PROGRESS_EVERY
                if report is not None:
                    report(_PROGRESS_EVERY)
    finally:
        if bar is not None:
            bar.close()
    run_wall = time.perf_counter() - start
    wall = elapsed + run_wall
    if report is not None and bar is None:
        report((steps - (resumed_at or 0)) % _PROGRESS_EVERY)

    extra = {"diagnostics_every": identity["diagnostics_every"]}
    if resumed_at is not None:
        extra["resumed_at_step"] = resumed_at
    extra.update(_dataset_notes(env))
    data = _result_data(
        env, name, agent_obj, agent_kwargs, vectorized=False, seed=env.stream_seed,
        steps=steps, per_task=per_task,
        diagnostics=_diag_table(diag_tasks, diag_rows, diagnostics_every),
        run_info=_run_info(wall, (steps - (resumed_at or 0)) / run_wall if run_wall > 0 else 0.0,
                           **extra),
    )
    if val_metrics:
        data["val_metrics"] = val_metrics
    result = Result(data)
    if path is not None:
        save(result, path)
    if ckpt_path is not None:
        ckpt_path.unlink(missing_ok=True)  # the result is written: the run is complete
    return result


def _with_data_device(env_id: str, env_kwargs: dict[str, Any] | None, device: str) -> dict[str, Any]:
    """``env_kwargs`` plus ``device=device`` for a stream that can keep its data on the
    agent's device (the image streams), unless the caller chose one."""
    kwargs = dict(env_kwargs or {})
    if str(device) != "cpu" and "device" not in kwargs:
        import inspect

        from lop_bench.registration import env_class

        if "device" in inspect.signature(env_class(env_id).__init__).parameters:
            kwargs["device"] = device
    return kwargs


def _checkpoint_file(path: Path | None, checkpoint: str | Path | None, every: int | None,
                     resume: bool) -> Path | None:
    """The checkpoint path of a run whose result goes to ``path``, or None when it neither
    writes nor resumes one."""
    if checkpoint is None and every is None and not resume:
        return None
    if checkpoint is not None:
        return Path(checkpoint)
    if path is None:
        raise LopBenchError(
            "checkpoint_every / resume need a checkpoint path: pass checkpoint=... or out=...."
        )
    from lop_bench.checkpoint import checkpoint_path

    return checkpoint_path(path)


def _check_cadences(diagnostics_every: Any, checkpoint_every: Any) -> None:
    """Refuse a ``diagnostics_every`` or ``checkpoint_every`` that is not a count of tasks."""
    if isinstance(diagnostics_every, bool) or not isinstance(diagnostics_every, int) \
            or diagnostics_every < 1:
        raise LopBenchError(f"diagnostics_every must be an integer >= 1, got {diagnostics_every!r}.")
    if checkpoint_every is not None and (
        not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool)
        or checkpoint_every < 1
    ):
        raise LopBenchError(
            f"checkpoint_every must be a number of tasks >= 1, got {checkpoint_every!r}."
        )


def _save_checkpoint(path: Path, identity: Mapping[str, Any], env: Any, agent: Any,
                     loop: dict[str, Any]) -> None:
    """Write the checkpoint of the run ``identity``: the stream's and the agent's state and
    the runner's ``loop`` state (:mod:`lop_bench.checkpoint`)."""
    from lop_bench.checkpoint import save_checkpoint

    save_checkpoint(path, {"run": identity, "env": env.state_dict(),
                           "agent": agent.state_dict(), "loop": loop})


def _load_checkpoint(path: Path, device: str, identity: Mapping[str, Any], env: Any, agent: Any,
                     num_envs: int | None = None) -> dict[str, Any]:
    """Read the checkpoint at ``path``, check its layout (``num_envs``: of a vectorized run)
    and that it is of the run ``identity``, restore the stream and the agent from it and
    return the runner's loop state."""
    from lop_bench.checkpoint import check_run_state, load_checkpoint, map_location

    state = load_checkpoint(path, map_location=map_location(device))
    check_run_state(path, state, num_envs=num_envs)
    check_identity(path, state["run"], identity, what="checkpoint")
    _restore(path, "stream", env.load_state_dict, state["env"])
    _restore(path, "agent", agent.load_state_dict, state["agent"])
    return state["loop"]


def _restore(path: Path, what: str, load_state_dict: Callable[[Any], None], state: Any) -> None:
    """``load_state_dict(state)``, with any failure reported as a
    :class:`~lop_bench.errors.CheckpointError` naming the checkpoint."""
    try:
        load_state_dict(state)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"{path} does not restore the {what} ({type(exc).__name__}: {exc}): it was written "
            f"by another version of the {what}, or is damaged. Delete it to start the run over."
        ) from exc


def _check_checkpointable(env: Any, agent: Any, name: str) -> None:
    from lop_bench.errors import CheckpointError

    if not getattr(env, "supports_checkpoints", False):
        raise CheckpointError(
            f"{env.ENV_ID} does not support checkpoints yet; run it without "
            "--checkpoint-every / --resume."
        )
    if not (callable(getattr(agent, "state_dict", None))
            and callable(getattr(agent, "load_state_dict", None))):
        raise CheckpointError(
            f"agent {name!r} has no state_dict() / load_state_dict(), which checkpoints need: "
            "add them (DESIGN.md section 5), or run without --checkpoint-every / --resume."
        )


def _progress(progress: bool | Callable[[int], None], total: int, desc: str, unit: str,
              initial: int = 0):
    """``(bar, report)``: a tqdm bar (``progress=True``) or the caller's callback, or none."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False,
                   dynamic_ncols=True, initial=initial)
        return bar, bar.update
    return None, (progress if callable(progress) else None)


def _dataset_notes(env: Any) -> dict[str, Any]:
    """What a result must say about its data beyond the fingerprint: the files whose md5
    differed from the published one and were read anyway (``allow_checksum_mismatch``)."""
    dataset = getattr(env, "dataset", None) or getattr(getattr(env, "unwrapped", None),
                                                        "dataset", None)
    mismatches = list(getattr(dataset, "md5_mismatches", ()) or ())
    return {"md5_mismatches_allowed": mismatches} if mismatches else {}


def _run_info(wall: float, rate: float, **extra: Any) -> dict[str, Any]:
    """The non-deterministic part of a result: date, host, timing, versions."""
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "wall_time_s": wall,
        "steps_per_s": rate,
        **extra,
        "versions": _versions(),
    }


def _result_data(env: Any, name: str, agent: Any, agent_kwargs: dict[str, Any] | None, *,
                 vectorized: bool, seed: int, steps: int, per_task: list[float],
                 diagnostics: dict[str, Any] | None, run_info: dict[str, Any]) -> dict[str, Any]:
    """A result document: the stream's identity, the agent, the curve and its summary."""
    from lop_bench.metrics import summarize

    preset, hparams = agent_record(agent, agent_kwargs)
    data: dict[str, Any] = env.describe()
    data.update(
        schema_version=1,
        agent={"name": name, "preset": preset, "hparams": hparams, "vectorized": vectorized},
        seed=int(seed),
        steps=steps,
        per_task=per_task,
        summary=summarize(per_task, env.HIGHER_IS_BETTER),
        diagnostics=diagnostics,
        run_info=run_info,
    )
    return data


def _diag_table(tasks: list[int], rows: list[dict[str, Any]], every: int) -> dict[str, Any] | None:
    if not rows:
        return None
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) or v is None]
    return {
        "every": every,
        "tasks": tasks,
        "measures": {k: [row.get(k) for row in rows] for k in keys},
    }


def run_vectorized(
    env_id: str,
    agent: str | AgentFactory,
    tier: str = "cpu",
    seeds: Sequence[int] | None = None,
    *,
    env_kwargs: dict[str, Any] | None = None,
    agent_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
    diagnostics: bool = True,
    diagnostics_every: int = 1,
    progress: bool | Callable[[int], None] = True,
    out: str | Path | None = None,
    checkpoint_every: int | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> list[Result]:
    """Run one agent on N seeds at once (``make_vec`` + the agent's vectorized version).

    Returns one :class:`Result` per seed, like :func:`run` for that seed (its ``agent``
    record says ``vectorized: true``); with ``out`` (a directory, or a ``.json`` path for a
    single seed), writes one file per seed under the names :func:`run` gives them, and, as
    :func:`run` does, never over another run's result. ``seeds`` defaults to the tier's
    seed set. The factory receives the vector env's spec (its
    ``kwargs`` hold ``vectorization_mode``) and the tuple of seeds as ``seed``; it returns
    a vectorized agent or raises :class:`~lop_bench.errors.VectorizationNotSupported`.

    Checkpoints work as in :func:`run`, for the group of seeds as a whole: the vector env
    and the vectorized agent must implement ``state_dict`` / ``load_state_dict``, and the
    checkpoint (default: :func:`vector_checkpoint_path` in ``out``) is of these seeds
    only. With ``resume``, the results in ``out`` are returned when every seed's is there
    (and of this run); else the group continues from its checkpoint (or starts over) and
    writes every seed's result.
    """
    from lop_bench.registration import env_class, make_vec

    _check_cadences(diagnostics_every, checkpoint_every)
    device = check_device(device)
    name, factory = resolve_factory(agent)
    if seeds is None:
        cfg = env_class(env_id).tier_config(tier)
        seeds = tuple(range(cfg.num_seeds))
    seeds = tuple(check_run_seed(s) for s in seeds)
    if out is not None and len(seeds) > 1 and Path(out).suffix == ".json" and not Path(out).is_dir():
        raise LopBenchError(
            f"out={str(out)!r} names one file, but {len(seeds)} seeds write one result each: "
            "pass a directory."
        )
    envs = make_vec(env_id, num_envs=len(seeds), tier=tier, seeds=seeds, **(env_kwargs or {}))
    venv = envs.unwrapped
    obs, infos = venv.reset(seed=list(seeds))
    agent_obj = make_agent(factory, envs, seed=seeds, device=device, **(agent_kwargs or {}))
    if not getattr(agent_obj, "vectorized", False):
        from lop_bench.errors import VectorizationNotSupported

        raise VectorizationNotSupported(
            f"agent {name!r} returned a single-seed agent for a vector env; its factory must "
            "return a vectorized agent (attribute vectorized = True) or raise "
            "VectorizationNotSupported. Run it without --vectorized."
        )
    identities = [run_identity(venv, name, agent_obj, agent_kwargs, seed=seed,
                               diagnostics=diagnostics, diagnostics_every=diagnostics_every)
                  for seed in seeds]
    # The group's identity: every seed's settings, and the seeds, in order.
    identity = {**identities[0], "seed": list(seeds)}
    paths = []
    if out is not None:
        paths = [result_path(out, i, venv.describe()["custom"]) for i in identities]
        finished = [check_existing_result(p, i, resume=resume) for p, i in zip(paths, identities)]
        if all(r is not None for r in finished):
            return finished  # type: ignore[return-value]
        check_writable(paths[0].parent)
    if checkpoint is None and paths and (checkpoint_every is not None or resume):
        checkpoint = vector_checkpoint_path(paths[0], seeds)
    ckpt_path = _checkpoint_file(paths[0] if paths else None, checkpoint, checkpoint_every, resume)
    if ckpt_path is not None:
        _check_checkpointable(venv, agent_obj, name)
    n = len(seeds)
    metric = venv.METRIC
    per_task: list[np.ndarray] = []
    diag_tasks: list[int] = []
    diag_rows: list[list[dict[str, Any]]] = [[] for _ in range(n)]

    def diagnose(task: int) -> None:
        if not (diagnostics and task % diagnostics_every == 0):
            return
        rows = _measure_vector(agent_obj, venv, n)
        if rows is not None:
            diag_tasks.append(task)
            for i, row in enumerate(rows):
                diag_rows[i].append(row)

    steps = 0
    elapsed = 0.0
    resumed_at = None
    task = int(infos["task"][0])
    if resume and ckpt_path is not None and ckpt_path.exists():
        loop = _load_checkpoint(ckpt_path, device, identity, venv, agent_obj, num_envs=n)
        obs, infos = loop["obs"], _vector_infos(loop["infos"])
        steps, elapsed, task = loop["steps"], loop["elapsed"], loop["info"]["task"]
        per_task = list(loop["per_task"])
        diag_tasks, diag_rows = list(loop["diag_tasks"]), [list(r) for r in loop["diag_rows"]]
        resumed_at = steps
        if checkpoint_every is None:  # keep the killed run's cadence
            checkpoint_every = loop["checkpoint_every"]
    else:
        diagnose(task)

    bar, report = _progress(progress, venv.total_steps * n, f"{name} x{n} seeds", "seed-step",
                            initial=steps * n)
    if report is not None and bar is None and steps:
        report(steps * n)
    countdown = _PROGRESS_EVERY
    start = time.perf_counter()
    act, learn, step = agent_obj.act, agent_obj.learn, venv.step
    try:
        while True:
            action = act(obs, infos)
            next_obs, reward, terminated, truncated, infos = step(action)
            steps += 1
            learn(obs, action, reward, next_obs, terminated, truncated, infos)
            if infos["task_end"][0]:
                per_task.append(np.asarray(infos["task_metrics"][metric], dtype=np.float64))
            if infos["stream_done"][0]:
                break
            new_task = infos["task"][0] != task
            if new_task:
                task = int(infos["task"][0])
                diagnose(task)
            obs = next_obs
            if (new_task and checkpoint_every is not None and ckpt_path is not None
                    and len(per_task) % checkpoint_every == 0):
                _save_checkpoint(ckpt_path, identity, venv, agent_obj, {
                    "obs": obs, "info": {"task": task}, "infos": _plain_infos(infos),
                    "steps": steps, "elapsed": elapsed + time.perf_counter() - start,
                    "per_task": per_task, "val_metrics": [],
                    "diag_tasks": diag_tasks, "diag_rows": diag_rows,
                    "checkpoint_every": checkpoint_every,
                })
            countdown -= 1
            if countdown == 0:
                countdown = _PROGRESS_EVERY
                if report is not None:
                    report(_PROGRESS_EVERY * n)
    finally:
        if bar is not None:
            bar.close()
    run_wall = time.perf_counter() - start
    if report is not None and bar is None:
        report(((steps - (resumed_at or 0)) % _PROGRESS_EVERY) * n)

    curves = np.stack(per_task, axis=1)  # (N, tasks)
    extra: dict[str, Any] = {"num_envs": n,
                             "diagnostics_every": diagnostics_every if diagnostics else None}
    if resumed_at is not None:
        extra["resumed_at_step"] = resumed_at
    rate = (steps - (resumed_at or 0)) * n / run_wall if run_wall > 0 else 0.0
    run_info = _run_info(elapsed + run_wall, rate, **extra, **_dataset_notes(venv))
    results = []
    for i, seed in enumerate(seeds):
        data = _result_data(
            venv, name, agent_obj, agent_kwargs, vectorized=True, seed=seed, steps=steps,
            per_task=[float(v) for v in curves[i]],
            diagnostics=_diag_table(diag_tasks, diag_rows[i], diagnostics_every),
            run_info=dict(run_info),
        )
        result = Result(data)
        if paths:
            save(result, paths[i])
        results.append(result)
    if ckpt_path is not None:
        ckpt_path.unlink(missing_ok=True)  # every seed's result is written: the group is done
    return results


def vector_checkpoint_path(first_result: str | os.PathLike[str], seeds: Sequence[int]) -> Path:
    """Where the checkpoint of a vectorized run of ``seeds`` lives: beside the first seed's
    result (``first_result``), named after the settings and the group of seeds, e.g.
    ``<Stream>__cpu__backprop__<hash>__seeds0-9.ckpt.pt`` (seeds 0 to 9), so that another
    group of the same settings, or a single-seed run, never reads it."""
    path = Path(first_result)
    stem = path.name.removesuffix(".json").rsplit("__seed", 1)[0]
    ordered = sorted(seeds)
    if ordered == list(range(ordered[0], ordered[-1] + 1)) and len(ordered) > 1:
        label = f"{ordered[0]}-{ordered[-1]}"
    elif len(seeds) <= 4:
        label = "_".join(map(str, seeds))
    else:  # a long irregular list: its first seed, its size and a hash of it
        digest = hashlib.sha256(",".join(map(str, seeds)).encode()).hexdigest()[:8]
        label = f"{seeds[0]}+{len(seeds) - 1}_{digest}"
    return path.with_name(f"{stem}__seeds{label}.ckpt.pt")


def _plain_infos(infos: Mapping[str, Any]) -> dict[str, Any]:
    """A vector env's ``infos`` as a checkpoint holds them: arrays of strings (``phase``)
    as lists, tagged, since checkpoints hold only numeric arrays."""
    return {k: {_STR_ARRAY: [str(x) for x in v]}
            if isinstance(v, np.ndarray) and v.dtype.kind in "OUS" else v
            for k, v in infos.items()}


def _vector_infos(plain: Mapping[str, Any]) -> dict[str, Any]:
    """Invert :func:`_plain_infos`."""
    return {k: np.array(v[_STR_ARRAY], dtype=object)
            if isinstance(v, dict) and set(v) == {_STR_ARRAY} else v
            for k, v in plain.items()}


_STR_ARRAY = "__str_array__"


def _measure_vector(agent: Any, venv: Any, n: int) -> list[dict[str, Any]] | None:
    features = getattr(agent, "features", None)
    probe = getattr(venv, "probe", None)
    if not callable(features) or not callable(probe):
        return None
    import torch

    from lop_bench.diagnostics import measure

    x = torch.as_tensor(probe())
    with torch.no_grad():
        feats = list(features(x))
        params = list(agent.parameters()) if callable(getattr(agent, "parameters", None)) else None
        rows = []
        for i in range(n):
            try:
                rows.append(measure([f[i] for f in feats], [p[i] for p in params] if params else None,
                                    layer_ranks=False))
            except ValueError:
                rows.append(dict.fromkeys(_DIAG_KEYS))
    return rows
