"""The built leaderboard page in a real browser: Debian's headless Chromium, offline.

Skips when ``/usr/bin/chromium`` is missing (``apt-get install chromium``; ``.ci/run``
installs it when apt is reachable).
"""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lop_bench import leaderboard as lb
from lop_bench.leaderboard.html_page import COLORS
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


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    with ranked_mini_tier():
        good = make_entry(root / "good")
        fast = make_entry(root / "fast", agent_kwargs={"lr": 0.1})
        evil = copy_entry(fast, root / "evil", rename(SCRIPT))
        board = root / "board"
        lb.submit([good, evil], board, source="https://github.com/me/agent/tree/0123456789abcdef")
        _, index = lb.build(board)
    return index


def test_tables_and_plot_are_in_the_rendered_dom(page, tmp_path):
    out = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    assert "<table" in dom and dom.count("<tr>") == 3  # header + 2 entries
    assert "lop/SlowlyChangingRegression-v0" in dom and "final IQM" in dom
    assert "<svg" in dom and "<path" in dom and "mean squared error" in dom
    # the agent's name is text, not markup: no script element came out of it
    assert "<script" not in dom
    assert dom.count('href="https://github.com/me/agent/tree/0123456789abcdef"') == 2
    assert html.escape(SCRIPT) in dom


def test_screenshot_is_not_blank(page, tmp_path):
    import matplotlib.image

    png = tmp_path / "leaderboard.png"
    out = chromium(tmp_path, f"--screenshot={png}", "--window-size=1200,1600", page.as_uri())
    assert out.returncode == 0 and png.is_file(), out.stderr[-2000:]
    img = matplotlib.image.imread(png)
    assert img.shape[:2] == (1600, 1200)
    rgb = np.round(img[..., :3] * 255).astype(np.uint8)
    colors = {tuple(c) for c in rgb.reshape(-1, 3)[::7]}
    assert len(colors) > 50, "the page rendered (almost) one color"
    dark = (rgb.mean(axis=2) < 128).mean()
    assert 0.002 < dark < 0.5, f"{dark:.1%} dark pixels: no text or a dark page"
    # the plot's two curves are drawn in the first two colors of the palette
    for hex_color in COLORS[:2]:
        want = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(rgb.astype(int) - want).max(axis=2) < 12).sum() > 200, hex_color


def test_page_loads_nothing_from_outside(page):
    text = page.read_text()
    assert "<script" not in text and "<link" not in text and "src=" not in text
    assert "url(http" not in text and "@import" not in text
