"""A hand-written PyTorch CapsNet, to check the Keras example against.

    python examples/reference_torch_capsnet.py --data mnist.npz \
        --epochs 2 --train-samples 2000

Plain PyTorch, no Keras: the same architecture as
`keras_capsules.models.CapsNet` (Conv 256@9x9, 32x8D primary capsules,
16D class capsules with routing-by-agreement back-propagated through every
iteration, a 512-1024 decoder), the same initializers, margin loss and
0.0005-weighted sum-of-squares reconstruction loss, Adam with the same
per-epoch learning-rate decay, and the very same shuffled, shifted batches
(the batch code is imported from `capsnet_mnist.py`). It prints one line
`test accuracy: 0.XXXX`, so the two scripts compare line for line.

Adam comes in two forms. Keras adds epsilon to `sqrt(v)` and then corrects
the bias, `torch.optim.Adam` corrects first: the effective epsilon differs
by `sqrt(1 - beta_2**t)`, 30x at the first step. CapsNet's gradients are
tiny (about 1e-8 for the routing weights and the primary convolution at
the start), below epsilon, so the two forms take different steps. The
default, `--adam keras`, is Keras's form, to train exactly as the Keras
example does; `--adam torch` is `torch.optim.Adam` as a PyTorch user would
write it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capsnet_mnist import training_batch  # noqa: E402
from mnist_training import load_data, prepare, write_metrics  # noqa: E402

# keras.config.epsilon(), the floor of the norms in keras_capsules.ops.
EPSILON = 1e-7


def squash(s: torch.Tensor) -> torch.Tensor:
    squared_norm = (s**2).sum(-1, keepdim=True)
    scale = squared_norm / (1 + squared_norm)
    return s * scale * torch.rsqrt(squared_norm.clamp_min(EPSILON**2))


def length(v: torch.Tensor) -> torch.Tensor:
    squared_norm = (v**2).sum(-1)
    return squared_norm * torch.rsqrt(squared_norm.clamp_min(EPSILON**2))


class TorchCapsNet(nn.Module):
    def __init__(self, image_shape, num_classes, routing_iterations):
        super().__init__()
        height, width, channels = image_shape
        self.image_shape = image_shape
        self.routing_iterations = routing_iterations
        self.conv = nn.Conv2d(channels, 256, 9)
        self.primary = nn.Conv2d(256, 32 * 8, 9, stride=2)
        primary_positions = ((height - 8 - 9) // 2 + 1) * ((width - 8 - 9) // 2 + 1)
        self.weight = nn.Parameter(
            torch.randn(primary_positions * 32, num_classes, 8, 16) * 0.01
        )
        self.decoder = nn.Sequential(
            nn.Linear(num_classes * 16, 512),
            nn.ReLU(),
            nn.Linear(512, 1024),
            nn.ReLU(),
            nn.Linear(1024, height * width * channels),
            nn.Sigmoid(),
        )
        # Keras's defaults: Glorot-uniform kernels, zero biases.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images, labels=None):
        # NHWC in, as in Keras; capsules ordered by row, column, type.
        features = torch.relu(self.conv(images.permute(0, 3, 1, 2)))
        primary = self.primary(features).permute(0, 2, 3, 1)
        u = squash(primary.reshape(len(images), -1, 8))
        u_hat = torch.einsum("bid,ijde->bjie", u, self.weight)
        logits = torch.zeros(u_hat.shape[:3])
        for iteration in range(self.routing_iterations):
            coupling = torch.softmax(logits, dim=1)
            v = squash(torch.einsum("bji,bjie->bje", coupling, u_hat))
            if iteration < self.routing_iterations - 1:
                logits = logits + torch.einsum("bjie,bje->bji", u_hat, v)
        lengths = length(v)
        if labels is None:
            labels = nn.functional.one_hot(lengths.argmax(-1), v.shape[1]).float()
        masked = (v * labels[..., None]).flatten(1)
        return lengths, self.decoder(masked).reshape(-1, *self.image_shape)


class KerasAdam:
    """Adam as `keras.optimizers.Adam` computes it, written for PyTorch."""

    def __init__(self, params, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.params = list(params)
        self.lr, self.beta_1, self.beta_2, self.epsilon = lr, beta_1, beta_2, epsilon
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        b1, b2 = self.beta_1, self.beta_2
        alpha = self.lr * math.sqrt(1 - b2**self.steps) / (1 - b1**self.steps)
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.sub_(alpha * m / (v.sqrt() + self.epsilon))


def set_learning_rate(optimizer, lr: float) -> None:
    if isinstance(optimizer, KerasAdam):
        optimizer.lr = lr
    else:
        for group in optimizer.param_groups:
            group["lr"] = lr


def capsnet_loss(lengths, reconstructions, images, labels, recon_weight):
    margin = (
        labels * torch.relu(0.9 - lengths) ** 2
        + 0.5 * (1 - labels) * torch.relu(lengths - 0.1) ** 2
    )
    squared_error = ((reconstructions - images) ** 2).flatten(1).sum(-1)
    return margin.sum(-1).mean() + recon_weight * squared_error.mean()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-decay", type=float, default=0.9)
    parser.add_argument("--routing-iterations", type=int, default=3)
    parser.add_argument("--recon-weight", type=float, default=0.0005)
    parser.add_argument("--shift", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--test-samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adam", choices=("keras", "torch"), default="keras")
    parser.add_argument("--output-json", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_data(args.data)
    num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
    x_train, y_train = prepare(
        x_train[: args.train_samples], y_train[: args.train_samples], num_classes
    )
    x_test, y_test = prepare(
        x_test[: args.test_samples], y_test[: args.test_samples], num_classes
    )
    model = TorchCapsNet(x_train.shape[1:], num_classes, args.routing_iterations)
    optimizer: KerasAdam | torch.optim.Adam
    if args.adam == "keras":
        optimizer = KerasAdam(model.parameters(), lr=args.lr)
    else:
        # Keras's epsilon, though it acts differently here (see above).
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-7)
    print(
        f"torch {torch.__version__}, threads: {torch.get_num_threads()}, "
        f"parameters: {sum(p.numel() for p in model.parameters())}"
    )

    epoch_seconds = []
    steps = math.ceil(len(x_train) / args.batch_size)
    for epoch in range(args.epochs):
        model.train()
        set_learning_rate(optimizer, args.lr * args.lr_decay**epoch)
        started, total = time.perf_counter(), 0.0
        for index in range(steps):
            images, labels = map(
                torch.from_numpy, training_batch(x_train, y_train, args, epoch, index)
            )
            lengths, reconstructions = model(images, labels)
            loss = capsnet_loss(
                lengths, reconstructions, images, labels, args.recon_weight
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        epoch_seconds.append(time.perf_counter() - started)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {total / steps:.4f}, "
            f"{epoch_seconds[-1]:.1f} s"
        )

    model.eval()
    predictions = []
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(x_test), args.batch_size):
            batch = torch.from_numpy(x_test[start : start + args.batch_size])
            predictions.append(model(batch)[0].argmax(-1).numpy())
    test_seconds = time.perf_counter() - started
    accuracy = float(np.mean(np.concatenate(predictions) == y_test.argmax(-1)))
    steady = epoch_seconds[1:] or epoch_seconds
    if args.output_json:
        args.output_json.parent.mkdir(parents=True, exist_ok=True)
        metrics = {
            "test_accuracy": accuracy,
            "epoch_seconds": epoch_seconds,
            "seconds_per_epoch": float(np.mean(steady)),
            "train_images_per_second": len(x_train) / float(np.mean(steady)),
            "test_images_per_second": len(x_test) / test_seconds,
        }
        write_metrics(args.output_json, metrics, args)
    print(
        f"seconds per epoch: {np.mean(steady):.1f} "
        f"({len(x_train) / np.mean(steady):.1f} train images/s)"
    )
    print(f"test accuracy: {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
