"""L2 Init's mechanism (baselines.core.regularizers.L2Init) against hand-computed cases: the
gradient term is strength * (theta - theta0), added to the loss gradient (coupled); with
theta0 = 0 it is SGD's weight decay bit for bit; a leading seed dimension; resume."""

from __future__ import annotations

import pytest
import torch

from baselines.core.regularizers import L2Init
from lop_bench.errors import InvalidConfigError


def test_gradient_is_strength_times_distance_to_init():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, -4.0]))
    reg = L2Init([p], strength=0.5)
    with torch.no_grad():
        p.copy_(torch.tensor([3.0, -1.0, -4.0]))
    p.grad = torch.zeros(3)
    reg.add_to_grad()
    assert p.grad.tolist() == [1.0, -1.5, 0.0]  # 0.5 * ([3, -1, -4] - [1, 2, -4])
    # Added to the loss gradient, not replacing it.
    p.grad = torch.tensor([10.0, 20.0, 30.0])
    reg.add_to_grad()
    assert p.grad.tolist() == [11.0, 18.5, 30.0]
    assert [t.tolist() for t in reg.gradient()] == [[1.0, -1.5, 0.0]]
    # A parameter without a gradient is left without one.
    q = torch.nn.Parameter(torch.ones(2))
    L2Init([q], 1.0).add_to_grad()
    assert q.grad is None


def test_penalty_gradient_matches():
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3, generator=g))
    reg = L2Init([p], strength=0.3)
    with torch.no_grad():
        p.add_(torch.randn(4, 3, generator=g))
    reg.penalty().backward()
    autograd = p.grad.clone()
    p.grad.zero_()
    reg.add_to_grad()
    assert torch.allclose(p.grad, autograd, atol=1e-7)
    assert torch.allclose(reg.penalty(), 0.15 * (p - reg.initial[0]).pow(2).sum())


def test_zero_init_is_sgd_weight_decay_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(5, 3, generator=g)
    x = torch.randn(8, 3, generator=g)
    a = torch.nn.Parameter(w0.clone())
    b = torch.nn.Parameter(w0.clone())
    reg = L2Init([a], strength=1e-2)
    reg.initial[0].zero_()  # theta0 = 0: plain L2
    opt_a = torch.optim.SGD([a], lr=0.1)
    opt_b = torch.optim.SGD([b], lr=0.1, weight_decay=1e-2)
    for _ in range(5):
        for p, opt, decay in ((a, opt_a, True), (b, opt_b, False)):
            opt.zero_grad()
            (x @ p.T).square().mean().backward()
            if decay:
                reg.add_to_grad()
            opt.step()
    assert torch.equal(a, b)


def test_pulls_back_to_init_geometrically():
    """Without a loss gradient, SGD with L2 Init moves theta - theta0 by (1 - lr * strength)."""
    p = torch.nn.Parameter(torch.tensor([0.0, 1.0]))
    reg = L2Init([p], strength=0.5)
    with torch.no_grad():
        p.copy_(torch.tensor([4.0, -3.0]))
    opt = torch.optim.SGD([p], lr=0.5)
    for _ in range(2):
        p.grad = torch.zeros(2)
        reg.add_to_grad()
        opt.step()
    # distance [4, -4] * 0.75 ** 2 = [2.25, -2.25]
    assert p.detach().tolist() == [2.25, 1.0 - 2.25]


def test_seed_dimension_each_seed_to_its_own_init():
    g = torch.Generator().manual_seed(2)
    W = torch.randint(-8, 8, (3, 4, 2), generator=g).float()  # (seeds, out, in); exact sums
    reg = L2Init([W], strength=2.0)
    moved = W + torch.arange(3.0).view(3, 1, 1)
    W.copy_(moved)
    [term] = reg.gradient()
    assert torch.equal(term, 2.0 * torch.arange(3.0).view(3, 1, 1).expand(3, 4, 2))
    singles = [L2Init([W0.clone()], 2.0) for W0 in reg.initial[0]]
    for s, single in enumerate(singles):
        single.params[0].copy_(moved[s])
        assert torch.equal(single.gradient()[0], term[s])


def test_state_dict_round_trip_and_errors():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    reg = L2Init([p], strength=1.0)
    state = reg.state_dict()
    with torch.no_grad():
        p.copy_(torch.tensor([5.0, 5.0]))
    other = L2Init([p], strength=1.0)  # built now: theta0 would be [5, 5]
    other.load_state_dict(state)
    assert other.initial[0].tolist() == [1.0, 2.0]
    state["initial"][0][0] = 9.0  # the saved state is a copy
    assert reg.initial[0].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="shapes"):
        other.load_state_dict({"initial": [torch.zeros(3)]})
    with pytest.raises(InvalidConfigError, match="strength"):
        L2Init([p], strength=-1.0)
    with pytest.raises(ValueError, match="at least one"):
        L2Init([], strength=1.0)
