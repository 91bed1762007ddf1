"""The Keras contenders: `keras_capsules` layers and models on the current backend.

A variant name is `keras` plus options joined by `-`:

- `jit`: `jit_compile=True` (TensorFlow: XLA; PyTorch: `torch.compile`;
  JAX: its default). Without `jit` or `nojit`, each backend's own default
  on this device (`"auto"`: XLA off for TensorFlow on CPU, eager PyTorch,
  jitted JAX);
- `nojit`: `jit_compile=False`, spelled out;
- `stopgrad`: `RoutingCapsule(stop_gradient_on_agreement=True)`;
- `bf16`: the `mixed_bfloat16` dtype policy (bfloat16 compute, float32
  weights, routing softmax and norms in float32);
- `s2d`: the CapsNet with `primary_conv_implementation="space_to_depth"`
  (the stride-2 convolution as a stride-1 one; same result and weights);
- `direct`: the CapsNet with `primary_conv_implementation="direct"` (the
  backend's strided convolution). Without `s2d` or `direct`, the default
  `"auto"`: space-to-depth on JAX, direct elsewhere;
- `cf`: the CapsNet built from the layers with `data_format="channels_first"`
  (the images have one channel, so NHWC and NCHW batches are the same
  memory), which spares the PyTorch backend its NHWC <-> NCHW copies around
  each convolution.

Steps go through `Model.train_on_batch` / `Model.predict_on_batch`, the
compiled train / predict functions a user gets from `compile`. The
`efficient-capsnet` and `matrix-capsnet` benches train
`keras_capsules.models.EfficientCapsNet` (margin loss + 0.0005 x
reconstruction, as examples/capsnet_mnist.py) and
`keras_capsules.models.MatrixCapsNet` (spread loss) with their defaults.
"""

from __future__ import annotations

import common
import keras

from keras_capsules.layers import Length, Mask, PrimaryCapsule, RoutingCapsule
from keras_capsules.losses import MarginLoss, ReconstructionLoss, SpreadLoss
from keras_capsules.models import CapsNet, EfficientCapsNet, MatrixCapsNet

OPTIONS = ("jit", "nojit", "stopgrad", "bf16", "cf", "s2d", "direct")


def parse_variant(name: str) -> dict:
    parts = name.split("-")
    if parts[0] != "keras" or any(part not in OPTIONS for part in parts[1:]):
        raise ValueError(f"Unknown Keras variant {name!r}; options are {OPTIONS}")
    jit_compile = "auto"
    if "jit" in parts:
        jit_compile = True
    elif "nojit" in parts:
        jit_compile = False
    return {
        "jit_compile": jit_compile,
        "stop_gradient_on_agreement": "stopgrad" in parts,
        "dtype_policy": "mixed_bfloat16" if "bf16" in parts else "float32",
        "data_format": "channels_first" if "cf" in parts else "channels_last",
        "conv_implementation": (
            "space_to_depth"
            if "s2d" in parts
            else "direct"
            if "direct" in parts
            else "auto"
        ),
    }


def routing_model(stop_gradient_on_agreement: bool) -> keras.Model:
    inputs = keras.Input((common.INPUT_CAPSULES, common.INPUT_CAPSULE_DIM))
    capsules = RoutingCapsule(
        common.NUM_CLASSES,
        common.CAPSULE_DIM,
        routing_iterations=common.ROUTING_ITERATIONS,
        stop_gradient_on_agreement=stop_gradient_on_agreement,
    )(inputs)
    return keras.Model(inputs, Length()(capsules), name="routing")


def capsnet_from_layers(
    stop_gradient_on_agreement: bool,
    data_format: str = "channels_last",
    conv_implementation: str = "auto",
) -> tuple[keras.Model, keras.Model]:
    """The paper's CapsNet from the public layers; one model for train and predict.

    `Mask` keeps the labelled capsule when labels are given and the longest
    one otherwise, so the inference model shares every weight.
    """
    image_shape = _image_shape(data_format)
    images = keras.Input(image_shape)
    labels = keras.Input((common.NUM_CLASSES,))
    features = keras.layers.Conv2D(
        common.CONV_FILTERS,
        common.KERNEL_SIZE,
        activation="relu",
        data_format=data_format,
    )(images)
    primary = PrimaryCapsule(
        common.PRIMARY_CAPSULES,
        common.INPUT_CAPSULE_DIM,
        common.KERNEL_SIZE,
        strides=2,
        data_format=data_format,
        conv_implementation=conv_implementation,
    )(features)
    capsules = RoutingCapsule(
        common.NUM_CLASSES,
        common.CAPSULE_DIM,
        routing_iterations=common.ROUTING_ITERATIONS,
        stop_gradient_on_agreement=stop_gradient_on_agreement,
    )(primary)
    lengths = Length()(capsules)
    pixels = int(common.IMAGE_SHAPE[0] * common.IMAGE_SHAPE[1] * common.IMAGE_SHAPE[2])
    decoder = keras.Sequential(
        [
            keras.layers.Dense(common.DECODER_UNITS[0], activation="relu"),
            keras.layers.Dense(common.DECODER_UNITS[1], activation="relu"),
            keras.layers.Dense(pixels, activation="sigmoid"),
            keras.layers.Reshape(image_shape),
        ]
    )
    train = keras.Model(
        [images, labels], [lengths, decoder(Mask()([capsules, labels]))], name="capsnet"
    )
    infer = keras.Model(
        images, [lengths, decoder(Mask()(capsules))], name="capsnet_infer"
    )
    return train, infer


def _image_shape(data_format: str) -> tuple[int, int, int]:
    height, width, channels = common.IMAGE_SHAPE
    if data_format == "channels_first":
        return (channels, height, width)
    return (height, width, channels)


def capsnet(
    stop_gradient_on_agreement: bool,
    source: str,
    data_format: str,
    conv_implementation: str = "auto",
) -> tuple[keras.Model, keras.Model]:
    if data_format == "channels_first" or source != "model":
        return capsnet_from_layers(
            stop_gradient_on_agreement, data_format, conv_implementation
        )
    model = CapsNet(
        stop_gradient_on_agreement=stop_gradient_on_agreement,
        primary_conv_implementation=conv_implementation,
    )
    return model, model


class KerasContender:
    """A compiled Keras model plus the batch it trains / predicts on."""

    def __init__(
        self, bench: str, variant: str, batch: dict, capsnet_source: str = "model"
    ):
        options = parse_variant(variant)
        self.options = options
        previous_policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy(options["dtype_policy"])
        try:
            sg = options["stop_gradient_on_agreement"]
            # `ReconstructionLoss` carries the 0.0005 weight itself.
            reconstruction = ReconstructionLoss(weight=common.RECONSTRUCTION_WEIGHT)
            if bench == "routing":
                self.model = self.infer_model = routing_model(sg)
                loss = MarginLoss()
            elif bench == "efficient-capsnet":
                self.model = self.infer_model = EfficientCapsNet()
                loss = [MarginLoss(), reconstruction]
            elif bench == "matrix-capsnet":
                self.model = self.infer_model = MatrixCapsNet(
                    **common.MATRIX_CAPSNET_ROUTING
                )
                loss = SpreadLoss(margin=common.SPREAD_MARGIN)
            else:
                self.model, self.infer_model = capsnet(
                    sg,
                    capsnet_source,
                    options["data_format"],
                    options["conv_implementation"],
                )
                loss = [MarginLoss(), reconstruction]
        finally:
            keras.config.set_dtype_policy(previous_policy)
        self.model.compile(
            optimizer=keras.optimizers.Adam(common.learning_rate(bench)),
            loss=loss,
            jit_compile=options["jit_compile"],
        )
        if self.infer_model is not self.model:
            self.infer_model.compile(jit_compile=options["jit_compile"])
        # Backend tensors, so no step pays a NumPy conversion the
        # hand-written baselines do not.
        inputs = batch["inputs"]
        if bench == "capsnet":
            # One channel: the NCHW batch is the NHWC batch reshaped.
            shape = _image_shape(options["data_format"])
            inputs = inputs.reshape((inputs.shape[0], *shape))
        inputs = keras.ops.convert_to_tensor(inputs)
        labels = keras.ops.convert_to_tensor(batch["labels"])
        if bench in ("routing", "matrix-capsnet"):
            self.x, self.y = inputs, labels
        else:
            self.x, self.y = (inputs, labels), (labels, inputs)
        self.infer_x = inputs

    @property
    def resolved_jit_compile(self) -> bool:
        return bool(self.model.jit_compile)

    @property
    def resolved_conv_implementation(self) -> str | None:
        """What `"auto"` chose for the primary convolution, if there is one."""
        from keras_capsules.ops.convolution import resolve_conv_implementation

        for layer in self.model._flatten_layers():
            if isinstance(layer, PrimaryCapsule):
                return resolve_conv_implementation(layer.conv_implementation)
        return None

    def train_step(self):
        return self.model.train_on_batch(self.x, self.y)

    def infer_step(self):
        return self.infer_model.predict_on_batch(self.infer_x)

    def sync(self, result) -> None:
        # train_on_batch / predict_on_batch return NumPy values: already done.
        return None

    def num_params(self) -> int:
        return self.model.count_params()
