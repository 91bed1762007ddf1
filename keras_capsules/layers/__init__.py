"""Capsule layers."""

from keras_capsules.layers.base_inverted_attention_capsule import (
    BaseInvertedAttentionCapsule,
)
from keras_capsules.layers.base_matrix_capsule import BaseMatrixCapsule
from keras_capsules.layers.base_routing_capsule import BaseRoutingCapsule
from keras_capsules.layers.class_matrix_capsule import ClassMatrixCapsule
from keras_capsules.layers.conv_inverted_attention_capsule import (
    ConvInvertedAttentionCapsule,
)
from keras_capsules.layers.conv_matrix_capsule import ConvMatrixCapsule
from keras_capsules.layers.depthwise_primary_capsule import DepthwisePrimaryCapsule
from keras_capsules.layers.inverted_attention_capsule import InvertedAttentionCapsule
from keras_capsules.layers.layer_norm_primary_capsule import LayerNormPrimaryCapsule
from keras_capsules.layers.length import Length
from keras_capsules.layers.mask import Mask
from keras_capsules.layers.primary_capsule import PrimaryCapsule
from keras_capsules.layers.primary_matrix_capsule import PrimaryMatrixCapsule
from keras_capsules.layers.routing_capsule import RoutingCapsule
from keras_capsules.layers.self_attention_routing_capsule import (
    SelfAttentionRoutingCapsule,
)

__all__ = [
    "BaseInvertedAttentionCapsule",
    "BaseMatrixCapsule",
    "BaseRoutingCapsule",
    "ClassMatrixCapsule",
    "ConvInvertedAttentionCapsule",
    "ConvMatrixCapsule",
    "DepthwisePrimaryCapsule",
    "InvertedAttentionCapsule",
    "LayerNormPrimaryCapsule",
    "Length",
    "Mask",
    "PrimaryCapsule",
    "PrimaryMatrixCapsule",
    "RoutingCapsule",
    "SelfAttentionRoutingCapsule",
]
