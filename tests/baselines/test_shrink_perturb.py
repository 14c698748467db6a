"""baselines.shrink_perturb: weight decay plus seeded Gaussian noise after every step."""

import numpy as np
import torch

from baselines import l2, shrink_perturb

from . import data, make, params, same, train


def test_without_noise_it_is_l2():
    x, y = data(200)
    sp = make(shrink_perturb, weight_decay=1e-3, noise_std=0.0)
    ref = make(l2, weight_decay=1e-3)
    train(sp, x, y)
    train(ref, x, y)
    assert same(params(sp), params(ref))


def test_noise_is_added_to_every_weight_and_bias_after_a_step():
    # After one step from the same init on the same data, S&P and L2 differ by the noise.
    x, y = data(1)
    sp = make(shrink_perturb, weight_decay=1e-3, noise_std=1e-2)
    ref = make(l2, weight_decay=1e-3)
    train(sp, x, y)
    train(ref, x, y)
    diff = torch.cat([(p - q).flatten() for p, q in zip(params(sp), params(ref), strict=True)])
    assert (diff != 0).all()
    assert 0.7e-2 < diff.std().item() < 1.3e-2
    assert abs(diff.mean().item()) < 0.3e-2


def test_noise_is_seeded_by_the_agent():
    x, y = data(100)
    a, b, c = (make(shrink_perturb, seed=s) for s in (0, 0, 1))
    state = torch.random.get_rng_state()
    for agent in (a, b, c):
        train(agent, x, y)
    assert torch.equal(torch.random.get_rng_state(), state)  # no global RNG
    assert same(params(a), params(b))
    assert not same(params(a), params(c))


def test_shrink_perturb_keeps_learning():
    errors = train(make(shrink_perturb), *data(2000, seed=1))
    assert np.mean(errors[-300:]) < 0.1 * np.mean(errors[:200])
