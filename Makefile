# The README's two commands: `make demo` and `make test`. Both set up the standalone environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo lint bench bench-all clean distclean help

help:
	@echo "make setup   create/update the standalone environment in $(VENV) (no-op when up to date)"
	@echo "make test    set up, then run the test suite (what CI runs)"
	@echo "make demo    set up, generate the default scene bag, replay it in baseline and blocks+swap modes"
	@echo "make lint    ruff over the package"
	@echo "make bench   the measured bench (repeats + sweep) and the generated tables of docs/results.md, README"
	@echo "make bench-all  every reported workload (default, seed, held-out), REPEATS=3 by default"

setup:
	@VENV=$(abspath $(VENV)) bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest test $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check multidnn_sched compression_tools test launch scripts setup.py

demo: setup
	@bash scripts/demo.sh

# The measured bench of docs/results.md (a quiet machine: ~12 min repeats + ~12 min sweep on 2 cores), then the
# generated blocks of docs/results.md and README.md from its JSON.
BENCH_WORKLOAD ?= config/workloads/default.yaml
BENCH_OUT ?= docs/bench
bench: setup
	@test -f runs/variants/manifest.json || $(VENV)/bin/multidnn-compress build-defaults
	$(VENV)/bin/multidnn-bench --workload $(BENCH_WORKLOAD) --repeats 3 --json $(BENCH_OUT)/$(notdir $(basename $(BENCH_WORKLOAD))).json
	$(VENV)/bin/multidnn-bench --workload $(BENCH_WORKLOAD) --sweep --json $(BENCH_OUT)/$(notdir $(basename $(BENCH_WORKLOAD)))_sweep.json
	$(VENV)/bin/multidnn-bench --markdown $(BENCH_OUT)/*.json --markdown-into docs/results.md
	$(VENV)/bin/multidnn-bench --markdown $(BENCH_OUT)/*.json --markdown-into README.md

REPEATS ?= 3
bench-all: setup
	@REPEATS=$(REPEATS) VENV=$(VENV) bash scripts/bench_all.sh

clean:
	rm -rf build runs .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV)
