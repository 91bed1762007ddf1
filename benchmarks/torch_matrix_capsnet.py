"""A hand-written eager PyTorch matrix-capsule network with EM routing.

The twin of `keras_capsules.models.MatrixCapsNet` with its defaults, the
smallNORB network of Hinton, Sabour & Frosst (2018), written from the
paper's equations:

- a ReLU convolution, A = 32 channels, 5x5 stride 2: 32x32 -> 14x14;
- primary capsules, B = 32 types, a 1x1 convolution giving each type a
  4x4 pose matrix and a sigmoid activation;
- two convolutional capsule layers, C = D = 32 types, 3x3 with strides 2
  and 1 (14x14 -> 6x6 -> 4x4), votes `V_ij = M_i W_ij`, one 4x4 `W` per
  kernel position, input type and output type;
- class capsules, one per class (5), `W` shared over positions, with
  coordinate addition: the scaled centre `(y + 0.5) / H`, `(x + 0.5) / W`
  of each child's cell added to entries (0, 3) and (1, 3) of its votes;
- 3 iterations of Procedure 1 (EM routing) per routing layer, gradients
  through all of them; spread loss with margin 0.2; Adam.

EM routing, per parent `j` (`R` the assignments, `a_i` the activations):
M-step `mu_j = sum_i R_ij a_i V_ij / sum_i R_ij a_i`, `sigma_j^2` the
weighted variance of the votes (plus `epsilon`), `cost_j = (beta_u +
log sigma_j) * data_j` summed over the 16 entries, `a_j = sigmoid(lambda
(beta_a - cost_j))`; E-step `R_ij` proportional to `a_j N(V_ij | mu_j,
sigma_j^2)`, in log space. Where the paper is silent this follows the
choices `keras_capsules.ops.em_routing` documents (from the authors' code
and Gritzman 2019): `lambda_t = 1 - 0.95^t`, one `beta_u` and `beta_a` per
output type, `data_j = (J / N) sum_i R_ij a_i`, `epsilon = 1e-6` added to
variances and amounts of data, a convolutional child's assignments summing
to 1 over every parent it feeds at every position, starting uniform over
them. 316,394 weights.

Written for speed in eager mode: the votes are laid out `(batch, position,
parent, child, entry)`, so the sums over children are batched GEMMs and
each iteration forms only two vote-sized tensors (the deviations from the
means and their squares); the Gaussian's exponent is a GEMM of the squares
with the inverse variances.
"""

from __future__ import annotations

import math

import common
import torch
import torch_capsnet
from torch import nn
from torch.nn import functional as F

CONV_FILTERS, CONV_KERNEL_SIZE, CONV_STRIDES = 32, 5, 2
PRIMARY_TYPES = 32
CAPSULE_TYPES, CAPSULE_KERNEL_SIZES, CAPSULE_STRIDES = (32, 32), (3, 3), (2, 1)
POSE_SIDE = 4
POSE_SIZE = POSE_SIDE * POSE_SIDE
ITERATIONS = 3
FINAL_INVERSE_TEMPERATURE = 1.0
EPSILON = 1e-6
LOG_2PI = math.log(2.0 * math.pi)


def em_routing(
    votes: torch.Tensor,
    activations: torch.Tensor,
    beta_u: torch.Tensor,
    beta_a: torch.Tensor,
    initial: torch.Tensor,
    log_normalizer,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedure 1 on votes `(B, G, J, N, P)`: G routing groups (positions),
    J parents, N children, P pose entries; `activations` `(B, G, N)`.

    `initial`, broadcastable to `(B, G, J, N)`, is `R` before the first
    M-step; `log_normalizer(log_joint)` is the log of each child's sum of
    `exp(log_joint)` over all its parents. Returns the means `(B, G, J, P)`
    and the activations `(B, G, J)` of the last M-step.
    """
    num_parents, num_children, pose_size = votes.shape[2:]
    a = activations.unsqueeze(2)  # (B, G, 1, N)
    beta_u, beta_a = beta_u[:, None], beta_a[:, None]  # (J, 1)
    data_scale = num_parents / num_children
    assignments = initial
    for t in range(1, ITERATIONS + 1):
        inverse_temperature = FINAL_INVERSE_TEMPERATURE * (1.0 - 0.95**t)
        # M-step.
        weighted = assignments * a  # (B, G, J, N)
        data = weighted.sum(-1, keepdim=True)  # (B, G, J, 1)
        share = (weighted / (data + EPSILON)).unsqueeze(-2)  # (B, G, J, 1, N)
        mean = share @ votes  # (B, G, J, 1, P)
        squared = (votes - mean).square()  # (B, G, J, N, P)
        variance = share @ squared + EPSILON  # (B, G, J, 1, P)
        log_variance = variance.log()
        log_variance_sum = log_variance.sum(-1)  # (B, G, J, 1)
        cost = (pose_size * beta_u + 0.5 * log_variance_sum) * (data * data_scale)
        logits = inverse_temperature * (beta_a - cost)  # (B, G, J, 1)
        if t == ITERATIONS:
            break
        # E-step: log a_j + log N(V_ij | mu_j, sigma_j^2), normalised per child.
        exponent = (squared @ variance.reciprocal().transpose(-1, -2)).squeeze(-1)
        log_density = -0.5 * (exponent + log_variance_sum + pose_size * LOG_2PI)
        log_joint = F.logsigmoid(logits) + log_density  # (B, G, J, N)
        assignments = torch.exp(log_joint - log_normalizer(log_joint))
    return mean.squeeze(-2), torch.sigmoid(logits.squeeze(-1))


def _transformation_matrices(*shape: int) -> nn.Parameter:
    # TruncatedNormal(stddev=1.0), cut at 2 standard deviations, as Keras.
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(shape), std=1.0, a=-2, b=2))


class ConvCapsules(nn.Module):
    """A convolutional capsule layer ("valid"), EM-routed."""

    def __init__(
        self, input_types: int, types: int, kernel_size: int, stride: int, size: int
    ) -> None:
        super().__init__()
        self.kernel = _transformation_matrices(
            kernel_size, kernel_size, input_types, types, POSE_SIDE, POSE_SIDE
        )
        self.beta_u = nn.Parameter(torch.zeros(types))
        self.beta_a = nn.Parameter(torch.zeros(types))
        self.size, self.input_types = size, input_types
        self.out_size = (size - kernel_size) // stride + 1
        rows = (
            torch.arange(self.out_size)[:, None] * stride
            + torch.arange(kernel_size)[None, :]
        )  # (out, kernel): input row (or column) of each field entry
        self.register_buffer("field_rows", rows[:, None, :, None], persistent=False)
        self.register_buffer("field_cols", rows[None, :, None, :], persistent=False)
        # The input cell of every (y, x, u, v), then every child (cell, type).
        cells = (self.field_rows * size + self.field_cols).reshape(-1)
        children = cells[:, None] * input_types + torch.arange(input_types)
        self.register_buffer("child_index", children.reshape(-1), persistent=False)
        # R starts uniform over each child's parents: J types at every
        # position whose field holds it.
        fields_per_cell = torch.zeros(size * size).index_add(
            0, cells, torch.ones(cells.numel())
        )
        positions = self.out_size**2
        initial = 1.0 / (fields_per_cell[cells] * types)  # (G * K * K,)
        initial = initial.view(positions, 1, -1, 1).expand(-1, -1, -1, input_types)
        self.register_buffer(
            "initial", initial.reshape(1, positions, 1, -1), persistent=False
        )

    def log_normalizer(self, log_joint: torch.Tensor) -> torch.Tensor:
        """Log-sum-exp over every parent of each child, at every position."""
        batch, positions, _, fields = log_joint.shape
        children = self.size * self.size * self.input_types
        local_max = log_joint.detach().amax(2).reshape(batch, -1)  # (B, G * N)
        index = self.child_index.expand(batch, -1)
        child_max = local_max.new_full((batch, children), -math.inf)
        child_max.scatter_reduce_(1, index, local_max, "amax")
        shift = child_max[:, self.child_index].view(batch, positions, 1, fields)
        local_sum = torch.exp(log_joint - shift).sum(2).reshape(batch, -1)
        child_sum = local_sum.new_zeros(batch, children).index_add(
            1, self.child_index, local_sum
        )
        return shift + child_sum[:, self.child_index].log().view(shift.shape)

    def forward(
        self, poses: torch.Tensor, activations: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # (B, H, W, I, P) -> receptive fields (B, out, out, K, K, I, P).
        fields = poses[:, self.field_rows, self.field_cols]
        field_activations = activations[:, self.field_rows, self.field_cols]
        batch, out = poses.shape[0], self.out_size
        kernel_size, _, input_types, types = self.kernel.shape[:4]
        matrices = fields.reshape(
            batch, out * out, -1, POSE_SIDE, POSE_SIDE
        )  # children n = (u, v, i)
        kernel = self.kernel.reshape(-1, types, POSE_SIDE, POSE_SIDE)
        votes = torch.einsum("bgnpq,njqr->bgjnpr", matrices, kernel)
        votes = votes.reshape(batch, out * out, types, -1, POSE_SIZE)
        means, output_activations = em_routing(
            votes,
            field_activations.reshape(batch, out * out, -1),
            self.beta_u,
            self.beta_a,
            self.initial,
            self.log_normalizer,
        )
        return (
            means.view(batch, out, out, types, POSE_SIZE),
            output_activations.view(batch, out, out, types),
        )


class ClassCapsules(nn.Module):
    """Class capsules: `W` shared over positions, coordinate addition."""

    def __init__(self, input_types: int, classes: int, size: int) -> None:
        super().__init__()
        self.kernel = _transformation_matrices(
            input_types, classes, POSE_SIDE, POSE_SIDE
        )
        self.beta_u = nn.Parameter(torch.zeros(classes))
        self.beta_a = nn.Parameter(torch.zeros(classes))
        centres = (torch.arange(size) + 0.5) / size
        offsets = torch.zeros(size, size, input_types, POSE_SIZE)
        offsets[..., POSE_SIDE - 1] = centres[:, None, None]  # row -> (0, 3)
        offsets[..., 2 * POSE_SIDE - 1] = centres[None, :, None]  # column -> (1, 3)
        self.register_buffer(
            "offsets", offsets.reshape(-1, POSE_SIZE), persistent=False
        )

    def forward(
        self, poses: torch.Tensor, activations: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, classes = poses.shape[0], self.kernel.shape[1]
        matrices = poses.reshape(batch, -1, POSE_SIDE, POSE_SIDE)  # n = (y, x, i)
        types = self.kernel.shape[0]
        matrices = matrices.view(batch, -1, types, POSE_SIDE, POSE_SIDE)
        votes = torch.einsum("bcipq,ijqr->bjcipr", matrices, self.kernel)
        votes = votes.reshape(batch, 1, classes, -1, POSE_SIZE) + self.offsets
        class_poses, class_activations = em_routing(
            votes,
            activations.reshape(batch, 1, -1),
            self.beta_u,
            self.beta_a,
            torch.full((), 1.0 / classes, device=votes.device),
            lambda log_joint: torch.logsumexp(log_joint, dim=2, keepdim=True),
        )
        return class_poses.view(batch, classes, POSE_SIZE), class_activations.view(
            batch, classes
        )


class MatrixCapsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        size, _, channels = common.image_shape("matrix-capsnet")
        self.conv = nn.Conv2d(channels, CONV_FILTERS, CONV_KERNEL_SIZE, CONV_STRIDES)
        self.primary = nn.Conv2d(CONV_FILTERS, PRIMARY_TYPES * (POSE_SIZE + 1), 1)
        for conv in (self.conv, self.primary):  # Keras's Conv2D defaults
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        size = (size - CONV_KERNEL_SIZE) // CONV_STRIDES + 1
        layers, types = [], PRIMARY_TYPES
        for out_types, kernel_size, stride in zip(
            CAPSULE_TYPES, CAPSULE_KERNEL_SIZES, CAPSULE_STRIDES
        ):
            layers.append(ConvCapsules(types, out_types, kernel_size, stride, size))
            types, size = out_types, layers[-1].out_size
        self.conv_capsules = nn.ModuleList(layers)
        self.class_capsules = ClassCapsules(
            types, common.num_classes("matrix-capsnet"), size
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class activations `(B, classes)`."""
        return self.class_capsules_of(images)[1]

    def class_capsules_of(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class poses `(B, classes, 16)` and activations `(B, classes)`."""
        # NHWC images (the Keras layout) to NCHW, and the features back.
        features = F.relu(self.conv(images.permute(0, 3, 1, 2).contiguous()))
        features = self.primary(features).permute(0, 2, 3, 1)
        batch, height, width, _ = features.shape
        split = PRIMARY_TYPES * POSE_SIZE
        poses = features[..., :split].reshape(
            batch, height, width, PRIMARY_TYPES, POSE_SIZE
        )
        activations = torch.sigmoid(features[..., split:])
        for layer in self.conv_capsules:
            poses, activations = layer(poses, activations)
        return self.class_capsules(poses, activations)


def load_keras_weights(model: MatrixCapsNet, weights: dict) -> None:
    """Copies a Keras `MatrixCapsNet`'s weights, `{path: array}`, into `model`.

    For the test that the twin computes the Keras model's function.
    """

    def get(name: str) -> torch.Tensor:
        (value,) = (v for k, v in weights.items() if k.endswith("/" + name))
        return torch.as_tensor(value)

    pairs = [
        (model.conv.weight, get("conv/kernel").permute(3, 2, 0, 1)),
        (model.conv.bias, get("conv/bias")),
        (
            model.primary.weight,
            torch.cat(
                [
                    get("primary_capsule/pose_kernel"),
                    get("primary_capsule/activation_kernel"),
                ],
                dim=-1,
            ).permute(3, 2, 0, 1),
        ),
        (
            model.primary.bias,
            torch.cat(
                [
                    get("primary_capsule/pose_bias"),
                    get("primary_capsule/activation_bias"),
                ]
            ),
        ),
    ]
    layers = [*model.conv_capsules, model.class_capsules]
    names = [f"conv_capsule_{k}" for k in range(1, len(layers))] + ["class_capsule"]
    for layer, name in zip(layers, names):
        for part in ("kernel", "beta_u", "beta_a"):
            pairs.append((getattr(layer, part), get(f"{name}/{part}")))
    with torch.no_grad():
        for target, value in pairs:
            target.copy_(value)


def spread_loss(labels: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """Eq. 3: `sum_{i != t} max(0, m - (a_t - a_i))^2`, mean over the batch."""
    target = (labels * activations).sum(-1, keepdim=True)
    shortfall = F.relu(common.SPREAD_MARGIN - (target - activations))
    return ((1.0 - labels) * shortfall.square()).sum(-1).mean()


class Trainer(torch_capsnet.Trainer):
    """One Adam step of the matrix-capsule network per call."""

    def make_model(self, channels_last: bool) -> nn.Module:
        return MatrixCapsNet()

    def loss(self) -> torch.Tensor:
        return spread_loss(self.labels, self.model(self.inputs))
