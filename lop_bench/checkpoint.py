"""Checkpoints of a run: what ``lop-bench run --checkpoint-every K --resume`` writes and reads.

A checkpoint holds everything a run needs to continue bit for bit: the env's and the agent's
``state_dict()`` (generators included), the runner's loop state (the pending observation and
info, the per-task curve so far, diagnostics, step count) and the run's identity (stream,
tier, overrides, agent, hyperparameters, seed, protocol hash), which :func:`check_identity`
compares before a resume.

The file is a ``torch.save`` archive that loads with ``torch.load(weights_only=True)``: only
tensors and plain Python values, never pickled objects. Numpy arrays (which
``weights_only`` refuses) are stored as tensors tagged ``{"__ndarray__": tensor}`` and come
back as numpy arrays of the same dtype; numpy scalars become Python numbers. Writes are
atomic (a temporary file in the same directory, ``fsync``, then ``os.replace``): a run killed
while writing leaves the previous checkpoint intact.

>>> save_checkpoint("run.ckpt.pt", {"x": np.arange(3), "task": 2})
>>> load_checkpoint("run.ckpt.pt")["x"]
array([0, 1, 2])
"""

from __future__ import annotations

import os
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


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its format tag.

    Raises :class:`CheckpointError` for a missing, truncated, forged or foreign file.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError,
            ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable lop-bench checkpoint ({first}). It may be truncated or "
            "not a checkpoint: delete it to start the run over."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a lop-bench checkpoint (no {FORMAT!r} tag).")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is a version {payload.get('version')!r} checkpoint; this lop-bench reads "
            f"version {VERSION}. Delete it to start the run over."
        )
    return decode(payload)


def check_identity(path: str | os.PathLike[str], saved: Mapping[str, Any],
                   current: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` when the checkpoint belongs to another run."""
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r}, this run {current.get(k)!r}"
        for k in current
        if saved.get(k) != current.get(k)
    ]
    if diffs:
        raise CheckpointError(
            f"{path} is the checkpoint of another run ({'; '.join(diffs)}). Resume with the "
            "same stream, tier, overrides, agent, hyperparameters and seed, or delete it."
        )


def checkpoint_path(result_path: str | os.PathLike[str]) -> Path:
    """Where the checkpoint of the run whose result goes to ``result_path`` lives:
    ``<name>.ckpt.pt`` beside the ``<name>.json`` result."""
    p = Path(result_path)
    return p.with_name(p.name.removesuffix(".json") + ".ckpt.pt")
