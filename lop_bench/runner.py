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
  (:mod:`lop_bench.phase_check`);
- shows a progress bar and writes the result atomically, under a name that carries the
  run's identity (:mod:`lop_bench.identity`), never over the result of another run;
- writes a checkpoint every k tasks and resumes from it (``checkpoint_every``, ``resume``).

:func:`run` (one seed) and :func:`run_vectorized` (N seeds of a vector env, one vectorized
agent) share that loop, its state, the phase check and the progress; they differ in what
they step (:class:`_OneSeed`, :class:`_SeedGroup`: scalars or arrays of one value per seed).

The phase check guards against mistakes, not against a determined cheat: an agent can keep
what it sees outside its ``state_dict()``. That is what the label-free order of val/test
rows, probes drawn from training data, and the code review of a submission are for.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lop_bench.agents import AgentFactory, check_preset, make_agent, resolve_factory
from lop_bench.errors import (
    CheckpointError,
    InvalidConfigError,
    InvalidResultError,
    LopBenchError,
)
from lop_bench.identity import (
    agent_record,
    check_identity,
    result_identity,
    result_path,
    run_identity,
)
from lop_bench.phase_check import PhaseGuard
from lop_bench.registration import env_class, make
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


def _measure(agent: Any, env: Any, num_seeds: int | None) -> list[dict[str, Any]] | None:
    """The diagnostics of ``agent`` at a task start, one row per seed, or None when there
    is nothing to measure (no ``features``, no probe, or an RL agent that has seen no state
    yet).

    The probe is the env's (inputs of the task, supervised streams) or else the agent's own
    recent states (RL: PROTOCOLS.md, "Diagnostics definitions"). For a vector env
    (``num_seeds`` N) the agent's features and parameters have a leading seed axis: row
    ``i`` is of their slice ``i``. A diverged network (non-finite activations or weights)
    gets a row of ``None``: the run goes on and the task's diagnostics are missing.
    """
    features = getattr(agent, "features", None)
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
    parameters = getattr(agent, "parameters", None)
    with torch.no_grad():
        feats = list(features(x))
        params = list(parameters()) if callable(parameters) else None
        if num_seeds is None:
            per_seed = [(feats, params)]
        else:
            per_seed = [([f[i] for f in feats], [p[i] for p in params] if params else None)
                        for i in range(num_seeds)]
        rows = []
        for f, p in per_seed:
            try:
                rows.append(measure(f, p, definition=env.DIAGNOSTICS_DEFINITION,
                                    layer_ranks=False))
            except ValueError:
                rows.append(dict.fromkeys(_DIAG_KEYS))
    return rows


class _Progress:
    """A run's progress in seed-steps (steps x seeds): a tqdm bar (``progress=True``), the
    caller's callback (given the seed-steps done since its last call), or nothing; updated
    every :data:`_PROGRESS_EVERY` steps. A resumed run starts at the steps it had done."""

    def __init__(self, progress: bool | Callable[[int], None], total: int, desc: str,
                 unit: str, num_seeds: int, done: int) -> None:
        self.num_seeds = num_seeds
        self.countdown = _PROGRESS_EVERY
        self.bar = None
        self.report = progress if callable(progress) else None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total * num_seeds, desc=desc, unit=unit, unit_scale=True,
                            leave=False, dynamic_ncols=True, initial=done * num_seeds)
            self.report = self.bar.update
        elif self.report is not None and done:
            self.report(done * num_seeds)  # the steps done before the checkpoint

    def step(self) -> None:
        """One step done."""
        self.countdown -= 1
        if self.countdown == 0:
            self.countdown = _PROGRESS_EVERY
            if self.report is not None:
                self.report(_PROGRESS_EVERY * self.num_seeds)

    def close(self) -> None:
        """Close the bar (whether the run finished or failed)."""
        if self.bar is not None:
            self.bar.close()

    def finish(self, steps_run: int) -> None:
        """A finished run: report to the callback the steps it was not told of yet."""
        if self.bar is None and self.report is not None:
            self.report((steps_run % _PROGRESS_EVERY) * self.num_seeds)


@dataclass
class _Loop:
    """What a run carries from step to step and into its checkpoints: the steps and time so
    far, the per-task scores (one per task: a float, or an array of one per seed), the
    validation scores, the diagnostics (one list of rows per seed)."""

    task: int
    steps: int = 0
    elapsed: float = 0.0
    per_task: list[Any] = field(default_factory=list)
    val_metrics: list[dict[str, Any]] = field(default_factory=list)
    diag_tasks: list[int] = field(default_factory=list)
    diag_rows: list[list[dict[str, Any]]] = field(default_factory=list)
    checkpoint_every: int | None = None
    resumed_at: int | None = None


class _OneSeed:
    """What the loop steps for :func:`run`: one stream, one seed; ``info`` holds scalars."""

    vectorized = False
    unit = "step"
    num_envs = None  # a checkpoint of run()'s layout

    def __init__(self, env: Any, seed: int) -> None:
        self.env, self.seeds, self.metric = env, (seed,), env.METRIC

    def desc(self, name: str) -> str:
        return f"{name} seed {self.seeds[0]}"

    @staticmethod
    def task(info: Mapping[str, Any]) -> int:
        """The task of the observation ``info`` comes with (of ``reset`` too)."""
        return info["task"]

    @staticmethod
    def clock(info: Mapping[str, Any]) -> tuple[int, str, bool, bool]:
        """A step's ``(task, phase, task_end, stream_done)``."""
        return info["task"], info["phase"], info["task_end"], info["stream_done"]

    def score(self, info: Mapping[str, Any]) -> float:
        return float(info["task_metrics"][self.metric])

    def next_episode(self, terminated: Any, truncated: Any) -> tuple[Any, Any] | None:
        """At an RL episode's end, the next episode's first observation and info."""
        return self.env.reset() if terminated or truncated else None

    def measure(self, agent: Any) -> list[dict[str, Any]] | None:
        return _measure(agent, self.env, self.num_envs)

    @staticmethod
    def saved(info: Mapping[str, Any], task: int, rows: list[list[Any]]) -> dict[str, Any]:
        """The loop's info and diagnostics rows as a checkpoint of this layout holds them."""
        return {"info": info, "diag_rows": rows[0]}

    @staticmethod
    def restored(loop: Mapping[str, Any]) -> tuple[Any, list[list[Any]]]:
        """Invert :meth:`saved`."""
        return loop["info"], [list(loop["diag_rows"])]

    @staticmethod
    def curves(per_task: list[Any]) -> list[list[float]]:
        """One per-task curve per seed."""
        return [list(per_task)]


class _SeedGroup(_OneSeed):
    """What the loop steps for :func:`run_vectorized`: a vector env of N seeds; ``infos``
    holds arrays, one value per seed (the same task clock for all)."""

    vectorized = True
    unit = "seed-step"

    def __init__(self, venv: Any, seeds: Sequence[int]) -> None:
        self.env, self.seeds, self.metric = venv, tuple(seeds), venv.METRIC
        self.num_envs = len(self.seeds)

    def desc(self, name: str) -> str:
        return f"{name} x{len(self.seeds)} seeds"

    @staticmethod
    def task(info: Mapping[str, Any]) -> int:
        return int(info["task"][0])

    @staticmethod
    def clock(info: Mapping[str, Any]) -> tuple[int, str, bool, bool]:
        return (int(info["task"][0]), info["phase"][0], info["task_end"][0],
                info["stream_done"][0])

    def score(self, info: Mapping[str, Any]) -> np.ndarray:
        return np.asarray(info["task_metrics"][self.metric], dtype=np.float64)

    def next_episode(self, terminated: Any, truncated: Any) -> None:
        return None  # the vector streams are supervised: no episodes

    @staticmethod
    def saved(info: Mapping[str, Any], task: int, rows: list[list[Any]]) -> dict[str, Any]:
        return {"info": {"task": task}, "infos": _plain_infos(info), "diag_rows": rows}

    @staticmethod
    def restored(loop: Mapping[str, Any]) -> tuple[Any, list[list[Any]]]:
        return _vector_infos(loop["infos"]), [list(r) for r in loop["diag_rows"]]

    @staticmethod
    def curves(per_task: list[Any]) -> list[list[float]]:
        return [[float(v) for v in row] for row in np.stack(per_task, axis=1)]


def check_fits(agent: str | AgentFactory, env_id: str,
               tier: str) -> tuple[str, AgentFactory]:
    """An unknown stream id or tier, an unknown agent, then an agent with no preset for
    that stream and tier: each refused before the stream is built, so before its dataset
    is looked for (``run``, ``run_vectorized`` and the command line call this first).
    Returns the agent's ``(name, factory)``."""
    cls = env_class(env_id)
    cls.tier_config(tier)
    name, factory = resolve_factory(agent)
    check_preset(name, factory, cls.ENV_ID, tier)
    return name, factory



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
    name, factory = check_fits(agent, env_id, tier)
    wrapped = make(env_id, tier=tier, **_with_data_device(env_id, env_kwargs, device))
    env = wrapped.unwrapped
    obs, info = env.reset(seed=seed)
    agent_obj = make_agent(factory, wrapped, seed=seed, device=device, **(agent_kwargs or {}))
    identity = run_identity(env, name, agent_obj, agent_kwargs, seed=seed,
                            diagnostics=diagnostics, diagnostics_every=diagnostics_every)
    paths, finished = _result_paths(out, [identity], env.custom, resume)
    if finished is not None:
        return finished[0]
    ckpt_path = _checkpoint_file(paths[0] if paths else None, checkpoint, checkpoint_every,
                                 resume)
    if ckpt_path is not None:
        _check_checkpointable(env, agent_obj, name)
    (result,) = _execute(
        _OneSeed(env, env.stream_seed), agent_obj, name, agent_kwargs, obs, info,
        identity=identity, paths=paths, ckpt_path=ckpt_path,
        device=device, resume=resume, progress=progress, checkpoint_every=checkpoint_every,
        diagnostics=diagnostics, diagnostics_every=diagnostics_every,
    )
    return result


def _execute(view: _OneSeed, agent: Any, name: str, agent_kwargs: dict[str, Any] | None,
             obs: Any, info: Any, *, identity: Mapping[str, Any], paths: Sequence[Path],
             ckpt_path: Path | None, device: str, resume: bool,
             progress: bool | Callable[[int], None], checkpoint_every: int | None,
             diagnostics: bool, diagnostics_every: int) -> list[Result]:
    """The loop of DESIGN.md section 4 from ``obs, info`` (the stream just reset) on, with the
    runner's bookkeeping, for :func:`run` (one seed) and :func:`run_vectorized` (a vector
    env's seeds) alike: it resumes from ``ckpt_path`` when asked, records the per-task
    scores and diagnostics, checks the phases, writes checkpoints, shows progress, and
    returns one result per seed (written to ``paths`` when given)."""
    env = view.env
    num_seeds = len(view.seeds)
    state = _Loop(task=view.task(info), diag_rows=[[] for _ in view.seeds],
                  checkpoint_every=checkpoint_every)
    if resume and ckpt_path is not None and ckpt_path.exists():
        loop = _load_checkpoint(ckpt_path, device, identity, env, agent, num_envs=view.num_envs)
        info, rows = view.restored(loop)
        obs = loop["obs"]
        state = _Loop(
            task=loop["info"]["task"], steps=loop["steps"], elapsed=loop["elapsed"],
            per_task=list(loop["per_task"]), val_metrics=list(loop["val_metrics"]),
            diag_tasks=list(loop["diag_tasks"]), diag_rows=rows,
            # keep the killed run's cadence unless given another
            checkpoint_every=loop["checkpoint_every"] if checkpoint_every is None else checkpoint_every,
            resumed_at=loop["steps"],
        )
    elif diagnostics:
        _diagnose(view, agent, state, diagnostics_every)

    guard = PhaseGuard(agent)
    shown = _Progress(progress, env.total_steps, view.desc(name), view.unit, num_seeds,
                      state.steps)
    every = state.checkpoint_every
    start = time.perf_counter()
    act, learn, step = agent.act, agent.learn, env.step
    try:
        while True:
            context = info  # of the observation acted on (its epoch labels val_metrics)
            action = act(obs, info)
            next_obs, reward, terminated, truncated, info = step(action)
            state.steps += 1
            # What the step says is read before learn(), which cannot rewrite it.
            task, phase, task_end, done = view.clock(info)
            if task_end:
                state.per_task.append(view.score(info))
            if "val_metrics" in info:
                state.val_metrics.append({"task": state.task, "epoch": context.get("epoch", 0),
                                          **info["val_metrics"]})
            guard.after_step(phase, done, state.task)
            learn(obs, action, reward, next_obs, terminated, truncated, info)
            if done:
                break
            guard.after_learn(phase)
            new_task = task != state.task
            if new_task:
                state.task = task
                if diagnostics:
                    _diagnose(view, agent, state, diagnostics_every)
            episode = view.next_episode(terminated, truncated)
            if episode is not None:
                next_obs, info = episode
            obs = next_obs
            if (new_task and every is not None and guard.idle
                    and len(state.per_task) % every == 0):
                _save_checkpoint(ckpt_path, identity, env, agent, {
                    "obs": obs, "steps": state.steps,
                    "elapsed": state.elapsed + time.perf_counter() - start,
                    "per_task": state.per_task, "val_metrics": state.val_metrics,
                    "diag_tasks": state.diag_tasks, "checkpoint_every": every,
                    **view.saved(info, state.task, state.diag_rows),
                })
            shown.step()
    finally:
        shown.close()
    run_wall = time.perf_counter() - start
    steps_run = state.steps - (state.resumed_at or 0)
    shown.finish(steps_run)

    extra: dict[str, Any] = {"num_envs": num_seeds} if view.vectorized else {}
    extra["diagnostics_every"] = identity["diagnostics_every"]
    if state.resumed_at is not None:
        extra["resumed_at_step"] = state.resumed_at
    extra.update(_dataset_notes(env))
    run_info = _run_info(state.elapsed + run_wall,
                         steps_run * num_seeds / run_wall if run_wall > 0 else 0.0, **extra)
    results = []
    for seed, curve, rows, path in zip(view.seeds, view.curves(state.per_task), state.diag_rows,
                                       paths or [None] * num_seeds):
        data = _result_data(
            env, name, agent, agent_kwargs, vectorized=view.vectorized, seed=seed,
            steps=state.steps, per_task=curve,
            diagnostics=_diag_table(state.diag_tasks, rows, diagnostics_every),
            run_info=dict(run_info),
        )
        if state.val_metrics:
            data["val_metrics"] = state.val_metrics
        result = Result(data)
        if path is not None:
            save(result, path)
        results.append(result)
    if ckpt_path is not None:
        ckpt_path.unlink(missing_ok=True)  # every result is written: the run is complete
    return results


def _diagnose(view: _OneSeed, agent: Any, state: _Loop, every: int) -> None:
    """Measure the diagnostics at the start of ``state.task`` when it is one of every
    ``every``-th task, and record them."""
    if state.task % every:
        return
    rows = view.measure(agent)
    if rows is not None:
        state.diag_tasks.append(state.task)
        for recorded, row in zip(state.diag_rows, rows):
            recorded.append(row)


def _result_paths(out: str | Path | None, identities: Sequence[Mapping[str, Any]], custom: bool,
                  resume: bool) -> tuple[list[Path], list[Result] | None]:
    """Where the result of each run ``identities`` names goes (none without ``out``), and,
    when every one is there already and ``resume``, those results (nothing is to run);
    else checks that they can be written (:func:`check_existing_result`,
    :func:`check_writable`)."""
    if out is None:
        return [], None
    paths = [result_path(out, identity, custom) for identity in identities]
    finished = [check_existing_result(p, i, resume=resume) for p, i in zip(paths, identities)]
    if all(r is not None for r in finished):
        return paths, finished  # type: ignore[return-value]
    check_writable(paths[0].parent)
    return paths, None


def _with_data_device(env_id: str, env_kwargs: dict[str, Any] | None, device: str) -> dict[str, Any]:
    """``env_kwargs`` plus ``device=device`` for a stream that can keep its data on the
    agent's device (the image streams, and the batch-1 streams), unless the caller chose
    one. A vector env takes its single env's keywords, so this serves ``make_vec`` too."""
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

    if not env.supports_checkpoints:
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


def _dataset_notes(env: Any) -> dict[str, Any]:
    """What a result must say about its data beyond the fingerprint: the files whose md5
    differed from the published one and were read anyway (``allow_checksum_mismatch``)."""
    mismatches = [] if env.dataset is None else list(env.dataset.md5_mismatches)
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
    from lop_bench.registration import make_vec

    _check_cadences(diagnostics_every, checkpoint_every)
    device = check_device(device)
    name, factory = check_fits(agent, env_id, tier)
    if seeds is None:
        cfg = env_class(env_id).tier_config(tier)
        seeds = tuple(range(cfg.num_seeds))
    seeds = tuple(check_run_seed(s) for s in seeds)
    if out is not None and len(seeds) > 1 and Path(out).suffix == ".json" and not Path(out).is_dir():
        raise LopBenchError(
            f"out={str(out)!r} names one file, but {len(seeds)} seeds write one result each: "
            "pass a directory."
        )
    envs = make_vec(env_id, num_envs=len(seeds), tier=tier, seeds=seeds,
                    **_with_data_device(env_id, env_kwargs, device))
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
    paths, finished = _result_paths(out, identities, venv.custom, resume)
    if finished is not None:
        return finished
    if checkpoint is None and paths and (checkpoint_every is not None or resume):
        checkpoint = vector_checkpoint_path(paths[0], seeds)
    ckpt_path = _checkpoint_file(paths[0] if paths else None, checkpoint, checkpoint_every, resume)
    if ckpt_path is not None:
        _check_checkpointable(venv, agent_obj, name)
    return _execute(
        _SeedGroup(venv, seeds), agent_obj, name, agent_kwargs, obs, infos, identity=identity,
        paths=paths, ckpt_path=ckpt_path, device=device, resume=resume, progress=progress,
        checkpoint_every=checkpoint_every, diagnostics=diagnostics,
        diagnostics_every=diagnostics_every,
    )


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
