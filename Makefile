# The two commands of README.md: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := -e core -e plugins/metrics -e plugins/nvdiffrec -e plugins/reconviagen -e service
STAMP := $(VENV)/.installed
# exact pins: the releases this project is tested with (meshforge-metrics needs torch, piq needs torchvision)
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install clean

$(STAMP): core/pyproject.toml $(wildcard plugins/*/pyproject.toml) requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet $(PACKAGES) -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/meshforge demo out/demo

tests/js/node_modules: tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --no-audit --no-fund
	touch tests/js/node_modules

test: $(STAMP) tests/js/node_modules
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) out
