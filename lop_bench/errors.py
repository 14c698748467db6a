"""The lop-bench error hierarchy.

Every error the library raises on bad input is a :class:`LopBenchError`; each message names
the problem and how to fix it. Catch ``LopBenchError`` to handle all of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import gymnasium

__all__ = [
    "LopBenchError",
    "UnknownEnvError",
    "UnknownTierError",
    "UnknownAgentError",
    "InvalidConfigError",
    "InvalidActionError",
    "StreamFinishedError",
    "InvalidResultError",
    "SubmissionRejected",
    "PhaseViolationError",
    "DatasetNotFoundError",
    "DatasetReadError",
    "ChecksumError",
    "UnsafeDataError",
    "CheckpointError",
    "IdentityMismatchError",
    "DependencyNotInstalled",
    "VectorizationNotSupported",
    "SweepSpecError",
    "did_you_mean",
]


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean 'x' or 'y'?"`` for close matches of ``name``, or ``""``."""
    matches = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=0.5)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"


class LopBenchError(Exception):
    """Base class of every error lop-bench raises on bad input."""


class UnknownEnvError(LopBenchError, gymnasium.error.UnregisteredEnv):
    """An env id that lop-bench does not register (the message lists close matches)."""


class UnknownTierError(LopBenchError, ValueError):
    """A tier name that the stream does not define."""


class UnknownAgentError(LopBenchError, ValueError):
    """An agent name that is neither a registered entry point nor ``module:function``."""


class InvalidConfigError(LopBenchError, ValueError):
    """An unknown configuration field, or a value out of its range."""


class InvalidActionError(LopBenchError, ValueError):
    """An action of the wrong type, shape or dtype, or with non-finite values."""


class StreamFinishedError(LopBenchError, RuntimeError):
    """``step`` after the stream has ended (``info["stream_done"]``); call ``reset(seed=...)``."""


class InvalidResultError(LopBenchError, ValueError):
    """A result file that is not valid JSON, does not follow the schema, or is inconsistent."""


class SubmissionRejected(InvalidResultError):
    """``lop-bench submit`` refused result files; nothing was copied.

    ``reasons`` lists ``(file or entry, reason)`` for every refusal.
    """

    def __init__(self, message: str, reasons: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.reasons = list(reasons)


class PhaseViolationError(LopBenchError, RuntimeError):
    """An agent changed its state (its ``state_dict()``, else its parameters and buffers) during a
    ``val`` or ``test`` phase."""


class DatasetNotFoundError(LopBenchError, FileNotFoundError):
    """A dataset's files are missing; the message names the command that fetches them."""


class DatasetReadError(LopBenchError, OSError):
    """A dataset file that exists but cannot be read (permissions, a directory in its place,
    a disk error); the message names the file and the fix."""


class ChecksumError(LopBenchError, ValueError):
    """A dataset file whose checksum differs from the published one (corrupt or truncated)."""


class UnsafeDataError(LopBenchError, ValueError):
    """A data file that asks the unpickler for anything but plain data (containers, numbers,
    strings, numpy arrays); it is never executed. The message names the file."""


class IdentityMismatchError(LopBenchError, ValueError):
    """An existing result or checkpoint belongs to another run (other stream, tier, overrides,
    agent, preset, hyperparameters, seed or diagnostics settings); the message names the
    difference and the fix."""


class DependencyNotInstalled(LopBenchError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class VectorizationNotSupported(LopBenchError, ValueError):
    """A vectorized agent or env was asked of something that has none."""


class CheckpointError(LopBenchError, ValueError):
    """A checkpoint that cannot be written or resumed: unreadable, forged, from another run,
    or of a stream or agent that does not support checkpoints."""


class SweepSpecError(InvalidConfigError):
    """A sweep spec that cannot run: every problem found, each named with the spec file and
    the line of the key at fault (``problems``: ``(line or None, message)``)."""

    def __init__(self, message: str, problems: Iterable[tuple[int | None, str]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)
