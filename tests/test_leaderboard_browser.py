"""The built leaderboard page in a real browser: Debian's headless Chromium, offline.

A board of 12 entries is built; Chromium loads its ``index.html`` and, through a probe
script appended to a copy of the page (``--dump-dom`` then reads what the probe wrote),
clicks column headers (the rows sort, numbers as numbers), a hyperparameter summary (the
full set opens) and measures the plot's legend (its entries lie off the plot area and apart).
A screenshot of the page goes to the test's directory and, when
``$LOP_BENCH_TEST_ARTIFACTS`` is set, there too.

Skips when Chromium is missing (``apt-get install chromium``; ``.ci/run`` installs it when
apt is reachable).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lop_bench import leaderboard as lb
from lop_bench.leaderboard.html_page import COLORS, SORT_SCRIPT
from lop_bench.metrics import seed_stats, summarize
from tests.leaderboard_fixtures import SCRIPT, copy_entry, make_entry, ranked_mini_tier, rename

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install chromium): the leaderboard "
           "page is not checked in a browser.",
)

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")

LRS = (0.002, 0.003, 0.005, 0.007, 0.01, 0.015, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2)
"""One entry per learning rate: 12 entries, 12 distinct curves."""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def far_behind(data: dict, seed: int) -> None:
    """A hostile name, and an error 30 above the others': a rank group of its own."""
    data["agent"]["name"] = SCRIPT
    data["per_task"] = [v + 30.0 for v in data["per_task"]]
    data["summary"] = summarize(data["per_task"], data["higher_is_better"])


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    with ranked_mini_tier():
        runs = {lr: make_entry(root / f"lr{lr}", agent_kwargs={"lr": lr}) for lr in LRS}
        board = root / "board"
        lb.submit([copy_entry(runs[0.01], root / "ref", rename("backprop")),
                   copy_entry(runs[0.02], root / "fresh", rename("fresh"))], board, reference=True)
        others = [copy_entry(runs[lr], root / f"bp{lr}", rename("backprop"))
                  for lr in LRS if lr not in (0.01, 0.02, 0.2)]
        evil = copy_entry(runs[0.2], root / "evil", far_behind)
        lb.submit([*others, evil], board, source="https://github.com/me/agent/tree/0123456789abcdef")
        lb.build(board)
    return board


@pytest.fixture(scope="module")
def page(board) -> Path:
    return board / "index.html"


def test_tables_and_plot_are_in_the_rendered_dom(page, tmp_path):
    out = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    assert "<table" in dom and dom.count("<tr data-pos=") == 12
    assert "lop/SlowlyChangingRegression-v0" in dom and "final IQM" in dom
    assert "<svg" in dom and "<path" in dom and "mean squared error" in dom
    # the agent's name is text, not markup: the page's one script is its sorter
    assert dom.count("<script") == 1
    assert dom.count('href="https://github.com/me/agent/tree/0123456789abcdef"') == 10
    assert html.escape(SCRIPT) in dom


def artifacts(tmp_path: Path) -> list[Path]:
    """Where screenshots go: the test's directory, and ``$LOP_BENCH_TEST_ARTIFACTS``."""
    out = [tmp_path]
    if os.environ.get("LOP_BENCH_TEST_ARTIFACTS"):
        extra = Path(os.environ["LOP_BENCH_TEST_ARTIFACTS"])
        extra.mkdir(parents=True, exist_ok=True)
        out.append(extra)
    return out


def test_screenshot_is_not_blank(page, tmp_path):
    import matplotlib.image

    png = tmp_path / "leaderboard.png"
    out = chromium(tmp_path, f"--screenshot={png}", "--window-size=1400,2000", page.as_uri())
    assert out.returncode == 0 and png.is_file(), out.stderr[-2000:]
    for where in artifacts(tmp_path)[1:]:
        shutil.copyfile(png, where / "leaderboard.png")
    img = matplotlib.image.imread(png)
    assert img.shape[:2] == (2000, 1400)
    rgb = np.round(img[..., :3] * 255).astype(np.uint8)
    colors = {tuple(c) for c in rgb.reshape(-1, 3)[::7]}
    assert len(colors) > 50, "the page rendered (almost) one color"
    dark = (rgb.mean(axis=2) < 128).mean()
    assert 0.002 < dark < 0.5, f"{dark:.1%} dark pixels: no text or a dark page"
    # the plot's curves are drawn in the colours of the palette
    for hex_color in COLORS[:2]:
        want = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(rgb.astype(int) - want).max(axis=2) < 12).sum() > 200, hex_color


def test_page_loads_nothing_from_outside(page):
    text = page.read_text()
    assert text.count("<script") == 1 and "<link" not in text
    assert not re.search(r"\ssrc=", text)
    assert "url(http" not in text and "@import" not in text
    assert "default-src 'none'" in text


# The probe: clicks as a reader would, then writes what it saw into the page as JSON.
PROBE = """\
(function () {
  var out = {};
  var table = document.querySelector("table.board");
  var heads = table.tHead.rows[0].cells;
  function col(name) {
    for (var i = 0; i < heads.length; i++) { if (heads[i].textContent.trim() === name) return i; }
    return -1;
  }
  function column(i, attr) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return attr ? r.cells[i].getAttribute(attr) : r.cells[i].textContent.trim();
    });
  }
  function pos() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return Number(r.getAttribute("data-pos"));
    });
  }
  var rank = col("#"), fin = col("final"), agent = col("agent"), hp = col("hyperparameters");
  out.rank = column(rank);
  out.pos = pos();
  out.final_default = column(fin, "data-sort");
  heads[fin].click();
  out.final_asc = column(fin, "data-sort");
  out.aria_asc = heads[fin].getAttribute("aria-sort");
  heads[fin].click();
  out.final_desc = column(fin, "data-sort");
  out.aria_desc = heads[fin].getAttribute("aria-sort");
  heads[agent].click();
  out.agent_asc = column(agent);
  heads[rank].click();
  out.pos_again = pos();
  var details = table.tBodies[0].rows[0].cells[hp].querySelector("details");
  var full = details.querySelector("div");
  out.open_before = details.open;
  out.height_before = details.getBoundingClientRect().height;
  out.visible_before = full.checkVisibility();
  details.querySelector("summary").click();
  out.open_after = details.open;
  out.height_after = details.getBoundingClientRect().height;
  out.visible_after = full.checkVisibility();
  out.full_text = full.textContent;
  function box(id) {
    var r = document.getElementById(id).getBoundingClientRect();
    return [r.left, r.top, r.right, r.bottom];
  }
  out.area = box("plot-area-0");
  out.legend = [];
  for (var j = 0; document.getElementById("legend-0-" + j + "-text"); j++) {
    var a = box("legend-0-" + j + "-line"), b = box("legend-0-" + j + "-text");
    out.legend.push([Math.min(a[0], b[0]), Math.min(a[1], b[1]),
                     Math.max(a[2], b[2]), Math.max(a[3], b[3])]);
  }
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
"""


def _csp_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


@pytest.fixture(scope="module")
def probed(page, tmp_path_factory) -> dict:
    """What the probe saw: a copy of the page (beside it, so that its links resolve) with
    the probe appended and allowed by the page's policy, as a browser runs it."""
    text = page.read_text()
    allowed = f"script-src '{_csp_hash(SORT_SCRIPT)}'"
    assert allowed in text
    text = text.replace(allowed, f"{allowed} '{_csp_hash(PROBE)}'")
    text = text.replace("</body>", f"<script>{PROBE}</script>\n</body>")
    copy = page.with_name("probed.html")
    copy.write_text(text)
    tmp = tmp_path_factory.mktemp("chromium")
    out = chromium(tmp, "--dump-dom", "--window-size=1400,2000", copy.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
    assert found, "the probe did not run: " + out.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_clicking_a_header_sorts_the_rows_as_numbers(probed):
    assert probed["pos"] == list(range(12))  # the default order is the rank order
    finals = [float(v) for v in probed["final_default"]]
    assert finals == sorted(finals)  # an error: lower is better, best first
    asc = [float(v) for v in probed["final_asc"]]
    assert asc == sorted(finals) and probed["aria_asc"] == "ascending"
    desc = [float(v) for v in probed["final_desc"]]
    assert desc == sorted(finals, reverse=True) and probed["aria_desc"] == "descending"
    names = probed["agent_asc"]
    assert names == sorted(names, key=str.lower)
    assert probed["pos_again"] == list(range(12))  # back to the rank order


def test_clicking_a_summary_expands_the_hyperparameters(probed):
    assert probed["open_before"] is False and probed["visible_before"] is False
    assert probed["open_after"] is True and probed["visible_after"] is True
    assert probed["height_after"] > probed["height_before"] > 0
    assert re.fullmatch(r"lr=[0-9.]+", probed["full_text"]), probed["full_text"]


def test_rows_of_one_rank_group_show_the_same_rank(probed, board):
    with ranked_mini_tier():
        entries = lb.rank_entries(lb.load_board(board), higher_is_better=False)
    intervals = [seed_stats(e.stat("final")) for e in entries]
    want = [1]
    for above, here in zip(intervals, intervals[1:]):
        overlap = here["ci_low"] <= above["ci_high"] and above["ci_low"] <= here["ci_high"]
        want.append(want[-1] if overlap else want[-1] + 1)
    assert probed["rank"] == [str(g) for g in want]
    # two seeds per entry: wide intervals, so groups are shared, but not by the one far behind
    assert want == [1] * 11 + [2]


def test_the_legend_lies_off_the_plot_and_its_entries_apart(probed):
    left, top, right, bottom = probed["area"]
    assert right - left > 200 and bottom - top > 100
    boxes = probed["legend"]
    assert len(boxes) == 12

    def overlap(a, b):
        return min(a[2], b[2]) - max(a[0], b[0]) > 0.5 and min(a[3], b[3]) - max(a[1], b[1]) > 0.5

    for i, b in enumerate(boxes):
        assert b[2] > b[0] and b[3] > b[1], f"legend entry {i} is not drawn"
        assert not overlap(b, probed["area"]), f"legend entry {i} covers the plot"
        for j in range(i):
            assert not overlap(b, boxes[j]), f"legend entries {j} and {i} overlap"
