"""A hand-written eager PyTorch CapsNet: the baseline the Keras layers are measured against.

Same math as the paper and as `keras_capsules`: squash, 3 routing iterations
with gradients through every iteration, margin loss plus 0.0005 x the
decoder's sum of squared errors, Adam. Written for speed in eager mode
(no `torch.compile`); benchmarks/README.md lists the formulations tried.

The routing never forms the prediction vectors `u_hat[b, j, i, :] = W[i, j]
u[b, i]` (74 MB at batch 100). Both routing contractions are rewritten
around the kernel grouped by output capsule, `W_j` of shape `(I * D, E)`:

- weighted sum: `s[b, j] = sum_i c[b, j, i] u_hat[b, j, i]
  = (c[b, j, :, None] * u[b]).flatten() @ W_j`, a batched GEMM over `j`;
- agreement: `u_hat[b, j, i] . v[b, j] = sum_d u[b, i, d] (W_j v[b, j])[i, d]`.

Each needs an `(J, B, I * D)` intermediate, half the size of `u_hat`, and
runs as large GEMMs instead of batched matrix-vector products, which
PyTorch's CPU kernels run slowly (see the README for the numbers).
"""

from __future__ import annotations

import common
import torch
from torch import nn
from torch.nn import functional as F

EPSILON = 1e-7


def squash(s: torch.Tensor) -> torch.Tensor:
    squared = (s * s).sum(-1, keepdim=True)
    return s * (squared / (1.0 + squared) * torch.rsqrt(squared.clamp_min(EPSILON**2)))


def length(v: torch.Tensor) -> torch.Tensor:
    squared = (v * v).sum(-1)
    return squared * torch.rsqrt(squared.clamp_min(EPSILON**2))


def margin_loss(labels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    present = labels * F.relu(0.9 - lengths).square()
    absent = 0.5 * (1.0 - labels) * F.relu(lengths - 0.1).square()
    return (present + absent).sum(-1).mean()


def routing(u: torch.Tensor, kernel: torch.Tensor, iterations: int) -> torch.Tensor:
    """Dynamic routing of `u` (B, I, D) by `kernel` (I, J, D, E) -> (B, J, E)."""
    batch, num_inputs, input_dim = u.shape
    num_outputs, output_dim = kernel.shape[1], kernel.shape[3]
    flat = num_inputs * input_dim
    # (J, I*D, E): one contiguous GEMM operand per output capsule.
    kernel_j = kernel.transpose(0, 1).reshape(num_outputs, flat, output_dim)
    # First iteration: uniform coupling 1/J, one GEMM for every j at once
    # (a broadcast matmul against kernel_j would copy u J times).
    kernel_flat = kernel.transpose(1, 2).reshape(flat, num_outputs * output_dim)
    s = (u.reshape(batch, flat) @ kernel_flat).view(batch, num_outputs, output_dim)
    v = squash(s.transpose(0, 1) / num_outputs)  # (J, B, E)
    logits = None
    for _ in range(1, iterations):
        projected = torch.bmm(v, kernel_j.transpose(1, 2))  # (J, B, I*D)
        agreement = (projected.view(num_outputs, batch, num_inputs, input_dim) * u).sum(
            -1
        )
        logits = agreement if logits is None else logits + agreement
        coupling = torch.softmax(logits, dim=0)  # over output capsules
        weighted = (coupling.unsqueeze(-1) * u).view(num_outputs, batch, flat)
        v = squash(torch.bmm(weighted, kernel_j))
    return v.transpose(0, 1)


class RoutingOnly(nn.Module):
    """The routing layer alone: 1152 capsules of 8D -> 10 capsules of 16D."""

    def __init__(self) -> None:
        super().__init__()
        shape = (
            common.INPUT_CAPSULES,
            common.NUM_CLASSES,
            common.INPUT_CAPSULE_DIM,
            common.CAPSULE_DIM,
        )
        self.kernel = nn.Parameter(torch.randn(shape) * 0.01)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return length(routing(u, self.kernel, common.ROUTING_ITERATIONS))


class CapsNet(nn.Module):
    """Conv 256@9x9 -> primary capsules 32x8D -> 10x16D digit capsules + decoder."""

    def __init__(self, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.conv = nn.Conv2d(
            common.IMAGE_SHAPE[-1], common.CONV_FILTERS, common.KERNEL_SIZE
        )
        self.primary = nn.Conv2d(
            common.CONV_FILTERS,
            common.PRIMARY_CAPSULES * common.INPUT_CAPSULE_DIM,
            common.KERNEL_SIZE,
            stride=2,
        )
        self.routing = RoutingOnly()
        units = (*common.DECODER_UNITS, int(torch.tensor(common.IMAGE_SHAPE).prod()))
        self.decoder = nn.Sequential(
            nn.Linear(common.NUM_CLASSES * common.CAPSULE_DIM, units[0]),
            nn.ReLU(),
            nn.Linear(units[0], units[1]),
            nn.ReLU(),
            nn.Linear(units[1], units[2]),
            nn.Sigmoid(),
        )
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # NHWC images (the Keras layout) to NCHW: contiguous NCHW measured
        # faster here than PyTorch's channels_last memory format (README).
        x = images.permute(0, 3, 1, 2)
        if not self.channels_last:
            x = x.contiguous()
        features = self.primary(F.relu(self.conv(x)))
        # Capsules as in PrimaryCapsule: by row, column, then capsule type.
        u = squash(
            features.permute(0, 2, 3, 1).reshape(
                images.shape[0], -1, common.INPUT_CAPSULE_DIM
            )
        )
        v = routing(u, self.routing.kernel, common.ROUTING_ITERATIONS)
        lengths = length(v)
        if labels is None:
            labels = F.one_hot(lengths.argmax(-1), common.NUM_CLASSES).to(v.dtype)
        reconstructions = self.decoder((v * labels.unsqueeze(-1)).flatten(1))
        return lengths, reconstructions.view(images.shape)


class Trainer:
    """One optimiser step per call, Adam as in Keras (epsilon 1e-7).

    The other hand-written PyTorch twins subclass it, overriding
    `make_model` and `loss`.
    """

    def __init__(
        self, bench: str, batch: dict, device: str = "cpu", channels_last: bool = False
    ):
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        self.bench = bench
        self.model = self.make_model(channels_last).to(self.device)
        # foreach=True: one multi-tensor update instead of a loop over weights.
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=common.learning_rate(bench),
            eps=1e-7,
            foreach=True,
        )
        self.inputs = torch.as_tensor(batch["inputs"], device=self.device)
        self.labels = torch.as_tensor(batch["labels"], device=self.device)

    def make_model(self, channels_last: bool) -> nn.Module:
        return RoutingOnly() if self.bench == "routing" else CapsNet(channels_last)

    def loss(self) -> torch.Tensor:
        if self.bench == "routing":
            return margin_loss(self.labels, self.model(self.inputs))
        lengths, reconstructions = self.model(self.inputs, self.labels)
        squared_error = (
            (reconstructions - self.inputs).square().flatten(1).sum(-1).mean()
        )
        return (
            margin_loss(self.labels, lengths)
            + common.RECONSTRUCTION_WEIGHT * squared_error
        )

    def train_step(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        return loss

    def infer_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return self.model(self.inputs)

    def sync(self, result: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
