"""Capsule network models."""

from keras_capsules.models.base_capsule_classifier import BaseCapsuleClassifier
from keras_capsules.models.capsnet import CapsNet
from keras_capsules.models.capsule_classifier import CapsuleClassifier
from keras_capsules.models.efficient_capsnet import EfficientCapsNet
from keras_capsules.models.inverted_attention_capsnet import InvertedAttentionCapsNet
from keras_capsules.models.matrix_capsnet import MatrixCapsNet
from keras_capsules.models.presets import list_presets
from keras_capsules.models.training_recipe import TrainingRecipe

__all__ = [
    "BaseCapsuleClassifier",
    "CapsNet",
    "CapsuleClassifier",
    "EfficientCapsNet",
    "InvertedAttentionCapsNet",
    "MatrixCapsNet",
    "TrainingRecipe",
    "list_presets",
]
