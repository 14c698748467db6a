"""Planning: a spec's configurations (every name and value checked), the jobs left to run,
and what they will cost.

A *configuration* is one setting: a stream, a tier, stream overrides, an agent and its
hyperparameters, for a list of seeds. Its results' identity and file names are those of
``lop-bench run`` (:mod:`lop_bench.identity`). A *job* runs one seed of a configuration,
or, where the agent has a vectorized version, a group of its seeds at once. ``run``,
``reproduce`` and ``sweep`` plan alike (:func:`plan_jobs`); a job is a plain dict that a
worker process or a Ray task runs with :func:`lop_bench.sweeps.pool.run_job`.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lop_bench.config import canonical_json, replace_checked
from lop_bench.errors import (
    CheckpointError,
    InvalidConfigError,
    LopBenchError,
    VectorizationNotSupported,
)
from lop_bench.sweeps.spec import AUTO, Grid, Problems, SweepSpec

__all__ = [
    "STEPS_PER_SECOND",
    "AGENT_COST",
    "VECTOR_SPEEDUP",
    "VECTOR_HALF_SPEED_SEEDS",
    "AUTO_CHECKPOINTS",
    "Configuration",
    "Plan",
    "configure",
    "expand",
    "plan_jobs",
    "format_plan",
    "format_seeds",
]

# Rough single-seed throughput, env steps per second on one CPU core (or one GPU), of the
# reference agents, for --dry-run's estimates only. Measured here unless marked.
STEPS_PER_SECOND: dict[str, dict[str, float]] = {
    # benchmarks/vectorized_speed.py: backprop 10,684, continual backprop 7,219 steps/s.
    "lop/SlowlyChangingRegression-v0": {"cpu": 8_000.0},
    # reproduce --tier cpu: 25 runs x 150,000 steps in about 11 minutes on 2 cores.
    "lop/PermutedMNIST-v0": {"cpu": 2_800.0},
    # benchmarks/ant_speed.py: full PPO training at about 2,000 env steps/s on one core.
    "lop/ChangingFrictionAnt-v0": {"cpu": 2_000.0},
    # reproduce --tier cpu: 20 runs x 520 steps (batches of 100) in about 6 minutes on 2
    # cores. On a GPU: an assumption (25x), not measured here.
    "lop/ContinualImageNet-v0": {"cpu": 14.0, "cuda": 350.0},
    # reproduce --tier cpu: 25 runs x 268 steps (batches of 90) in about 5 minutes on 2
    # cores. On a GPU: an assumption (25x), not measured here.
    "lop/IncrementalCIFAR100-v0": {"cpu": 11.0, "cuda": 275.0},
}
"""Steps per second of one seed, per stream and device type (rough; ``--dry-run`` only)."""
AGENT_COST: dict[str, float] = {
    "shrink_perturb": 2.0, "continual_backprop": 1.5, "ppo_cbp": 1.5,
    "continual_backprop_instantaneous": 1.5, "ppo_cbpi": 1.5,
    "upgd": 2.5, "layernorm": 1.6, "crelu": 1.3, "redo": 1.1, "l2_init": 1.1,
}
"""How much slower than backprop a reference agent steps (noise at every step,
generate-and-test): benchmarks/vectorized_speed.py, continual backprop 7,219 against
backprop's 10,684 steps/s; shrink and perturb draws noise for every weight at every step,
UPGD too (10 regression seeds: 128 us a step against backprop's 54; layer normalization
63 against 28, CReLU 42)."""
VECTOR_SPEEDUP = 3.4
"""How much faster each seed of a small vectorized job steps than a single-seed run, all
seeds at once (benchmarks/vectorized_speed.py, backprop: 36,786 seed-steps/s at 1 seed,
333,726 at 10, 1,740,840 at 100, against 10,684 steps/s single)."""
VECTOR_HALF_SPEED_SEEDS = 100
"""Seeds at which each seed of a vectorized job steps at half that speed (the batched
operations grow with the seeds: 1.6x at 100 seeds)."""
AUTO_CHECKPOINTS = 50
"""Checkpoints per run when a sweep's ``checkpoint_every`` is ``"auto"``: a preempted job
loses at most about 2% of its work."""


@dataclass(frozen=True)
class Configuration:
    """One setting of a sweep, for its seeds; built by :func:`configure`.

    ``identity`` is the identity of its results without the seed (:mod:`lop_bench.identity`);
    ``checkpoints`` says whether its stream and agent support checkpoints; ``where`` is the
    key path of the agent in the spec, for errors.
    """

    env_id: str
    tier: str
    env_kwargs: Mapping[str, Any]
    agent: str
    agent_kwargs: Mapping[str, Any]
    seeds: tuple[int, ...]
    identity: Mapping[str, Any]
    custom: bool
    num_tasks: int
    total_steps: int
    checkpoints: bool
    diagnostics: bool = True
    diagnostics_every: int = 1
    where: tuple[Any, ...] = field(default=(), compare=False)

    def identity_of(self, seed: int) -> dict[str, Any]:
        """The identity of this configuration's result for ``seed``."""
        return {**self.identity, "seed": int(seed)}

    def result_path(self, out: str | Path, seed: int) -> Path:
        """Where the result of ``seed`` goes in ``out`` (``lop-bench run``'s file name)."""
        from lop_bench.identity import result_path

        return result_path(out, self.identity_of(seed), self.custom)

    @property
    def label(self) -> str:
        """``agent (key=value ...)``: the agent and the settings the spec gave it."""
        settings = " ".join(f"{k}={_show(v)}" for k, v in
                            [*self.env_kwargs.items(), *self.agent_kwargs.items()])
        return f"{self.agent} ({settings})" if settings else self.agent


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def configure(env: Any, agent: str, env_kwargs: Mapping[str, Any],
              agent_kwargs: Mapping[str, Any], seeds: Sequence[int], *, diagnostics: bool = True,
              diagnostics_every: int = 1, where: tuple[Any, ...] = ()) -> Configuration:
    """The configuration of ``agent`` with ``agent_kwargs`` on ``env`` (a stream built with
    ``env_kwargs``): the agent is built once, on the CPU, so that its preset and
    hyperparameters are checked and recorded in the identity."""
    from lop_bench.agents import make_agent
    from lop_bench.identity import run_identity

    seeds = tuple(seeds)
    agent_obj = make_agent(agent, env, seed=seeds[0], device="cpu", **agent_kwargs)
    identity = run_identity(env, agent, agent_obj, dict(agent_kwargs), seed=seeds[0],
                            diagnostics=diagnostics, diagnostics_every=diagnostics_every)
    identity.pop("seed")
    checkpoints = bool(env.supports_checkpoints
                       and callable(getattr(agent_obj, "state_dict", None))
                       and callable(getattr(agent_obj, "load_state_dict", None)))
    return Configuration(
        env_id=env.ENV_ID, tier=env.tier, env_kwargs=dict(env_kwargs), agent=agent,
        agent_kwargs=dict(agent_kwargs), seeds=seeds, identity=identity, custom=env.custom,
        num_tasks=int(env.num_tasks), total_steps=int(env.total_steps), checkpoints=checkpoints,
        diagnostics=diagnostics, diagnostics_every=diagnostics_every, where=where,
    )


# -- a spec's configurations, every name and value checked ------------------------------
def expand(spec: SweepSpec, problems: Problems | None = None) -> list[Configuration]:
    """Every configuration of ``spec``, after checking each name and value against the
    streams, tiers and agents that exist: unknown streams, tiers, agents, hyperparameters
    and config fields, values an agent's or a stream's config refuses, agents without a
    preset for a stream, missing datasets. Every problem is collected and raised together
    (:class:`~lop_bench.errors.SweepSpecError`, with the spec line of each), before any
    job starts, with those already in ``problems`` (:func:`~lop_bench.sweeps.spec.read_spec`).
    Configurations that two grids share are merged (their seeds united)."""
    problems = problems if problems is not None else spec.problems()
    configs: dict[str, Configuration] = {}
    for grid in spec.grids:
        for config in _grid_configurations(grid, spec, problems):
            key = canonical_json(dict(config.identity))
            if key in configs:  # the same setting in two grids: run each seed once
                seeds = tuple(dict.fromkeys([*configs[key].seeds, *config.seeds]))
                config = _replace_seeds(configs[key], seeds)
            configs[key] = config
    problems.raise_if_any()
    return list(configs.values())


def _replace_seeds(config: Configuration, seeds: tuple[int, ...]) -> Configuration:
    from dataclasses import replace

    return replace(config, seeds=seeds)


def _grid_configurations(grid: Grid, spec: SweepSpec, problems: Problems) -> Iterable[Configuration]:
    from lop_bench.agents import resolve_factory
    from lop_bench.registration import env_class

    classes = {}
    for env_id in grid.streams:
        try:
            classes[env_id] = env_class(env_id)
        except LopBenchError as exc:
            problems.add(grid.path("streams"), str(exc))
    agents = []
    for name in grid.agents:
        try:
            resolve_factory(name)
            agents.append(name)
        except LopBenchError as exc:
            problems.add(grid.path("agents", name), str(exc))
    for env_id, cls in classes.items():
        for tier in grid.tiers:
            if tier not in cls.TIERS:
                from lop_bench.errors import did_you_mean

                problems.add(grid.path("tiers"), f"{tier!r} is not a tier of {env_id}."
                             f"{did_you_mean(tier, cls.TIERS)} Its tiers: {', '.join(cls.TIERS)}.")
                continue
            # With a refused override, the agents are still checked, on the tier as it is.
            settings = list(grid.override_settings()) if _overrides_ok(grid, cls, tier, problems) \
                else [{}]
            seeds = grid.seeds or tuple(range(cls.TIERS[tier].num_seeds))
            first = True
            for overrides in settings:
                env = _make_env(grid, env_id, tier, overrides, problems)
                if env is None:
                    continue
                for name in agents:
                    yield from _agent_configurations(grid, spec, env, name, overrides, seeds,
                                                     problems, check_values=first)
                first = False


def _overrides_ok(grid: Grid, cls: type, tier: str, problems: Problems) -> bool:
    """Check every ``[set]`` value against the tier's config (one field at a time)."""
    base = cls.TIERS[tier]
    params = inspect.signature(cls.__init__).parameters
    ok = True
    for key, values in grid.overrides.items():
        for value in values:
            if key in params and key not in {f for f in base.__dataclass_fields__}:
                continue  # a keyword of the stream's own (a data source), checked by make()
            try:
                replace_checked(base, what=f"{cls.ENV_ID} config", **{key: value})
            except LopBenchError as exc:
                problems.add(grid.path("set", key), str(exc))
                ok = False
    return ok


def _make_env(grid: Grid, env_id: str, tier: str, overrides: Mapping[str, Any],
              problems: Problems) -> Any:
    from lop_bench.registration import make

    try:
        return make(env_id, tier=tier, **overrides).unwrapped
    except LopBenchError as exc:  # a combination of overrides refused, a dataset missing
        refused = overrides and isinstance(exc, InvalidConfigError)
        problems.add(grid.path("set") if refused else grid.path("streams"),
                     f"{env_id} [{tier}]: {exc}")
        return None


def _agent_configurations(grid: Grid, spec: SweepSpec, env: Any, name: str,
                          overrides: Mapping[str, Any], seeds: tuple[int, ...],
                          problems: Problems, check_values: bool) -> Iterable[Configuration]:
    """Every hyperparameter setting of agent ``name`` on ``env``; with ``check_values``,
    each value is first tried alone, so that a refused one is named at its own line.

    lop-bench's own errors (no preset, an unknown or refused hyperparameter) are reported
    where they arise; any other exception of a factory (a user's agent that needs one of
    the grid's hyperparameters, or has a bug) only for a whole setting, with its type."""
    from lop_bench.agents import make_agent

    run = spec.run
    where = grid.path("agents", name)
    try:
        make_agent(name, env, seed=seeds[0], device="cpu")
    except LopBenchError as exc:
        problems.add(where, str(exc))
        return
    except Exception:  # a factory that needs a value of the grid: its settings tell below
        pass
    if check_values:
        bad = False
        for key, values in grid.agents[name].items():
            for value in values:
                try:
                    make_agent(name, env, seed=seeds[0], device="cpu", **{key: value})
                except LopBenchError as exc:
                    problems.add((*where, key), _with_list_hint(str(exc), key, value))
                    bad = True
                except Exception:  # needs another value of the grid with it
                    pass
        if bad:
            return
    for hps in grid.agent_settings(name):
        try:
            yield configure(env, name, overrides, hps, seeds, diagnostics=run.diagnostics,
                            diagnostics_every=run.diagnostics_every, where=where)
        except Exception as exc:
            shown = ", ".join(f"{k}={_show(v)}" for k, v in hps.items()) or "the preset"
            text = str(exc) if isinstance(exc, LopBenchError) else f"{type(exc).__name__}: {exc}"
            problems.add(where, f"{env.ENV_ID} [{env.tier}], {shown}: the agent cannot be "
                                f"built: {text}")


def _with_list_hint(message: str, key: str, value: Any) -> str:
    """A refused lone value of a list-valued hyperparameter: say how a spec writes lists."""
    if "must be a list" in message and not isinstance(value, list):
        return (f"{message} In a spec every value is a list of the settings to try: write "
                f"{key} = [[...]] for one list-valued setting.")
    return message


# -- jobs -------------------------------------------------------------------------------
@dataclass
class Plan:
    """What a ``run``, ``reproduce`` or ``sweep`` will do.

    ``jobs``: the jobs to run (dicts for :func:`lop_bench.sweeps.pool.run_job`);
    ``finished``: summaries of the results already there (``resume``); ``paths``: every
    result path, in order; ``configurations``: the settings planned.
    """

    jobs: list[dict[str, Any]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    configurations: list[Configuration] = field(default_factory=list)

    @property
    def seed_steps(self) -> int:
        """Env steps of every seed of every job (what the progress counts)."""
        return sum(j["steps"] * len(j["seeds"]) for j in self.jobs)


def summary_of(agent: str, result: Any, finished: bool = False) -> dict[str, Any]:
    """What ``run`` prints of a seed's result (``finished``: found done by ``--resume``)."""
    return {"agent": agent, "seed": result.seed, "summary": result.summary,
            "steps_per_s": result.data["run_info"].get("steps_per_s", 0.0),
            "finished": finished}


def plan_jobs(configs: Sequence[Configuration], out: str | Path, *, resume: bool,
              vectorized: str = "auto", num_workers: int = 1, device: str = "cpu",
              checkpoint_every: int | str | None = None) -> Plan:
    """The jobs of ``configs`` with results in ``out``, after checking the result file of
    every seed: another run's result, or a file that is not a result, is refused
    (nothing is ever overwritten); this run's is skipped with ``resume``, else run again.

    ``vectorized``: ``"no"``, ``"yes"`` (an error for an agent without a vectorized
    version) or ``"auto"`` (where the agent has one): the seeds left of a vectorized
    configuration are split into groups so that ``num_workers`` processes stay busy.
    ``checkpoint_every``: tasks between checkpoints; :data:`~lop_bench.sweeps.spec.AUTO`
    for about :data:`AUTO_CHECKPOINTS` per run where the stream and agent support them.
    """
    from lop_bench.runner import check_existing_result

    plan = Plan(configurations=list(configs))
    todo_by_config = []
    for config in configs:
        todo = []
        for seed in config.seeds:
            path = config.result_path(out, seed)
            plan.paths.append(path)
            done = check_existing_result(path, config.identity_of(seed), resume=resume)
            if done is not None:
                plan.finished.append(summary_of(config.agent, done, finished=True))
            else:
                todo.append((seed, path))
        todo_by_config.append(todo)
    vector_support = {}
    for config, todo in zip(configs, todo_by_config):
        if vectorized != "no" and todo:
            vector_support[id(config)] = _vector_support(config)
            if vectorized == "yes" and vector_support[id(config)] is None:
                raise VectorizationNotSupported(
                    f"agent {config.agent!r} has no vectorized version for {config.env_id}; "
                    "run it without --vectorized."
                )
    num_vectorized = max(1, sum(1 for v in vector_support.values() if v is not None))
    for config, todo in zip(configs, todo_by_config):
        if not todo:
            continue
        support = vector_support.get(id(config))
        checkpoints = config.checkpoints if support is None else support
        every = _checkpoint_every(config, checkpoint_every, checkpoints)
        base = {
            "env_id": config.env_id, "tier": config.tier, "env_kwargs": dict(config.env_kwargs),
            "agent": config.agent, "agent_kwargs": dict(config.agent_kwargs),
            "diagnostics": config.diagnostics, "diagnostics_every": config.diagnostics_every,
            # resume: a finished result is returned, a checkpoint continued; without
            # checkpoints the planning above already skipped the finished seeds.
            "device": device, "checkpoint_every": every, "resume": resume and checkpoints,
            "steps": config.total_steps, "label": config.label,
            "settings": _settings_hash(config),
        }
        if support is not None:
            groups = max(1, min(len(todo), math.ceil(num_workers / num_vectorized)))
            for g in range(groups):
                chunk = todo[g::groups]
                plan.jobs.append({**base, "seeds": [s for s, _ in chunk], "out": str(out),
                                  "vectorized": True})
        else:
            plan.jobs.extend({**base, "seeds": [s], "out": str(path), "vectorized": False}
                             for s, path in todo)
    for i, job in enumerate(plan.jobs):
        job["id"] = i
        job["cost_s"] = _cost_s(job)
    return plan


def _settings_hash(config: Configuration) -> str:
    from lop_bench.identity import settings_hash

    return settings_hash(config.identity)


def _vector_support(config: Configuration) -> bool | None:
    """None when the agent has no vectorized version for the stream; else whether the
    vector env and the vectorized agent support checkpoints (built for one seed)."""
    from lop_bench.agents import make_agent
    from lop_bench.registration import make_vec, stream_spec

    if stream_spec(config.env_id).vector_env is None:
        return None
    envs = make_vec(config.env_id, num_envs=1, tier=config.tier, seeds=(0,), **config.env_kwargs)
    try:
        agent = make_agent(config.agent, envs, seed=(0,), **config.agent_kwargs)
    except VectorizationNotSupported:
        return None
    if not getattr(agent, "vectorized", False):
        return None
    return bool(envs.unwrapped.supports_checkpoints
                and callable(getattr(agent, "state_dict", None))
                and callable(getattr(agent, "load_state_dict", None)))


def _checkpoint_every(config: Configuration, every: int | str | None,
                      supported: bool) -> int | None:
    if every is None:
        return None
    if every == AUTO:
        return max(1, config.num_tasks // AUTO_CHECKPOINTS) if supported else None
    if not supported:
        raise CheckpointError(
            f"{config.label} on {config.env_id}: the stream or the agent has no state_dict() / "
            "load_state_dict(), which checkpoints need: add them (DESIGN.md section 5), or "
            "run it without checkpoints (checkpoint_every = false, or no --checkpoint-every)."
        )
    return int(every)


# -- cost -------------------------------------------------------------------------------
def _cost_s(job: Mapping[str, Any]) -> float:
    """Rough seconds of one core (or GPU) that ``job`` takes (:data:`STEPS_PER_SECOND`):
    its seeds one after another, or, vectorized, all at once (:data:`VECTOR_SPEEDUP`)."""
    rates = STEPS_PER_SECOND.get(job["env_id"], {"cpu": 1_000.0})
    kind = str(job["device"]).split(":")[0]
    seconds = job["steps"] * AGENT_COST.get(job["agent"], 1.0) / rates.get(kind, rates["cpu"])
    n = len(job["seeds"])
    if job["vectorized"]:
        return seconds * (1 + n / VECTOR_HALF_SPEED_SEEDS) / VECTOR_SPEEDUP
    return seconds * n


def format_seeds(seeds: Sequence[int]) -> str:
    """``0-4,7`` for [0, 1, 2, 3, 4, 7]."""
    runs: list[list[int]] = []
    for s in sorted(seeds):
        if runs and runs[-1][1] == s - 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _hours(seconds: float) -> str:
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(plan: Plan, workers: int, out: str | Path) -> str:
    """The jobs of ``plan`` and their estimated cost, as ``sweep --dry-run`` prints them."""
    n_results = len(plan.paths)
    lines = [f"{len(plan.configurations)} configurations, {n_results} results in {out}/: "
             f"{len(plan.finished)} finished, {n_results - len(plan.finished)} to run in "
             f"{len(plan.jobs)} jobs."]
    if plan.jobs:
        rows = [["job", "stream", "tier", "agent and settings", "seeds", "steps/seed", "est."]]
        for job in plan.jobs:
            rows.append([str(job["id"]), job["env_id"].split("/", 1)[-1], job["tier"],
                         job["label"] + (" [vectorized]" if job["vectorized"] else ""),
                         format_seeds(job["seeds"]), f"{job['steps']:,}", _hours(job["cost_s"])])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for j, row in enumerate(rows):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if j == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        total = sum(j["cost_s"] for j in plan.jobs)
        unit = "GPU" if any(str(j["device"]).split(":")[0] != "cpu" for j in plan.jobs) else "CPU"
        wall = max(total / max(1, workers), max(j["cost_s"] for j in plan.jobs))
        lines.append(
            f"Estimated cost: about {_hours(total)} of {unit} time, about {_hours(wall)} on "
            f"{workers} worker{'s' if workers != 1 else ''}. A rough estimate: each stream's "
            "steps at a throughput measured on one core here (lop_bench.sweeps.plan."
            "STEPS_PER_SECOND); expect a factor of 2 or 3 either way."
        )
    return "\n".join(lines)
