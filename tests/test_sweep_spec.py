"""Sweep specs are checked whole before any job starts, and every problem is named with the
spec line of the key at fault: unknown streams, tiers, agents, hyperparameters and config
fields, empty grids, bad seeds, values an agent's config refuses, bad [run] settings."""

import textwrap

import pytest

from lop_bench.cli import main
from lop_bench.errors import SweepSpecError
from lop_bench.sweeps import load_spec, sweep
from lop_bench.sweeps.spec import KeyLines

REG = "lop/SlowlyChangingRegression-v0"

GOOD = f"""\
# a small grid
streams = ["{REG}"]
tiers = ["smoke"]
seeds = "0-1"

[agents.backprop]
lr = [0.01, 0.003]

[agents.linear]
"""


def _write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _problems(tmp_path, text):
    """The problems of a spec as ``{line: message}`` (a dry run: nothing may run)."""
    path = _write(tmp_path, text)
    with pytest.raises(SweepSpecError) as e:
        sweep(path, dry_run=True, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    found = {}
    for line, message in e.value.problems:
        found.setdefault(line, []).append(message)
    for line in found:  # a key that is missing has no line: the file is named alone
        assert (f"{path}:{line}: " if line else f"{path}: ") in str(e.value)
    return {line: " | ".join(messages) for line, messages in found.items()}


def _line_of(text, start):
    """The 1-based number of the line of ``text`` that starts with ``start``."""
    return next(i for i, line in enumerate(textwrap.dedent(text).splitlines(), 1)
                if line.startswith(start))


# One spec error per case: (what replaces the key's line in GOOD, or is appended, message).
CASES = [
    ('streams = ["lop/SlowlyChangingRegresion-v0"]', "streams =",
     "unknown env id 'lop/SlowlyChangingRegresion-v0'. Did you mean 'lop/SlowlyChangingRegression-v0'"),
    ('tiers = ["tiny"]', "tiers =", "'tiny' is not a tier of lop/SlowlyChangingRegression-v0"),
    ('seeds = "0-x"', "seeds =", "seeds '0-x' is not a seed list"),
    ('seeds = "3-1"', "seeds =", "a range runs from low to high"),
    ("seeds = [1, 1]", "seeds =", "a seed is listed twice"),
    ("seeds = [-1]", "seeds =", "integers from 0 to 4294967295"),
    ('seeds = "0-99999999999"', "seeds =", "a seed is out of range"),
    ("lr = []", "lr =", "an empty grid"),
    ("lr = [0.01, -1]", "lr =", "lr must be > 0, got -1"),
    ("lr = [0.01, 0.01]", "lr =", "the value 0.01 is listed twice"),
    ("lrr = [0.01]", "lrr =", "unknown backprop hyperparameter field 'lrr'. Did you mean 'lr'?"),
    ('lr = ["fast"]', "lr =", "'lr' must be a number, got 'fast'"),
    ("hidden = [5, 10]", "hidden =", "write hidden = [[...]] for one list-valued setting"),
]


@pytest.mark.parametrize("replacement, key, message", CASES)
def test_each_spec_error_names_its_line(tmp_path, replacement, key, message):
    lines = GOOD.splitlines()
    target = replacement.split("=")[0].strip() + " ="
    index = next((i for i, line in enumerate(lines) if line.startswith(target)), None)
    if index is None:  # a hyperparameter GOOD does not set: under [agents.backprop]
        index = lines.index("[agents.backprop]") + 1
        lines.insert(index, replacement)
    else:
        lines[index] = replacement
    text = "\n".join(lines) + "\n"
    found = _problems(tmp_path, text)
    assert list(found) == [_line_of(text, key)], found
    assert message in found[_line_of(text, key)]


def test_unknown_agent_and_agent_without_a_preset_name_their_table(tmp_path):
    text = GOOD + "\n[agents.backprob]\n\n[agents.ppo]\n"
    found = _problems(tmp_path, text)
    assert "unknown agent 'backprob'. Did you mean 'backprop'" in found[_line_of(text, "[agents.backprob]")]
    assert "agent 'ppo' has no preset for 'lop/SlowlyChangingRegression-v0'" in \
        found[_line_of(text, "[agents.ppo]")]


def test_stream_overrides_are_checked_field_by_field(tmp_path):
    text = GOOD + "\n[set]\nnum_tasks = [3, 0]\nnum_taks = [2]\n"
    found = _problems(tmp_path, text)
    assert "num_tasks must be > 0, got 0" in found[_line_of(text, "num_tasks")]
    assert "unknown lop/SlowlyChangingRegression-v0 config field 'num_taks'" in \
        found[_line_of(text, "num_taks")]


@pytest.mark.parametrize("run, message", [
    ("retries = -1", "must be an integer >= 0, got -1"),
    ("checkpoint_every = 0", "a number of tasks >= 1, 'auto', or false"),
    ("vectorised = true", "unknown [run] key 'vectorised'. Did you mean 'vectorized'"),
    ('diagnostics = "yes"', "must be true or false"),
    ("gpus_per_job = -1", "a number >= 0"),
])
def test_run_settings_are_checked(tmp_path, run, message):
    text = GOOD + f"\n[run]\n{run}\n"
    found = _problems(tmp_path, text)
    assert message in found[_line_of(text, run.split()[0])]


def test_every_problem_is_reported_at_once_in_line_order(tmp_path):
    text = f"""\
    streams = ["{REG}"]
    tiers = ["smoke", "tiny"]
    seeds = "0-x"

    [agents.backprop]
    lr = [-1]
    momentum = []

    [agents.backprob]

    [run]
    retries = -1
    """
    path = _write(tmp_path, text)
    with pytest.raises(SweepSpecError) as e:
        sweep(path, dry_run=True)
    assert [line for line, _ in e.value.problems] == [2, 3, 6, 7, 9, 12]
    assert str(e.value).startswith(f"{path} has 6 problems; nothing was run:")


def test_a_toml_syntax_error_names_its_line(tmp_path):
    path = _write(tmp_path, GOOD + "\n[agents.continual_backprop\n")
    with pytest.raises(SweepSpecError, match=rf"{path}:11: not valid TOML"):
        load_spec(path)


def test_missing_streams_or_agents_and_unknown_top_level_keys(tmp_path):
    found = _problems(tmp_path, 'tiers = ["smoke"]\nagent = {}\n')
    assert "no streams" in found[None] and "no agents" in found[None]
    assert "unknown top-level key 'agent'. Did you mean 'agents'" in found[2]


def test_grids_name_their_own_lines_and_inherit_the_top_level(tmp_path):
    text = f"""\
    streams = ["{REG}"]
    seeds = [0]

    [[grid]]
    tiers = ["smoke"]
    [grid.agents.backprop]
    lr = [0.01]

    [[grid]]
    tiers = ["smoke"]
    [grid.agents.backprop]
    lr = [-0.5]
    """
    found = _problems(tmp_path, text)
    assert list(found) == [12] and "lr must be > 0, got -0.5" in found[12]
    assert "grid[1].agents.backprop.lr" in found[12]


def test_a_dict_spec_names_the_key_path(tmp_path):
    spec = {"streams": [REG], "tiers": ["smoke"], "agents": {"backprop": {"lr": [-1]}}}
    with pytest.raises(SweepSpecError, match=r"<spec>: agents\.backprop\.lr: lr must be > 0"):
        sweep(spec, dry_run=True)


def test_key_lines_skip_strings_and_multi_line_values():
    text = textwrap.dedent("""\
        a = [
          "b = 1",
          [2, 3],
        ]
        "quoted key".c = 4   # a comment with d = 5
        s = \"\"\"
        e = 6
        \"\"\"
        [t . "u"]
        f = {g = 7}
        [[grid]]
        [grid.agents.x]
        h = 8
        [[grid]]
        [grid.agents.x]
        h = 9
        """)
    lines = KeyLines(text)
    assert lines.line(["a"]) == 1 and lines.line(["b"]) is None and lines.line(["e"]) is None
    assert lines.line(["quoted key", "c"]) == 5 and lines.line(["d"]) is None
    assert lines.line(["s"]) == 6
    assert lines.line(["t", "u", "f"]) == 10 and lines.line(["t", "u", "f", "g"]) == 10
    assert lines.line(["t", "u", "other"]) == 9
    assert lines.line(["grid", 0, "agents", "x", "h"]) == 13
    assert lines.line(["grid", 1, "agents", "x", "h"]) == 16


def test_dry_run_prints_the_jobs_and_their_estimated_cost(tmp_path, capsys):
    path = _write(tmp_path, GOOD + f'\n[run]\nout = "{tmp_path / "out"}"\n')
    assert main(["sweep", str(path), "--dry-run", "--jobs", "2"]) == 0
    text = capsys.readouterr().out
    assert "3 configurations, 6 results" in text and "0 finished, 6 to run in 3 jobs" in text
    assert "backprop (lr=0.003) [vectorized]" in text and "linear [vectorized]" in text
    assert "Estimated cost: about" in text and "rough estimate" in text
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_the_cli_reports_spec_errors_with_their_lines_and_exit_code_1(tmp_path, capsys):
    path = _write(tmp_path, GOOD.replace("lr = [0.01, 0.003]", "lr = [0.01, -3]"))
    assert main(["sweep", str(path), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lop-bench: error: {path}:7: agents.backprop.lr: lr must be > 0"), err
    assert "Traceback" not in err


def test_sweep_help_shows_a_spec_and_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "[agents.backprop]" in text and "lop-bench sweep sweep.toml --dry-run" in text


def make_agent_needing_width(env_spec, observation_space, action_space, seed, device, width):
    if width > 8:
        raise RuntimeError(f"a bug for width {width}")
    from tests.helpers import MeanAgent

    return MeanAgent(action_space)


def test_a_user_factory_s_own_exception_is_named_with_its_setting(tmp_path):
    text = f"""\
    streams = ["{REG}"]
    tiers = ["smoke"]
    [agents."tests.test_sweep_spec:make_agent_needing_width"]
    width = [4, 16]
    """
    found = _problems(tmp_path, text)
    assert list(found) == [3]  # the agent's table: the value alone is not at fault
    assert "width=16: the agent cannot be built: RuntimeError: a bug for width 16" in found[3]


def test_a_device_this_machine_lacks_is_named_at_its_spec_line(tmp_path):
    text = GOOD + '\n[run]\ndevice = "bogus"\n'
    path = _write(tmp_path, text)
    with pytest.raises(SweepSpecError) as e:
        sweep(path, out=tmp_path / "out")  # not a dry run: the local backend checks devices
    [(line, message)] = e.value.problems
    assert line == _line_of(text, "device") and "unknown device 'bogus'" in message
    assert not (tmp_path / "out").exists()
