"""Capsule network models."""

from keras_capsules.models.base_capsule_classifier import BaseCapsuleClassifier
from keras_capsules.models.capsnet import CapsNet

__all__ = ["BaseCapsuleClassifier", "CapsNet"]
