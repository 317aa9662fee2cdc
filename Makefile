# SHAMSUL reproducible study. `make` alone lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= demo
DATA_DIR ?=
export MPLCONFIGDIR := $(CURDIR)
export PYTHONHASHSEED := 0

.DEFAULT_GOAL := help
.PHONY: help setup reproduce replicate replicate-kernels benchmark-estimators smoke test test-kernels test-browser lint clean distclean workshop benchmark

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## create .venv with the pinned requirements (once; redone when the pins change)

$(STAMP): requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "make setup: Python 3.11 not found (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	-$(VENV)/bin/nbdime config-git --enable >/dev/null 2>&1
	@touch $(STAMP)

reproduce: setup ## run the whole notebook chain (PROFILE=demo; PROFILE=paper DATA_DIR=/path for CheXpert)
	DATA_DIR="$(DATA_DIR)" $(PY) -m shamsul_utils.chain --profile $(PROFILE)

replicate: setup ## do the default run's claims hold on held-out training seeds (5, 6, 7)? (after make reproduce)
	$(PY) -m shamsul_utils.replicate --profile $(PROFILE) --seeds 5 6 7

replicate-kernels: setup ## the same for the run's own seeds retrained under torch's scalar CPU kernels
	ATEN_CPU_CAPABILITY=default $(isa_default) $(PY) -m shamsul_utils.replicate --profile $(PROFILE) --seeds 0 1 2 --tag kernels

smoke: setup ## run the whole chain on the tiny smoke profile (a few minutes)
	$(PY) -m shamsul_utils.chain --profile smoke

test: setup ## run the test suite (unit, reference cross-checks, end-to-end smoke chain)
	$(PY) -m pytest -q

# Other CPUs' arithmetic on this one: torch's own kernels (ATEN_CPU_CAPABILITY) with the convolution and
# matrix libraries held to the same instruction set (oneDNN, MKL): the scalar/SSE4 route everywhere, the AVX2
# route where the CPU has AVX-512. numpy's OpenBLAS is left as the machine sets it up.
KERNELS ?= default $(if $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo yes),avx2)
isa_default := ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2
isa_avx2 := ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2

test-kernels: setup ## rerun the float-sensitive tests (-m numerics) under other CPU kernels (KERNELS="default avx2")
	@for kernel in $(KERNELS); do \
	  case $$kernel in default) isa="$(isa_default)";; avx2) isa="$(isa_avx2)";; *) isa="";; esac; \
	  echo "[test-kernels] ATEN_CPU_CAPABILITY=$$kernel $$isa"; \
	  env ATEN_CPU_CAPABILITY=$$kernel $$isa $(PY) -m pytest -q -p no:cacheprovider -m numerics --durations=0 --durations-min=5 tests \
	    || { echo "[test-kernels] FAILED under ATEN_CPU_CAPABILITY=$$kernel $$isa"; exit 1; }; \
	done

test-browser: setup ## live browser test of the workshop explorer: JupyterLab + Debian's chromium (apt-get install chromium)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-browser.lock
	@command -v chromium >/dev/null || { echo "make test-browser: chromium not found; install Debian's package: apt-get install -y chromium"; exit 1; }
	$(PY) -m pytest -q -s -p no:cacheprovider -m browser tests/browser

lint: setup ## ruff on the code and the notebooks' code cells, and source notebooks free of outputs
	$(VENV)/bin/ruff check shamsul_utils tests benchmarks notebooks
	$(PY) -m pytest -q tests/test_notebooks.py -k "outputs or parameters"

benchmark: setup ## time the explainers against the forward floor and the reference libraries
	$(PY) benchmarks/explainers.py

benchmark-estimators: setup ## LIME and Kernel SHAP error against model evaluations (needs the demo run; ~10 min)
	$(PY) benchmarks/estimators.py --part 1/2 --output benchmarks/.estimators_1.csv & first=$$!; \
	$(PY) benchmarks/estimators.py --part 2/2 --output benchmarks/.estimators_2.csv && wait $$first
	$(PY) benchmarks/estimators.py --report benchmarks/.estimators_1.csv benchmarks/.estimators_2.csv

workshop: setup ## write participant copies of the workshop notebooks (solutions removed) to workshop/
	$(PY) -m shamsul_utils.workshop

RUNS := $(if $(SHAMSUL_RUNS),$(SHAMSUL_RUNS),runs)

clean: ## remove PROFILE's tables, figures and executed notebooks (keeps data, checkpoints, heatmap caches)
	rm -rf "$(RUNS)/$(PROFILE)/tables" "$(RUNS)/$(PROFILE)/figures" "$(RUNS)/$(PROFILE)/notebooks" \
	  "$(RUNS)/$(PROFILE)/predictions" "$(RUNS)/$(PROFILE)/chain_timings.csv"

distclean: ## remove everything under runs/ (or $$SHAMSUL_RUNS): data, checkpoints and caches of every profile
	rm -rf "$(RUNS)"
