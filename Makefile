# diffembed — one-command set-up and checks. `make test` installs everything it needs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch; an unpinned torch would pull several GB of CUDA packages.
TORCH_PIN := torch==2.13.0
EXTRAS := train,eval,serve,dev
SETUP_STAMP := $(VENV)/.setup-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

# Debian packages: the corpus integration test needs a few, the search page's browser test
# chromium (run headless); `make data` installs all the corpus sources.
TEST_DEB := wordnet-base manpages man-db groff-base chromium
DATA_DEB := $(shell cat scripts/corpus_packages.txt)
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: setup test test-slow lint format clean test-deb data demo reproduce

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.setup-* && touch $@

test-deb:
	@dpkg -s $(TEST_DEB) >/dev/null 2>&1 || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq --no-install-recommends $(TEST_DEB); }

test: setup test-deb
	$(PY) -m pytest -q

# All source packages of the corpus (~250 MB of text), then the corpus itself in data/corpus.
data: setup
	@dpkg -s $(DATA_DEB) >/dev/null 2>&1 || { $(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq --no-install-recommends $(DATA_DEB); }
	$(VENV)/bin/diffembed corpus build --out data/corpus

# Search the Python standard library's docs with the shipped model, then evaluate it (37 s after
# setup on the 2-core session VM, 2026-12-03).
demo: setup
	$(VENV)/bin/diffembed demo --model models/diffembed-tiny --out demo-output

# The study's cpu preset (third edition: every row from models/base-ar) on the corpus of
# `make data`: results/cpu/report.md; the preset budgets ~260 minutes, resumable (the second
# edition, results/cpu-2nd, took 64.8 min at de2b759).
reproduce: data
	$(VENV)/bin/diffembed reproduce --preset cpu --corpus data/corpus --out results/cpu

# The tests marked slow: those that start subprocesses or several processes (torchrun runs,
# kill -9 drills, the CLI in a subprocess); minutes in all. pytest exit 5: none selected.
test-slow: setup
	$(PY) -m pytest -q -m slow; rc=$$?; if [ $$rc -eq 5 ]; then echo "no slow tests"; exit 0; fi; exit $$rc

lint: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: setup
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

# Encoding benchmarks (tens of minutes on 2 CPU cores; numbers are printed, never asserted).
# BENCH_SCALE multiplies the input-set sizes of the larger model's run (1 = the full sets).
BENCH_SCALE ?= 0.1
.PHONY: bench
bench: setup
	$(PY) benchmarks/encode_throughput.py --model small
	$(PY) benchmarks/encode_throughput.py --model base --scale $(BENCH_SCALE)
	$(PY) benchmarks/longdoc_memory.py --model base
