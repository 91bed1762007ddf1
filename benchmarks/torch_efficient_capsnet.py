"""A hand-written eager PyTorch Efficient-CapsNet, the twin of `keras_capsules.models.EfficientCapsNet`.

Mazzia, Salvetti & Chiaberge (2021), the MNIST network with its decoder:

- convolutions 32@5x5, 64@3x3, 64@3x3 and 128@3x3 stride 2, each a ReLU
  followed by batch normalization (momentum 0.99 and epsilon 1e-3 in
  Keras's terms): 28x28 -> 24 -> 22 -> 20 -> 9x9x128;
- a 9x9 depthwise convolution (one filter per channel, with bias): 128
  features at one position, cut into 16 primary capsules of 8D in row,
  column, channel order, each squashed with the efficient squash
  `(1 - 1 / exp(|s|)) s / |s|` (eq. 5);
- self-attention routing to 10 capsules of 16D (eqs. 2-4): predictions
  `u[j, i] = W[i, j]^T u_i`, agreement `A[j, i] = u[j, i] . sum_k u[j, k] /
  sqrt(16)`, coupling `c = softmax_j(A)`, `s_j = sum_i u[j, i] (c[j, i] +
  b[j, i])` with learned log priors `b`, then the efficient squash;
- the capsule lengths as class scores, and the 512-1024-784 decoder of the
  capsule of the true class (the others masked to zero);
- margin loss (0.9 / 0.1 / 0.5) plus 0.0005 x the sum of squared pixel
  errors, Adam at the recipe's 5e-4 (epsilon 1e-7, as Keras).

1,573,744 weights counted as Keras counts them: 161,824 trainable in the
encoder, the 576 batch-normalization statistics (buffers here, which
`num_params` adds), and the decoder's 1,411,344.
"""

from __future__ import annotations

import math

import common
import torch
import torch_capsnet
from torch import nn
from torch.nn import functional as F

EPSILON = 1e-7
CONV_FILTERS = (32, 64, 64, 128)
CONV_KERNEL_SIZES = (5, 3, 3, 3)
CONV_STRIDES = (1, 1, 1, 2)
PRIMARY_CAPSULE_DIM = 8
# Keras's BatchNormalization(momentum=0.99, epsilon=1e-3).
BATCH_NORM_MOMENTUM = 0.01
BATCH_NORM_EPSILON = 1e-3


def efficient_squash(s: torch.Tensor) -> torch.Tensor:
    """Eq. 5: `(1 - exp(-|s|)) s / |s|`, the norm clamped below at epsilon."""
    norm = (s * s).sum(-1, keepdim=True).clamp_min(EPSILON**2).sqrt()
    return -torch.expm1(-norm) * s / norm


def self_attention_routing(
    u: torch.Tensor, kernel: torch.Tensor, log_priors: torch.Tensor
) -> torch.Tensor:
    """`u` (B, I, D), `kernel` (I, J, D, E), `log_priors` (J, I) -> (B, J, E)."""
    predictions = torch.einsum("bid,ijde->bjie", u, kernel)  # (B, J, I, E)
    total = predictions.sum(2, keepdim=True)  # (B, J, 1, E): sum over inputs
    agreement = (predictions * total).sum(-1) / math.sqrt(kernel.shape[-1])
    coupling = torch.softmax(agreement, dim=1)  # over the output capsules
    weights = (coupling + log_priors).unsqueeze(-1)  # (B, J, I, 1)
    return efficient_squash((weights * predictions).sum(2))


class EfficientCapsNet(nn.Module):
    """`batch_norm=False` / `decoder=False` drop those parts (for the breakdown)."""

    def __init__(self, batch_norm: bool = True, decoder: bool = True) -> None:
        super().__init__()
        image_shape = common.image_shape("efficient-capsnet")
        channels, size = image_shape[-1], image_shape[0]
        layers: list[nn.Module] = []
        for filters, kernel_size, stride in zip(
            CONV_FILTERS, CONV_KERNEL_SIZES, CONV_STRIDES
        ):
            layers += [
                nn.Conv2d(channels, filters, kernel_size, stride=stride),
                nn.ReLU(),
            ]
            if batch_norm:
                layers.append(
                    nn.BatchNorm2d(
                        filters, eps=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM
                    )
                )
            channels, size = filters, (size - kernel_size) // stride + 1
        self.encoder = nn.Sequential(*layers)
        # Depthwise: one size x size filter per channel, one position out.
        self.primary = nn.Conv2d(channels, channels, size, groups=channels)
        num_primary = channels // PRIMARY_CAPSULE_DIM
        classes = common.num_classes("efficient-capsnet")
        self.kernel = nn.Parameter(
            torch.randn(num_primary, classes, PRIMARY_CAPSULE_DIM, common.CAPSULE_DIM)
            * math.sqrt(2.0 / (num_primary * classes * PRIMARY_CAPSULE_DIM))
        )
        self.log_priors = nn.Parameter(torch.zeros(classes, num_primary))
        units = (*common.DECODER_UNITS, math.prod(image_shape))
        self.decoder = (
            nn.Sequential(
                nn.Linear(classes * common.CAPSULE_DIM, units[0]),
                nn.ReLU(),
                nn.Linear(units[0], units[1]),
                nn.ReLU(),
                nn.Linear(units[1], units[2]),
                nn.Sigmoid(),
            )
            if decoder
            else None
        )

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # NHWC images (the Keras layout) to NCHW.
        features = self.primary(self.encoder(images.permute(0, 3, 1, 2).contiguous()))
        # Capsules in Keras's row, column, channel order.
        u = efficient_squash(
            features.permute(0, 2, 3, 1).reshape(
                images.shape[0], -1, PRIMARY_CAPSULE_DIM
            )
        )
        v = self_attention_routing(u, self.kernel, self.log_priors)
        lengths = torch_capsnet.length(v)
        if self.decoder is None:
            return lengths, None
        if labels is None:
            labels = F.one_hot(lengths.argmax(-1), v.shape[1]).to(v.dtype)
        reconstructions = self.decoder((v * labels.unsqueeze(-1)).flatten(1))
        return lengths, reconstructions.view(images.shape)


def load_keras_weights(model: EfficientCapsNet, weights: dict) -> None:
    """Copies a Keras `EfficientCapsNet`'s weights, `{path: array}`, into `model`.

    For the test that the twin computes the Keras model's function.
    """

    def get(name: str) -> torch.Tensor:
        (value,) = (v for k, v in weights.items() if k.endswith("/" + name))
        return torch.as_tensor(value)

    convs = [m for m in model.encoder if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.encoder if isinstance(m, nn.BatchNorm2d)]
    pairs = []
    for i, (conv, norm) in enumerate(zip(convs, norms), start=1):
        pairs += [
            (conv.weight, get(f"conv_{i}/kernel").permute(3, 2, 0, 1)),
            (conv.bias, get(f"conv_{i}/bias")),
            (norm.weight, get(f"batch_norm_{i}/gamma")),
            (norm.bias, get(f"batch_norm_{i}/beta")),
            (norm.running_mean, get(f"batch_norm_{i}/moving_mean")),
            (norm.running_var, get(f"batch_norm_{i}/moving_variance")),
        ]
    pairs += [
        (model.primary.weight, get("primary_capsule/kernel").permute(2, 3, 0, 1)),
        (model.primary.bias, get("primary_capsule/bias")),
        (model.kernel, get("class_capsule/kernel")),
        (model.log_priors, get("class_capsule/bias")),
    ]
    linears = [m for m in model.decoder if isinstance(m, nn.Linear)]
    for linear, name in zip(
        linears, ("decoder_dense_1", "decoder_dense_2", "decoder_image")
    ):
        pairs += [
            (linear.weight, get(f"{name}/kernel").T),
            (linear.bias, get(f"{name}/bias")),
        ]
    with torch.no_grad():
        for target, value in pairs:
            target.copy_(value)


class Trainer(torch_capsnet.Trainer):
    """One Adam step of Efficient-CapsNet per call (batch statistics, as `fit`)."""

    def make_model(self, channels_last: bool) -> nn.Module:
        return EfficientCapsNet()

    def loss(self) -> torch.Tensor:
        lengths, reconstructions = self.model(self.inputs, self.labels)
        if reconstructions is None:
            return torch_capsnet.margin_loss(self.labels, lengths)
        squared_error = (
            (reconstructions - self.inputs).square().flatten(1).sum(-1).mean()
        )
        return (
            torch_capsnet.margin_loss(self.labels, lengths)
            + common.RECONSTRUCTION_WEIGHT * squared_error
        )

    def num_params(self) -> int:
        """Weights plus batch-normalization statistics, as Keras counts them."""
        statistics = sum(
            module.running_mean.numel() + module.running_var.numel()
            for module in self.model.modules()
            if isinstance(module, nn.BatchNorm2d)
        )
        return super().num_params() + statistics
