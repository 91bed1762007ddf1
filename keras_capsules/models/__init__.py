"""Capsule network models."""

from keras_capsules.models.base_capsule_classifier import BaseCapsuleClassifier
from keras_capsules.models.capsnet import CapsNet
from keras_capsules.models.efficient_capsnet import EfficientCapsNet
from keras_capsules.models.matrix_capsnet import MatrixCapsNet

__all__ = [
    "BaseCapsuleClassifier",
    "CapsNet",
    "EfficientCapsNet",
    "MatrixCapsNet",
]
