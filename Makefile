# The README's two commands: `make demo` and `make test`. Both set up the standalone environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo lint bench clean distclean help

help:
	@echo "make setup   create/update the standalone environment in $(VENV) (no-op when up to date)"
	@echo "make test    set up, then run the test suite (what CI runs)"
	@echo "make demo    set up, generate the default scene bag, replay it in baseline and blocks+swap modes"
	@echo "make lint    ruff over the package"

setup:
	@VENV=$(abspath $(VENV)) bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest test $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check multidnn_sched compression_tools test launch scripts setup.py

demo: setup
	@bash scripts/demo.sh

clean:
	rm -rf build runs .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV)
