"""``index.html``: the tables and, per stream and ranked tier, every entry's seed-mean curve
as inline SVG; a static page with no external resources, all submitted text escaped.

Each table sorts by a click on a column header (numbers as numbers, the default order is
the rank order), by the one inline script of the page, which the page's Content Security
Policy allows by its sha256 and nothing else. Hyperparameters open with a click
(``<details>``, no script needed). Functional-check tiers are listed apart, unranked.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from typing import Any
from urllib.parse import quote

from lop_bench.leaderboard.entries import slug
from lop_bench.leaderboard.ranking import DASH, LINKABLE, Table, source_text

__all__ = ["COLORS", "DASHES", "SORT_SCRIPT", "index_html", "line_style", "plot_figure"]

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
"""The colours of the entries' curves, in table order (also the agent cell's swatch)."""

DASHES: tuple[tuple[float, ...] | None, ...] = (None, (5.0, 2.0), (1.2, 1.6), (6.0, 2.0, 1.2, 2.0))
"""Dash patterns (in line widths; None: solid): the 11th to 20th entries are dashed, and
so on, so that no two of 40 entries share a colour and a pattern."""


def line_style(i: int) -> tuple[str, tuple[float, ...] | None]:
    """The colour and dash pattern of the ``i``-th entry (0-based, table order)."""
    return COLORS[i % len(COLORS)], DASHES[(i // len(COLORS)) % len(DASHES)]


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _mpl_text(text: str, limit: int = 44) -> str:
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


_LEGEND_ROW_IN = 0.19
"""Height of one legend row in inches (7 pt text and its spacing), to size the figure."""


def plot_figure(t: Table, index: int) -> Any:
    """The matplotlib figure of a ranked table's curves: the axes on the left, the legend
    outside them on the right (one row per entry, in table order, two columns past 24), the
    figure tall enough for the legend. SVG ids: ``plot-area-<index>`` (the axes' area),
    ``legend-<index>`` and ``legend-<index>-<j>-line`` / ``-text`` (entry ``j``)."""
    import numpy as np
    from matplotlib.figure import Figure

    from lop_bench.metrics import bin_curve, bin_curves, plot_bin_size

    n = len(t.entries)
    ncol = 1 if n <= 24 else 2
    height = max(3.8, 0.9 + _LEGEND_ROW_IN * -(-n // ncol))
    fig = Figure(figsize=(10.5 if ncol == 1 else 13.0, height), layout="constrained")
    ax = fig.add_subplot()
    size = 1
    for i, e in enumerate(t.entries):
        curves = np.array([r.per_task for r in e.results], dtype=float)
        size = plot_bin_size(t.bin_size, curves.shape[1])
        mean, half = bin_curves(curves, size)
        x = bin_curve(np.arange(curves.shape[1], dtype=float), size)  # bin at its mean task
        color, dashes = line_style(i)
        (line,) = ax.plot(x, mean, color=color, lw=1.6, label=_mpl_text(t.rows[i]["legend"]))
        if dashes is not None:
            line.set_dashes(dashes)
        if curves.shape[0] > 1:
            ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.14, lw=0)
    ax.set_xlabel(f"task (bins of {size})" if size > 1 else "task")
    ax.set_ylabel(_mpl_text(t.label))
    ax.grid(alpha=0.3)
    ax.patch.set_gid(f"plot-area-{index}")
    leg = ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                    ncol=ncol, handlelength=3.2, frameon=False)
    leg.set_gid(f"legend-{index}")
    for j, (handle, text) in enumerate(zip(leg.legend_handles, leg.get_texts())):
        handle.set_gid(f"legend-{index}-{j}-line")
        text.set_gid(f"legend-{index}-{j}-text")
    return fig


def _svg(t: Table, index: int) -> str:
    """The table's curves as inline SVG (matplotlib, deterministic: fixed salt, no date)."""
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": f"lop-bench-leaderboard-{index}",
                                "svg.fonttype": "none", "font.size": 9}):
        fig = plot_figure(t, index)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg"):].strip()


SORT_SCRIPT = """\
(function () {
  function key(td) {
    var s = td.getAttribute("data-sort");
    if (s !== null && s !== "" && !isNaN(parseFloat(s))) { return [0, parseFloat(s), ""]; }
    var text = td.textContent.trim();
    return [text === "\u2014" || text === "" ? 2 : 1, 0, text.toLowerCase()];
  }
  function sortBy(table, col, th) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var h = 0; h < heads.length; h++) { heads[h].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x[0] !== y[0]) { return x[0] - y[0]; }
      var c = x[0] === 0 ? (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0)
                         : x[2].localeCompare(y[2], undefined, {numeric: true});
      if (!asc) { c = -c; }
      return c || (a.getAttribute("data-pos") - b.getAttribute("data-pos"));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  var tables = document.querySelectorAll("table.board");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by this column (click again to reverse)";
      th.addEventListener("click", function () { sortBy(table, col, th); });
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortBy(table, col, th); }
      });
    });
  });
})();
"""
"""The page's one script: sorts a table by a clicked header (numbers by their ``data-sort``
value, text in natural order, empty cells last; ties keep the rank order)."""


def _script_hash() -> str:
    digest = hashlib.sha256(SORT_SCRIPT.encode()).digest()
    return "sha256-" + base64.b64encode(digest).decode()


_CSS = """\
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1500px;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ddd}
h3{font-size:1.05rem;margin-top:1.6rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0;width:100%}
th,td{border:1px solid #ddd;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f4f4f4;white-space:nowrap;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;white-space:nowrap}
td.agent{min-width:11rem;max-width:16rem;overflow-wrap:anywhere;font-weight:600}
td.small{font-size:.78rem;color:#333;overflow-wrap:anywhere}
td.hp{min-width:9rem;max-width:20rem}td.ver{min-width:7rem;max-width:12rem}
td.date{white-space:nowrap}td.src{min-width:7rem;max-width:14rem}.nosrc{color:#888;font-style:italic}
td.files a{margin-right:.25em}
tr.g1 td{background:#fff}tr.g0 td{background:#f7f9fc}
details summary{cursor:pointer}details div{margin-top:.3rem;color:#444}
.swatch{display:inline-block;vertical-align:middle;margin-right:.3em}
.meta{color:#555;font-size:.9rem}figure{margin:1rem 0}figcaption{color:#555;font-size:.85rem}
figure svg{max-width:100%;height:auto}code{background:#f4f4f4;padding:0 .2em}
"""


_CELL_CLASS = {"agent": "agent", "source": "small src", "hparams": "small hp",
               "versions": "small ver", "date": "date", "files": "small files"}


_NUMERIC = {"rank", "seeds", "final", "final_iqm", "initial", "drop", "gap", "poi", "plasticity"}


def _html_source(source: str) -> str:
    """The ``source`` cell: a link for an http(s) URL, text otherwise, "no source" if none."""
    if not source:
        return '<span class="nosrc">no source</span>'
    if LINKABLE.fullmatch(source):
        return (f'<a href="{_h(source)}" rel="nofollow noopener noreferrer">'
                f"{_h(source_text(source))}</a>")
    return _h(source)


def _swatch(i: int) -> str:
    """A short line in the entry's colour and dash pattern, as its curve is drawn."""
    color, dashes = line_style(i)
    dash = "" if dashes is None else f' stroke-dasharray="{" ".join(f"{d * 2:g}" for d in dashes)}"'
    return (f'<svg class="swatch" width="26" height="8" aria-hidden="true"><line x1="1" y1="4" '
            f'x2="25" y2="4" stroke="{color}" stroke-width="3"{dash}/></svg>')


def _files(paths: str) -> str:
    """Links to an entry's result files, relative to the page, named by seed."""
    links = []
    for p in filter(None, paths.split("\n")):
        name = p.rsplit("/", 1)[-1].removesuffix(".json").removeprefix("seed")
        links.append(f'<a href="{_h(quote(p))}">{_h(name)}</a>')
    return " ".join(links) or DASH


def _hparams(row: dict[str, str]) -> str:
    return (f"<details><summary>{_h(row['hparams'])}</summary>"
            f"<div>{_h(row['hparams_full'])}</div></details>")


def _anchor(t: Table) -> str:
    return slug(f"{t.env_id.split('/')[-1]}-{t.tier}", 80)


def _title(t: Table) -> str:
    return f"{t.env_id} — tier {t.tier}"


def _table(t: Table) -> list[str]:
    """The ``<table>`` of one stream and tier."""
    out = [
        '<div class="scroll"><table class="board">',
        "<thead><tr>" + "".join(f'<th scope="col">{_h(title)}</th>' for _, title in t.columns)
        + "</tr></thead>",
        "<tbody>",
    ]
    for j, row in enumerate(t.rows):
        cells = []
        keys = t.sort_keys[j] if t.sort_keys else {}
        for k, _ in t.columns:
            cls = "num" if k in _NUMERIC else _CELL_CLASS.get(k, "")
            attr = f' class="{cls}"' if cls else ""
            if k in keys:
                attr += f' data-sort="{keys[k]!r}"'
            if k == "source":
                text = _html_source(row[k])
            elif k == "hparams":
                text = _hparams(row)
            elif k == "files":
                text = _files(row[k])
            elif k == "versions" and ", " in row[k]:
                first, rest = row[k].split(", ", 1)
                text = f"<details><summary>{_h(first)}</summary><div>{_h(rest)}</div></details>"
            elif k == "agent" and t.ranked:
                text = _swatch(j) + _h(row[k])
            else:
                text = _h(row[k])
            cells.append(f"<td{attr}>{text}</td>")
        group = f' class="g{t.groups[j] % 2}"' if t.groups else ""
        out.append(f'<tr data-pos="{j}"{group}>' + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table></div>"]
    return out


def _meta(t: Table) -> str:
    direction = "higher is better" if t.higher_is_better else "lower is better"
    return (f'<p class="meta">Metric: {_h(t.metric)} ({_h(t.label)}, {direction}); '
            f"{t.num_seeds} seeds per entry; protocol <code>{_h(t.protocol_hash)}</code></p>")


def index_html(tables: list[Table]) -> str:
    """The page: the ranked tables with their plots, then the functional checks."""
    ranked = [t for t in tables if t.ranked]
    checks = [t for t in tables if not t.ranked]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        f"style-src 'unsafe-inline'; script-src '{_script_hash()}'\">",
        "<title>lop-bench leaderboard</title>",
        f"<style>\n{_CSS}</style>",
        "</head>",
        "<body>",
        "<h1>lop-bench leaderboard</h1>",
        '<p class="meta">Generated by <code>lop-bench leaderboard build</code> from the '
        "checked result files under <code>submissions/</code>. Add yours with "
        "<code>lop-bench submit RESULTS... --source URL</code> (every seed of a ranked tier, "
        "no custom settings; the URL names the commit of your code). Click a column header "
        "to sort by it, a hyperparameter summary to see them all.</p>",
    ]
    if not tables:
        out.append("<p>No submissions yet.</p>")
    else:
        out.append("<nav><ul>")
        for t in ranked:
            out.append(f'<li><a href="#{_h(_anchor(t))}">{_h(_title(t))}</a> '
                       f"({len(t.entries)} entries)</li>")
        if checks:
            out.append('<li><a href="#functional-checks">Functional checks, not ranked</a><ul>')
            for t in checks:
                out.append(f'<li><a href="#{_h(_anchor(t))}">{_h(_title(t))}</a> '
                           f"({len(t.entries)} entries)</li>")
            out.append("</ul></li>")
        out.append("</ul></nav>")
    for i, t in enumerate(ranked):
        out += [f'<section id="{_h(_anchor(t))}">', f"<h2>{_h(_title(t))}</h2>", _meta(t)]
        out += _table(t)
        out += [
            '<figure class="curves">',
            _svg(t, i),
            f"<figcaption>Per-task {_h(t.label)} of every entry: the mean over seeds in bins "
            "of consecutive tasks, with its 95% confidence band (Student's t over seeds). "
            "The legend lists the entries in table order with their rank groups; colours and "
            "dash patterns are those of the agent cells' swatches.</figcaption>",
            "</figure>",
            '<p class="meta">' + _h(t.about).replace("`", "") + "</p>",
            "</section>",
        ]
    if checks:
        out += ['<section id="functional-checks">', "<h2>Functional checks, not ranked</h2>",
                '<p class="meta">Tiers too short to show a loss of plasticity: they check '
                "that an agent runs and learns. Their entries are listed by name; an order "
                "between them would mean nothing.</p>"]
        for t in checks:
            out += [f'<section id="{_h(_anchor(t))}">',
                    f"<h3>{_h(_title(t))}: functional check, not ranked ({_h(t.functional)})</h3>",
                    _meta(t)]
            out += _table(t)
            out += ['<p class="meta">' + _h(t.about).replace("`", "") + "</p>", "</section>"]
        out.append("</section>")
    out += [
        f"<script>{SORT_SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(out)
