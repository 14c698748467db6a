"""The images of class-incremental CIFAR-100 as torch tensors on any device: the paper's
normalization and augmentation as batched operations (no per-image Python loop), and
:class:`DeviceImages`, the dataset on a device with the batches the stream gathers.

:mod:`lop_bench.envs.incremental_cifar` imports this module when an env is made, so that
importing the stream (and ``lop_bench``) does not import torch.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lop_bench.data.cache import MEMORY
from lop_bench.data.cifar100 import CIFAR100Data
from lop_bench.errors import InvalidConfigError

__all__ = [
    "MEAN",
    "STD",
    "CROP_PADDING",
    "MAX_ROTATION",
    "LUT",
    "DeviceImages",
    "check_device",
    "normalize_images",
    "flip_images",
    "crop_images",
    "rotate_images",
    "augment_images",
]

MEAN = (0.5071, 0.4865, 0.4409)
"""Per-channel mean of the normalization (PROTOCOLS.md; the public code's values)."""
STD = (0.2673, 0.2564, 0.2762)
"""Per-channel standard deviation of the normalization."""
CROP_PADDING = 4
"""Random crop of 32 x 32 from the image padded by 4 pixels on each side (reflect)."""
MAX_ROTATION = 15.0
"""Rotation angles are drawn uniformly in [0, 15) degrees, counter-clockwise only."""

# uint8 pixel -> normalized float32, one table per channel: (v / 255 - mean) / std computed
# once in float32, so the values are the same on every device.
LUT = np.stack([
    (np.arange(256, dtype=np.float32) / np.float32(255.0) - np.float32(m)) / np.float32(s)
    for m, s in zip(MEAN, STD)
]).astype(np.float32)
LUT.flags.writeable = False
LOW, HIGH = float(LUT.min()), float(LUT.max())
"""The range of the normalized values (the observation space's bounds)."""


def normalize_images(images: torch.Tensor, lut: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> float32 ``(x / 255 - MEAN) / STD`` per channel, by table
    lookup (the same values on every device). ``lut``: the (3, 256) table on the images'
    device (default: built here)."""
    if lut is None:
        lut = torch.from_numpy(LUT.copy()).to(images.device)
    offsets = (torch.arange(3, device=images.device) * 256).view(1, 3, 1, 1)
    return torch.take(lut, images.long() + offsets)


def flip_images(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images (N, C, H, W) whose ``mask`` (N,) is true left to right."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def crop_images(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                padding: int = CROP_PADDING) -> torch.Tensor:
    """Pad the images (N, C, H, W) by ``padding`` pixels per side (reflect), then cut each
    one's H x W window at ``(top[i], left[i])`` of the padded image (offsets in
    ``0 .. 2 * padding``; ``padding, padding`` gives the image back), as torchvision's
    ``RandomCrop(H, padding, padding_mode="reflect")``."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding), mode="reflect")
    rows = top.view(n, 1) + torch.arange(h, device=x.device)  # (N, H)
    cols = left.view(n, 1) + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded[batch, :, rows.view(n, h, 1), cols.view(n, 1, w)]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


_GRIDS = "rotation grids"  # their kind in MEMORY
_ON_DEVICE = "CIFAR-100 on a device"


def _base_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Pixel-centre coordinates relative to the image centre, (1, H*W, 3) with a ones column:
    the base grid of torchvision's tensor ``rotate`` (``_gen_affine_grid``); kept in
    :data:`~lop_bench.data.cache.MEMORY`."""
    key = (h, w, str(device))
    grid = MEMORY.get(_GRIDS, key)
    if grid is None:
        grid = torch.empty(1, h, w, 3, dtype=torch.float32, device=device)
        grid[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, steps=w, device=device))
        grid[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, steps=h, device=device).unsqueeze(-1))
        grid[..., 2].fill_(1)
        grid = MEMORY.put(_GRIDS, key, grid.view(1, h * w, 3), size=4)
    return grid


def rotate_images(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image (N, C, H, W) by ``degrees[i]`` counter-clockwise about its centre,
    nearest-neighbour, zeros outside: torchvision's ``rotate(img, angle)`` with its default
    ``interpolation=NEAREST, expand=False, fill=0``, for a batch of angles at once."""
    n, _, h, w = x.shape
    rad = degrees.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    # The inverse map (output pixel -> input pixel), as torchvision builds it.
    theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).to(torch.float32).view(n, 2, 3)
    scale = torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32, device=x.device)
    grid = _base_grid(h, w, x.device).expand(n, h * w, 3).bmm(theta.transpose(1, 2) / scale)
    return F.grid_sample(x, grid.view(n, h, w, 2), mode="nearest", padding_mode="zeros",
                         align_corners=False)


def augment_images(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The paper's training augmentation of normalized images (N, 3, 32, 32), in the public
    code's order: horizontal flip (p = 0.5), random crop 32 with 4 pixels of reflect padding,
    random rotation uniform in [0, 15) degrees counter-clockwise. Draws, from ``generator``
    (on ``x``'s device), N flips, N top offsets, N left offsets and N angles, in that order."""
    n, dev = x.shape[0], x.device
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    top = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=generator, device=dev)
    left = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=generator, device=dev)
    angle = torch.empty(n, device=dev).uniform_(0.0, MAX_ROTATION, generator=generator)
    return rotate_images(crop_images(flip_images(x, flip), top, left), angle)


class DeviceImages:
    """CIFAR-100's images and labels as tensors on ``device`` (shared by every env of the
    process: on the CPU, views of the numpy arrays), and the batches a stream shows:
    gathered by index, normalized, augmented with a generator of its own, padded."""

    def __init__(self, data: CIFAR100Data, device: torch.device) -> None:
        self.device = device
        self.train_images, self.train_labels, self.test_images = _tensors(data, device)
        self.lut = torch.from_numpy(LUT.copy()).to(device)
        self.generator = torch.Generator(device=device)

    def index(self, idx: np.ndarray) -> torch.Tensor:
        """Dataset indices as a tensor on the device."""
        return torch.from_numpy(idx).to(self.device)

    def normalized(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images, normalized (:func:`normalize_images`)."""
        return normalize_images(images, self.lut)

    def augmented(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """The paper's augmentation of normalized images (:func:`augment_images`), drawn from
        the generator re-seeded with ``seed``."""
        self.generator.manual_seed(seed)
        return augment_images(x, self.generator)

    @staticmethod
    def padded(x: torch.Tensor, rows: int) -> torch.Tensor:
        """``x`` with zero rows appended up to ``rows``."""
        return torch.cat([x, x.new_zeros((rows - len(x), *x.shape[1:]))])

    def generator_state(self) -> torch.Tensor:
        """The augmentation generator's state (for checkpoints)."""
        return self.generator.get_state()

    def set_generator_state(self, state: Any) -> None:
        """Restore what :meth:`generator_state` returned."""
        self.generator.set_state(torch.as_tensor(state).cpu())


def _tensors(data: CIFAR100Data, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images) as uint8/int64 tensors on ``device``,
    shared by every env of the process (on the CPU, views of the numpy arrays: no copy);
    kept in :data:`~lop_bench.data.cache.MEMORY`."""
    key = (id(data), data.fingerprint, str(device))
    out = MEMORY.get(_ON_DEVICE, key)
    if out is None:
        with warnings.catch_warnings():  # read-only arrays: the tensors are never written
            warnings.filterwarnings("ignore", message=".*not writable.*")
            arrays = (data.train.images, data.train.labels.astype(np.int64), data.test.images)
            out = tuple(torch.from_numpy(a).to(device) for a in arrays)
        MEMORY.put(_ON_DEVICE, key, out, size=2)
    return out


def check_device(device: Any) -> torch.device:
    """``device`` as a torch device this machine can use (None: the CPU)."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, TypeError, AssertionError) as exc:
        raise InvalidConfigError(f"device {device!r} cannot be used: {exc}") from None
    return dev
