"""Tests of lop_bench.diagnostics against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lop_bench.diagnostics import (
    Network,
    approximate_rank,
    dead_fraction,
    dormant_fraction,
    effective_rank,
    feature_norm,
    measure,
    rl_dormant_fraction,
    singular_values,
    stable_rank,
    tau_dormant_fraction,
    weight_magnitude,
)


def _known_acts() -> np.ndarray:
    """200 inputs x 4 units: never active, active on 1 (0.5%), on 2 (1%), always active."""
    acts = np.zeros((200, 4))
    acts[:, 0] = -1.0
    acts[7, 1] = 0.5
    acts[[3, 150], 2] = 2.0
    acts[:, 3] = np.linspace(0.1, 1.0, 200)
    return acts


# --- dormant and dead units ---------------------------------------------------------------


def test_dormant_fraction_known_matrix():
    acts = _known_acts()
    # units 0 (never) and 1 (0.5% < 1%) are dormant; unit 2 (exactly 1%) is not.
    assert dormant_fraction(acts) == 0.5
    assert dead_fraction(acts) == 0.25
    assert dormant_fraction(torch.tensor(acts, dtype=torch.float32)) == 0.5
    assert dead_fraction(torch.tensor(acts)) == 0.25
    assert dormant_fraction(acts, threshold=0.02) == 0.75  # unit 2 (1%) < 2%
    assert dormant_fraction(acts, threshold=0.0) == 0.0
    assert type(dormant_fraction(acts)) is float


def test_dormant_conv_averages_batch_and_positions():
    # 10 inputs, 3 channels, 4 x 5 positions: 200 (input, position) pairs per channel.
    acts = np.zeros((10, 3, 4, 5))
    acts[0, 0, 0, 0] = 1.0  # channel 0: active on 1 of 200 pairs (0.5%): dormant, not dead
    acts[0, 1, 0, 0] = 1.0  # channel 1: active on 2 of 200 pairs (1%): not dormant
    acts[9, 1, 3, 4] = 1.0
    # channel 2 never active: dormant and dead
    assert dormant_fraction(acts) == pytest.approx(2 / 3)
    assert dead_fraction(acts) == pytest.approx(1 / 3)
    t = torch.tensor(acts, dtype=torch.float32)
    assert dormant_fraction(t) == pytest.approx(2 / 3)
    assert dead_fraction(t) == pytest.approx(1 / 3)


def _rl_acts() -> np.ndarray:
    """1,000 states x 4 units, the paper's RL rule (active on at most 1% of the states):
    unit 0 is active on 5 states (0.5%) with large values, dormant although its mean
    activation is 0.5; unit 1 on 20 states (2%) with tiny values, not dormant although its
    mean is 2e-8; unit 2 on exactly 10 (1%), dormant (``<=``); unit 3 on 11, not dormant."""
    acts = np.full((1000, 4), -0.3)
    acts[:5, 0] = 100.0
    acts[100:120, 1] = 1e-6
    acts[500:510, 2] = 1.0
    acts[-11:, 3] = 1.0
    return acts


def test_rl_dormant_fraction_counts_active_states_not_activation_size():
    acts = _rl_acts()
    assert acts[:, 0].mean() > 0.01 and acts[:, 1].mean() < 0.01  # the old rule's inverse
    assert rl_dormant_fraction(acts) == 0.5  # units 0 and 2
    assert rl_dormant_fraction(torch.tensor(acts, dtype=torch.float32)) == 0.5
    assert rl_dormant_fraction(acts[:, :2]) == 0.5  # the 0.5% unit is, the 2% unit is not
    assert rl_dormant_fraction(acts[:, 1:2]) == 0.0
    assert rl_dormant_fraction(acts, threshold=0.0) == 0.0  # every unit is active somewhere
    assert rl_dormant_fraction(acts, threshold=0.02) == 1.0  # unit 1's 2% included
    # the supervised rule (strictly fewer than 1%) differs only at exactly 1%: unit 2
    assert dormant_fraction(acts) == 0.25
    conv = np.zeros((10, 2, 10, 10))  # 1,000 (state, position) pairs per channel
    conv[0, 0, 0, :5] = 1.0  # 0.5%: dormant
    conv[:2, 1, 0, :] = 1e-6  # 2%: not dormant
    assert rl_dormant_fraction(conv) == 0.5


def test_tau_dormant_fraction():
    acts = np.array([[0.0, 1.0, 2.0, -3.0], [0.0, 1.0, 2.0, 3.0]])
    # mean |a| per unit: 0, 1, 2, 3; layer mean 1.5; scores 0, 2/3, 4/3, 2.
    assert tau_dormant_fraction(acts) == 0.25  # tau = 0: only the all-zero unit
    assert tau_dormant_fraction(acts, tau=0.7) == 0.5
    assert tau_dormant_fraction(acts, tau=2.0) == 1.0
    assert tau_dormant_fraction(np.zeros((3, 4))) == 1.0
    assert tau_dormant_fraction(torch.tensor(acts), tau=0.7) == 0.5


@pytest.mark.parametrize(
    "fn", [dormant_fraction, dead_fraction, rl_dormant_fraction, tau_dormant_fraction]
)
@pytest.mark.parametrize(
    "bad", [np.zeros(5), np.zeros((0, 3)), np.zeros((3, 0)), np.array([[1.0, np.nan]])]
)
def test_dormant_rejects(fn, bad):
    with pytest.raises(ValueError):
        fn(bad)


def test_dormant_rejects_torch_nan():
    with pytest.raises(ValueError, match="NaN"):
        dormant_fraction(torch.tensor([[1.0, float("nan")]]))


# --- ranks --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5, 10])
def test_effective_rank_identity(n):
    assert effective_rank(np.eye(n)) == pytest.approx(n)
    assert effective_rank(torch.eye(n)) == pytest.approx(n)


def test_effective_rank_known_values():
    rng = np.random.default_rng(0)
    rank1 = np.outer(rng.normal(size=7), rng.normal(size=4))
    assert effective_rank(rank1) == pytest.approx(1.0)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(np.diag([3.0, 1.0])) == pytest.approx(expected)
    assert effective_rank(np.zeros((4, 3))) == 0.0
    # Scale-invariant and invariant to orthogonal transforms.
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    m = np.diag([5.0, 2.0, 1.0, 0.5, 0.0, 0.0])
    assert effective_rank(10 * q @ m) == pytest.approx(effective_rank(m))
    assert type(effective_rank(m)) is float


def test_stable_rank_cases():
    assert stable_rank(np.diag([10.0, 1.0])) == 2  # 10/11 = 0.909 < 0.99
    assert stable_rank(np.diag([10.0, 0.05])) == 1  # 10/10.05 = 0.995 >= 0.99
    assert stable_rank(np.diag([10.0, 0.05]), threshold=0.999) == 2
    # 10 followed by 95 ones (total 105): 99% is 103.95, reached after 10 + 94 = 104.
    assert stable_rank(np.diag([10.0] + [1.0] * 95)) == 95
    # Exactly reaching the threshold counts: I_100 needs 99 of 100 unit singular values.
    assert stable_rank(np.eye(100)) == 99
    assert stable_rank(np.eye(100), threshold=1.0) == 100
    assert stable_rank(np.eye(3)) == 3
    assert stable_rank(np.zeros((3, 3))) == 0
    assert type(stable_rank(np.eye(3))) is int


def test_approximate_rank_cases():
    # squares 100, 1: 100/101 = 0.990099 >= 0.99
    assert approximate_rank(np.diag([10.0, 1.0])) == 1
    assert stable_rank(np.diag([10.0, 1.0])) == 2
    # squares 100, 4: 100/104 < 0.99
    assert approximate_rank(np.diag([10.0, 2.0])) == 2
    assert approximate_rank(np.eye(10)) == 10
    assert approximate_rank(np.zeros((2, 2))) == 0


def test_singular_values_order_and_torch():
    sv = singular_values(torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
    np.testing.assert_allclose(sv, [3.0, 2.0])
    assert sv.dtype == np.float64


@pytest.mark.parametrize("fn", [effective_rank, stable_rank, approximate_rank])
def test_rank_rejects(fn):
    with pytest.raises(ValueError, match="2-D"):
        fn(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="2-D"):
        fn(np.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([[1.0, np.inf]]))


def test_rank_rejects_threshold():
    with pytest.raises(ValueError, match="threshold"):
        stable_rank(np.eye(2), threshold=0.0)
    with pytest.raises(ValueError, match="threshold"):
        approximate_rank(np.eye(2), threshold=1.5)


# --- weights and features -----------------------------------------------------------------


def test_weight_magnitude_pools_all_entries():
    w = torch.tensor([[1.0, -2.0], [3.0, -4.0]])  # sum |w| = 10, 4 entries
    b = torch.tensor([-6.0])  # 1 entry
    # pooled: 16 / 5 = 3.2 (a mean of means would give (2.5 + 6) / 2 = 4.25)
    assert weight_magnitude([w, b]) == pytest.approx(3.2)
    assert weight_magnitude(iter([w.numpy(), b.numpy()])) == pytest.approx(3.2)
    layer = torch.nn.Linear(3, 2)
    expected = (layer.weight.abs().sum() + layer.bias.abs().sum()).item() / 8
    assert weight_magnitude(layer.parameters()) == pytest.approx(expected)
    assert type(weight_magnitude([w])) is float


def test_weight_magnitude_rejects():
    with pytest.raises(ValueError, match="no entries"):
        weight_magnitude([])
    with pytest.raises(ValueError, match="NaN"):
        weight_magnitude([torch.tensor([1.0, float("nan")])])


def test_feature_norm():
    acts = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])  # norms 5, 0, 1
    assert feature_norm(acts) == pytest.approx(2.0)
    assert feature_norm(torch.tensor(acts)) == pytest.approx(2.0)
    conv = np.zeros((2, 2, 1, 2))
    conv[0] = [[[3.0, 0.0]], [[0.0, 4.0]]]  # norm 5; second input norm 0
    assert feature_norm(conv) == pytest.approx(2.5)


# --- measure ------------------------------------------------------------------------------


def test_measure_mlp():
    first = _known_acts()  # 4 units: 2 dormant, 1 dead
    last = np.zeros((200, 6))
    last[:, :3] = np.eye(3)[np.arange(200) % 3]  # 3 live units, active on a third each
    w = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    out = measure([first, torch.tensor(last)], [w])
    assert out["dormant_fraction"] == pytest.approx(5 / 10)  # 2 + 3 of 4 + 6 units
    assert out["dead_fraction"] == pytest.approx(4 / 10)  # 1 + 3
    assert out["num_units"] == 10
    assert out["effective_rank"] == pytest.approx(effective_rank(last))
    assert out["stable_rank"] == stable_rank(last)
    assert out["approximate_rank"] == approximate_rank(last)
    assert out["feature_norm"] == pytest.approx(1.0)
    assert out["weight_magnitude"] == pytest.approx(2.5)
    assert len(out["layers"]) == 2
    l0 = out["layers"][0]
    assert l0["shape"] == [200, 4] and l0["num_units"] == 4
    assert l0["dormant_fraction"] == 0.5 and l0["dead_fraction"] == 0.25
    assert l0["effective_rank"] == pytest.approx(effective_rank(first))
    assert out["layers"][1]["dormant_fraction"] == 0.5
    text = json.dumps(out)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["stable_rank"] == out["stable_rank"]


def test_measure_conv_last_layer_flattened():
    rng = np.random.default_rng(0)
    conv1 = rng.normal(size=(8, 3, 4, 4))
    conv2 = np.maximum(rng.normal(size=(8, 2, 3, 3)), 0.0)
    out = measure([conv1, conv2], None)
    flat = conv2.reshape(8, -1)
    assert out["effective_rank"] == pytest.approx(effective_rank(flat))
    assert out["stable_rank"] == stable_rank(flat)
    assert out["feature_norm"] == pytest.approx(feature_norm(conv2))
    assert out["weight_magnitude"] is None
    assert out["num_units"] == 5
    assert out["layers"][0]["num_units"] == 3


def test_measure_options():
    acts = np.array([[0.005, 1.0], [0.005, 2.0]])
    assert measure([acts])["dormant_fraction"] == 0.0  # both active on all inputs
    assert measure([acts], definition="rl")["dormant_fraction"] == 0.0  # active on all
    assert measure([_rl_acts()], definition="rl")["dormant_fraction"] == 0.5
    assert measure([_rl_acts()])["dormant_fraction"] == 0.25
    out = measure([acts, acts], layer_ranks=False)
    assert out["layers"][0]["effective_rank"] is None
    assert out["layers"][1]["effective_rank"] is not None
    assert out["effective_rank"] == pytest.approx(effective_rank(acts))


def test_measure_networks_headline_first_others_by_name():
    policy = [_rl_acts(), _known_acts()]  # 4 + 4 units: 2 + 3 dormant (RL rule)
    value = [np.ones((50, 3)), np.zeros((50, 5))]  # 8 units, 5 dead
    pw, vw = [torch.full((2, 2), 0.5)], [torch.full((3,), -2.0)]
    out = measure([Network("policy", policy, pw), Network("value", value, vw)],
                  [torch.ones(7)], definition="rl", layer_ranks=False)
    alone = measure(policy, pw, definition="rl", layer_ranks=False)
    assert out["network"] == "policy"
    for key in ("dormant_fraction", "dead_fraction", "effective_rank", "stable_rank",
                "approximate_rank", "feature_norm", "weight_magnitude", "num_units", "layers"):
        assert out[key] == alone[key], key
    assert out["dormant_fraction"] == 5 / 8 and out["weight_magnitude"] == 0.5
    assert out["value_dormant_fraction"] == pytest.approx(5 / 8)
    assert out["value_dead_fraction"] == pytest.approx(5 / 8)
    assert out["value_num_units"] == 8 and out["value_weight_magnitude"] == 2.0
    assert out["value_effective_rank"] == pytest.approx(effective_rank(np.zeros((50, 5))))
    assert set(out["networks"]) == {"policy", "value"}
    assert out["networks"]["value"]["layers"][0]["num_units"] == 3
    json.dumps(out)
    # Without its own params the headline takes the agent's; another network has none.
    out = measure([Network("policy", policy), Network("value", value)], [torch.ones(7)],
                  definition="rl")
    assert out["weight_magnitude"] == 1.0 and out["value_weight_magnitude"] is None


def test_measure_networks_rejects():
    acts = np.ones((3, 2))
    with pytest.raises(ValueError, match="mixes"):
        measure([Network("policy", [acts]), acts])
    with pytest.raises(ValueError, match="share a name"):
        measure([Network("a", [acts]), Network("a", [acts])])
    with pytest.raises(ValueError, match="'value'.*NaN"):
        measure([Network("policy", [acts]), Network("value", [np.full((3, 2), np.nan)])])
    with pytest.raises(ValueError, match="empty"):
        measure([Network("policy", [])])
    for bad in ("", "Policy", "1net", "a-b", None):
        with pytest.raises(ValueError, match="name"):
            Network(bad, [acts])


def test_measure_deterministic():
    g = torch.Generator().manual_seed(0)
    feats = [torch.relu(torch.randn(50, 20, generator=g)) for _ in range(3)]
    params = [torch.randn(20, 20, generator=g)]
    assert measure(feats, params) == measure(feats, params)


def test_measure_rejects():
    with pytest.raises(ValueError, match="empty"):
        measure([])
    with pytest.raises(ValueError, match="features\\[1\\]"):
        measure([np.ones((3, 2)), np.ones(3)])
    with pytest.raises(ValueError, match="list"):
        measure(np.ones((3, 2)))
    with pytest.raises(ValueError, match="definition"):
        measure([np.ones((3, 2))], definition="paper")
