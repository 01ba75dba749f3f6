# Shortcuts for the development loop; each target is one of the scripts in scripts/.
.PHONY: fast test wheel bench loom format

VENV ?= $(or $(BATCHED_VENV),$(HOME)/.cache/batched/venv)

fast:    ## the fast test tier (an edit-test loop: no model packages, no wheel)
	bash scripts/test.sh --fast

test:    ## everything CI runs
	bash scripts/test.sh

wheel:   ## dist/: the manylinux2014 abi3 wheel and the sdist, checked
	bash scripts/wheel.sh

bench:   ## the benchmarks against batched 0.1.5
	bash scripts/bench.sh

loom:    ## model-check the concurrent core
	bash scripts/loom.sh --quick

format:  ## rewrite Rust and Python sources in the project's style
	cargo fmt
	$(VENV)/bin/ruff format python tests benches examples
	$(VENV)/bin/ruff check --fix python tests benches examples
