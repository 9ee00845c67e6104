# Entry points for developers and CI. Works as root on a fresh Debian machine, with no terminal.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3.11
VENV := .venv
# Touched after a successful install: pip runs again only when pyproject.toml is newer.
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1
export DEBIAN_FRONTEND := noninteractive

.PHONY: venv test demo lint stack-up stack-down bench

venv: $(STAMP)

# Debian ships venv support in a separate package: install it (as root) when creating the venv fails.
define install_python
if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	echo "installing python3.11 and python3.11-venv with apt-get"; \
	apt-get update -qq && apt-get install -y -qq python3.11 python3.11-venv >/dev/null; \
else \
	echo "cannot create $(VENV) with $(PYTHON): install python3.11 and python3.11-venv (Debian: sudo apt-get install python3.11 python3.11-venv)" >&2; \
	exit 1; \
fi
endef

$(STAMP): pyproject.toml
	@if [ ! -x $(VENV)/bin/python ]; then \
		echo "creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); $(install_python); $(PYTHON) -m venv $(VENV); }; \
	fi
	@echo "installing flowsentinel and its dependencies into $(VENV) (quiet; errors are shown)"
	@$(VENV)/bin/python -m pip install -q -e '.[dev]'
	@# The TF-Serving client protos, without their `tensorflow` requirement: tensorflow-cpu provides it (see pyproject.toml).
	@$(VENV)/bin/python -m pip install -q --no-deps 'tensorflow-serving-api==2.21.*'
	@touch $@

test: venv
	$(VENV)/bin/pytest -ra $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/flowsentinel demo

# Both checks run even when the first fails, so one run reports everything.
lint: venv
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	exit $$status

stack-up: venv
	$(VENV)/bin/flowsentinel stack up

stack-down: venv
	$(VENV)/bin/flowsentinel stack down

# Benchmarks print figures (nothing in them asserts a speed): every bench/*_bench.py in turn.
bench: venv
	@for b in bench/*_bench.py; do echo "== $$b"; PYTHONPATH=. $(VENV)/bin/python $$b; done
