"""Checkpoints of a run: what ``lop-bench run --checkpoint-every K --resume`` writes and reads.

A checkpoint holds everything a run needs to continue bit for bit: the env's and the agent's
``state_dict()`` (generators included), the runner's loop state (the pending observation and
info, the per-task curve so far, diagnostics, step count) and the run's identity
(:mod:`lop_bench.identity`). Before a resume, :func:`check_run_state` checks the layout and
:func:`check_identity` that the checkpoint is of this run.

The file is a ``torch.save`` archive that loads with ``torch.load(weights_only=True)``: only
tensors and plain Python values, never pickled objects. Numpy arrays (which
``weights_only`` refuses) are stored as tensors tagged ``{"__ndarray__": tensor}`` and come
back as numpy arrays of the same dtype; numpy scalars become Python numbers. Writes are
atomic (a temporary file in the same directory, ``fsync``, then ``os.replace``): a run killed
while writing leaves the previous checkpoint intact. Tensors load on the CPU unless the
run's device says otherwise (:func:`map_location`), so a GPU run resumes on a CPU host.

>>> save_checkpoint("run.ckpt.pt", {"x": np.arange(3), "task": 2})
>>> load_checkpoint("run.ckpt.pt")["x"]
array([0, 1, 2])
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lop_bench.errors import CheckpointError

__all__ = [
    "FORMAT",
    "VERSION",
    "encode",
    "decode",
    "save_checkpoint",
    "load_checkpoint",
    "map_location",
    "check_run_state",
    "check_identity",
    "checkpoint_path",
]

FORMAT = "lop-bench-checkpoint"
"""The ``format`` tag of every checkpoint file."""
VERSION = 1
"""Version of the checkpoint layout; a file of another version is refused, not guessed at."""

_ND = "__ndarray__"


def encode(obj: Any) -> Any:
    """``obj`` with numpy arrays as tagged tensors and numpy scalars as Python numbers.

    Tensors, Python scalars, strings and ``None`` pass through; dicts (string keys), lists
    and tuples are walked. Anything else raises :class:`CheckpointError` naming its path.
    """
    return _encode(obj, "state")


def _encode(obj: Any, where: str) -> Any:
    import torch

    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise CheckpointError(f"{where}: numpy arrays of dtype {obj.dtype} cannot be checkpointed.")
        return {_ND: torch.from_numpy(np.array(obj, copy=True, order="C"))}
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{where}: dict keys must be str or int, got {k!r}.")
            out[k] = _encode(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, torch.Generator):
        raise CheckpointError(f"{where}: store a torch.Generator as generator.get_state().")
    raise CheckpointError(
        f"{where}: a {type(obj).__name__} cannot be checkpointed; state_dict() must hold only "
        "tensors, numpy arrays, numbers, strings, None, and lists / tuples / dicts of them."
    )


def decode(obj: Any) -> Any:
    """Invert :func:`encode`: tagged tensors become numpy arrays again."""
    if isinstance(obj, dict):
        if len(obj) == 1 and _ND in obj:
            return obj[_ND].numpy()
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(decode(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (see the module docstring)."""
    import torch

    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **encode(dict(state))}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def map_location(device: Any) -> Any:
    """Where :func:`load_checkpoint` puts a checkpoint's tensors for a run on ``device``.

    A CPU run loads every tensor on the CPU, so a checkpoint written on a GPU resumes on a
    host without one. An accelerator run puts the tensors saved on any accelerator on
    ``device`` (``cuda:1`` resumes on ``cuda:0``) and keeps the CPU ones (generator states)
    on the CPU.
    """
    import torch
    from torch.serialization import default_restore_location

    target = torch.device(device)
    if target.type == "cpu":
        return "cpu"

    def place(storage: Any, location: str) -> Any:
        return storage if location.startswith("cpu") else default_restore_location(storage, str(target))

    return place


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its format tag.

    ``map_location`` is passed to ``torch.load`` (default: every tensor on the CPU; the
    runner passes :func:`map_location` of the run's device). Raises :class:`CheckpointError`
    for a missing, truncated, forged or foreign file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file; all mean the same
        raise _unreadable(path, exc) from (None if _is_unpickling_error(exc) else exc)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a lop-bench checkpoint (no {FORMAT!r} tag). Delete it, or pass "
            "another checkpoint path."
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is a version {payload.get('version')!r} checkpoint; this lop-bench reads "
            f"version {VERSION}. Delete it to start the run over."
        )
    return decode(payload)


def _is_unpickling_error(exc: BaseException) -> bool:
    import pickle

    return isinstance(exc, pickle.UnpicklingError)


def _unreadable(path: Path, exc: BaseException) -> CheckpointError:
    """The error for a file ``torch.load`` refused. torch's message for a pickle it will not
    load advises ``weights_only=False``, which would run whatever the file asks for: it is
    never repeated, only the name of what the file asks for, or the damage found."""
    text = str(exc)
    if _is_unpickling_error(exc):
        asked = re.search(r"GLOBAL ([\w.]+)", text)
        if asked:
            return CheckpointError(
                f"{path} holds more than tensors and plain values (it asks for "
                f"{asked.group(1)}), so it is not loaded: lop-bench writes only those, so the "
                "file was not written by lop-bench or was altered. Delete it to start the run over."
            )
        found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        reason = found.group(1).strip() if found else "not a pickle of tensors and plain values"
    else:
        lines = text.strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
    if "weights_only" in reason:
        reason = type(exc).__name__
    return CheckpointError(
        f"{path} is not a readable lop-bench checkpoint ({reason}). It may be truncated or "
        "not a checkpoint: delete it to start the run over."
    )


_RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "run": dict, "env": dict, "agent": dict, "loop": dict,
}
_LOOP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "info": dict, "steps": int, "elapsed": (int, float), "per_task": list,
    "val_metrics": list, "diag_tasks": list, "diag_rows": list,
    "checkpoint_every": (int, type(None)),
}


def check_run_state(path: str | os.PathLike[str], state: Any, *,
                    num_envs: int | None = None) -> None:
    """Raise :class:`CheckpointError` unless ``state`` (a loaded checkpoint) has the layout
    :func:`lop_bench.run` writes: ``run``, ``env``, ``agent`` and ``loop`` dicts, the loop's
    fields with their types (a count of steps, the curve so far as numbers, ...).

    With ``num_envs``, the layout :func:`lop_bench.run_vectorized` writes for that many
    seeds: the curve so far is one array of ``num_envs`` scores per task, and the loop also
    holds the vector env's ``infos``."""

    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(
            f"{path} is not a complete run checkpoint: {problem}. It is damaged or was "
            "written by something else: delete it to start the run over."
        )

    def check(where: str, record: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
        for key, kind in fields.items():
            if key not in record:
                raise refuse(f"{where} has no {key!r}")
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise refuse(f"{where}[{key!r}] is a {type(value).__name__}")

    check("the checkpoint", state, _RUN_FIELDS)
    loop = state["loop"]
    check("loop", loop, _LOOP_FIELDS)
    if "obs" not in loop:
        raise refuse("loop has no 'obs'")
    if loop["steps"] < 0 or not isinstance(loop["info"].get("task"), int):
        raise refuse("loop['steps'] is negative or loop['info'] has no task")
    if num_envs is not None:
        if not isinstance(loop.get("infos"), dict):
            raise refuse("loop has no 'infos' of the vector env")
        if not all(isinstance(v, np.ndarray) and v.shape == (num_envs,) and v.dtype.kind == "f"
                   for v in loop["per_task"]):
            raise refuse(f"loop['per_task'] holds something other than {num_envs} scores per task")
    elif not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                 for v in loop["per_task"]):
        raise refuse("loop['per_task'] holds something other than numbers")


def check_identity(path: str | os.PathLike[str], saved: Mapping[str, Any],
                   current: Mapping[str, Any]) -> None:
    """Raise :class:`~lop_bench.errors.IdentityMismatchError` when the checkpoint at
    ``path`` (of run identity ``saved``) belongs to another run than ``current``
    (:mod:`lop_bench.identity`)."""
    from lop_bench.identity import check_identity as check

    check(path, saved, current, what="checkpoint")


def checkpoint_path(result_path: str | os.PathLike[str]) -> Path:
    """Where the checkpoint of the run whose result goes to ``result_path`` lives:
    ``<name>.ckpt.pt`` beside the ``<name>.json`` result."""
    p = Path(result_path)
    return p.with_name(p.name.removesuffix(".json") + ".ckpt.pt")
