"""Poisoned pickles for the data loaders' tests: files that run code when ``pickle.load``
reads them (the payload creates a marker file), so a test can show that lop-bench refuses
them and that the marker never appears. ``pickle.loads(poisoned(...))`` does create it:
the tests check that too, so the payloads are known to be live.
"""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path
from typing import Any

PAYLOADS = ("exec", "os.system")
"""The ways a payload runs code: Python's ``exec`` and a shell command (``os.system``)."""


class Payload:
    """An object whose pickle calls ``func(*args)`` when it is unpickled."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def payload(marker: Path, kind: str = "exec") -> Payload:
    """A payload that creates the file ``marker`` (``kind``: one of :data:`PAYLOADS`)."""
    if kind == "exec":
        return Payload(exec, f"open({str(marker)!r}, 'w').close()")
    if kind == "os.system":
        return Payload(os.system, f"touch {shlex.quote(str(marker))}")
    raise ValueError(f"unknown payload kind {kind!r}")


def poisoned(template: dict[str, Any], key: str, marker: Path, kind: str = "exec",
             protocol: int = 2) -> bytes:
    """``template`` pickled with the payload in place of ``template[key]``: a data file in
    its real layout that runs code under the full unpickler."""
    return pickle.dumps({**template, key: payload(marker, kind)}, protocol=protocol)
