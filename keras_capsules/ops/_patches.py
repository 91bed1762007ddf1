"""Receptive fields of convolutional capsule layers, on `keras.ops`.

`extract` lays the capsules of every receptive field side by side
(im2col); `fold` is its adjoint placement (col2im), which sums, or takes
the maximum of, the entries that several receptive fields share. Both use
"valid" padding, channels-last grids and static spatial sizes, and are
written with slices, pads and reshapes only, so they run unchanged on
every backend and differentiate everywhere.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_capsules.ops.convolution import conv_output_size


def output_size(size: int, kernel: int, stride: int) -> int:
    """Positions of a "valid" window of `kernel` moved by `stride`."""
    return conv_output_size(size, kernel, stride, "valid")


def extract(x: Any, kernel_size: tuple[int, int], strides: tuple[int, int]) -> Any:
    """`(batch, H, W, *rest)` to `(batch, OH, OW, KH, KW, *rest)`.

    Entry `[b, y, x, u, v]` is the input at row `y * stride_h + u` and
    column `x * stride_w + v`: the receptive field of output `(y, x)`.
    """
    (kernel_h, kernel_w), (stride_h, stride_w) = kernel_size, strides
    height, width = x.shape[1], x.shape[2]
    rest = tuple(x.shape[3:])
    out_h = output_size(height, kernel_h, stride_h)
    out_w = output_size(width, kernel_w, stride_w)
    # Each window below reads `stride * out` rows from its offset; pad the
    # end so that the last one exists (the extra rows are never kept).
    pad_h = max(0, kernel_h - 1 + stride_h * out_h - height)
    pad_w = max(0, kernel_w - 1 + stride_w * out_w - width)
    if pad_h or pad_w:
        x = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w]] + [[0, 0]] * len(rest))
    windows = []
    for u in range(kernel_h):
        for v in range(kernel_w):
            window = x[:, u : u + stride_h * out_h, v : v + stride_w * out_w]
            if stride_h > 1 or stride_w > 1:
                window = ops.reshape(
                    window, (-1, out_h, stride_h, out_w, stride_w, *rest)
                )
                window = window[:, :, 0, :, 0]
            windows.append(window)
    stacked = ops.stack(windows, axis=3)
    return ops.reshape(stacked, (-1, out_h, out_w, kernel_h, kernel_w, *rest))


def fold(patches: Any, strides: tuple[int, int], reduction: str = "sum") -> Any:
    """`(batch, OH, OW, KH, KW, *rest)` to `(batch, H', W', *rest)`.

    Places every entry of every receptive field back on the input grid of
    size `H' = stride_h * (OH - 1) + KH` (and likewise `W'`), reducing the
    entries that fall on the same input position with `"sum"` or `"max"`.
    Positions that no receptive field covers get `0` (sum) or `-inf` (max).
    """
    stride_h, stride_w = strides
    out_h, out_w, kernel_h, kernel_w = patches.shape[1:5]
    rest = tuple(patches.shape[5:])
    fill = 0.0 if reduction == "sum" else float("-inf")
    span_h, span_w = stride_h * (out_h - 1) + 1, stride_w * (out_w - 1) + 1
    height, width = span_h + kernel_h - 1, span_w + kernel_w - 1
    no_pad = [[0, 0]] * len(rest)
    result = None
    for u in range(kernel_h):
        for v in range(kernel_w):
            placed = patches[:, :, :, u, v]
            if stride_h > 1 or stride_w > 1:
                # Interleave `stride - 1` fill values after every entry.
                placed = ops.expand_dims(ops.expand_dims(placed, 2), 4)
                placed = ops.pad(
                    placed,
                    [[0, 0], [0, 0], [0, stride_h - 1], [0, 0], [0, stride_w - 1]]
                    + no_pad,
                    constant_values=fill,
                )
                placed = ops.reshape(
                    placed, (-1, out_h * stride_h, out_w * stride_w, *rest)
                )
                placed = placed[:, :span_h, :span_w]
            placed = ops.pad(
                placed,
                [[0, 0], [u, height - u - span_h], [v, width - v - span_w]] + no_pad,
                constant_values=fill,
            )
            if result is None:
                result = placed
            elif reduction == "sum":
                result = result + placed
            else:
                result = ops.maximum(result, placed)
    return result
