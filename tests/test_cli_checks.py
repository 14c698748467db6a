"""``lop-bench run / reproduce / report`` check paths, device, seeds and hyperparameters
before any work, never overwrite another run's result, and report every failure as one
line naming the problem and the fix (exit code 1), never a traceback."""

import json
import os

import pytest
import torch

from lop_bench.cli import main
from lop_bench.results import load

REG = "lop/SlowlyChangingRegression-v0"
RUN = ["run", REG, "--agent", "backprop", "--tier", "smoke", "--jobs", "1"]


def _fails(argv, capsys, *messages):
    """Run ``argv``; assert exit code 1 and a one-line error holding every message."""
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("lop-bench: error:") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for m in messages:
        assert m in err, err
    return err


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a run starts (the checks must come before any work)."""
    import lop_bench.cli as cli

    def refuse(*args, **kwargs):
        raise AssertionError("a run started before the arguments were checked")

    monkeypatch.setattr(cli, "run_jobs", refuse)


# -- --out ------------------------------------------------------------------------------
def test_a_json_out_with_several_seeds_is_refused_up_front(tmp_path, capsys, no_work):
    target = tmp_path / "X.json"
    target.write_text("unrelated")
    _fails([*RUN, "--seeds", "0,1", "--out", str(target)], capsys,
           f"--out {target} names one file", "2 results", f"--out {tmp_path / 'X'}")
    assert target.read_text() == "unrelated"


def test_a_json_out_never_replaces_an_unrelated_file(tmp_path, capsys):
    target = tmp_path / "X.json"
    target.write_text('{"notes": 1}')
    _fails([*RUN, "--seeds", "0", "--out", str(target)], capsys, str(target), "choose another --out")
    assert target.read_text() == '{"notes": 1}'
    target.unlink()
    assert main([*RUN, "--seeds", "0", "--out", str(target)]) == 0
    before = target.read_bytes()
    _fails([*RUN, "--seeds", "0", "--out", str(target), "--hp", "lr=0.03", "--resume"], capsys,
           "hparams.lr: 0.01 there, 0.03 here", "another --out")
    assert main([*RUN, "--seeds", "0", "--out", str(target), "--resume"]) == 0
    assert target.read_bytes() == before  # the same run, finished: skipped
    assert "finished before" in capsys.readouterr().out


def test_out_that_is_a_file_or_cannot_be_written_is_refused_up_front(tmp_path, capsys, no_work):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    _fails([*RUN, "--out", str(afile)], capsys, "is an existing file, not a directory")
    _fails([*RUN, "--out", str(afile / "sub")], capsys, f"cannot write to {afile / 'sub'}",
           "choose another --out")
    _fails(["reproduce", REG, "--tier", "smoke", "--out", str(tmp_path / "r.json")], capsys,
           "reproduce writes a directory")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere
            pytest.skip("this user can write to a read-only directory")
        _fails([*RUN, "--out", str(locked / "res")], capsys, "Permission denied")
    finally:
        locked.chmod(0o700)


def test_different_hyperparameters_go_to_different_files_and_resume_checks_the_identity(tmp_path, capsys):
    """The defect of the issue: an lr=0.003 result in --out was skipped and reported as the
    lr=0.03 run. Now each setting has its own file, and --resume runs the new one."""
    out = tmp_path / "res"
    assert main([*RUN, "--seeds", "0", "--out", str(out), "--hp", "lr=0.003"]) == 0
    assert main([*RUN, "--seeds", "0", "--out", str(out), "--hp", "lr=0.03", "--resume"]) == 0
    assert "finished before" not in capsys.readouterr().out
    files = sorted(out.glob("*.json"))
    assert sorted(load(f).data["agent"]["hparams"]["lr"] for f in files) == [0.003, 0.03]


def test_resume_over_a_corrupt_result_names_it_says_to_delete_it_and_runs_nothing(tmp_path, capsys,
                                                                                   monkeypatch):
    out = tmp_path / "res"
    assert main([*RUN, "--seeds", "0,1", "--out", str(out)]) == 0
    seed0 = next(out.glob("*seed0.json"))
    seed1 = next(out.glob("*seed1.json"))
    seed1.unlink()
    seed0.write_text(seed0.read_text()[:100])  # truncated
    import lop_bench.cli as cli

    monkeypatch.setattr(cli, "run_jobs", lambda *a: pytest.fail("no seed may run"))
    _fails([*RUN, "--seeds", "0,1", "--out", str(out), "--resume"], capsys,
           str(seed0), "corrupt or truncated", f"delete {seed0}")
    assert not seed1.exists()  # stopped before any seed: nothing half-run, nothing lost


# -- --plot -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, message", [
    ("curves.bogus", "unknown format 'bogus'; use one of"),
    ("curves", "no file extension"),
])
def test_plot_format_is_checked_before_the_report(tmp_path, capsys, name, message, monkeypatch):
    import lop_bench.cli as cli

    monkeypatch.setattr(cli, "_report", lambda *a, **k: pytest.fail("the report ran"))
    _fails(["report", "results", "--plot", str(tmp_path / name)], capsys, message, "png")


def test_plot_path_is_checked_before_reproduce_runs(tmp_path, capsys, no_work):
    afile = tmp_path / "f"
    afile.write_text("x")
    base = ["reproduce", REG, "--tier", "smoke", "--out", str(tmp_path / "r")]
    _fails([*base, "--plot", str(tmp_path / "p.xyz")], capsys, "unknown format 'xyz'")
    _fails([*base, "--plot", str(afile / "p.png")], capsys, f"cannot write to {afile}",
           "choose another --plot")
    _fails([*base, "--plot", str(tmp_path)], capsys, "is a directory")


def test_a_format_matplotlib_lists_but_cannot_write_here_is_refused(tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    def no_latex(self, fname, *, format=None, **kwargs):
        if format == "pgf":
            raise RuntimeError("'xelatex' not found")
        return real(self, fname, format=format, **kwargs)

    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", no_latex)
    _fails(["report", "results", "--plot", str(tmp_path / "p.pgf")], capsys,
           "matplotlib cannot write 'pgf' files here ('xelatex' not found)", "e.g. --plot p.png")


def test_a_plot_in_a_missing_directory_is_written_there_in_any_format_the_check_admits(tmp_path):
    out = tmp_path / "res"
    assert main([*RUN, "--seeds", "0", "--out", str(out)]) == 0
    for fmt, magic in (("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF"), ("jpg", b"\xff\xd8")):
        plot = tmp_path / "new" / "dir" / f"curves.{fmt}"
        assert main(["report", str(out), "--plot", str(plot)]) == 0
        assert plot.read_bytes().startswith(magic)


# -- --device, --seeds, --hp ----------------------------------------------------------
@pytest.mark.parametrize("device, message", [
    ("bogus", "unknown device 'bogus'"),
    ("cuda:9", "cuda:9"),
    ("meta", "no meta device"),
])
def test_unknown_or_absent_devices_are_refused_up_front(device, message, tmp_path, capsys,
                                                        no_work):
    if device == "cuda:9" and torch.cuda.device_count() > 9:
        pytest.skip("this machine has 10 GPUs")
    for cmd in (RUN, ["reproduce", REG, "--tier", "smoke"]):
        _fails([*cmd, "--device", device, "--out", str(tmp_path)], capsys, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host without a GPU")
def test_cuda_without_a_gpu_is_refused(tmp_path, capsys, no_work):
    _fails([*RUN, "--device", "cuda", "--out", str(tmp_path)], capsys,
           "no cuda device", "--device cpu")


@pytest.mark.parametrize("seeds, message", [
    ("99999999999999999999", "out of range"),
    ("4294967296", "out of range"),
    ("0-99999999999", "out of range"),
    ("0-20000", "more than 10,000 seeds in one command"),
    ("1,1", "listed twice"),
    ("3-1", "from low to high"),
])
def test_seeds_outside_the_documented_range_are_refused(seeds, message, tmp_path, capsys,
                                                        no_work):
    _fails([*RUN, "--seeds", seeds, "--out", str(tmp_path)], capsys, message)


def test_the_largest_seed_runs(tmp_path):
    assert main([*RUN, "--seeds", "4294967295", "--out", str(tmp_path)]) == 0
    (f,) = tmp_path.glob("*.json")
    assert json.loads(f.read_text())["seed"] == 2**32 - 1


@pytest.mark.parametrize("hp, message", [
    ('betas=["a","b"]', "'betas[0]' must be a number, got 'a'. 'betas' must be a list like its "
                        "default [0.9, 0.999], e.g. betas=[0.9, 0.999]"),
    ("betas=0.5", "'betas' must be a list like its default [0.9, 0.999], got 0.5"),
])
def test_a_list_hyperparameter_of_the_wrong_type_names_the_type_and_an_example(
        hp, message, tmp_path, capsys, no_work):
    _fails([*RUN, "--hp", hp, "--out", str(tmp_path)], capsys, message)


# -- errors the checks cannot foresee ---------------------------------------------------
def test_an_os_error_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    import lop_bench.report

    def full_disk(groups, path, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    out = tmp_path / "res"
    assert main([*RUN, "--seeds", "0", "--out", str(out)]) == 0
    monkeypatch.setattr(lop_bench.report, "plot", full_disk)
    plot = tmp_path / "p.png"
    _fails(["report", str(out), "--plot", str(plot)], capsys,
           f"{plot}: No space left on device")


@pytest.mark.parametrize("argv, message", [
    (["run", "lop/IncrementalCIFAR100-v0", "--agent", "layernorm"],
     "agent 'layernorm' has no preset for 'lop/IncrementalCIFAR100-v0'"),
    (["run", "lop/PermutedMNIST-v0", "--agent", "fresh:ppo_cbp"],
     "agent 'fresh:ppo_cbp' has no preset for 'lop/PermutedMNIST-v0'"),
    (["reproduce", "lop/PermutedMNIST-v0", "--agents", "backprop,ppo"],
     "agent 'ppo' has no preset for 'lop/PermutedMNIST-v0'"),
])
def test_an_agent_without_a_preset_is_refused_before_the_data_is_looked_for(
        argv, message, tmp_path, capsys, monkeypatch, no_work):
    """With no dataset anywhere: the missing preset is the error, not the missing data
    (which would send the user to download a dataset the agent cannot run on)."""
    monkeypatch.setenv("LOP_BENCH_DATA", str(tmp_path / "empty"))
    _fails([*argv, "--tier", "smoke", "--out", str(tmp_path / "out")], capsys, message,
           "It has presets for:")


def test_run_refuses_an_agent_without_a_preset_before_the_stream_is_built(tmp_path,
                                                                         monkeypatch):
    import lop_bench.runner as runner
    from lop_bench.errors import InvalidConfigError

    monkeypatch.setenv("LOP_BENCH_DATA", str(tmp_path / "empty"))
    for call in (runner.run, runner.run_vectorized):
        with pytest.raises(InvalidConfigError, match="'layernorm' has no preset for 'lop/Incr"):
            call("lop/IncrementalCIFAR100-v0", "layernorm", tier="smoke", progress=False)
