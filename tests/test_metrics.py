"""Tests of lop_bench.metrics against hand-computed values."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from lop_bench import metrics
from lop_bench.metrics import (
    bin_curve,
    bin_curves,
    iqm,
    iqm_bootstrap_ci,
    paired_difference,
    seed_stats,
    summarize,
)

T_975_4 = 2.7764451051977987  # Student's t, 0.975 quantile, 4 degrees of freedom


# --- summarize ----------------------------------------------------------------------------


def test_summarize_edge_count():
    assert [metrics.edge_count(n) for n in (1, 9, 10, 19, 20, 25, 800)] == [1, 1, 1, 1, 2, 2, 80]


@pytest.mark.parametrize(
    ("n", "k"),
    [(1, 1), (9, 1), (10, 1), (25, 2)],
)
def test_summarize_k_rules(n, k):
    curve = np.arange(1, n + 1, dtype=float)  # 1, 2, ..., n
    s = summarize(curve, higher_is_better=True)
    assert s["num_tasks"] == n
    assert s["initial"] == pytest.approx(np.mean(np.arange(1, k + 1)))
    assert s["final"] == pytest.approx(np.mean(np.arange(n - k + 1, n + 1)))
    assert s["mean"] == pytest.approx((n + 1) / 2)


def test_summarize_hand_curve_both_directions():
    # 20 tasks: k = 2; first two 0.6, 0.6; last two 1.2, 1.4.
    curve = [0.6, 0.6] + [1.0] * 16 + [1.2, 1.4]
    lower = summarize(curve, higher_is_better=False)  # an error that rises: loss of plasticity
    assert lower["initial"] == pytest.approx(0.6)
    assert lower["final"] == pytest.approx(1.3)
    assert lower["drop"] == pytest.approx(0.7)
    assert lower["mean"] == pytest.approx((1.2 + 16 + 2.6) / 20)
    assert lower["num_tasks"] == 20
    higher = summarize(curve, higher_is_better=True)  # an accuracy that rises: negative drop
    assert higher["drop"] == pytest.approx(-0.7)
    assert higher["initial"] == lower["initial"] and higher["final"] == lower["final"]

    acc = [0.95, 0.94, 0.93, 0.90]  # n = 4: k = 1
    s = summarize(acc, higher_is_better=True)
    assert s["drop"] == pytest.approx(0.05)
    for key in ("initial", "final", "drop", "mean"):
        assert type(s[key]) is float
    assert type(s["num_tasks"]) is int
    json.dumps(s)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")], [[1.0, 2.0]]])
def test_summarize_rejects(bad):
    with pytest.raises(ValueError):
        summarize(bad, higher_is_better=True)


# --- seed statistics ----------------------------------------------------------------------


def test_seed_stats_hand():
    s = seed_stats([1, 2, 3, 4, 5])
    std = math.sqrt(2.5)
    sem = std / math.sqrt(5)
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(3.0)
    assert s["std"] == pytest.approx(std)
    assert s["sem"] == pytest.approx(sem)
    assert s["ci_low"] == pytest.approx(3.0 - T_975_4 * sem, rel=1e-12)
    assert s["ci_high"] == pytest.approx(3.0 + T_975_4 * sem, rel=1e-12)
    json.dumps(s)


def test_seed_stats_confidence_and_constant():
    wide = seed_stats([1, 2, 3, 4, 5], confidence=0.99)
    narrow = seed_stats([1, 2, 3, 4, 5], confidence=0.5)
    assert wide["ci_high"] > seed_stats([1, 2, 3, 4, 5])["ci_high"] > narrow["ci_high"]
    const = seed_stats([2.0, 2.0, 2.0])
    assert const["std"] == 0.0 and const["ci_low"] == const["ci_high"] == 2.0


def test_seed_stats_single_value_is_json_friendly():
    s = seed_stats([0.7])
    assert s == {"n": 1, "mean": 0.7, "std": None, "sem": None, "ci_low": None, "ci_high": None}
    assert "NaN" not in json.dumps(s)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")]])
def test_seed_stats_rejects(bad):
    with pytest.raises(ValueError):
        seed_stats(bad)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_seed_stats_rejects_confidence(confidence):
    with pytest.raises(ValueError, match="confidence"):
        seed_stats([1, 2], confidence=confidence)


def test_paired_difference():
    a = [3.0, 5.0, 4.0, 6.0, 2.0]
    b = [1.0, 2.0, 4.0, 3.0, 3.0]  # differences 2, 3, 0, 3, -1
    d = paired_difference(a, b)
    diff = np.array([2.0, 3.0, 0.0, 3.0, -1.0])
    sem = diff.std(ddof=1) / math.sqrt(5)
    assert d["n"] == 5
    assert d["mean"] == pytest.approx(1.4)
    assert d["std"] == pytest.approx(diff.std(ddof=1))
    assert d["ci_low"] == pytest.approx(1.4 - T_975_4 * sem)
    assert d["ci_high"] == pytest.approx(1.4 + T_975_4 * sem)
    assert (d["wins"], d["losses"], d["ties"]) == (3, 1, 1)
    lower = paired_difference(a, b, higher_is_better=False)
    assert (lower["wins"], lower["losses"], lower["ties"]) == (1, 3, 1)
    assert lower["mean"] == d["mean"]
    json.dumps(d)


def test_paired_difference_rejects_length_mismatch():
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0, 2.0], [1.0])


# --- binning ------------------------------------------------------------------------------


def test_bin_curve_partial_bin():
    out = bin_curve([1, 2, 3, 4, 5, 6, 7], 3)
    np.testing.assert_allclose(out, [2.0, 5.0, 7.0])
    assert out.dtype == np.float64
    np.testing.assert_allclose(bin_curve([1, 2, 3, 4], 2), [1.5, 3.5])
    np.testing.assert_allclose(bin_curve([1, 2], 5), [1.5])
    np.testing.assert_allclose(bin_curve([1, 2, 3], 1), [1, 2, 3])


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_bin_curve_rejects_size(size):
    with pytest.raises(ValueError, match="bin_size"):
        bin_curve([1, 2, 3], size)


def test_bin_curves_band():
    curves = np.array(
        [
            [1, 2, 3, 4, 5],
            [3, 4, 5, 6, 7],
            [2, 3, 4, 5, 9],
        ],
        dtype=float,
    )
    mean, half = bin_curves(curves, 2)
    # bins per seed: [1.5, 3.5, 5], [3.5, 5.5, 7], [2.5, 4.5, 9]
    binned = np.array([[1.5, 3.5, 5.0], [3.5, 5.5, 7.0], [2.5, 4.5, 9.0]])
    np.testing.assert_allclose(mean, binned.mean(axis=0))
    t_975_2 = 4.302652729749464
    np.testing.assert_allclose(half, t_975_2 * binned.std(axis=0, ddof=1) / math.sqrt(3))


def test_bin_curves_single_seed_and_errors():
    mean, half = bin_curves([[1.0, 2.0, 3.0]], 2)
    np.testing.assert_allclose(mean, [1.5, 3.0])
    assert np.all(np.isnan(half))
    with pytest.raises(ValueError, match="2-D"):
        bin_curves([1.0, 2.0], 1)
    with pytest.raises(ValueError):
        bin_curves(np.zeros((0, 3)), 1)


# --- interquartile mean -------------------------------------------------------------------


def test_iqm_known():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    # 8 values with outliers: the middle 50% is 2, 3, 4, 5 whatever the extremes.
    assert iqm([-100, 1, 2, 3, 4, 5, 6, 1000]) == pytest.approx(3.5)
    assert iqm([[1, 2], [3, 4]]) == pytest.approx(2.5)  # flattened; 4 values, 1 cut each end
    assert iqm([7.0]) == 7.0
    with pytest.raises(ValueError):
        iqm([])


def test_iqm_bootstrap_reproducible_and_contains_iqm():
    rng = np.random.default_rng(123)
    scores = rng.normal(size=(10, 3))
    r1 = iqm_bootstrap_ci(scores, reps=500, seed=7)
    r2 = iqm_bootstrap_ci(scores, reps=500, seed=7)
    assert r1 == r2
    assert r1["iqm"] == pytest.approx(iqm(scores))
    assert r1["ci_low"] <= r1["iqm"] <= r1["ci_high"]
    assert r1["ci_low"] < r1["ci_high"]
    assert r1["reps"] == 500 and r1["confidence"] == 0.95
    r3 = iqm_bootstrap_ci(scores, reps=500, seed=8)
    assert (r3["ci_low"], r3["ci_high"]) != (r1["ci_low"], r1["ci_high"])
    json.dumps(r1)


def test_iqm_bootstrap_1d_and_chunking(monkeypatch):
    values = np.arange(20, dtype=float)
    r = iqm_bootstrap_ci(values, reps=300, seed=0)
    assert r["iqm"] == pytest.approx(9.5)
    assert r["ci_low"] <= r["iqm"] <= r["ci_high"]
    # Drawing the replicates in small chunks gives the same result bit for bit.
    monkeypatch.setattr(metrics, "_BOOTSTRAP_CHUNK_ELEMENTS", 7)
    assert iqm_bootstrap_ci(values, reps=300, seed=0) == r


def test_iqm_bootstrap_constant_and_errors():
    r = iqm_bootstrap_ci(np.full((4, 2), 3.0), reps=50)
    assert r["iqm"] == r["ci_low"] == r["ci_high"] == 3.0
    with pytest.raises(ValueError):
        iqm_bootstrap_ci(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        iqm_bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="reps"):
        iqm_bootstrap_ci([1.0, 2.0], reps=0)


# --- import cost --------------------------------------------------------------------------


def test_import_does_not_load_scipy_or_torch():
    code = (
        "import sys, lop_bench.metrics, lop_bench.diagnostics; "
        "print(sorted(m for m in ('scipy', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
