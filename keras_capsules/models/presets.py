"""Presets: a model's configuration and trained weights, in a folder.

A preset folder holds `config.json` (the model, serialised by Keras),
`model.weights.h5` and `metadata.json` (what the weights reach and how
they were trained). The package ships the presets small enough to ship in
`keras_capsules/models/preset_files/`; any other folder written by
`save_to_preset` loads the same way, so presets are shared by copying the
folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras

SHIPPED = Path(__file__).resolve().parent / "preset_files"
CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE = (
    "config.json",
    "model.weights.h5",
    "metadata.json",
)


def list_presets() -> dict[str, dict[str, Any]]:
    """The shipped presets: name to metadata (class, test accuracy, command).

    Example:

    >>> presets = keras_capsules.models.list_presets()
    >>> presets["efficient_capsnet_mnist"]["class_name"]
    'EfficientCapsNet'
    """
    found = {}
    for folder in sorted(SHIPPED.iterdir()) if SHIPPED.is_dir() else ():
        if (folder / CONFIG_FILE).is_file():
            found[folder.name] = _read_json(folder / METADATA_FILE, missing_ok=True)
    return found


def preset_folder(preset: str | Path) -> Path:
    """The folder of `preset`: a shipped name or a folder path."""
    name = str(preset)
    if (SHIPPED / name / CONFIG_FILE).is_file():
        return SHIPPED / name
    folder = Path(preset).expanduser()
    if (folder / CONFIG_FILE).is_file():
        return folder
    raise ValueError(
        f"Received an invalid value for `preset`: {name!r} is neither a shipped "
        f"preset ({', '.join(list_presets()) or 'none shipped'}) nor a folder "
        f"with a {CONFIG_FILE} written by `save_to_preset`."
    )


def load_preset(
    cls: Any, preset: str | Path, load_weights: bool = True, **kwargs: Any
) -> Any:
    """The model of `preset`, as `cls.from_preset` returns it."""
    folder = preset_folder(preset)
    serialized = _read_json(folder / CONFIG_FILE)
    config = {**serialized.get("config", {}), **kwargs}
    # Safe mode: a preset is data. A config naming a `Lambda` layer or any
    # other code is refused instead of run.
    model: Any = keras.saving.deserialize_keras_object(
        {**serialized, "config": config}, safe_mode=True
    )
    if not isinstance(model, cls):
        raise ValueError(
            f"The preset {str(preset)!r} holds a `{type(model).__name__}`, not a "
            f"`{cls.__name__}`: load it with "
            f"`{type(model).__name__}.from_preset(...)`."
        )
    if load_weights:
        model.load_weights(folder / WEIGHTS_FILE)
    return model


def save_preset(model: Any, preset_dir: str | Path, metadata: dict | None) -> None:
    folder = Path(preset_dir)
    folder.mkdir(parents=True, exist_ok=True)
    serialized = keras.saving.serialize_keras_object(model)
    (folder / CONFIG_FILE).write_text(json.dumps(serialized, indent=2) + "\n")
    model.save_weights(folder / WEIGHTS_FILE)
    metadata = {
        "class_name": type(model).__name__,
        "parameters": int(model.count_params()),
        "keras_version": keras.__version__,
        **(metadata or {}),
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def _read_json(path: Path, missing_ok: bool = False) -> dict[str, Any]:
    if missing_ok and not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the preset file {path}: {error}") from None
