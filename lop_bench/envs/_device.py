"""The device-resident mode of the batch-1 streams (``device=`` in ``make`` / ``make_vec``).

At batch size 1 a step is microseconds of work, so reading a value back to the host at
every step (``float(...)``, ``.cpu()``) would stall a GPU at every step. In this mode a
stream keeps its data on a torch device, returns observations, targets and rewards as
tensors there, and records each step's prediction (or error) in a buffer there; the host
reads the device once per task (the task's score and the check of its predictions),
never per step. Predictions are checked on the host for what costs no device read (a
tensor, its shape and dtype) at every step, and for their values (labels in range,
finite predictions) when the task's score is read: an invalid value is reported at the
end of its task, naming the task.

The values are the numpy mode's: the same draws, on the host, from the same generators;
data gathered by the same indices; scores reduced in the same order (a sequential sum
in float64, which ``torch.cumsum`` is on the CPU; on a GPU a parallel scan, equal up to
float64 rounding). The tests run this mode with ``device="cpu"`` against the numpy mode.
"""

from __future__ import annotations

from typing import Any

from lop_bench.errors import InvalidActionError, InvalidConfigError

__all__ = ["torch_device", "as_prediction"]


def torch_device(device: Any) -> Any:
    """``device`` as a ``torch.device``, or :class:`~lop_bench.errors.InvalidConfigError`
    naming it."""
    import torch

    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InvalidConfigError(
            f"device must be a torch device (cpu, cuda, cuda:1, mps ...), got {device!r} ({exc})."
        ) from None


def as_prediction(action: Any, shape: tuple[int, ...], device: Any, env_id: str, *,
                  labels: bool) -> Any:
    """``action`` as a tensor on ``device`` after the checks that need no device read: a
    tensor (or a numpy array, copied to the device) of ``shape`` whose dtype is an integer
    one (``labels``) or a floating one. Its values are checked when the task's score is
    read."""
    import numpy as np
    import torch

    if isinstance(action, np.ndarray):
        action = torch.as_tensor(action)
    if not isinstance(action, torch.Tensor):
        raise InvalidActionError(
            f"{env_id}: the action must be a torch tensor on {device} (or a numpy array) of "
            f"shape {shape}, got {type(action).__name__}."
        )
    if tuple(action.shape) != shape:
        raise InvalidActionError(f"{env_id}: the action must have shape {shape}, got "
                                 f"{tuple(action.shape)}.")
    dtype = action.dtype
    integer = not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    if labels and not integer:
        raise InvalidActionError(
            f"{env_id}: the action must be an integer tensor of labels (int64), got dtype {dtype}."
        )
    if not labels and not dtype.is_floating_point:
        raise InvalidActionError(
            f"{env_id}: the action must be a floating-point tensor (float32), got dtype {dtype}."
        )
    return action.to(device, non_blocking=True)
