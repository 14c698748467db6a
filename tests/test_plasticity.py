"""The normalized plasticity score (lop_bench.plasticity) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from lop_bench.errors import InvalidConfigError
from lop_bench.plasticity import plasticity_score, plasticity_scores


def test_ratio_when_higher_is_better():
    # accuracies: 0.9/0.9, 0.45/0.9, 0.8/0.5
    p = plasticity_scores([0.9, 0.45, 0.8], [0.9, 0.9, 0.5], higher_is_better=True)
    np.testing.assert_allclose(p, [1.0, 0.5, 1.6], rtol=0, atol=1e-15)
    assert p.dtype == np.float64
    assert plasticity_score([0.9, 0.45, 0.8], [0.9, 0.9, 0.5], higher_is_better=True) \
        == pytest.approx((1.0 + 0.5 + 1.6) / 3, abs=1e-15)


def test_ratio_when_lower_is_better_is_oriented():
    # errors: twice fresh's error is half as plastic; half of it is twice as plastic
    p = plasticity_scores([0.2, 0.4, 0.05], [0.2, 0.2, 0.1], higher_is_better=False)
    np.testing.assert_allclose(p, [1.0, 0.5, 2.0], rtol=0, atol=1e-15)
    assert plasticity_score([0.4], [0.1], higher_is_better=False) == 0.25


def test_same_scores_are_exactly_one_in_either_direction():
    x = np.array([0.123, 7.5, 1e-3])
    for hib in (True, False):
        assert np.array_equal(plasticity_scores(x, x.copy(), higher_is_better=hib), np.ones(3))
        assert plasticity_score(x, x, higher_is_better=hib, scale=10) == 1.0


def test_scaled_difference_for_signed_metrics():
    # Ant-like returns, all negative: the agent 200 below fresh on task 0, 500 above on task 1
    agent, fresh = [-300.0, -100.0], [-100.0, -600.0]
    p = plasticity_scores(agent, fresh, higher_is_better=True, scale=1000.0)
    np.testing.assert_allclose(p, [0.8, 1.5], rtol=0, atol=1e-15)
    assert plasticity_score(agent, fresh, higher_is_better=True, scale=1000.0) \
        == pytest.approx(1.15, abs=1e-15)
    # lower is better: an error 2 above fresh's, scale 4 -> 1 - 0.5
    q = plasticity_scores([3.0, -1.0], [1.0, 1.0], higher_is_better=False, scale=4)
    np.testing.assert_allclose(q, [0.5, 1.5], rtol=0, atol=1e-15)
    # the ratio of two negative returns would call the worse one more plastic: refused
    with pytest.raises(InvalidConfigError, match="negative.*plasticity_scale"):
        plasticity_scores(agent, fresh, higher_is_better=True)


@pytest.mark.parametrize("agent, fresh, kwargs, match", [
    ([0.5, 0.5], [0.5], {}, "2 per-task scores.*1"),
    ([], [], {}, "non-empty"),
    ([[0.5]], [[0.5]], {}, "non-empty"),
    ([0.5, float("nan")], [0.5, 0.5], {}, "task 1.*finite"),
    ([0.5, 0.5], [0.5, float("inf")], {}, "fresh.*task 1.*finite"),
    ([0.5, "x"], [0.5, 0.5], {}, "numbers"),
    ([0.5], [0.0], {}, "fresh reference agent's score on task 0 is 0"),
    ([0.0], [0.5], {"higher_is_better": False}, "agent's score on task 0 is 0"),
    ([0.5], [0.5], {"scale": 0}, "scale"),
    ([0.5], [0.5], {"scale": float("nan")}, "scale"),
    ([0.5], [0.5], {"higher_is_better": 1}, "higher_is_better"),
])
def test_bad_input_is_refused_with_the_reason(agent, fresh, kwargs, match):
    kwargs = {"higher_is_better": True, **kwargs}
    with pytest.raises(InvalidConfigError, match=match) as exc:
        plasticity_scores(agent, fresh, **kwargs)
    assert isinstance(exc.value, ValueError)


def test_an_agent_at_zero_accuracy_is_zero_plastic():
    assert plasticity_score([0.0, 0.0], [0.5, 0.25], higher_is_better=True) == 0.0
