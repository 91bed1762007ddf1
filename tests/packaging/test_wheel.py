"""The package as pip builds and installs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

import keras_capsules
from tests.conftest import REPO_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.backend_independent("building and installing the wheel"),
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the build backend is already here, and CI has no
    # reason to fetch setuptools again for every run.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO_ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (path,) = out.glob("*.whl")
    return path


def test_wheel_is_named_after_the_version(wheel):
    assert wheel.name == f"keras_capsules-{keras_capsules.__version__}-py3-none-any.whl"


def test_wheel_holds_the_package_and_its_metadata_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    outside = [
        n for n in names if not n.startswith(("keras_capsules/", "keras_capsules-"))
    ]
    assert outside == [], f"unexpected files in the wheel: {outside}"
    assert "keras_capsules/py.typed" in names
    for module in (
        "__init__.py",
        "ops/__init__.py",
        "ops/capsules.py",
        "ops/convolution.py",
        "ops/losses.py",
        "ops/routing/__init__.py",
        "ops/routing/dynamic.py",
        "layers/base_routing_capsule.py",
        "layers/routing_capsule.py",
        "losses/margin_loss.py",
        "models/capsnet.py",
    ):
        assert f"keras_capsules/{module}" in names
    # The module that the ops package replaced (a stale build folder could
    # bring it back) would ship as dead code beside the package.
    assert "keras_capsules/ops.py" not in names
    assert not [n for n in names if re.search(r"(^|/)(tests?|docs|examples)/", n)]


def test_wheel_holds_the_license(wheel):
    archive = zipfile.ZipFile(wheel)
    dist_info = f"keras_capsules-{keras_capsules.__version__}.dist-info"
    license_name = f"{dist_info}/licenses/LICENSE"
    assert license_name in archive.namelist()
    assert archive.read(license_name) == (REPO_ROOT / "LICENSE").read_bytes()
    text = archive.read(license_name).decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata


def test_wheel_metadata_is_fit_for_an_index(wheel):
    archive = zipfile.ZipFile(wheel)
    (metadata_name,) = [n for n in archive.namelist() if n.endswith("METADATA")]
    metadata = archive.read(metadata_name).decode()
    assert f"Version: {keras_capsules.__version__}" in metadata
    # tomllib, used by the tests and tools, is 3.11+; so is the package.
    assert "Requires-Python: >=3.11" in metadata
    assert "Programming Language :: Python :: 3.10" not in metadata
    assert "Classifier: Programming Language :: Python :: 3.11" in metadata
    assert re.search(r"License-Expression: Apache-2.0|License: Apache", metadata)
    assert "Requires-Dist: keras>=3" in metadata
    for extra in (
        "tensorflow",
        "torch",
        "jax",
        "visualization",
        "dev",
        "docs",
        "examples",
    ):
        assert f"Provides-Extra: {extra}" in metadata
    # The backend extras name the frameworks, not their CPU builds, so that a
    # GPU machine gets its GPU build (docs/getting-started.md).
    assert 'Requires-Dist: tensorflow>=2.16; extra == "tensorflow"' in metadata
    assert 'Requires-Dist: jax>=0.4.30; extra == "jax"' in metadata
    assert 'Requires-Dist: torch>=2.1; extra == "torch"' in metadata
    requirements = re.findall(r"^Requires-Dist: (.*)$", metadata, re.MULTILINE)
    assert not [r for r in requirements if "tensorflow-cpu" in r or "[cpu]" in r]
    # The public `keras_capsules.visualization` needs matplotlib.
    assert 'Requires-Dist: matplotlib>=3.7; extra == "visualization"' in metadata
    summary = re.search(r"^Summary: (.*)$", metadata, re.MULTILINE).group(1)
    for method in (
        "dynamic routing",
        "self-attention routing",
        "EM routing",
        "inverted dot-product attention routing",
    ):
        assert method in summary, summary
    assert "Classifier: Framework :: Keras" in metadata
    assert "Project-URL: Documentation" in metadata
    assert "Description-Content-Type: text/markdown" in metadata


def test_installed_wheel_imports_from_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    python = venv / "bin" / "python"
    target = subprocess.run(
        [
            str(python),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            target,
            str(wheel),
        ],
        check=True,
    )
    # The fresh venv sees the wheel first and this environment's packages
    # (keras and the backend) after it, as `--no-deps` beside them.
    env = {
        **os.environ,
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"),
    }
    result = subprocess.run(
        [
            str(python),
            "-c",
            "import keras_capsules, keras; print(keras_capsules.__file__); "
            "print(keras_capsules.__version__); print(keras.backend.backend()); "
            "print(keras_capsules.RoutingCapsule(2, 3).get_config()['capsule_dim'])",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    file, version, backend, capsule_dim = result.stdout.split()
    assert file.startswith(target), file
    assert version == keras_capsules.__version__
    assert backend == env["KERAS_BACKEND"]
    assert capsule_dim == "3"


def test_version_agrees_with_the_changelog_and_pyproject():
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert f"## [{keras_capsules.__version__}]" in changelog
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "keras_capsules.version.__version__"
    }


def test_build_floor_builds_a_license_expression():
    # `license = "Apache-2.0"` (PEP 639) and `license-files` need setuptools 77.
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "setuptools>=77" in pyproject["build-system"]["requires"]
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert pyproject["project"]["license-files"] == ["LICENSE"]
