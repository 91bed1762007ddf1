"""Convolution helpers for capsule layers."""

from __future__ import annotations

from typing import Any, overload

import keras
from keras import ops

from keras_capsules._validation import (
    check_choice,
    check_data_format,
    check_padding,
    normalize_pair,
)


@overload
def conv_output_size(
    size: int, kernel_size: int, stride: int, padding: str = ...
) -> int: ...
@overload
def conv_output_size(
    size: None, kernel_size: int, stride: int, padding: str = ...
) -> None: ...
def conv_output_size(
    size: int | None, kernel_size: int, stride: int, padding: str = "valid"
) -> int | None:
    """Output positions along one axis of a 2D convolution, `None` if unknown.

    `"same"` padding gives `ceil(size / stride)`; `"valid"` gives
    `(size - kernel_size) // stride + 1`, or `0` when the window does not
    fit, so that callers can name the too-small input in their own error.

    Example:

    >>> from keras_capsules.ops import conv_output_size
    >>> conv_output_size(20, 9, 2), conv_output_size(5, 9, 1)
    (6, 0)
    """
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    return max((size - kernel_size) // stride + 1, 0)


def space_to_depth_conv(
    inputs: Any,
    kernel: Any,
    strides: int | tuple[int, int],
    padding: str = "valid",
    data_format: str = "channels_last",
) -> Any:
    """A strided 2D convolution computed as a stride-1 one, same result.

    Equal to `keras.ops.conv(inputs, kernel, strides, padding, data_format)`.
    The kernel is zero-padded to a multiple of the strides and both the
    input and the kernel are rearranged so that every `sh x sw` block of
    pixels becomes one pixel with `sh * sw` times the channels; a stride-1
    convolution of those gives the strided output. It does up to
    `(ceil(k / s) * s / k)^2` times the multiply-adds (1.23x for the
    paper's 9x9 stride 2), but XLA on CPU differentiates a stride-1
    convolution far faster than a strided one (about 10x for the paper's
    PrimaryCapsule on JAX; benchmarks/README.md). The kernel keeps the
    `(kh, kw, in, out)` layout of `keras.layers.Conv2D`.

    Args:
        inputs: 4D images, channels last or first as `data_format` says.
        kernel: Convolution kernel, shape `(kh, kw, in_channels, filters)`.
        strides: Strides, an integer or a pair `(sh, sw)`.
        padding: `"valid"` or `"same"` (TensorFlow's convention: extra
            padding at the bottom and right).
        data_format: `"channels_last"` or `"channels_first"`.

    Returns:
        The convolution, in `data_format`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import space_to_depth_conv
    >>> images = np.ones((1, 20, 20, 3), dtype="float32")
    >>> kernel = np.ones((9, 9, 3, 2), dtype="float32")
    >>> features = space_to_depth_conv(images, kernel, strides=2)
    >>> tuple(features.shape), float(features[0, 0, 0, 0])
    ((1, 6, 6, 2), 243.0)
    """
    stride_h, stride_w = normalize_pair("strides", strides)
    padding = check_padding(padding)
    data_format = check_data_format(data_format)
    inputs = ops.convert_to_tensor(inputs)
    if len(inputs.shape) != 4 or len(kernel.shape) != 4:
        raise ValueError(
            "`space_to_depth_conv` expects 4D inputs and a 4D kernel "
            "(kh, kw, in_channels, filters). Received: "
            f"inputs.shape={tuple(inputs.shape)}, kernel.shape={tuple(kernel.shape)}"
        )
    kernel_h, kernel_w, channels, filters = kernel.shape
    if data_format == "channels_first":
        inputs = ops.transpose(inputs, (0, 2, 3, 1))
    height, width = inputs.shape[1], inputs.shape[2]
    if height is None or width is None or inputs.shape[3] != channels:
        raise ValueError(
            "`space_to_depth_conv` needs the spatial size of its input and "
            "as many input channels as the kernel. Received: "
            f"inputs.shape={tuple(inputs.shape)} (as channels last), "
            f"kernel.shape={tuple(kernel.shape)}"
        )
    # Rows and columns each output needs, and the padding that "same" adds.
    out_h = conv_output_size(height, kernel_h, stride_h, padding)
    out_w = conv_output_size(width, kernel_w, stride_w, padding)
    if padding == "same":
        pad_top = max((out_h - 1) * stride_h + kernel_h - height, 0) // 2
        pad_left = max((out_w - 1) * stride_w + kernel_w - width, 0) // 2
    else:
        if height < kernel_h or width < kernel_w:
            raise ValueError(
                '`space_to_depth_conv` with padding="valid" needs inputs at '
                "least as large as the kernel. Received: "
                f"inputs.shape={tuple(inputs.shape)} (as channels last), "
                f"kernel.shape={tuple(kernel.shape)}"
            )
        pad_top = pad_left = 0
    blocks_h, blocks_w = -(-kernel_h // stride_h), -(-kernel_w // stride_w)
    rows = (out_h - 1 + blocks_h) * stride_h
    cols = (out_w - 1 + blocks_w) * stride_w
    # Crop what no output reads; pad with zeros what only zero taps read.
    inputs = inputs[:, : rows - pad_top, : cols - pad_left, :]
    pad_bottom = rows - pad_top - inputs.shape[1]
    pad_right = cols - pad_left - inputs.shape[2]
    inputs = ops.pad(
        inputs, ((0, 0), (pad_top, pad_bottom), (pad_left, pad_right), (0, 0))
    )
    inputs = ops.reshape(
        inputs, (-1, rows // stride_h, stride_h, cols // stride_w, stride_w, channels)
    )
    inputs = ops.transpose(inputs, (0, 1, 3, 2, 4, 5))
    inputs = ops.reshape(
        inputs,
        (-1, rows // stride_h, cols // stride_w, stride_h * stride_w * channels),
    )
    kernel = ops.pad(
        kernel,
        (
            (0, blocks_h * stride_h - kernel_h),
            (0, blocks_w * stride_w - kernel_w),
            (0, 0),
            (0, 0),
        ),
    )
    kernel = ops.reshape(
        kernel, (blocks_h, stride_h, blocks_w, stride_w, channels, filters)
    )
    kernel = ops.transpose(kernel, (0, 2, 1, 3, 4, 5))
    kernel = ops.reshape(
        kernel, (blocks_h, blocks_w, stride_h * stride_w * channels, filters)
    )
    outputs = ops.conv(inputs, kernel, strides=1, padding="valid")
    if data_format == "channels_first":
        outputs = ops.transpose(outputs, (0, 3, 1, 2))
    return outputs


CONV_IMPLEMENTATIONS = ("auto", "direct", "space_to_depth")

# The one place where "auto" is decided: per backend, the computation of a
# strided convolution that trained fastest in the benchmark
# (benchmarks/README.md, 2-core CPU, PrimaryCapsule of the paper's CapsNet):
# XLA on CPU differentiates a strided convolution about 10x slower than the
# stride-1 one of `space_to_depth_conv` (JAX 5.9 -> 43 CapsNet images/s),
# while TensorFlow without XLA and PyTorch are faster with their own strided
# kernels (0.34 vs 0.45 s and 0.38 vs 0.47 s per batch-100 forward and
# backward pass). Both compute the same result from the same weights.
FASTEST_CONV_IMPLEMENTATION = {
    "jax": "space_to_depth",
    "tensorflow": "direct",
    "torch": "direct",
}


def resolve_conv_implementation(conv_implementation: str) -> str:
    """`"direct"` or `"space_to_depth"`: `"auto"` is the fastest on this backend."""
    check_choice("conv_implementation", conv_implementation, CONV_IMPLEMENTATIONS)
    if conv_implementation != "auto":
        return conv_implementation
    return FASTEST_CONV_IMPLEMENTATION.get(keras.backend.backend(), "direct")
