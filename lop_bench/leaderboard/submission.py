"""Submitting results: every check before anything is written, then all the files of a
submission or none, one submission at a time (a lock on ``submissions/.lock``)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lop_bench.errors import (
    InvalidResultError,
    LopBenchError,
    SubmissionRejected,
)
from lop_bench.leaderboard.board import (
    DEFAULT_DIR,
    SUBMISSIONS,
    board_files,
    build,
    hidden,
    reference_names,
)
from lop_bench.leaderboard.checks import (
    HeldCurve,
    copies,
    load_files,
    rejected,
    seed_set_problems,
    source_problems,
)
from lop_bench.leaderboard.entries import (
    REFERENCE_MARK,
    REFERENCE_TEXT,
    Entry,
    EntryKey,
    describe_key,
    entry_dir,
    entry_key,
    group_by_entry,
    make_entry,
    result_fingerprint,
)
from lop_bench.results import Result, atomic_write_text, check_source, load, read_json

__all__ = ["LOCK_TIMEOUT_S", "Submitted", "check_submission", "submit", "submit_files",
           "submit_reference"]

LOCK_TIMEOUT_S = 120.0
"""How long ``submit`` waits for another ``submit`` on the same leaderboard to finish."""


def _expand(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The result files named: files as given, directories searched for ``*.json`` (not in
    hidden folders); and the reason for each path that names none."""
    files: list[Path] = []
    reasons: list[tuple[str, str]] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.json") if not hidden(f.relative_to(p)))
            if not found:
                reasons.append((str(p), "the directory holds no result files (*.json)."))
            files.extend(found)
        elif not p.exists():
            reasons.append((str(p), "no such file."))
        else:
            files.append(p)
    return files, reasons


@dataclass(frozen=True)
class _Checked:
    """What passed :func:`_check`: the entries to write, and the folders of those already on
    the board with the same results."""

    groups: dict[EntryKey, list[tuple[str, Result]]]
    unchanged: list[Path]
    reference: bool = False


@dataclass(frozen=True)
class _BoardIndex:
    """What a submission is checked against: each entry on the board (its folder, and the
    fingerprint of each seed's result) and every curve there."""

    seeds: dict[EntryKey, dict[int, str]]
    folders: dict[EntryKey, str]
    curves: dict[bytes, HeldCurve]
    references: dict[tuple[str, str, str], EntryKey]


def _index_board(board: Path) -> _BoardIndex:
    """Index what is on the board (unreadable files left out: ``build`` reports them)."""
    index = _BoardIndex(defaultdict(dict), {}, {}, {})
    valid: list[tuple[str, Result]] = []
    for f in board_files(board):
        try:
            r = load(f)
        except InvalidResultError:
            continue  # build reports broken files on the board
        key = entry_key(r.data)
        index.seeds[key][r.seed] = result_fingerprint(r.data)
        index.folders.setdefault(key, str(f.parent))
        valid.append((str(f), r))
        if (f.parent / REFERENCE_MARK).is_file():
            index.references.setdefault(key[:3], key)
    copies(valid, index.curves)  # the board's own copies are build's to report
    return index


def _reference_reasons(groups: dict[EntryKey, list[tuple[str, Result]]],
                       on_board: _BoardIndex) -> list[tuple[str, str]]:
    """Why entries submitted as reference entries may not be: an agent that is not one of
    its stream's reference agents (nor its fresh agent), or one that has another reference
    entry on the board already."""
    out = []
    for key in groups:
        env_id, tier, agent = key[:3]
        names = reference_names(env_id)
        if agent not in names:
            out.append((describe_key(key), f"--reference marks the project's own agents only: "
                        f"{agent!r} is not a reference agent of {env_id} "
                        f"({', '.join(sorted(names)) or 'none'}); submit it without --reference."))
        other = on_board.references.get((env_id, tier, agent))
        if other is not None and other != key:
            out.append((describe_key(key), f"{agent!r} already has a reference entry on "
                        f"{env_id} [{tier}] ({on_board.folders[other]}); remove that folder "
                        "first to replace it."))
    return out


def _check(paths: Iterable[str | os.PathLike], board: Path,
           source: str | None = None, reference: bool = False) -> _Checked:
    """Every check of :func:`submit`; raises :class:`SubmissionRejected` listing them all."""
    if source is not None:
        try:
            check_source(source)
        except InvalidResultError as exc:
            raise SubmissionRejected(f"--source: {exc}", [("--source", str(exc))]) from None
    files, reasons = _expand(paths)
    loaded, seeds, found = load_files(files, source=source)
    reasons.extend(found)
    on_board = _index_board(board)
    groups = group_by_entry(loaded)
    unchanged: list[EntryKey] = []
    fresh: list[tuple[str, Result]] = []
    for key, members in groups.items():
        if key not in on_board.seeds:
            fresh.extend(members)
        elif (len(members) == len(on_board.seeds[key])
              and {r.seed: result_fingerprint(r.data) for _, r in members} == on_board.seeds[key]):
            unchanged.append(key)  # the same results again: nothing to do
        else:
            folder = on_board.folders[key]
            reasons.append((describe_key(key), f"already on the leaderboard ({folder}) with other "
                                            "results: an entry is submitted once, with all its "
                                            f"seeds (to replace it, remove {folder} first)."))
    reasons.extend(copies(fresh, on_board.curves))
    reasons.extend(source_problems(groups))
    reasons.extend(seed_set_problems(seeds))
    if reference:
        reasons.extend(_reference_reasons(groups, on_board))
    if not files and not reasons:
        reasons.append(("(no files)", "nothing to submit."))
    if reasons:
        bad = len({w for w, _ in reasons})
        raise rejected(f"submission refused ({bad} file(s) or entries with problems, "
                        f"{len(files)} file(s) given); nothing was copied", reasons)
    return _Checked({k: v for k, v in groups.items() if k not in unchanged},
                    [Path(on_board.folders[k]) for k in unchanged], reference)


def check_submission(
    paths: Iterable[str | os.PathLike],
    board_dir: str | os.PathLike = DEFAULT_DIR,
    *,
    source: str | None = None,
    reference: bool = False,
) -> list[Entry]:
    """Check result files as :func:`submit` does, copy nothing; return the entries they form
    (without those already on the leaderboard with the very same results).

    Raises:
        SubmissionRejected: every refused file or entry with its reason (``.reasons``).
    """
    checked = _check(paths, Path(board_dir), source, reference)
    return [make_entry(key, [r for _, r in members]) for key, members in checked.groups.items()]


def submit(
    paths: Iterable[str | os.PathLike],
    board_dir: str | os.PathLike = DEFAULT_DIR,
    *,
    dry_run: bool = False,
    source: str | None = None,
    reference: bool = False,
) -> list[Path]:
    """Check result files and copy them all under ``<board_dir>/submissions/``, or none.

    An entry already on the leaderboard with the very same results (the same files
    submitted again) is left as it is: not an error, and nothing is written for it. Two
    submits on one leaderboard run one after the other (a lock on ``submissions/.lock``).

    Args:
        paths: result files, or directories searched for ``*.json``.
        board_dir: the leaderboard directory (default ``leaderboard/``).
        dry_run: check only; write nothing and return ``[]``.
        source: where the agent's code is, recorded as ``agent.source`` in every file
            written: a URL with a commit or a package with its version (a file that names
            another source is refused).
        reference: mark the entries as reference entries of the project
            (:data:`~lop_bench.leaderboard.entries.REFERENCE_MARK` in their folders, also in
            those of entries already there with the same results): only results of a
            stream's reference agents or fresh agent, one reference entry per agent, stream
            and tier. The board diffs other entries' hyperparameters against them and
            computes the plasticity score against the fresh agent's.

    Returns:
        The paths written, ``submissions/<Stream-vN>/<tier>/<agent>__<id>/seed<k>.json``
        (and the reference marks written).

    Raises:
        SubmissionRejected: a file or entry failed a check; ``.reasons`` lists every
            ``(file or entry, reason)``. Nothing was written.
        LopBenchError: another submit held the lock for :data:`LOCK_TIMEOUT_S`, or the
            leaderboard directory cannot be written. Nothing was written.
    """
    if dry_run:
        _check(paths, Path(board_dir), source, reference)
        return []
    done = submit_files(paths, board_dir, source=source, reference=reference)
    return done.written + done.marked


@dataclass(frozen=True)
class Submitted:
    """What :func:`submit_files` did: the files it wrote, the folders of the entries that
    were already on the leaderboard with the same results (left as they are), and the
    reference marks it added to those (``reference=True``)."""

    written: list[Path]
    unchanged: list[Path]
    marked: list[Path] = field(default_factory=list)


def submit_files(
    paths: Iterable[str | os.PathLike],
    board_dir: str | os.PathLike = DEFAULT_DIR,
    *,
    source: str | None = None,
    reference: bool = False,
) -> Submitted:
    """:func:`submit` (not a dry run), saying also which entries were already there."""
    board = Path(board_dir)
    root = board / SUBMISSIONS
    with _submit_lock(root):
        checked = _check(paths, board, source, reference)
        written = _write(checked, root)
        marked = []
        if reference:
            for folder in checked.unchanged:
                mark = folder / REFERENCE_MARK
                if not mark.is_file():
                    atomic_write_text(mark, REFERENCE_TEXT)
                    marked.append(mark)
        return Submitted(written, checked.unchanged, marked)


try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - no flock (Windows)
    _fcntl = None

_LOCK = ".lock"


@contextmanager
def _submit_lock(root: Path) -> Iterator[None]:
    """Hold the exclusive lock of the submissions folder ``root`` (``flock`` on
    ``root/.lock``, released when the process ends, however it ends), waiting up to
    :data:`LOCK_TIMEOUT_S` for another submit to finish."""
    if _fcntl is None:  # pragma: no cover - the final renames still refuse a clash
        yield
        return
    path = root / _LOCK
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise LopBenchError(
            f"cannot take the lock of the leaderboard's submissions ({path}): {exc.strerror}; "
            "is the leaderboard directory writable? Nothing was copied."
        ) from None
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LopBenchError(
                        f"another `lop-bench submit` to {root.parent} still holds its lock "
                        f"({path}) after {LOCK_TIMEOUT_S:g} s; try again once it has "
                        "finished. Nothing was copied."
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _write(checked: _Checked, root: Path) -> list[Path]:
    """Write the checked entries under ``root``, each folder at once (staged, then renamed
    into place); on any failure remove what was moved and raise."""
    moved: list[Path] = []
    written: list[Path] = []
    if not checked.groups:
        return written
    try:
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".incoming-"))
        try:
            for _, members in checked.groups.items():
                rel = entry_dir(members[0][1].data)
                for _, r in members:
                    atomic_write_text(staging / rel / f"seed{r.seed}.json", r.to_json())
                if checked.reference:
                    atomic_write_text(staging / rel / REFERENCE_MARK, REFERENCE_TEXT)
            for _, members in checked.groups.items():
                rel = entry_dir(members[0][1].data)
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging / rel, target)
                moved.append(target)
                written.extend(target / f"seed{r.seed}.json"
                               for r in sorted((r for _, r in members), key=lambda r: r.seed))
                if checked.reference:
                    written.append(target / REFERENCE_MARK)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException as exc:
        for target in moved:
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, OSError):
            raise LopBenchError(
                f"could not write the submission under {root}: {exc}. Nothing was copied."
            ) from exc
        raise
    return written


def submit_reference(
    results_dir: str | os.PathLike,
    board_dir: str | os.PathLike = DEFAULT_DIR,
    *,
    tier: str = "cpu",
    build_pages: bool = True,
) -> list[Path]:
    """Submit the reference agents' results of ``tier`` found under ``results_dir``.

    Picks the result files of every stream's reference agents (its declaration's
    ``reference_agents``) and fresh agent (``fresh_agent``) on ``tier``, submits them as
    reference entries (:func:`submit` with ``reference=True``: every check, and the mark)
    and rebuilds the pages unless ``build_pages=False``. Entries already on the leaderboard
    with the same results are left as they are (and marked, if they were not), so it can
    be run again as more streams get results.

    Returns:
        The paths written, marks included (``[]`` when every entry was already on the
        leaderboard as a reference entry).

    Raises:
        LopBenchError: no reference result of ``tier`` under ``results_dir``.
        SubmissionRejected: a reference result failed a check; nothing was written.
    """
    board = Path(board_dir)
    files, reasons = _expand([results_dir])
    if reasons:
        raise LopBenchError(f"{results_dir}: {reasons[0][1]}")
    picked = []
    for f in files:
        try:
            data = read_json(f)
            if data["tier"] != tier or data["agent"]["name"] not in reference_names(data["env_id"]):
                continue
        except (InvalidResultError, KeyError, TypeError, AttributeError):
            pass  # submit reports why
        picked.append(f)
    if not picked:
        raise LopBenchError(
            f"{results_dir}: no result of a reference agent on tier {tier!r}; run "
            f"`lop-bench reproduce ENV --tier {tier}` first."
        )
    written = submit(picked, board, reference=True)
    if build_pages:
        build(board)
    return written
