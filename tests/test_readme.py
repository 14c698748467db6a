"""The README's examples run as written (on the smoke tier)."""

import contextlib
import io
import re
import sys
from pathlib import Path

from lop_bench.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_loop_runs():
    loop = _blocks("python")[0]
    assert 'tier="smoke"' in loop
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(loop, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "mse" in lines[-1]  # one line per task of the smoke tier


def test_readme_agent_factory_runs_from_the_current_directory(tmp_path, monkeypatch):
    module = _blocks("python")[1]
    assert module.startswith("# my_agents.py")
    (tmp_path / "my_agents.py").write_text(module)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_agents", raising=False)
    out = tmp_path / "results" / "mine"
    assert main(["run", "lop/SlowlyChangingRegression-v0", "--agent", "my_agents:make_agent",
                 "--tier", "smoke", "--jobs", "1", "--out", str(out)]) == 0
    assert len(list(out.glob("*.json"))) == 2  # the smoke tier's two seeds
