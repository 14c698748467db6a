"""``lop_bench.run``: the stepwise loop plus metrics, diagnostics, progress and a result file.

The loop is exactly the one in DESIGN.md section 4 (an author may write it by hand and
get the same per-task scores, which the env computes itself). On top of it the runner

- records ``info["task_metrics"]`` at each task's end (the per-task curve);
- measures diagnostics at task starts, every ``diagnostics_every`` tasks, on the env's
  probe batch (supervised streams; drawn from a generator of its own, so the curve is the
  same with diagnostics off) or the agent's own recent states (``agent.probe()``, RL),
  through ``agent.features`` / ``agent.parameters`` under ``no_grad``;
- checks that the agent's parameters and buffers do not change inside ``val``/``test``
  phases (:class:`~lop_bench.errors.PhaseViolationError`);
- shows a progress bar and writes the result atomically;
- writes a checkpoint every k tasks and resumes from it (``checkpoint_every``, ``resume``).
"""

from __future__ import annotations

import datetime as _dt
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lop_bench.agents import AgentFactory, make_agent, resolve_factory
from lop_bench.errors import LopBenchError, PhaseViolationError
from lop_bench.registration import make
from lop_bench.results import Result, save

__all__ = ["run", "run_vectorized"]

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


def _state_tensors(agent: Any) -> list[Any]:
    tensors = []
    for attr in ("parameters", "buffers"):
        fn = getattr(agent, attr, None)
        if callable(fn):
            tensors.extend(t for t in fn() if hasattr(t, "detach"))
    return tensors


def _snapshot(agent: Any) -> list[Any]:
    return [t.detach().clone() for t in _state_tensors(agent)]


def _check_unchanged(agent: Any, snap: list[Any], phase: str, task: int) -> None:
    import torch

    def same(a: Any, b: Any) -> bool:
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if torch.equal(a, b):
            return True
        # A diverged network holds NaNs, which equal nothing: compare NaN positions too.
        if a.is_floating_point() or a.is_complex():
            nan_a, nan_b = torch.isnan(a), torch.isnan(b)
            return torch.equal(nan_a, nan_b) and torch.equal(a[~nan_a], b[~nan_b])
        return False

    now = _state_tensors(agent)
    if len(now) != len(snap) or not all(same(a, b) for a, b in zip(now, snap)):
        raise PhaseViolationError(
            f"the agent changed its parameters or buffers during the {phase!r} phase of task "
            f"{task}. Agents must not learn (or update batch-norm statistics) on val/test "
            "batches: check info['phase'] and info.get('target') in learn(), and use eval mode."
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
        out: write the result there (a ``.json`` path, or a directory for the default name).
        checkpoint_every: write a checkpoint after every k-th task (env, agent and loop
            state; :mod:`lop_bench.checkpoint`). The stream and the agent must implement
            ``state_dict`` / ``load_state_dict``.
        checkpoint: the checkpoint file (default: ``<result name>.ckpt.pt`` beside the
            result in ``out``). It is deleted once the result is written.
        resume: continue from ``checkpoint`` when it exists (else start from the beginning),
            writing further checkpoints every ``checkpoint_every`` tasks (default: the
            interrupted run's cadence).
            The resumed run's result equals the uninterrupted one's, bit for bit, apart
            from ``run_info``.

    Example::

        result = lop_bench.run("lop/SlowlyChangingRegression-v0", "backprop", tier="smoke")
        print(result.summary)
    """
    if not isinstance(diagnostics_every, int) or diagnostics_every < 1:
        raise LopBenchError(f"diagnostics_every must be an integer >= 1, got {diagnostics_every!r}.")
    if checkpoint_every is not None and (
        not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool)
        or checkpoint_every < 1
    ):
        raise LopBenchError(
            f"checkpoint_every must be a number of tasks >= 1, got {checkpoint_every!r}."
        )
    name, factory = resolve_factory(agent)
    wrapped = make(env_id, tier=tier, **_with_data_device(env_id, env_kwargs, device))
    env = wrapped.unwrapped
    obs, info = env.reset(seed=seed)
    agent_obj = make_agent(factory, wrapped, seed=seed, device=device, **(agent_kwargs or {}))
    ckpt_path = _checkpoint_file(env, name, seed, out, checkpoint, checkpoint_every, resume)
    if ckpt_path is not None:
        _check_checkpointable(env, agent_obj, name)
    identity = {
        "env_id": env.ENV_ID, "tier": tier, "env_kwargs": _jsonable(env_kwargs or {}),
        "agent": name, "agent_kwargs": _jsonable(agent_kwargs or {}), "seed": int(seed),
        "protocol_hash": env.protocol_hash, "diagnostics": bool(diagnostics),
        "diagnostics_every": diagnostics_every,
    }

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
        from lop_bench.checkpoint import check_identity, load_checkpoint

        state = load_checkpoint(ckpt_path)
        check_identity(ckpt_path, state["run"], identity)
        env.load_state_dict(state["env"])
        agent_obj.load_state_dict(state["agent"])
        loop = state["loop"]
        obs, info, steps, elapsed = loop["obs"], loop["info"], loop["steps"], loop["elapsed"]
        per_task, val_metrics = list(loop["per_task"]), list(loop["val_metrics"])
        diag_tasks, diag_rows = list(loop["diag_tasks"]), list(loop["diag_rows"])
        task = info["task"]
        resumed_at = steps
        if checkpoint_every is None:  # keep the killed run's cadence
            checkpoint_every = loop.get("checkpoint_every")
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
                from lop_bench.checkpoint import save_checkpoint

                save_checkpoint(ckpt_path, {
                    "run": identity, "env": env.state_dict(), "agent": agent_obj.state_dict(),
                    "loop": {"obs": obs, "info": info, "steps": steps,
                             "elapsed": elapsed + time.perf_counter() - start,
                             "per_task": per_task, "val_metrics": val_metrics,
                             "diag_tasks": diag_tasks, "diag_rows": diag_rows,
                             "checkpoint_every": checkpoint_every},
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

    extra = {} if resumed_at is None else {"resumed_at_step": resumed_at}
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
    if out is not None:
        save(result, out)
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


def _checkpoint_file(env: Any, name: str, seed: int, out: str | Path | None,
                     checkpoint: str | Path | None, every: int | None, resume: bool) -> Path | None:
    """The checkpoint path of a run, or None when it neither writes nor resumes one."""
    if checkpoint is None and every is None and not resume:
        return None
    if checkpoint is not None:
        return Path(checkpoint)
    if out is None:
        raise LopBenchError(
            "checkpoint_every / resume need a checkpoint path: pass checkpoint=... or out=...."
        )
    from lop_bench.checkpoint import checkpoint_path
    from lop_bench.results import result_filename

    out = Path(out)
    if out.suffix != ".json":
        out = out / result_filename({"env_id": env.ENV_ID, "agent": {"name": name},
                                     "custom": env.custom, "tier": env.tier, "seed": seed})
    return checkpoint_path(out)


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

    data: dict[str, Any] = env.describe()
    data.update(
        schema_version=1,
        agent={
            "name": name,
            "preset": getattr(agent, "preset", None),
            "hparams": _jsonable(getattr(agent, "hparams", None) or agent_kwargs or {}),
            "vectorized": vectorized,
        },
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


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))


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
) -> list[Result]:
    """Run one agent on N seeds at once (``make_vec`` + the agent's vectorized version).

    Returns one :class:`Result` per seed, like :func:`run` for that seed (its ``agent``
    record says ``vectorized: true``); with ``out``, writes one file per seed. ``seeds``
    defaults to the tier's seed set. The factory receives the vector env's spec (its
    ``kwargs`` hold ``vectorization_mode``) and the tuple of seeds as ``seed``; it returns
    a vectorized agent or raises :class:`~lop_bench.errors.VectorizationNotSupported`.
    """
    import numpy as np

    from lop_bench.registration import env_class, make_vec

    if not isinstance(diagnostics_every, int) or diagnostics_every < 1:
        raise LopBenchError(f"diagnostics_every must be an integer >= 1, got {diagnostics_every!r}.")
    name, factory = resolve_factory(agent)
    if seeds is None:
        cfg = env_class(env_id).tier_config(tier)
        seeds = tuple(range(cfg.num_seeds))
    seeds = tuple(seeds)
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

    bar, report = _progress(progress, venv.total_steps * n, f"{name} x{n} seeds", "seed-step")

    task = int(infos["task"][0])
    diagnose(task)
    steps = 0
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
            if infos["task"][0] != task:
                task = int(infos["task"][0])
                diagnose(task)
            obs = next_obs
            countdown -= 1
            if countdown == 0:
                countdown = _PROGRESS_EVERY
                if report is not None:
                    report(_PROGRESS_EVERY * n)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    if report is not None and bar is None:
        report((steps % _PROGRESS_EVERY) * n)

    curves = np.stack(per_task, axis=1)  # (N, tasks)
    run_info = _run_info(wall, steps * n / wall if wall > 0 else 0.0, num_envs=n)
    results = []
    for i, seed in enumerate(seeds):
        data = _result_data(
            venv, name, agent_obj, agent_kwargs, vectorized=True, seed=seed, steps=steps,
            per_task=[float(v) for v in curves[i]],
            diagnostics=_diag_table(diag_tasks, diag_rows[i], diagnostics_every),
            run_info=dict(run_info),
        )
        result = Result(data)
        if out is not None:
            save(result, out)
        results.append(result)
    return results


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
