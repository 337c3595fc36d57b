# calmcue — everything a fresh machine needs is installed from here (pip into .venv, apt-get for
# system packages). Only Python 3.11, pip and root are assumed.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.stamp

export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test bench lint model firmware screenshots clean system-run system-test help

help:
	@echo "make run    - start the demo: embedded broker, companion, simulated device (http://127.0.0.1:8000)"
	@echo "make test   - install what the tests need, then run them (pytest + MicroPython tests)"
	@echo "make bench  - benchmarks: features, model, policy, agent, companion ingest, fleet (1,000 devices)"
	@echo "make lint   - ruff, mypy on the CPython packages, firmware against micropython-esp32-stubs"
	@echo "make model  - train, evaluate and export the stress model from RAVDESS"
	@echo "make firmware - compile the ESP32 bundle with mpy-cross, its ROMFS image, and their manifests"
	@echo "make screenshots - every dashboard page at 390x844 and 1440x900 into docs/screenshots/<page>-<width>.png"

# ---- environments ------------------------------------------------------------------------------

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# The base install is the Pi agent's (pyproject.toml); the demo and the companion need their extra.
$(STAMP)-run: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e '.[companion]'
	@touch $@

$(STAMP)-test: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e '.[companion,test,model,pi,device,postgres,lint]'
	@touch $@ $(STAMP)-run

$(STAMP)-bench: pyproject.toml $(STAMP)-test
	$(PIP) install -e '.[bench]'
	@touch $@

# System packages (mosquitto; for tests also postgresql and chromium), installed only when missing.
system-run:
	@bash scripts/system-deps.sh run

system-test:
	@bash scripts/system-deps.sh test

# ---- the two commands --------------------------------------------------------------------------

run: system-run $(STAMP)-run
	$(VENV)/bin/calmcue run

test: system-test $(STAMP)-test
	$(PY) -m pytest -q -p no:cacheprovider

# ---- the rest ----------------------------------------------------------------------------------

bench: system-test $(STAMP)-bench
	$(PY) -m calmcue.bench

lint: $(STAMP)-test
	$(VENV)/bin/ruff check calmcue companion firmware models tests
	$(VENV)/bin/mypy calmcue companion models firmware/pi firmware/tools
	$(PY) -m firmware.tools.lint_device

model: $(STAMP)-test
	$(VENV)/bin/calmcue model train
	$(VENV)/bin/calmcue model evaluate
	$(VENV)/bin/calmcue model export

firmware: $(STAMP)-test
	$(PY) -m firmware.tools.bundle

screenshots: system-test $(STAMP)-test
	$(PY) -m companion.screens

clean:
	rm -rf $(VENV) var build dist *.egg-info
