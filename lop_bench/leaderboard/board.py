"""The leaderboard directory: reading its submissions back (every check again) and
building its pages, ``README.md`` and ``index.html``."""

from __future__ import annotations

import os
from pathlib import Path

from lop_bench.errors import LopBenchError
from lop_bench.leaderboard.checks import (
    copies,
    load_files,
    rejected,
    seed_set_problems,
    source_problems,
)
from lop_bench.leaderboard.entries import (
    REFERENCE_MARK,
    Entry,
    EntryKey,
    describe_key,
    group_by_entry,
    make_entry,
)
from lop_bench.leaderboard.html_page import index_html
from lop_bench.leaderboard.markdown import readme
from lop_bench.leaderboard.ranking import tables
from lop_bench.registration import stream_spec
from lop_bench.results import Result, atomic_write_text

__all__ = ["DEFAULT_DIR", "SUBMISSIONS", "board_files", "load_board", "build",
           "reference_names", "reference_problems"]

DEFAULT_DIR = Path("leaderboard")
"""The leaderboard directory the command line uses unless given ``--dir``."""

SUBMISSIONS = "submissions"
"""The folder of a leaderboard directory that holds the submitted result files."""


def hidden(rel: Path) -> bool:
    """Whether a relative path is in a hidden folder or names a hidden file."""
    return any(part.startswith(".") for part in rel.parts)


def board_files(board: Path) -> list[Path]:
    """The result files under ``<board>/submissions/``, sorted (hidden ones left out)."""
    root = board / SUBMISSIONS
    if not root.is_dir():
        return []
    return sorted(f for f in root.rglob("*.json") if not hidden(f.relative_to(root)))


def load_board(board_dir: str | os.PathLike = DEFAULT_DIR) -> list[Entry]:
    """Load and re-check every submission on the leaderboard; return its entries.

    Every check of :func:`submit` is made again, over the whole board: a file that is not a
    regular file under the size cap, an edited file, a curve that copies another one, an
    entry without its whole seed set, a stream that changed since.

    Raises:
        SubmissionRejected: a file under ``submissions/`` fails a check; the message names
            it and why.
    """
    board = Path(board_dir)
    loaded, seeds, reasons = load_files(board_files(board))
    groups = group_by_entry(loaded)
    reasons.extend(copies(loaded, {}))
    reasons.extend(source_problems(groups))
    reasons.extend(seed_set_problems(seeds))
    marked = {key: _marked(members) for key, members in groups.items()}
    reasons.extend(reference_problems(
        [k for k, m in marked.items() if m],
        {str(Path(w).parent) for members in groups.values() for w, _ in members},
        board))
    if reasons:
        raise rejected(f"the leaderboard in {board} holds submissions that fail the checks; "
                        "fix or remove them", reasons)
    return [make_entry(key, [r for _, r in members],
                       [Path(w).relative_to(board).as_posix() for w, _ in members],
                       marked[key])
            for key, members in groups.items()]


def _marked(members: list[tuple[str, Result]]) -> bool:
    """Whether every folder holding an entry's files holds the reference mark."""
    return all((Path(w).parent / REFERENCE_MARK).is_file() for w, _ in members)


def reference_names(env_id: str) -> frozenset[str]:
    """The agents of a stream that may have a reference entry: its reference agents, its
    fresh agent and its more agents (none for an unknown stream)."""
    try:
        spec = stream_spec(env_id)
    except LopBenchError:
        return frozenset()
    return frozenset(spec.all_agents)


def reference_problems(marked: list[EntryKey], folders: set[str],
                       board: Path) -> list[tuple[str, str]]:
    """What is wrong with the reference marks of a board: a mark on an entry whose agent is
    not one of its stream's reference agents (nor its fresh agent), two reference entries
    of one agent on one stream and tier, a mark in a folder that holds no results."""
    out: list[tuple[str, str]] = []
    seen: dict[tuple[str, str, str], EntryKey] = {}
    for key in marked:
        env_id, tier, agent = key[0], key[1], key[2]
        if agent not in reference_names(env_id):
            out.append((describe_key(key), f"it is marked as a reference entry ({REFERENCE_MARK}) "
                        f"but {agent!r} is not a reference agent of {env_id}: only the "
                        f"project's own agents are; remove the mark."))
        other = seen.setdefault((env_id, tier, agent), key)
        if other is not key:
            out.append((describe_key(key), f"a second reference entry of {agent!r} on {env_id} "
                        f"[{tier}] (the other: {describe_key(other)}); an agent has one "
                        "reference entry per stream and tier: remove one mark."))
    root = board / SUBMISSIONS
    if root.is_dir():
        for mark in sorted(root.rglob(REFERENCE_MARK)):
            if not hidden(mark.relative_to(root)) and str(mark.parent) not in folders:
                out.append((str(mark), "a reference mark in a folder that holds no result "
                                       "files; remove it."))
    return out


def _write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it holds it already; whether it wrote."""
    if path.is_file() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True


def build(board_dir: str | os.PathLike = DEFAULT_DIR) -> tuple[Path, Path]:
    """Regenerate ``<board_dir>/README.md`` and ``<board_dir>/index.html``.

    The submissions are re-checked (:func:`load_board`). The output depends only on them:
    building twice gives byte-identical files (an unchanged file is not rewritten).

    Returns:
        The paths of ``README.md`` and ``index.html``.

    Raises:
        SubmissionRejected: a submission on the board fails the checks.
    """
    board = Path(board_dir)
    shown = tables(load_board(board))
    readme_path, index_path = board / "README.md", board / "index.html"
    _write_if_changed(readme_path, readme(shown))
    _write_if_changed(index_path, index_html(shown))
    return readme_path, index_path
