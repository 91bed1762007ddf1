from __future__ import annotations

from typing import Any

import keras

from keras_capsules._validation import check_positive_int


class BaseRoutingCapsule(keras.layers.Layer):
    """Base of the fully connected vector-capsule layers.

    Every input capsule `u_i` predicts every output capsule `j` through its
    own transformation matrix, `u_hat[j|i] = W[i, j]^T u_i`; a routing
    method turns those predictions into the output capsules. This class
    owns what the methods share: the kernel `W` of shape
    `(input_num_capsules, num_capsules, input_capsule_dim, capsule_dim)`,
    its initializer, regularizer and constraint, the input checks, the
    output shape and the config. A subclass supplies the routing by
    overriding `routing_op`, and adds its own weights in `build` after
    calling `super().build(input_shape)`.

    Routing state (logits, coupling coefficients) is per example, never a
    weight. It can be read with `layer(inputs, return_coupling=True)`.

    Args:
        num_capsules: Number of output capsules, a positive integer.
        capsule_dim: Dimensions of each output capsule, a positive integer.
        kernel_initializer: Initializer for the transformation matrices.
            Defaults to `RandomNormal(stddev=0.01)`.
        kernel_regularizer: Optional regularizer for the kernel.
        kernel_constraint: Optional constraint for the kernel.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(
        self,
        num_capsules: int,
        capsule_dim: int,
        kernel_initializer: Any = None,
        kernel_regularizer: Any = None,
        kernel_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_capsules = check_positive_int("num_capsules", num_capsules)
        self.capsule_dim = check_positive_int("capsule_dim", capsule_dim)
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(stddev=0.01)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        name = type(self).__name__
        if len(input_shape) != 3:
            raise ValueError(
                f"`{name}` expects a 3D input (batch, input_num_capsules, "
                f"input_capsule_dim). Received: input_shape={tuple(input_shape)}"
            )
        _, input_num_capsules, input_capsule_dim = input_shape
        if input_num_capsules is None or input_capsule_dim is None:
            raise ValueError(
                f"`{name}` needs the number and the dimension of its input "
                "capsules to be known, since each pair of capsules has its own "
                f"weights. Received: input_shape={tuple(input_shape)}"
            )
        self.input_num_capsules = int(input_num_capsules)
        self.input_capsule_dim = int(input_capsule_dim)
        self.input_spec = keras.layers.InputSpec(
            ndim=3, axes={1: input_num_capsules, 2: input_capsule_dim}
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(
                input_num_capsules,
                self.num_capsules,
                input_capsule_dim,
                self.capsule_dim,
            ),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )

    def routing_op(self, inputs: Any, kernel: Any) -> tuple[Any, Any]:
        """Routes `inputs` through `kernel`: the one hook of the family.

        Args:
            inputs: Input capsules, `(batch, input_num_capsules,
                input_capsule_dim)`, in the layer's compute dtype.
            kernel: The layer's kernel, cast to the compute dtype.

        Returns:
            The pair `(capsules, coupling)`: output capsules `(batch,
            num_capsules, capsule_dim)` and coupling coefficients `(batch,
            num_capsules, input_num_capsules)`.
        """
        raise NotImplementedError(
            f"`{type(self).__name__}` must implement `routing_op(inputs, kernel)`."
        )

    def call(self, inputs: Any, return_coupling: bool = False) -> Any:
        kernel = keras.ops.cast(self.kernel, self.compute_dtype)
        capsules, coupling = self.routing_op(inputs, kernel)
        if return_coupling:
            return capsules, coupling
        return capsules

    def compute_output_shape(
        self, input_shape: tuple[int | None, ...]
    ) -> tuple[int | None, ...]:
        return (input_shape[0], self.num_capsules, self.capsule_dim)

    def compute_output_spec(self, inputs: Any, return_coupling: bool = False) -> Any:
        capsules = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_coupling:
            return capsules
        coupling_shape = (inputs.shape[0], self.num_capsules, inputs.shape[1])
        return capsules, keras.KerasTensor(coupling_shape, dtype=self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        config = {
            "num_capsules": self.num_capsules,
            "capsule_dim": self.capsule_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
        }
        return {**super().get_config(), **config}
