"""Routing algorithms, one module each."""

from keras_capsules.ops.routing.dynamic import dynamic_routing
from keras_capsules.ops.routing.em import conv_em_routing, em_routing
from keras_capsules.ops.routing.inverted_attention import (
    conv_inverted_attention_routing,
    inverted_attention_routing,
)
from keras_capsules.ops.routing.self_attention import self_attention_routing

__all__ = [
    "conv_em_routing",
    "conv_inverted_attention_routing",
    "dynamic_routing",
    "em_routing",
    "inverted_attention_routing",
    "self_attention_routing",
]
