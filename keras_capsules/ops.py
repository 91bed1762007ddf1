"""The capsule-network math, written once on `keras.ops`.

Every layer and loss in `keras_capsules` calls into this module, so each
equation of Sabour, Frosst & Hinton (2017) lives in exactly one place.
The functions run unchanged on the TensorFlow, PyTorch and JAX backends.

Reference:
    - [Sabour, Frosst & Hinton, 2017. Dynamic Routing Between Capsules](
      https://arxiv.org/abs/1710.09829)
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_capsules._validation import (
    check_choice,
    check_positive_int,
    normalize_pair,
)

_LOW_PRECISION_DTYPES = ("float16", "bfloat16")


def _dtype_name(x: Any) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def _to_float32_if_low_precision(x: Any) -> Any:
    # Squared norms of float16 capsules overflow at |s| ~ 256 and the epsilon
    # used below underflows to 0, so the sensitive reductions run in float32.
    if _dtype_name(x) in _LOW_PRECISION_DTYPES:
        return ops.cast(x, "float32")
    return x


def _check_epsilon(epsilon: float | None) -> float:
    if epsilon is None:
        return keras.config.epsilon()
    if not epsilon > 0:
        raise ValueError(
            "Received an invalid value for `epsilon`, expected a positive "
            f"float. Received: epsilon={epsilon}"
        )
    return float(epsilon)


def squash(x: Any, axis: int = -1, epsilon: float | None = None) -> Any:
    """Squashes vectors to a length in [0, 1) while keeping their direction.

    Eq. 1 of Sabour et al. (2017):

    $$v = \\frac{\\lVert s \\rVert^2}{1 + \\lVert s \\rVert^2}
    \\frac{s}{\\lVert s \\rVert}$$

    The division by the norm is written as a reciprocal square root of the
    squared norm clamped from below at `epsilon**2`, so the result is exact
    for every vector longer than `epsilon`, is 0 for the zero vector, and has
    a finite gradient there (a plain `sqrt` would give NaN). Float16 and
    bfloat16 inputs are squashed in float32 and cast back.

    Args:
        x: Tensor of capsule vectors.
        axis: The axis that holds the capsule dimensions. Defaults to `-1`.
        epsilon: Lengths below this are treated as this when dividing.
            Defaults to `keras.config.epsilon()`.

    Returns:
        A tensor of the shape and dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import squash
    >>> v = squash(np.array([[3.0, 4.0]], dtype="float32"))
    >>> [round(float(a), 4) for a in keras.ops.convert_to_numpy(v)[0]]
    [0.5769, 0.7692]
    """
    epsilon = _check_epsilon(epsilon)
    x = ops.convert_to_tensor(x)
    original_dtype = _dtype_name(x)
    s = _to_float32_if_low_precision(x)
    squared_norm = ops.sum(ops.square(s), axis=axis, keepdims=True)
    scale = (squared_norm / (1.0 + squared_norm)) * ops.rsqrt(
        ops.maximum(squared_norm, epsilon**2)
    )
    return ops.cast(s * scale, original_dtype)


def capsule_length(x: Any, axis: int = -1, epsilon: float | None = None) -> Any:
    """Euclidean length of capsule vectors, with a finite gradient at zero.

    Computed as `|s|^2 / sqrt(max(|s|^2, epsilon^2))`: exactly the norm for
    vectors longer than `epsilon`, exactly 0 for the zero vector, and
    differentiable everywhere. Float16 and bfloat16 inputs are measured in
    float32 and the result cast back.

    Args:
        x: Tensor of capsule vectors.
        axis: The axis that holds the capsule dimensions. Defaults to `-1`.
        epsilon: Lengths below this use the smooth branch. Defaults to
            `keras.config.epsilon()`.

    Returns:
        A tensor with `axis` removed, of the dtype of `x`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import capsule_length
    >>> x = np.array([[[3.0, 4.0], [0.0, 0.0]]], dtype="float32")
    >>> keras.ops.convert_to_numpy(capsule_length(x)).tolist()
    [[5.0, 0.0]]
    """
    epsilon = _check_epsilon(epsilon)
    x = ops.convert_to_tensor(x)
    original_dtype = _dtype_name(x)
    s = _to_float32_if_low_precision(x)
    squared_norm = ops.sum(ops.square(s), axis=axis)
    length = squared_norm * ops.rsqrt(ops.maximum(squared_norm, epsilon**2))
    return ops.cast(length, original_dtype)


def capsule_predictions(inputs: Any, kernel: Any) -> Any:
    """Prediction vectors `u_hat[j|i] = W[i, j] u[i]` of every input capsule.

    `RoutingCapsule` does not call this: it routes without forming the
    prediction vectors (see `routing_by_agreement`). This is for reading
    them, or for routing them with `routing_by_agreement`.

    Args:
        inputs: Input capsules, shape `(batch, input_num_capsules,
            input_capsule_dim)`.
        kernel: Transformation matrices, shape `(input_num_capsules,
            num_capsules, input_capsule_dim, capsule_dim)`.

    Returns:
        The prediction vectors, shape `(batch, num_capsules,
        input_num_capsules, capsule_dim)`. Output capsules come before input
        capsules so that both routing contractions are plain batched
        matrix products over `(batch, num_capsules)` with no transpose.
    """
    return ops.einsum("bid,ijde->bjie", inputs, kernel)


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
    padding = check_choice(
        "padding",
        padding.lower() if isinstance(padding, str) else padding,
        ("valid", "same"),
    )
    check_choice("data_format", data_format, ("channels_last", "channels_first"))
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
    if padding == "same":
        out_h, out_w = -(-height // stride_h), -(-width // stride_w)
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
        out_h = (height - kernel_h) // stride_h + 1
        out_w = (width - kernel_w) // stride_w + 1
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


def _routing_iterations(
    uniform_sum: Any,
    weighted_sum: Any,
    agreement: Any,
    coupling_axis: int,
    routing_iterations: int,
    dtype: str,
) -> tuple[Any, Any]:
    """The loop of Procedure 1, written once for both layouts below.

    The contractions with the prediction vectors are passed in, since the
    two callers hold them differently. The first iteration's coupling is
    uniform (the softmax of zero logits), so it is `uniform_sum()`, with no
    coupling tensor. Returns the outputs and the last coupling (`None` after
    a single iteration).
    """
    outputs = squash(uniform_sum())
    logits = coupling = None
    for _ in range(1, routing_iterations):
        update = ops.cast(agreement(outputs), "float32")
        logits = update if logits is None else logits + update
        coupling = ops.cast(ops.softmax(logits, axis=coupling_axis), dtype)
        outputs = squash(weighted_sum(coupling))
    return outputs, coupling


def routing_by_agreement(
    predictions: Any,
    routing_iterations: int = 3,
    stop_gradient_on_agreement: bool = False,
    return_coupling: bool = False,
) -> Any:
    """Routing-by-agreement, Procedure 1 of Sabour et al. (2017).

    For `r` iterations, with routing logits `b[i, j]` starting at 0 for every
    example:

    1. `c[i] = softmax(b[i])` over the output capsules `j`;
    2. `s[j] = sum_i c[i, j] u_hat[j|i]`;
    3. `v[j] = squash(s[j])`;
    4. `b[i, j] += u_hat[j|i] . v[j]` (skipped after the last iteration).

    The logits and coupling coefficients are per-example state, never
    weights. Gradients flow through every iteration, as in the paper. The
    logits and the softmax are kept in float32 under mixed precision.

    `RoutingCapsule` computes the same routing from its inputs and kernel
    without forming `predictions`, a `(batch, num_capsules,
    input_num_capsules, capsule_dim)` tensor (74 MB for MNIST's DigitCaps at
    batch 100), which makes it about twice as fast to train on CPU.

    Args:
        predictions: Prediction vectors from `capsule_predictions`, shape
            `(batch, num_capsules, input_num_capsules, capsule_dim)`.
        routing_iterations: Number of routing iterations `r`, a positive
            integer; `1` means uniform coupling. Defaults to `3`.
        stop_gradient_on_agreement: If `True`, the prediction vectors used in
            the agreement updates (step 4) are wrapped in `stop_gradient`, so
            only the final weighted sum is back-propagated. Not in the paper;
            off by default.
        return_coupling: If `True`, also return the coupling coefficients
            used in the last iteration, shape `(batch, num_capsules,
            input_num_capsules)`. Defaults to `False`.

    Returns:
        The output capsules `v`, shape `(batch, num_capsules, capsule_dim)`,
        or the pair `(v, c)` when `return_coupling` is `True`.
    """
    check_positive_int("routing_iterations", routing_iterations)
    predictions = ops.convert_to_tensor(predictions)
    dtype = _dtype_name(predictions)
    agreement_predictions = (
        ops.stop_gradient(predictions) if stop_gradient_on_agreement else predictions
    )

    def weighted_sum(coupling: Any) -> Any:
        return ops.einsum("bji,bjie->bje", coupling, predictions)

    def uniform_coupling() -> Any:
        logits = ops.zeros(ops.shape(predictions)[:3], "float32")
        return ops.cast(ops.softmax(logits, axis=1), dtype)

    outputs, coupling = _routing_iterations(
        lambda: weighted_sum(uniform_coupling()),
        weighted_sum,
        lambda outputs: ops.einsum("bjie,bje->bji", agreement_predictions, outputs),
        coupling_axis=1,
        routing_iterations=routing_iterations,
        dtype=dtype,
    )
    if not return_coupling:
        return outputs
    if coupling is None:
        coupling = uniform_coupling()
    return outputs, coupling


def _route_inputs(
    inputs: Any,
    kernel: Any,
    routing_iterations: int = 3,
    stop_gradient_on_agreement: bool = False,
    return_coupling: bool = False,
) -> Any:
    """`routing_by_agreement(capsule_predictions(inputs, kernel), ...)`, fast.

    The prediction vectors `u_hat[b, j, i] = u[b, i] W[i, j]` are never
    formed. With the kernel regrouped by output capsule and transposed,
    `K_j = W[:, j].reshape(I * D, E).T` of shape `(E, I * D)`, both routing
    contractions become batched matrix products over the `J` output
    capsules:

    - weighted sum: `s[b, j] = sum_i c[b, j, i] u_hat[b, j, i]
      = K_j @ flatten(c[b, j, :, None] * u[b])`;
    - agreement: `u_hat[b, j, i] . v[b, j] = sum_d u[b, i, d] (v[b, j]
      @ K_j)[i, d]`.

    Each iteration then moves one `(J, B, I * D)` tensor, half the size of
    `u_hat` (whose capsule dimension `E` is larger than `D`), through large
    GEMMs and one elementwise product; `u_hat` needed batched
    matrix-vector products, slow on every backend's CPU kernels. The first
    iteration, uniform coupling, is a single GEMM.

    Layout: output capsules lead, `(J, B, ...)`, so the GEMMs need no
    transposes of the activations; logits are `(J, B, I)` with the softmax
    over axis 0. Every product uses the same `(J, E, I * D)` view of the
    kernel, so each kernel gradient is a GEMM whose output is in that
    layout: XLA on CPU ran the `(J, I * D, E)` layout's kernel gradients
    as slow transposed GEMMs (benchmarks/README.md has the measurements).
    """
    check_positive_int("routing_iterations", routing_iterations)
    inputs = ops.convert_to_tensor(inputs)
    dtype = _dtype_name(inputs)
    input_num_capsules, num_capsules, input_capsule_dim, capsule_dim = kernel.shape
    flat_dim = input_num_capsules * input_capsule_dim
    # (J, E, I * D): output capsule, its dimension, then every input entry.
    kernel_by_capsule = ops.reshape(
        ops.transpose(kernel, (1, 3, 0, 2)), (num_capsules, capsule_dim, flat_dim)
    )
    agreement_inputs, agreement_kernel = inputs, kernel_by_capsule
    if stop_gradient_on_agreement:
        agreement_inputs = ops.stop_gradient(inputs)
        agreement_kernel = ops.stop_gradient(kernel_by_capsule)

    def uniform_sum() -> Any:
        every_capsule = ops.reshape(kernel_by_capsule, (-1, flat_dim))
        s = ops.matmul(
            ops.reshape(inputs, (-1, flat_dim)), ops.transpose(every_capsule)
        )
        s = ops.reshape(s / num_capsules, (-1, num_capsules, capsule_dim))
        return ops.transpose(s, (1, 0, 2))

    def weighted_sum(coupling: Any) -> Any:
        weighted = ops.expand_dims(coupling, -1) * inputs
        weighted = ops.reshape(weighted, (num_capsules, -1, flat_dim))
        # An einsum, not `matmul` with a transposed kernel: XLA then takes
        # the kernel gradient directly in the (J, E, I * D) layout.
        return ops.einsum("jbk,jek->jbe", weighted, kernel_by_capsule)

    def agreement(outputs: Any) -> Any:
        projected = ops.matmul(outputs, agreement_kernel)
        projected = ops.reshape(
            projected, (num_capsules, -1, input_num_capsules, input_capsule_dim)
        )
        return ops.sum(projected * agreement_inputs, axis=-1)

    outputs, coupling = _routing_iterations(
        uniform_sum,
        weighted_sum,
        agreement,
        coupling_axis=0,
        routing_iterations=routing_iterations,
        dtype=dtype,
    )
    outputs = ops.transpose(outputs, (1, 0, 2))
    if not return_coupling:
        return outputs
    if coupling is None:
        shape = (ops.shape(inputs)[0], num_capsules, input_num_capsules)
        uniform = ops.full(shape, 1.0 / num_capsules, dtype="float32")
        return outputs, ops.cast(uniform, dtype)
    return outputs, ops.transpose(coupling, (1, 0, 2))


def mask_capsules(capsules: Any, labels: Any | None = None) -> Any:
    """Zeros every capsule but one per example and flattens the result.

    Args:
        capsules: Capsules, shape `(batch, num_capsules, capsule_dim)`.
        labels: One-hot labels, shape `(batch, num_capsules)`, choosing the
            capsule to keep. If `None`, the longest capsule is kept.

    Returns:
        Shape `(batch, num_capsules * capsule_dim)`.
    """
    capsules = ops.convert_to_tensor(capsules)
    num_capsules = capsules.shape[-2]
    if labels is None:
        labels = ops.one_hot(
            ops.argmax(capsule_length(capsules), axis=-1),
            num_capsules,
            dtype=capsules.dtype,
        )
    labels = ops.cast(labels, capsules.dtype)
    masked = ops.multiply(capsules, ops.expand_dims(labels, axis=-1))
    num_capsules, capsule_dim = masked.shape[-2], masked.shape[-1]
    if num_capsules is None or capsule_dim is None:
        return ops.reshape(masked, (ops.shape(masked)[0], -1))
    return ops.reshape(masked, (-1, num_capsules * capsule_dim))


def _check_same_shape(function: str, y_true: Any, y_pred: Any) -> None:
    # Both losses are elementwise: a broadcast would silently compute the
    # wrong loss, and a mismatch would fail inside the backend.
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    compatible = len(true_shape) == len(pred_shape) and all(
        a is None or b is None or a == b for a, b in zip(true_shape, pred_shape)
    )
    if not compatible:
        raise ValueError(
            f"`{function}` expects `y_true` and `y_pred` of the same shape. "
            f"Received: y_true.shape={true_shape}, y_pred.shape={pred_shape}"
        )


def margin_loss(
    y_true: Any,
    y_pred: Any,
    m_plus: float = 0.9,
    m_minus: float = 0.1,
    down_weight: float = 0.5,
) -> Any:
    """Margin loss of eq. 4 of Sabour et al. (2017), summed over classes.

    `L_k = T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2`

    Args:
        y_true: One-hot targets `T`, shape `(batch, num_classes)`.
        y_pred: Capsule lengths `|v|`, shape `(batch, num_classes)`.
        m_plus: Length a present class's capsule should exceed. Defaults to
            `0.9`.
        m_minus: Length an absent class's capsule should stay below.
            Defaults to `0.1`.
        down_weight: The factor `lambda` on the absent-class term. Defaults
            to `0.5`.

    Returns:
        The loss of each example, shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import margin_loss
    >>> y_true = np.array([[0.0, 1.0]], dtype="float32")
    >>> y_pred = np.array([[0.3, 0.8]], dtype="float32")
    >>> loss = keras.ops.convert_to_numpy(margin_loss(y_true, y_pred))
    >>> [round(float(a), 4) for a in loss]
    [0.03]
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    _check_same_shape("margin_loss", y_true, y_pred)
    present = y_true * ops.square(ops.relu(m_plus - y_pred))
    absent = down_weight * (1.0 - y_true) * ops.square(ops.relu(y_pred - m_minus))
    return ops.sum(present + absent, axis=-1)


def reconstruction_loss(y_true: Any, y_pred: Any) -> Any:
    """Sum of squared errors of each example, the CapsNet decoder's loss.

    Sabour et al. (2017) train the decoder by minimising the sum of squared
    differences between the pixels of the input image and of its
    reconstruction. The sum (not the mean) over every non-batch axis keeps
    the paper's scale, which its weight of 0.0005 assumes.

    Args:
        y_true: Target images, shape `(batch, ...)`.
        y_pred: Reconstructions, of the shape of `y_true`.

    Returns:
        The loss of each example, shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import reconstruction_loss
    >>> y_true = np.array([[[1.0, 0.0], [0.0, 1.0]]], dtype="float32")
    >>> y_pred = np.array([[[0.5, 0.0], [0.0, 0.0]]], dtype="float32")
    >>> keras.ops.convert_to_numpy(reconstruction_loss(y_true, y_pred)).tolist()
    [1.25]
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    _check_same_shape("reconstruction_loss", y_true, y_pred)
    squared_error = ops.square(y_pred - y_true)
    pixel_axes = tuple(range(1, len(squared_error.shape)))
    if not pixel_axes:
        return squared_error
    return ops.sum(squared_error, axis=pixel_axes)
