# hpa-tune: the README's two commands are `make demo` and `make test`.
# Both create .venv with a supported Python (3.11, 3.12 or 3.13) and install what they need;
# nothing else is assumed.

# The first of python3.11, python3.12, python3.13, python3 on the PATH whose version is supported;
# `make demo PYTHON=python3.13` picks one by hand.
SUPPORTED_PYTHONS := 3.11 3.12 3.13
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3.11 python3.12 python3.13 python3; do \
            v=$$($$p -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue; \
            case " $(SUPPORTED_PYTHONS) " in (*" $$v "*) echo $$p; exit 0;; esac; done)
endif
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision are installed first, pinned to the versions the tests ran with. On a machine
# without a local wheel cache, add a CPU index to save ~3 GB of CUDA wheels, e.g.
#   make demo TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH       ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=

.PHONY: demo test install install-dev lint bench chromium clean

demo: install
	$(BIN)/hpa-tune run search_spaces/demo_space.yaml

test: install-dev chromium
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check hpa_tune tests bench
	$(BIN)/ruff format --check hpa_tune tests bench

lint: install-dev
	$(BIN)/ruff check hpa_tune tests bench
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python -m bench --quick --json bench/out/bench.json
	$(BIN)/python bench/bench_loader.py
	$(BIN)/python bench/bench_models.py

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "no supported Python on the PATH (need one of: $(SUPPORTED_PYTHONS))"; exit 2; }
	@echo "creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch-stamp: | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_INDEX) $(TORCH)
	touch $@

install: $(VENV)/.install-stamp
$(VENV)/.install-stamp: pyproject.toml $(VENV)/.torch-stamp
	$(BIN)/pip install --quiet -e .
	touch $@

install-dev: $(VENV)/.install-dev-stamp
$(VENV)/.install-dev-stamp: pyproject.toml $(VENV)/.torch-stamp
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The report test renders the HTML page in headless Chromium (Debian's package).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report screenshot test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) results build *.egg-info
