"""Batch-1 SGD of a wide MLP on a GPU, moving only the weights that matter (Triton).

At batch size 1 a step of a wide MLP is bound by memory traffic, not arithmetic: the
784-2000-2000-2000-10 net holds 38 MB of float32 weights per seed, and every step reads
them to predict, reads them again to backpropagate the error (``delta W``), and reads and
writes them to update (``W -= lr * delta h^T``). Three facts cut that traffic:

* the backpropagation and the update of a layer read the same weights, before and after
  the update: one kernel reads each weight once, adds its share of the error below, and
  writes the updated weight (the error below is formed from the weights *before* the
  update, as autograd's is);
* after a ReLU, a unit that did not fire has a zero error: its row of ``W`` contributes
  nothing to the error below and its update is zero. :func:`prop_update` loads and stores
  only the rows with a nonzero error (masked loads move no memory). About half the units
  of a ReLU net are silent on a given input (measured: 49-50% at the paper's width), more
  as it loses plasticity;
* a zero *input* of a layer (a silent unit below, a blank pixel: four fifths of MNIST's)
  contributes nothing to the forward pass, gets a zero update, and the error sent back to
  it is discarded by the ReLU's derivative. With the weights stored input-major (``Wp``
  of shape ``(N, in, out)``, the agent's ``W = Wp.transpose(1, 2)``) its weights are one
  contiguous row: :func:`sparse_input_linear` (the forward pass) and
  :func:`prop_update_input_major` (backward pass and update) skip it in all three passes.

Which runs (the many-seeds agent, ``baselines.agents.vectorized``, on CUDA): nets with a
layer of at least :data:`INPUT_MAJOR_MIN_WEIGHTS` weights per seed (the paper's width)
store their weights input-major and use the input-major kernels; narrower ones keep
``W`` output-major and use :func:`prop_update`. ``LOP_BENCH_TRITON=rows`` keeps the
output-major kernel for every net, ``LOP_BENCH_TRITON=0`` turns the kernels off (cuBLAS).
Only plain SGD (no momentum, weight decay, L2 Init, noise, normalization or UPGD: a
decayed layer changes every row) and ReLU nets for the input-major layout.

The values are those of the dense path up to float rounding: an updated weight is the
same ``w - lr * (delta_i * h_j)``; a skipped one is left as the dense path leaves it
(``w - lr * 0 * h_j`` is ``w``); sums are formed in another order (tiles, then their
partial sums), as any change of kernel forms them; no atomics, so a run is reproducible.
The kernels are loop-free 64 x 128 tiles: a version looping over a row's tiles was
latency-bound (32,314 against 39,014 seed-steps/s at the paper's width, 30 seeds).

:func:`available` says whether Triton and a CUDA device are there. The tests run the
kernels on the CPU with Triton's interpreter (``TRITON_INTERPRET=1``), and on a GPU
against the dense operations (tests/baselines/test_rowsparse.py).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from lop_bench.config import env_choice

__all__ = [
    "available",
    "input_major_available",
    "prop_update",
    "prop_update_input_major",
    "sparse_input_linear",
]

try:  # Triton ships with torch's CUDA wheels; without it the dense path is used.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

BLOCK_ROWS = 64
BLOCK_COLS = 128


def available(device: torch.device) -> bool:
    """Whether the kernels run for tensors on ``device``: Triton is installed and the
    device is a CUDA GPU (or Triton's interpreter is on, for the tests), and
    ``LOP_BENCH_TRITON`` is not ``0``."""
    if _setting() == "0" or triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


INPUT_MAJOR_MIN_WEIGHTS = 1_000_000
"""The input-major kernels are used for nets with a layer of at least this many weights
per seed; narrower nets keep the output-major layout and the row-sparse update. Measured
on an H200 (benchmarks/permuted_mnist_speed.py --gpu-only, CUDA graphs on, seed-steps/s,
row-sparse / input-major): 784-2000x3-10 at N = 1, 5, 30 seeds: 9,883 / 9,781, 21,993 /
23,082, 37,863 / 39,014; 784-100x3-10: 10,594 / 7,569, 50,501 / 48,780, 285,680 / 269,244."""


def input_major_available(device: torch.device) -> bool:
    """Whether the input-major kernels run on ``device``: :func:`available`, and
    ``LOP_BENCH_TRITON`` is not ``rows`` (which keeps the output-major row-sparse kernel
    alone)."""
    return available(device) and _setting() != "rows"


def _setting() -> str:
    """``$LOP_BENCH_TRITON``: 1 (unset) the kernels, rows the row-sparse update alone, 0 none."""
    return env_choice("LOP_BENCH_TRITON", ("1", "rows", "0"), "1")


if triton is not None:

    @triton.jit
    def _prop_update(W, delta, h, partial, lr, rows, cols, stride_w, stride_d, stride_h,
                     stride_p, PROP: tl.constexpr, BLOCK_R: tl.constexpr,
                     BLOCK_C: tl.constexpr):
        seed = tl.program_id(0)
        row_block = tl.program_id(1)
        col_block = tl.program_id(2)
        r = row_block * BLOCK_R + tl.arange(0, BLOCK_R)
        c = col_block * BLOCK_C + tl.arange(0, BLOCK_C)
        in_rows = r < rows
        in_cols = c < cols
        d = tl.load(delta + seed * stride_d + r, mask=in_rows, other=0.0)
        x = tl.load(h + seed * stride_h + c, mask=in_cols, other=0.0)
        live = in_rows & (d != 0.0)
        mask = live[:, None] & in_cols[None, :]
        ptrs = W + seed * stride_w + r[:, None] * cols + c[None, :]
        w = tl.load(ptrs, mask=mask, other=0.0)
        if PROP:
            below = tl.sum(d[:, None] * w, axis=0)
            tl.store(partial + seed * stride_p + row_block * cols + c, below, mask=in_cols)
        w = w - lr * (d[:, None] * x[None, :])
        tl.store(ptrs, w, mask=mask)


def prop_update(W: torch.Tensor, delta: torch.Tensor, h: torch.Tensor, lr: float,
                prop: bool = True) -> torch.Tensor | None:
    """``W -= lr * delta^T h`` in place, for ``W`` of shape ``(N, out, in)`` (rows
    contiguous), ``delta`` ``(N, 1, out)`` and ``h`` ``(N, 1, in)``; returns the error below,
    ``delta @ W`` with the weights before the update, ``(N, 1, in)`` (None unless ``prop``).
    Rows whose ``delta`` is zero are neither read nor written."""
    n, rows, cols = W.shape
    if W.stride() != (rows * cols, cols, 1):
        raise ValueError(f"prop_update needs W with contiguous rows, got strides {W.stride()}.")
    delta, h = _vector(delta, n, rows), _vector(h, n, cols)
    row_blocks = triton.cdiv(rows, BLOCK_ROWS)
    partial = (torch.empty(n, row_blocks, cols, device=W.device, dtype=W.dtype) if prop
               else W)  # unused without prop
    grid = (n, row_blocks, triton.cdiv(cols, BLOCK_COLS))
    _prop_update[grid](W, delta, h, partial, float(lr), rows, cols, W.stride(0),
                       delta.stride(0), h.stride(0), row_blocks * cols if prop else 0,
                       PROP=prop, BLOCK_R=BLOCK_ROWS, BLOCK_C=BLOCK_COLS)
    return partial.sum(1, keepdim=True) if prop else None


# -- the input-major layout (module docstring) ---------------------------------------------


if triton is not None:

    @triton.jit
    def _sparse_input_linear(Wp, h, partial, rows, cols, stride_w, stride_h, stride_p,
                             BLOCK_J: tl.constexpr, BLOCK_O: tl.constexpr):
        # One tile of input rows x outputs; its share of the outputs goes to ``partial``.
        seed = tl.program_id(0)
        row_block = tl.program_id(1)
        out_block = tl.program_id(2)
        j = row_block * BLOCK_J + tl.arange(0, BLOCK_J)
        o = out_block * BLOCK_O + tl.arange(0, BLOCK_O)
        in_j = j < rows
        in_o = o < cols
        x = tl.load(h + seed * stride_h + j, mask=in_j, other=0.0)
        live = in_j & (x != 0.0)
        w = tl.load(Wp + seed * stride_w + j[:, None] * cols + o[None, :],
                    mask=live[:, None] & in_o[None, :], other=0.0)
        tl.store(partial + seed * stride_p + row_block * cols + o,
                 tl.sum(x[:, None] * w, axis=0), mask=in_o)

    @triton.jit
    def _prop_update_t(Wp, delta, h, partial, lr, rows, cols, stride_w, stride_d, stride_h,
                       stride_p, PROP: tl.constexpr, BLOCK_J: tl.constexpr,
                       BLOCK_O: tl.constexpr):
        # One tile of input rows x outputs: the rows of nonzero inputs are read, their share
        # of the error below goes to ``partial``, and they are updated.
        seed = tl.program_id(0)
        row_block = tl.program_id(1)
        out_block = tl.program_id(2)
        j = row_block * BLOCK_J + tl.arange(0, BLOCK_J)
        o = out_block * BLOCK_O + tl.arange(0, BLOCK_O)
        in_j = j < rows
        in_o = o < cols
        x = tl.load(h + seed * stride_h + j, mask=in_j, other=0.0)
        d = tl.load(delta + seed * stride_d + o, mask=in_o, other=0.0)
        live = in_j & (x != 0.0)
        mask = live[:, None] & in_o[None, :]
        ptrs = Wp + seed * stride_w + j[:, None] * cols + o[None, :]
        w = tl.load(ptrs, mask=mask, other=0.0)
        if PROP:
            tl.store(partial + seed * stride_p + out_block * rows + j,
                     tl.sum(w * d[None, :], axis=1), mask=in_j)
        tl.store(ptrs, w - lr * (x[:, None] * d[None, :]), mask=mask)


def _input_major(W: torch.Tensor) -> torch.Tensor:
    """The input-major storage ``Wp`` (contiguous ``(N, in, out)``) of ``W = Wp.transpose(1, 2)``."""
    Wp = W.transpose(1, 2)
    n, rows, cols = Wp.shape
    if Wp.stride() != (rows * cols, cols, 1):
        raise ValueError(f"the input-major kernels need W stored input-major (W = "
                         f"Wp.transpose(1, 2), Wp contiguous), got strides {W.stride()}.")
    return Wp


def _vector(x: torch.Tensor, n: int, size: int) -> torch.Tensor:
    x = x.reshape(n, size)
    return x if x.stride(1) == 1 else x.contiguous()


def _blocks(rows: int, cols: int) -> tuple[int, int]:
    """Tile sizes of the input-major kernels: 64 input rows x 128 outputs (fewer for a
    narrow layer), as the row-sparse kernel's tiles."""
    block_o = min(BLOCK_COLS, triton.next_power_of_2(cols))
    return min(256, BLOCK_ROWS * BLOCK_COLS // block_o), block_o


def sparse_input_linear(W: torch.Tensor, h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``b + h @ W^T`` (``torch.baddbmm(b, h, W.transpose(1, 2))``) for input-major ``W``
    (logical ``(N, out, in)``), ``h`` ``(N, 1, in)`` and ``b`` ``(N, 1, out)``, reading only
    the weights of the nonzero entries of ``h``."""
    Wp = _input_major(W)
    n, rows, cols = Wp.shape
    x = _vector(h, n, rows)
    block_j, block_o = _blocks(rows, cols)
    row_blocks = triton.cdiv(rows, block_j)
    partial = torch.empty(n, row_blocks, cols, device=W.device, dtype=W.dtype)
    _sparse_input_linear[(n, row_blocks, triton.cdiv(cols, block_o))](
        Wp, x, partial, rows, cols, Wp.stride(0), x.stride(0), row_blocks * cols,
        BLOCK_J=block_j, BLOCK_O=block_o)
    return partial.sum(1, keepdim=True).add_(b)


def prop_update_input_major(W: torch.Tensor, delta: torch.Tensor, h: torch.Tensor, lr: float,
                            prop: bool = True) -> torch.Tensor | None:
    """:func:`prop_update` for input-major ``W`` in a ReLU net: ``W -= lr * delta^T h`` in
    place, skipping the inputs where ``h`` is zero, and the error below ``delta @ W`` (weights
    before the update) *where ``h`` is nonzero*, 0 elsewhere (the ReLU's derivative zeroes
    it there: ``h`` must be the ReLU's output, or the stream's input without ``prop``)."""
    Wp = _input_major(W)
    n, rows, cols = Wp.shape
    d, x = _vector(delta, n, cols), _vector(h, n, rows)
    block_j, block_o = _blocks(rows, cols)
    out_blocks = triton.cdiv(cols, block_o)
    partial = (torch.empty(n, out_blocks, rows, device=W.device, dtype=W.dtype) if prop
               else W)  # unused without prop
    _prop_update_t[(n, triton.cdiv(rows, block_j), out_blocks)](
        Wp, d, x, partial, float(lr), rows, cols, Wp.stride(0), d.stride(0), x.stride(0),
        out_blocks * rows if prop else 0, PROP=prop, BLOCK_J=block_j, BLOCK_O=block_o)
    if not prop:
        return None
    return partial.sum(1, keepdim=True)


def dense_reference(W: torch.Tensor, delta: torch.Tensor, h: torch.Tensor, lr: float,
                    prop: bool = True) -> Any:
    """What :func:`prop_update` computes, with torch's dense operations (the agent's path
    without Triton)."""
    below = torch.bmm(delta, W) if prop else None
    W.addcmul_(delta.transpose(1, 2), h, value=-lr)
    return below
