"""The leaderboard: checked submissions and generated ``README.md`` / ``index.html``.

``lop-bench submit RESULTS...`` (:func:`submit`) checks every result file before anything is
written and copies them all, or none, under ``<dir>/submissions/``. A file is refused with
its reason when it is not a regular file under the size cap or does not follow the result
schema (:func:`lop_bench.results.load`), its summary and per-task curve disagree, its stream
or tier is unknown, its tier is ``smoke`` (never ranked), its protocol hash or dataset
fingerprint is not the tier's, its curve is not the tier's length, its ``steps`` is not what
a run of the tier takes, its diagnostics are missing or not the runner's schedule, or it
ran custom (overridden) settings. Files are grouped into *entries* (stream, tier, agent
name, preset and hyperparameters); an entry must hold the tier's whole seed set
``0 .. num_seeds - 1``, each seed once, and must not be on the leaderboard already.

Copies are refused: no per-seed curve may equal, value for value, a curve already on the
board or elsewhere in the submission, whatever its agent name or preset (two seeds of one
entry with the same curve are copies of one run too). The refusal names the entry that
holds the curve. Curves of fewer than four distinct values, what a network that stopped
learning scores (chance on every task), are not compared: independent runs share them. An
entry already on the board with the very same results (the same files submitted again) is not an error: it is left as it is, and nothing is written for it.

Submissions are serialized by an exclusive lock on ``submissions/.lock`` (``flock``): a
second ``submit`` waits for the first, then checks against what it wrote; after
:data:`LOCK_TIMEOUT_S` it gives up with an error that says so.

An entry may name where its code is, ``agent.source``: a URL with a commit or a package
with its version (``lop-bench submit --source URL`` records it in every file submitted);
the pages link it (http(s) URLs only) and mark entries without one "no source".

Reference entries are the project's own results of a stream's reference agents and of its
fresh agent (``StreamSpec.fresh_agent``): ``lop-bench submit --reference`` (and
:func:`submit_reference`) writes the mark ``REFERENCE`` into their folders, for those agents
only and one per agent, stream and tier; a build checks the marks again.

``lop-bench leaderboard build`` (:func:`build`) regenerates ``<dir>/README.md`` and
``<dir>/index.html``: per stream and tier a table, ranked by ``final`` (or by the last task
for the streams that declare so), in *rank groups* (an entry whose 95% Student-t interval
of the ranking statistic overlaps that of the first entry of the group above it shares its
rank) with each
entry's probability of improvement over the next (rliable's, with a seeded
stratified-bootstrap interval); its hyperparameters as the difference from its agent's
reference entry ("preset", "custom agent"), the full set one click away (``<details>``);
its plasticity score (:mod:`lop_bench.plasticity`) recomputed against the fresh agent's
reference entry, seed by seed (a ``plasticity`` block in a submitted file is never
trusted); links to its result files. Functional-check tiers (``StreamSpec.functional_tiers``)
are listed apart, by name, "functional check, not ranked". ``index.html`` adds, per stream
and ranked tier, every entry's seed-mean curve in bins with a 95% band, as inline SVG with
the legend beside the axes; its tables sort by a click on a header (one inline script,
allowed by its hash in the page's Content Security Policy; no external resources). Every
submitted string is escaped: HTML on both pages, and Markdown syntax (emphasis,
strikethrough, math, links, autolinks, table pipes) in ``README.md``. Two builds of the
same submissions give byte-identical files: no timestamps (the date shown is the newest
``run_info.created`` of an entry), sorted iteration, seeded bootstraps and fixed float
formatting.

Layout of a leaderboard directory (default ``leaderboard/``, relative to the working
directory)::

    submissions/<Stream-vN>/<tier>/<agent>__<entry id>/seed<k>.json
    submissions/<Stream-vN>/<tier>/<agent>__<entry id>/REFERENCE   (reference entries)
    submissions/.lock
    README.md
    index.html

What a table shows of a stream (its score's name, label and direction, the statistic it
ranks by, the plot's bins) and what a result must match (its tiers, its dataset
fingerprint: ``None`` for a synthetic stream) come from the stream's declaration,
:class:`~lop_bench.streams.StreamSpec`.

The modules: :mod:`~lop_bench.leaderboard.entries` (what an entry is),
:mod:`~lop_bench.leaderboard.checks` (what a result must be),
:mod:`~lop_bench.leaderboard.submission` (``submit``),
:mod:`~lop_bench.leaderboard.board` (reading a board back, ``build``),
:mod:`~lop_bench.leaderboard.ranking` (the tables),
:mod:`~lop_bench.leaderboard.markdown` and :mod:`~lop_bench.leaderboard.html_page` (the
pages). The commands are in :mod:`lop_bench.cli`.
"""


from __future__ import annotations

from lop_bench.errors import SubmissionRejected
from lop_bench.leaderboard.board import DEFAULT_DIR, build, load_board
from lop_bench.leaderboard.checks import UNRANKED_TIERS, check_result
from lop_bench.leaderboard.entries import REFERENCE_MARK, Entry
from lop_bench.leaderboard.ranking import (
    IQM_MIN_SEEDS,
    improvement_ci,
    probability_of_improvement,
    rank_entries,
    rank_groups,
)
from lop_bench.leaderboard.submission import (
    LOCK_TIMEOUT_S,
    check_submission,
    submit,
    submit_reference,
)

__all__ = [
    "DEFAULT_DIR",
    "IQM_MIN_SEEDS",
    "UNRANKED_TIERS",
    "REFERENCE_MARK",
    "LOCK_TIMEOUT_S",
    "SubmissionRejected",
    "Entry",
    "check_result",
    "check_submission",
    "submit",
    "submit_reference",
    "load_board",
    "rank_entries",
    "rank_groups",
    "probability_of_improvement",
    "improvement_ci",
    "build",
]
