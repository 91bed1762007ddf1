"""Capsule-network benchmark data built from MNIST-like digits, in NumPy.

MultiMNIST (`multi_mnist`), the expanded-MNIST training view of the affNIST
experiment (`expanded_mnist`) and an affNIST-like test view (`affine_mnist`)
from Sabour et al. 2017. Nothing is downloaded: pass the digits and labels
(for example from `keras.datasets.mnist.load_data()`), get NumPy arrays back.
Every builder is deterministic given its `seed`. `load_small_norb` reads the
smallNORB files a user downloaded, `load_cifar10` and `load_cifar100` the
binary CIFAR files, and `load_image_folder` a user's own images, one
sub-folder per class.
"""

from keras_capsules.datasets.affine import affine_mnist
from keras_capsules.datasets.cifar import (
    CIFAR10_CLASS_NAMES,
    load_cifar10,
    load_cifar100,
)
from keras_capsules.datasets.expanded import expanded_mnist
from keras_capsules.datasets.image_folder import load_image_folder
from keras_capsules.datasets.multi_digit import multi_mnist
from keras_capsules.datasets.small_norb import load_small_norb, read_norb_matrix

__all__ = [
    "CIFAR10_CLASS_NAMES",
    "affine_mnist",
    "expanded_mnist",
    "load_cifar10",
    "load_cifar100",
    "load_image_folder",
    "load_small_norb",
    "multi_mnist",
    "read_norb_matrix",
]
