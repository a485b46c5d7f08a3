# ferlab: `make demo` and `make test` work on a fresh clone with any Python >= 3.11 on the PATH.
FIND_PYTHON := for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done
PYTHON ?= $(shell $(FIND_PYTHON))
VENV ?= .venv
BIN := $(VENV)/bin
# Pins torch to its CPU build: a bare `torch` requirement would pull a multi-GB CUDA build.
CONSTRAINTS := constraints.txt
RUN_DIR ?= runs/demo

.PHONY: demo test release-check lint format bench docs clean

$(BIN)/ferlab: pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { \
		echo "ferlab needs Python >= 3.11 (python3.11, 3.12 or 3.13 on the PATH); none was found" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,deep,cluster]'
	touch $(BIN)/ferlab

# The demo writes into its own folder; --force lets it run again over its previous results.
demo: $(BIN)/ferlab
	$(BIN)/ferlab train digits_fc --out $(RUN_DIR) --force
	$(BIN)/ferlab evaluate --model $(RUN_DIR)/model.npz --split test --out $(RUN_DIR)/eval-test --force
	$(BIN)/ferlab search random spaces/digits_demo --trials 20 --workers 2 \
		--study digits-demo --study-dir $(RUN_DIR)/search
	$(BIN)/ferlab search report --study digits-demo --study-dir $(RUN_DIR)/search
	@# Emotions on real photos that install with scikit-image, by the model that ships in ferlab.
	photos=$$($(BIN)/python -c 'import os, skimage.data as d; print(os.path.dirname(d.__file__))') && \
	cd $$photos && $(abspath $(BIN))/ferlab predict astronaut.png camera.png coffee.png \
		--annotate $(abspath $(RUN_DIR))/photos --force

test: $(BIN)/ferlab
	$(BIN)/python -m pytest -q

# Build the wheel and sdist, check them, install the wheel in a fresh venv without the dev extras
# and smoke-test it there (scripts/release_check.sh says each step).
release-check: $(BIN)/ferlab
	PYTHON=$(BIN)/python scripts/release_check.sh

lint: $(BIN)/ferlab
	$(BIN)/ruff check src tests benchmarks release
	$(BIN)/ruff format --check src tests benchmarks release

format: $(BIN)/ferlab
	$(BIN)/ruff format src tests benchmarks release
	$(BIN)/ruff check --fix src tests benchmarks release

bench: $(BIN)/ferlab
	$(BIN)/python benchmarks/engine_speed.py

# The documentation site, offline: the configuration reference must match the schema, and any
# warning (a broken link, a missing page) fails the build. Open site/index.html.
docs: $(BIN)/ferlab
	$(BIN)/python scripts/config_reference.py --check
	$(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
