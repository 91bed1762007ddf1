"""The capsule-network math, written once on `keras.ops`.

Every layer and loss in `keras_capsules` calls into this namespace, so each
equation lives in exactly one place, and runs unchanged on the TensorFlow,
PyTorch and JAX backends. The modules follow the concepts: capsule vector
math (`capsules`), convolution helpers (`convolution`), losses (`losses`)
and one module per routing algorithm (`routing/`).
"""

from keras_capsules.ops.capsules import (
    capsule_length,
    capsule_predictions,
    efficient_squash,
    mask_capsules,
    squash,
)
from keras_capsules.ops.convolution import conv_output_size, space_to_depth_conv
from keras_capsules.ops.losses import margin_loss, reconstruction_loss
from keras_capsules.ops.matrix_capsules import coordinate_addition, spread_loss
from keras_capsules.ops.routing import (
    conv_em_routing,
    conv_inverted_attention_routing,
    dynamic_routing,
    em_routing,
    inverted_attention_routing,
    self_attention_routing,
)

__all__ = [
    "capsule_length",
    "capsule_predictions",
    "conv_em_routing",
    "conv_output_size",
    "conv_inverted_attention_routing",
    "coordinate_addition",
    "dynamic_routing",
    "efficient_squash",
    "em_routing",
    "inverted_attention_routing",
    "margin_loss",
    "mask_capsules",
    "reconstruction_loss",
    "self_attention_routing",
    "space_to_depth_conv",
    "spread_loss",
    "squash",
]
