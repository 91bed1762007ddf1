"""Inverted dot-product attention routing (Tsai et al., 2020).

Every child capsule `i` votes for every parent capsule `j`, and the
parents compete for each child: one pass of the routing computes

- the agreement of each vote with the parent's current pose,
  `a[i, j] = p_j . v[i, j] / sqrt(d)`,
- routing coefficients by a softmax over the PARENTS,
  `r[i, j] = exp(a[i, j]) / sum_j' exp(a[i, j'])` (eq. 3 of the paper),
- each parent's pose as the weighted sum of its votes,
  `p_j = sum_i r[i, j] v[i, j]` (eq. 4),
- and the layer normalisation of that pose, `p_j = LayerNorm(p_j)` (eq. 5),
  the method's only non-linearity: no squash, no activations.

The parents' poses start at 0 (Procedure 1 of the paper), so the first
pass routes every child uniformly, `r[i, j] = 1 / num_parents`.
`routing_iterations` counts the passes, that first one included (the
authors' `num_routing`: 1 is the uniform pass alone).

Votes are `v[i, j] = W[i, j]^T u_i` for vector poses, or, with
`matrix_pose=True`, the product of the child's pose, read as an `n x n`
matrix (`d = n * n`, row by row), with an `n x n` weight matrix,
`V[i, j] = P_i W[i, j]`, flattened back to `d` entries.

The paper and the authors' code (apple/ml-capsules-inverted-attention-
routing, `src/layers.py`) differ in these places; this module follows the
code where it decides the numbers and says so:

- Scale: the paper's agreement is the plain dot product (eq. 2); the code
  multiplies it by `1 / sqrt(d)` (`d` the parents' pose size), as here.
- Matrix votes: the paper writes `W[i, j] . p_i`; the code multiplies the
  child's pose on the left of the weights, `P_i W[i, j]`, as here (the
  same family of votes with the weights transposed).
- First pass: the paper starts from zero poses, the code from an explicit
  uniform softmax; the two are the same.
- Layer norm: in both after every pass, the uniform one included, with a
  learned scale and offset shared by all the parents of a layer
  (`torch.nn.LayerNorm(d)`, epsilon 1e-5). The code skips it for 1-D poses
  (a normalised scalar is always 0); so does this module.
- The code renormalises the softmax by its sum plus 1e-10 (a no-op up to
  rounding) and applies dropout (rate 0 in its recipe) to the poses before
  the layer norm; neither is done here.
- Convolutional layers: the code cuts the children's grid into receptive
  fields (`kernel x kernel` windows moved by the stride, no padding) and
  routes the `kernel * kernel * input_types` children of each window to
  the parents at that output position only: a softmax over the parent
  types at one position. A child lying in several windows is routed
  afresh in each; parents at different positions do not compete for it
  (unlike EM routing's E-step). `conv_inverted_attention_routing` does
  the same.
- Across layers the paper routes concurrently: in every pass each layer's
  parents are updated from the previous pass's states of the layer below
  and above. Pass the previous pass's poses as `parent_poses` (with
  `routing_iterations=1`) for that; by default the routing runs layer by
  layer (the code's `sequential_routing`).

Gradients flow through every pass (nothing is stopped). The agreement and
its softmax run in float32 (float64 for float64 inputs) and the layer norm
in at least float32, with the results cast back to the inputs' dtype.

Reference:
    - [Tsai, Srivastava, Goh & Salakhutdinov, 2020. Capsules with Inverted
      Dot-Product Attention Routing](https://arxiv.org/abs/2002.04764)
"""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_capsules._validation import check_positive_int, normalize_pair
from keras_capsules.ops import _patches
from keras_capsules.ops._dtypes import dtype_name, statistics_dtype
from keras_capsules.ops.matrix_capsules import pose_side


def inverted_attention_routing(
    inputs: Any,
    kernel: Any,
    routing_iterations: int = 2,
    matrix_pose: bool = False,
    scale: Any = None,
    offset: Any = None,
    epsilon: float = 1e-5,
    parent_poses: Any = None,
    return_coupling: bool = False,
) -> Any:
    """Routes child capsules to parent capsules by inverted dot-product attention.

    See the module docstring for the equations and how they compare with
    the authors' code.

    Args:
        inputs: Child poses, `(batch, input_num_capsules,
            input_capsule_dim)`.
        kernel: Transformation weights: `(input_num_capsules, num_capsules,
            input_capsule_dim, capsule_dim)` for vector poses, or
            `(input_num_capsules, num_capsules, n, n)` with
            `matrix_pose=True`, where `input_capsule_dim = n * n`; the
            parents' poses then have `n * n` entries too.
        routing_iterations: Routing passes, the first one uniform unless
            `parent_poses` is given; a positive integer. Defaults to `2`.
        matrix_pose: Whether poses are `n x n` matrices and votes matrix
            products. Defaults to `False`.
        scale: The layer norm's learned scale, `(capsule_dim,)`, or `None`
            for none. Defaults to `None`.
        offset: The layer norm's learned offset, `(capsule_dim,)`, or
            `None` for none. Defaults to `None`.
        epsilon: The layer norm's variance floor. Defaults to `1e-5`, the
            authors' (PyTorch's default).
        parent_poses: Poses of the parents from an earlier pass, `(batch,
            num_capsules, capsule_dim)`: the first pass then computes the
            agreement with them instead of routing uniformly (concurrent
            routing). Defaults to `None`.
        return_coupling: If `True`, also return the routing coefficients
            of the last pass. Defaults to `False`.

    Returns:
        The parents' poses `(batch, num_capsules, capsule_dim)`, or the pair
        `(poses, coupling)` with coupling `(batch, num_capsules,
        input_num_capsules)`, summing to 1 over the parents (axis 1).

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import inverted_attention_routing
    >>> u = np.random.rand(2, 12, 16).astype("float32")
    >>> w = np.random.rand(12, 10, 4, 4).astype("float32")
    >>> p, c = inverted_attention_routing(
    ...     u, w, matrix_pose=True, return_coupling=True)
    >>> tuple(p.shape), tuple(c.shape)
    ((2, 10, 16), (2, 10, 12))
    """
    routing_iterations = check_positive_int("routing_iterations", routing_iterations)
    inputs = ops.convert_to_tensor(inputs)
    kernel = ops.convert_to_tensor(kernel)
    name = "inverted_attention_routing"
    _check_rank(name, inputs, 3, "(batch, input_num_capsules, input_capsule_dim)")
    capsule_dim = _check_kernel(
        name, tuple(inputs.shape[1:]), tuple(kernel.shape), matrix_pose, inputs, kernel
    )
    votes = _votes(inputs, kernel, matrix_pose)  # (batch, I, J, D)
    if parent_poses is not None:
        parent_poses = _check_parent_poses(
            name, parent_poses, (kernel.shape[1], capsule_dim), inputs
        )
    poses, coupling = _route(
        votes, routing_iterations, scale, offset, epsilon, parent_poses
    )
    if return_coupling:
        return poses, ops.swapaxes(coupling, 1, 2)
    return poses


def conv_inverted_attention_routing(
    inputs: Any,
    kernel: Any,
    strides: int | tuple[int, int] = 1,
    routing_iterations: int = 2,
    matrix_pose: bool = False,
    scale: Any = None,
    offset: Any = None,
    epsilon: float = 1e-5,
    parent_poses: Any = None,
    return_coupling: bool = False,
) -> Any:
    """Inverted dot-product attention routing of a convolutional capsule layer.

    The children form a grid, `input_capsule_types` capsules at each
    position. The parents at output position `(y, x)` receive the votes of
    the children in their receptive field, the `kernel_h x kernel_w`
    positions from `(y * stride_h, x * stride_w)` ("valid" padding), each
    child with its own weights for its offset in the window; each of those
    children is routed over the parent types at `(y, x)` by a softmax, as
    the authors' `CapsuleCONV` does (see the module docstring).

    Args:
        inputs: Child poses, `(batch, height, width, input_capsule_types,
            input_capsule_dim)`, channels last.
        kernel: Transformation weights, `(kernel_h, kernel_w,
            input_capsule_types, capsule_types, input_capsule_dim,
            capsule_dim)` for vector poses, or `(kernel_h, kernel_w,
            input_capsule_types, capsule_types, n, n)` with
            `matrix_pose=True`.
        strides: Strides of the receptive fields, an integer or a pair.
            Defaults to `1`.
        routing_iterations: Routing passes, the first one uniform unless
            `parent_poses` is given; a positive integer. Defaults to `2`.
        matrix_pose: Whether poses are `n x n` matrices. Defaults to
            `False`.
        scale: The layer norm's learned scale, `(capsule_dim,)`, or `None`.
            Defaults to `None`.
        offset: The layer norm's learned offset, `(capsule_dim,)`, or
            `None`. Defaults to `None`.
        epsilon: The layer norm's variance floor. Defaults to `1e-5`.
        parent_poses: Poses of the parents from an earlier pass, `(batch,
            out_h, out_w, capsule_types, capsule_dim)`, for concurrent
            routing. Defaults to `None`.
        return_coupling: If `True`, also return the routing coefficients
            of the last pass. Defaults to `False`.

    Returns:
        The parents' poses `(batch, out_h, out_w, capsule_types,
        capsule_dim)`, or the pair `(poses, coupling)` with coupling
        `(batch, out_h, out_w, kernel_h, kernel_w, input_capsule_types,
        capsule_types)`: entry `[b, y, x, u, v, i, j]` routes the child of
        type `i` at input position `(y * stride_h + u, x * stride_w + v)`
        to the parent of type `j` at `(y, x)`, summing to 1 over `j`.

    Example:

    >>> import numpy as np
    >>> from keras_capsules.ops import conv_inverted_attention_routing
    >>> u = np.random.rand(2, 5, 5, 3, 16).astype("float32")
    >>> w = np.random.rand(3, 3, 3, 4, 4, 4).astype("float32")
    >>> p = conv_inverted_attention_routing(u, w, strides=2, matrix_pose=True)
    >>> tuple(p.shape)
    (2, 2, 2, 4, 16)
    """
    strides = normalize_pair("strides", strides)
    routing_iterations = check_positive_int("routing_iterations", routing_iterations)
    inputs = ops.convert_to_tensor(inputs)
    kernel = ops.convert_to_tensor(kernel)
    name = "conv_inverted_attention_routing"
    _check_rank(
        name,
        inputs,
        5,
        "(batch, height, width, input_capsule_types, input_capsule_dim)",
    )
    if len(kernel.shape) != 6:
        raise ValueError(
            f"`{name}` expects a 6D kernel (kernel_h, kernel_w, "
            "input_capsule_types, capsule_types, input_capsule_dim, capsule_dim), "
            "or (kernel_h, kernel_w, input_capsule_types, capsule_types, n, n) "
            f"for matrix poses. Received: kernel.shape={tuple(kernel.shape)}"
        )
    kernel_h, kernel_w = kernel.shape[0], kernel.shape[1]
    height, width = inputs.shape[1], inputs.shape[2]
    if height is None or width is None:
        raise ValueError(
            f"`{name}` needs the height and width of its input grid to be known. "
            f"Received: inputs.shape={tuple(inputs.shape)}"
        )
    if kernel_h > height or kernel_w > width:
        raise ValueError(
            f"`{name}`: the kernel is larger than the input grid. Received: "
            f"kernel_size={(kernel_h, kernel_w)} (kernel.shape="
            f"{tuple(kernel.shape)}), inputs.shape={tuple(inputs.shape)}"
        )
    capsule_dim = _check_kernel(
        name, tuple(inputs.shape[3:]), tuple(kernel.shape[2:]), matrix_pose, inputs,
        kernel,
    )  # fmt: skip
    out_h = _patches.output_size(height, kernel_h, strides[0])
    out_w = _patches.output_size(width, kernel_w, strides[1])
    input_types, types = kernel.shape[2], kernel.shape[3]
    fields = _patches.extract(inputs, (kernel_h, kernel_w), strides)
    # Every receptive field is a fully connected layer of its own: its
    # `KH * KW * I` children, each with the weights of its offset, vote for
    # the parents at its output position.
    children = kernel_h * kernel_w * input_types
    fields = ops.reshape(fields, (-1, children, inputs.shape[-1]))
    field_kernel = ops.reshape(kernel, (children, *kernel.shape[3:]))
    votes = _votes(fields, field_kernel, matrix_pose)
    if parent_poses is not None:
        parent_poses = _check_parent_poses(
            name, parent_poses, (out_h, out_w, types, capsule_dim), inputs
        )
        parent_poses = ops.reshape(parent_poses, (-1, types, capsule_dim))
    poses, coupling = _route(
        votes, routing_iterations, scale, offset, epsilon, parent_poses
    )
    poses = ops.reshape(poses, (-1, out_h, out_w, types, capsule_dim))
    if return_coupling:
        coupling = ops.reshape(
            coupling, (-1, out_h, out_w, kernel_h, kernel_w, input_types, types)
        )
        return poses, coupling
    return poses


def _votes(inputs: Any, kernel: Any, matrix_pose: bool) -> Any:
    """Children `(batch, I, Din)` and a kernel `(I, J, ...)`: votes `(batch, I, J, D)`."""
    kernel = ops.cast(kernel, inputs.dtype)
    if not matrix_pose:
        return ops.einsum("bia,ijad->bijd", inputs, kernel)
    side = kernel.shape[-1]
    poses = ops.reshape(inputs, (-1, inputs.shape[1], side, side))
    # V = P W: the child's pose matrix times the weight matrix.
    votes = ops.einsum("bixc,ijcy->bijxy", poses, kernel)
    return ops.reshape(votes, (-1, inputs.shape[1], kernel.shape[1], side * side))


def _route(
    votes: Any,
    routing_iterations: int,
    scale: Any,
    offset: Any,
    epsilon: float,
    parent_poses: Any,
) -> tuple[Any, Any]:
    """The routing passes on votes `(batch, N, J, D)`: poses `(batch, J, D)`.

    Returns the poses and the last pass's coefficients `(batch, N, J)`.
    """
    dtype = dtype_name(votes)
    statistics = statistics_dtype(dtype)
    num_parents, capsule_dim = votes.shape[-2], votes.shape[-1]

    def normalize(poses: Any) -> Any:
        if capsule_dim == 1:
            return poses
        return ops.layer_normalization(
            poses, gamma=scale, beta=offset, axis=-1, epsilon=epsilon
        )

    poses = parent_poses
    coupling = None
    for _ in range(routing_iterations):
        if poses is None:
            # Zero poses agree equally with every vote: uniform routing.
            coupling = ops.ones_like(votes[..., 0]) / num_parents
        else:
            agreement = ops.einsum("bnjd,bjd->bnj", votes, poses)
            agreement = ops.cast(agreement, statistics) / capsule_dim**0.5
            coupling = ops.cast(ops.softmax(agreement, axis=-1), dtype)
        poses = normalize(ops.einsum("bnj,bnjd->bjd", coupling, votes))
    return poses, coupling


def _check_rank(name: str, inputs: Any, rank: int, layout: str) -> None:
    if len(inputs.shape) != rank:
        raise ValueError(
            f"`{name}` expects {rank}D inputs {layout}. "
            f"Received: inputs.shape={tuple(inputs.shape)}"
        )


def _check_kernel(
    name: str,
    children: tuple,
    kernel_shape: tuple,
    matrix_pose: bool,
    inputs: Any,
    kernel: Any,
) -> int:
    """Checks children `(I, Din)` against a kernel `(I, J, ...)`; returns `D`."""
    received = (
        f"Received: inputs.shape={tuple(inputs.shape)}, "
        f"kernel.shape={tuple(kernel.shape)}"
    )
    if any(size is None or size < 1 for size in (*children, *kernel_shape)):
        raise ValueError(
            f"`{name}` needs a positive, known number and size of capsules in "
            f"its inputs and kernel. {received}"
        )
    input_count, input_dim = children
    if matrix_pose:
        side = pose_side(int(input_dim))
        if side is None:
            raise ValueError(
                f"`{name}` with matrix_pose=True needs child poses of n * n "
                f"entries (4 x 4 = 16 in the paper), so that each is a square "
                f"matrix. Received: input_capsule_dim={input_dim}. {received}"
            )
        expected = (input_count, kernel_shape[1], side, side)
        layout = (
            "(input_num_capsules, num_capsules, n, n) with n * n = input_capsule_dim"
        )
        capsule_dim = side * side
    else:
        expected = (input_count, kernel_shape[1], input_dim, kernel_shape[-1])
        layout = "(input_num_capsules, num_capsules, input_capsule_dim, capsule_dim)"
        capsule_dim = kernel_shape[-1]
    if len(kernel_shape) != 4 or tuple(kernel_shape) != expected:
        raise ValueError(
            f"`{name}` expects a kernel {layout} for its inputs. {received}"
        )
    return int(capsule_dim)


def _check_parent_poses(name: str, parent_poses: Any, shape: tuple, inputs: Any) -> Any:
    parent_poses = ops.convert_to_tensor(parent_poses, dtype=inputs.dtype)
    if tuple(parent_poses.shape[1:]) != tuple(shape):
        raise ValueError(
            f"`{name}` expects parent poses of shape (batch, "
            f"{', '.join(str(s) for s in shape)}). Received: "
            f"parent_poses.shape={tuple(parent_poses.shape)}, "
            f"inputs.shape={tuple(inputs.shape)}"
        )
    return parent_poses
