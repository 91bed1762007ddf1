# One command per task; each sets up what it needs on a fresh clone.
#   make test      the full test matrix: lint, types, pytest under tensorflow, torch, jax
#   make example   trains the MNIST CapsNet example for 1 epoch on all 60,000 images
#   make docs      builds the documentation site (strict)
#   make bench     runs the benchmark against hand-written PyTorch / JAX CapsNets
#   make method-table  every model side by side: accuracy, weights, speed, memory

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU builds of the three frameworks, for a machine without a GPU; override
# them (e.g. TORCH_SPEC=torch TF_SPEC="tensorflow[and-cuda]" JAX_SPEC="jax[cuda12]")
# where another build is wanted. The package's extras name no build, so only
# these lines choose one.
TORCH_SPEC ?= torch==2.13.0
TF_SPEC ?= tensorflow-cpu>=2.16
JAX_SPEC ?= jax[cpu]>=0.4.30
BACKENDS ?= tensorflow torch jax
# A local copy of MNIST (`make example MNIST=path/to/mnist.npz`); without it
# the example downloads it with keras.datasets.mnist and the tests that need
# it look at MNIST_PATH or skip.
MNIST ?=
PYTEST_ARGS ?=
# pytest-xdist processes per backend (0: none). Tests of one module share a
# process (their module fixtures run once), and each process computes on one
# thread: two processes on two cores, not two times two threads.
TEST_WORKERS ?= 2
# TensorFlow keeps its inter-op threads: collective ops (tf.distribute) can
# deadlock on one.
ONE_THREAD := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 \
	XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
# JAX compiles every model anew for each fit, evaluate and predict, also
# when a test rebuilds a model it compiled before (a saved and loaded copy,
# the same configuration in another test): a compilation cache shared by
# the test processes reuses those programs (tests/models: 406 s -> 307 s
# on a 2-core CPU, one thread). It holds compiled programs only.
JAX_CACHE := JAX_COMPILATION_CACHE_DIR=$(abspath $(VENV))/jax-compilation-cache \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
PYTEST := $(JAX_CACHE) $(if $(filter-out 0,$(TEST_WORKERS)),$(ONE_THREAD) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope,$(PY) -m pytest)

.PHONY: venv test lint typecheck test-backends example docs docs-serve docs-check bench method-table numbers clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first, so nothing that depends on it pulls another build.
	$(PY) -m pip install "$(TORCH_SPEC)"
	# The CPU builds by name, not the [tensorflow] and [jax] extras: those
	# name `tensorflow`, which would be installed beside tensorflow-cpu.
	$(PY) -m pip install -e ".[torch,visualization,dev,docs,examples]" "$(TF_SPEC)" "$(JAX_SPEC)"
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check keras_capsules tests examples benchmarks scripts
	$(VENV)/bin/ruff format --check keras_capsules tests examples benchmarks scripts

typecheck: venv
	$(VENV)/bin/mypy keras_capsules

# JAX computes in float32 unless x64 is on, for the whole process: the
# float64 tests (skipped, with the reason, in the plain JAX run) run again
# in a process of their own with JAX_ENABLE_X64=1.
test-backends: venv
	@status=0; for backend in $(BACKENDS); do \
		echo "=== pytest, KERAS_BACKEND=$$backend ==="; \
		KERAS_BACKEND=$$backend $(if $(MNIST),MNIST_PATH=$(MNIST),) $(PYTEST) $(PYTEST_ARGS) || status=1; \
	done; \
	if [ -n "$(filter jax,$(BACKENDS))" ]; then \
		echo "=== pytest -m float64, KERAS_BACKEND=jax JAX_ENABLE_X64=1 ==="; \
		KERAS_BACKEND=jax JAX_ENABLE_X64=1 $(if $(MNIST),MNIST_PATH=$(MNIST),) $(PYTEST) -m float64 $(PYTEST_ARGS) || status=1; \
	fi; exit $$status

test: lint typecheck test-backends

# Without MNIST= the example falls back to keras.datasets.mnist.load_data().
example: venv
	$(PY) examples/capsnet_mnist.py $(if $(MNIST),--data $(MNIST),) \
		--epochs 1 --output-dir runs/example

docs: venv
	$(VENV)/bin/mkdocs build --strict

docs-serve: venv
	$(VENV)/bin/mkdocs serve

docs-check: docs
	$(PY) scripts/docs/check_site.py --site site --out site-screenshots

# Into runs/bench: the published results in docs/assets/benchmarks stay as
# they are (their command is recorded in their results.json).
bench: venv
	$(PY) benchmarks/benchmark.py --output runs/bench

# Every backend, all of MNIST, --epochs 1: hours on a CPU.
method-table: venv
	$(PY) benchmarks/method_table.py $(if $(MNIST),--data $(MNIST),)

# Rewrites the numbers of README.md and docs/ from the committed metrics files.
numbers: venv
	$(PY) scripts/docs/render_numbers.py

clean:
	rm -rf $(VENV) site build dist runs
