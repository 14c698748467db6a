"""CReLU (baselines.core.activations) against hand computations: the forward pass, its
width, the derivative for hand-written backward passes (equal to autograd's)."""

from __future__ import annotations

import pytest
import torch

from baselines.core.activations import CReLU, crelu, crelu_backward


def test_crelu_forward_by_hand():
    x = torch.tensor([[1.5, -2.0, 0.0], [-0.5, 0.25, 3.0]])
    out = CReLU()(x)
    assert out.tolist() == [[1.5, 0.0, 0.0, 0.0, 2.0, 0.0], [0.0, 0.25, 3.0, 0.5, 0.0, 0.0]]
    # Channels of an image batch: (N, C, H, W) -> (N, 2C, H, W), channel c + C is relu(-x_c).
    img = torch.tensor([[[[1.0, -1.0]], [[-3.0, 2.0]]]])  # (1, 2, 1, 2)
    out = CReLU()(img)
    assert out.shape == (1, 4, 1, 2)
    assert out[0, :, 0].tolist() == [[1.0, 0.0], [0.0, 2.0], [0.0, 1.0], [3.0, 0.0]]
    assert crelu(torch.tensor([-1.0, 2.0]), dim=0).tolist() == [0.0, 2.0, 1.0, 0.0]


def test_crelu_backward_equals_autograd():
    z = torch.tensor([[0.7, -1.2, 0.0, 2.0]], requires_grad=True)
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0]])
    (crelu(z, dim=1) * g).sum().backward()
    assert crelu_backward(g, z.detach(), dim=1).tolist() == z.grad.tolist()
    # By hand: z > 0 takes the first half's gradient, z < 0 minus the second half's.
    assert z.grad.tolist() == [[1.0, 2.0, 0.0, 4.0]]
    with pytest.raises(ValueError, match="twice"):
        crelu_backward(torch.zeros(1, 5), torch.zeros(1, 4))
